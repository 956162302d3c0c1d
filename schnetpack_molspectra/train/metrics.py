"""Metrics logged by MolSpectra tasks (torchmetrics).

Under DDP torchmetrics sums each metric's state over ranks when it is computed (epoch values of
validation and test); the contrastive metrics weight their updates so that the reduced value is
that of one process on the concatenated batches (see :class:`InfoNCE`).
"""

import torch
from torchmetrics import MeanMetric
from torchmetrics.regression import MeanAbsoluteError

from schnetpack_molspectra.spectra.similarity import SIMILARITY_MEASURES, has_spectrum, similarity
from schnetpack_molspectra.train.losses import NEGATIVES, contrastive_similarities, info_nce_terms

__all__ = [
    "retrieval_hits",
    "InfoNCE",
    "RetrievalAccuracy",
    "ScaledMeanAbsoluteError",
    "SpectralSimilarity",
    "spectra_metrics",
]


def retrieval_hits(anchor: torch.Tensor, candidates: torch.Tensor, negatives: str = "global") -> torch.Tensor:
    """Per molecule (row) of ``anchor`` (n_molecules, n_features), whether its own candidate is the
    most cosine-similar one among ``candidates`` (n_molecules, n_features) — with global negatives
    inside a collective step under DDP, among every rank's candidates. (n_molecules,) bool."""
    sims = contrastive_similarities(anchor, candidates, negatives)
    return sims.forward.argmax(-1) == sims.labels


def _check_negatives(negatives: str) -> str:
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    return negatives


class InfoNCE(MeanMetric):
    """Batch-averaged InfoNCE value, for logging (the loss's ``temperature``, ``symmetric`` and
    ``negatives``).

    In a single process, or with local negatives, each batch's InfoNCE counts once. With global
    negatives on W ranks each rank adds the mean of its molecules' terms with weight
    n_rank / N (N molecules in the step), so the value reduced over ranks counts each global batch
    once, as one process on the concatenated batch would.
    """

    def __init__(self, temperature: float = 0.07, symmetric: bool = False, negatives: str = "global", **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        self.symmetric = symmetric
        self.negatives = _check_negatives(negatives)

    def update(self, anchor: torch.Tensor, candidates: torch.Tensor):
        """anchor, candidates: (n_molecules, n_features) representations of the same molecules."""
        rows, sims = info_nce_terms(
            anchor.detach(), candidates.detach(), self.temperature, self.symmetric, self.negatives
        )
        if rows.numel() == 0:
            return
        super().update(rows.mean(), weight=1.0 if sims.world == 1 else rows.numel() / sims.n_pool)


class RetrievalAccuracy(MeanMetric):
    """Fraction of molecules whose own spectra are the most similar to their 3D representation,
    among the batch's (global negatives under DDP: all ranks') spectra; each molecule counts once."""

    def __init__(self, negatives: str = "global", **kwargs):
        super().__init__(**kwargs)
        self.negatives = _check_negatives(negatives)

    def update(self, anchor: torch.Tensor, candidates: torch.Tensor):
        """anchor, candidates: (n_molecules, n_features) representations of the same molecules."""
        hits = retrieval_hits(anchor.detach(), candidates.detach(), self.negatives).float()
        if hits.numel():
            super().update(hits.mean(), weight=hits.numel())


class ScaledMeanAbsoluteError(MeanAbsoluteError):
    """MAE multiplied by ``scale`` (e.g. 1000: eV -> meV)."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def compute(self):
        return super().compute() * self.scale


class SpectralSimilarity(MeanMetric):
    """Mean similarity of predicted and target spectra over molecules: ``measure`` = "sis"
    (1 / (1 + SID)), "cosine" or "spearman" (:mod:`schnetpack_molspectra.spectra.similarity`).
    Each molecule with a target spectrum counts once; those without (all-zero target) not at all."""

    def __init__(self, measure: str = "sis", **kwargs):
        super().__init__(**kwargs)
        similarity(measure, torch.ones(1, 2), torch.ones(1, 2))  # an unknown measure fails here
        self.measure = measure

    def update(self, prediction: torch.Tensor, target: torch.Tensor):
        """prediction, target: (n_molecules, n_points)."""
        present = has_spectrum(target)
        if bool(present.any()):
            values = similarity(self.measure, prediction.detach()[present], target.detach()[present])
            super().update(values.mean(), weight=values.numel())


def spectra_metrics(measures=tuple(SIMILARITY_MEASURES)):
    """``{measure: SpectralSimilarity(measure)}``: the metrics of one predicted spectrum (logged
    as ``{subset}_{spectrum key}_{measure}``, e.g. ``val_ir_spectrum_sis``)."""
    return {m: SpectralSimilarity(m) for m in measures}
