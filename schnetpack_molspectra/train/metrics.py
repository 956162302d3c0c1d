"""Metrics logged by MolSpectra tasks (torchmetrics).

Under DDP torchmetrics sums each metric's state over ranks when it is computed (epoch values of
validation and test); the contrastive metrics weight their updates so that the reduced value is
that of one process on the concatenated batches (see :class:`InfoNCE`).
"""

import torch
from torchmetrics import MeanMetric
from torchmetrics.regression import MeanAbsoluteError

from schnetpack_molspectra.train.losses import NEGATIVES, contrastive_similarities, info_nce_terms

__all__ = ["retrieval_hits", "InfoNCE", "RetrievalAccuracy", "ScaledMeanAbsoluteError"]


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
