"""Loss functions of MolSpectra (``loss_fn`` of the task's model outputs). Under DDP they communicate
only inside ``distributed.collective_step`` (see :mod:`schnetpack_molspectra.distributed`)."""

from typing import Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from schnetpack_molspectra.distributed import distributed_world, gather_rows
from schnetpack_molspectra.spectra.similarity import SID_FLOOR, has_spectrum, spectral_information_divergence

__all__ = [
    "NEGATIVES",
    "contrastive_similarities",
    "info_nce",
    "info_nce_terms",
    "InfoNCELoss",
    "SmoothedLoss",
    "SpectralInformationDivergenceLoss",
    "SpectrumMSELoss",
    "SPECTRUM_LOSSES",
    "spectrum_loss",
]

#: contrastive negatives: "global" = the molecules of every rank's batch (one process on the
#: concatenated batch), "local" = the molecules of this rank's batch only (per-device, as the
#: released code computes them)
NEGATIVES = ("global", "local")


class ContrastiveSimilarities(NamedTuple):
    """Cosine similarities of this rank's molecules against the pool of negatives.

    forward: (n_local, n_pool), this rank's anchors against every candidate of the pool.
    backward: (n_local, n_pool), this rank's candidates against every anchor of the pool
        (``None`` unless asked for).
    labels: (n_local,), the column of each row's own partner.
    n_pool: molecules in the pool (the global batch with global negatives under DDP).
    world: ranks that share the pool (1 with local negatives).
    """

    forward: torch.Tensor
    backward: Optional[torch.Tensor]
    labels: torch.Tensor
    n_pool: int
    world: int


def contrastive_similarities(
    anchor: torch.Tensor, candidates: torch.Tensor, negatives: str = "global", both_ways: bool = False
) -> ContrastiveSimilarities:
    """Cosine similarities for InfoNCE and retrieval.

    Args:
        anchor: (n_local, n_features), e.g. this rank's 3D representations.
        candidates: (n_local, n_features), the spectra representations of the same molecules.
        negatives: "global": inside a collective step under DDP the pool is every rank's molecules
            (gathered with gradient); "local": this rank's molecules. Identical in a single process.
        both_ways: also the candidates -> anchor similarities (symmetric InfoNCE).
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    anchor, candidates = F.normalize(anchor, dim=-1), F.normalize(candidates, dim=-1)
    n_local = anchor.shape[0]
    _, world = distributed_world() if negatives == "global" else (0, 1)
    if world == 1:
        sim = anchor @ candidates.T
        labels = torch.arange(n_local, device=sim.device)
        return ContrastiveSimilarities(sim, sim.T if both_ways else None, labels, n_local, 1)
    if both_ways:
        pool, offset = gather_rows(torch.cat([anchor, candidates], dim=-1))
        pool_anchor, pool_candidates = pool.split([anchor.shape[-1], candidates.shape[-1]], dim=-1)
    else:
        pool_candidates, offset = gather_rows(candidates)
    labels = offset + torch.arange(n_local, device=anchor.device)
    backward = candidates @ pool_anchor.T if both_ways else None
    return ContrastiveSimilarities(anchor @ pool_candidates.T, backward, labels, pool_candidates.shape[0], world)


def info_nce(
    anchor: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float,
    symmetric: bool = False,
    negatives: str = "global",
) -> torch.Tensor:
    """InfoNCE with in-batch negatives: cosine similarity / temperature, cross-entropy to the partner.

    Args:
        anchor: (n_molecules, n_features), e.g. 3D representations.
        candidates: (n_molecules, n_features), e.g. spectra representations of the same molecules.
        symmetric: average anchor->candidates and candidates->anchor (paper Eq. 7);
            otherwise only anchor->candidates (released code).
        negatives: "global" or "local" (see :func:`contrastive_similarities`).

    Returns:
        A scalar. In a single process, or with local negatives: the mean over this batch's
        molecules. With global negatives on W ranks holding N molecules in all: this rank's share,
        ``W / N * sum over its molecules``, so that the mean over ranks is the single-process loss of
        the concatenated batch, and so is DDP's average of the ranks' gradients (each rank's
        gradient reaches the other ranks' representations through the gather).
    """
    rows, sims = info_nce_terms(anchor, candidates, temperature, symmetric, negatives)
    if sims.world == 1:
        return rows.mean()
    return rows.sum() * (sims.world / sims.n_pool)


def info_nce_terms(
    anchor: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float,
    symmetric: bool = False,
    negatives: str = "global",
) -> Tuple[torch.Tensor, ContrastiveSimilarities]:
    """The InfoNCE term of each of this rank's molecules, (n_rank,), and the similarities it came from
    (their ``world`` and ``n_pool`` say how to weigh the terms); :func:`info_nce` and the ``InfoNCE``
    metric both reduce these."""
    sims = contrastive_similarities(anchor, candidates, negatives, both_ways=symmetric)
    rows = F.cross_entropy(sims.forward / temperature, sims.labels, reduction="none")
    if symmetric:
        rows = 0.5 * (rows + F.cross_entropy(sims.backward / temperature, sims.labels, reduction="none"))
    return rows, sims


class InfoNCELoss(nn.Module):
    """Contrastive loss between 3D and spectra representations (see :func:`info_nce`).

    Args:
        temperature: tau.
        symmetric: paper Eq. 7 (both directions) instead of 3D -> spectra only (released).
        negatives: "global" (default): under DDP every rank's molecules are negatives, so N
            devices with batch B train as one device with batch N * B; "local": each device's
            own batch only. The same in a single process.
    """

    def __init__(self, temperature: float = 0.07, symmetric: bool = False, negatives: str = "global"):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
        self.temperature = temperature
        self.symmetric = symmetric
        self.negatives = negatives

    def forward(self, anchor: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return info_nce(anchor, candidates, self.temperature, self.symmetric, self.negatives)


class SmoothedLoss(nn.Module):
    """A loss smoothed by an exponential moving average over batches (TorchMD-Net's
    ``ema_alpha_y`` / ``ema_alpha_dy``, released MD17 recipe: 0.05 on the energy).

    Returns ``alpha * loss + (1 - alpha) * previous``, where ``previous`` is the last
    returned value, detached (on the first batch: the loss itself); training and evaluation keep separate averages. Its value
    is smoothed, and its gradient is ``alpha`` times the loss's gradient: with
    ``loss_weight`` w the term is trained with weight ``alpha * w``. ``alpha = 1`` is the plain loss.
    """

    def __init__(self, loss_fn: nn.Module, alpha: float = 0.05):
        super().__init__()
        if not 0 < alpha <= 1:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.loss_fn = loss_fn
        self.alpha = alpha
        self.previous: Dict[bool, torch.Tensor] = {}

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(prediction, target)
        if self.alpha == 1:
            return loss
        previous = self.previous.get(self.training, loss.detach())  # first batch: the loss itself
        loss = self.alpha * loss + (1 - self.alpha) * previous.to(loss.device)
        self.previous[self.training] = loss.detach()
        return loss


class _SpectrumLoss(nn.Module):
    """A loss of predicted spectra over the molecules that have a target spectrum: ``prediction`` and
    ``target`` (n_molecules, n_points); molecules whose target is all zero (no spectrum of that
    modality, e.g. UV not computed) do not count, and a batch without any gives 0 (with a gradient,
    so every rank's backward pass matches). Subclasses define :meth:`loss` on the rows that count."""

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        present = has_spectrum(target)
        if not bool(present.any()):
            return prediction.sum() * 0.0
        return self.loss(prediction[present], target[present])


class SpectralInformationDivergenceLoss(_SpectrumLoss):
    """Mean spectral information divergence between predicted and target spectra (Chemprop-IR's
    loss; :func:`~schnetpack_molspectra.spectra.similarity.spectral_information_divergence`), over
    the molecules that have a target spectrum (:class:`_SpectrumLoss`)."""

    def __init__(self, floor: float = SID_FLOOR):
        super().__init__()
        self.floor = floor

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return spectral_information_divergence(prediction, target, self.floor).mean()


class SpectrumMSELoss(_SpectrumLoss):
    """Mean squared error of spectra each scaled to a maximum of 1, so every molecule counts alike
    whatever its intensities, over the molecules that have a target spectrum (:class:`_SpectrumLoss`)."""

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = prediction / prediction.amax(-1, keepdim=True).clamp_min(torch.finfo(prediction.dtype).tiny)
        t = target / target.amax(-1, keepdim=True)
        return ((p - t) ** 2).mean()


#: name -> loss of a predicted spectrum (``globals.spectra_loss`` of ``experiment=spectra_finetune``)
SPECTRUM_LOSSES = {"sid": SpectralInformationDivergenceLoss, "mse": SpectrumMSELoss}


def spectrum_loss(kind: str = "sid") -> nn.Module:
    """The loss of a predicted spectrum by name: "sid" (spectral information divergence of the
    area-normalised spectra, Chemprop-IR) or "mse" (squared error of the peak-normalised spectra)."""
    if kind not in SPECTRUM_LOSSES:
        raise ValueError(f"unknown spectrum loss {kind!r}; use one of {sorted(SPECTRUM_LOSSES)}")
    return SPECTRUM_LOSSES[kind]()
