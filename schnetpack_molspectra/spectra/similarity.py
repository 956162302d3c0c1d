"""How alike two spectra are, row by row: the measures of spectrum prediction (Chemprop-IR's SID and
SIS, cosine, Spearman) for losses, metrics, benchmarks and predict-then-match identification.

Every function takes ``pred`` and ``target`` of shape (n_spectra, n_points) on one grid (any
non-negative intensities; each measure normalises as it needs) and returns one value per row,
(n_spectra,). Rows whose target is all zero (a molecule without that spectrum) have no value:
:func:`has_spectrum` says which rows count.
"""

import torch

__all__ = [
    "SIMILARITY_MEASURES",
    "has_spectrum",
    "area_normalize",
    "spectral_information_divergence",
    "spectral_information_similarity",
    "cosine_similarity",
    "spearman_correlation",
    "similarity",
]

#: floor of the area-normalised intensities in SID (Chemprop-IR's threshold): no log of zero
SID_FLOOR = 1e-8


def has_spectrum(target: torch.Tensor) -> torch.Tensor:
    """(n_spectra,) bool: rows with any intensity (all-zero rows are molecules without the spectrum)."""
    return (target > 0).any(-1)


def area_normalize(x: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Each row divided by its sum (unit area over the grid points), after intensities below
    ``floor`` are raised to it; an all-zero row stays zero (floor 0)."""
    if floor > 0:
        x = x.clamp_min(floor)
    return x / x.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def spectral_information_divergence(pred: torch.Tensor, target: torch.Tensor, floor: float = SID_FLOOR) -> torch.Tensor:
    """SID = sum_i p_i log(p_i / t_i) + t_i log(t_i / p_i) of the area-normalised spectra, each
    intensity floored at ``floor`` and the rows renormalised (Chemprop-IR): 0 for equal spectra."""
    p = area_normalize(area_normalize(pred), floor)
    t = area_normalize(area_normalize(target), floor)
    return ((p - t) * (torch.log(p) - torch.log(t))).sum(-1)


def spectral_information_similarity(pred: torch.Tensor, target: torch.Tensor, floor: float = SID_FLOOR) -> torch.Tensor:
    """SIS = 1 / (1 + SID), in (0, 1]: 1 for equal spectra."""
    return 1.0 / (1.0 + spectral_information_divergence(pred, target, floor))


def cosine_similarity(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between the spectra as vectors, in [0, 1] for non-negative spectra."""
    return torch.nn.functional.cosine_similarity(pred, target, dim=-1, eps=1e-12)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Rank of each value within its row (0 = smallest), ties in order of position."""
    ranks = torch.empty_like(x)
    order = torch.sort(x, dim=-1, stable=True).indices
    positions = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device).expand_as(x)
    return ranks.scatter_(-1, order, positions)


def spearman_correlation(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of the intensities over the grid points, in [-1, 1]."""
    a, b = _ranks(pred), _ranks(target)
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)


#: name -> measure, larger = more alike (SID, a divergence, is not among them)
SIMILARITY_MEASURES = {
    "sis": spectral_information_similarity,
    "cosine": cosine_similarity,
    "spearman": spearman_correlation,
}


def similarity(measure: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One of :data:`SIMILARITY_MEASURES` by name, (n_spectra,).

    Raises:
        ValueError: an unknown measure (the known ones named).
    """
    if measure not in SIMILARITY_MEASURES:
        raise ValueError(f"unknown spectral similarity {measure!r}; use one of {sorted(SIMILARITY_MEASURES)}")
    return SIMILARITY_MEASURES[measure](pred, target)
