"""Metrics logged by MolSpectra tasks (torchmetrics)."""
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.regression import MeanAbsoluteError

from schnetpack_molspectra.train.losses import info_nce

__all__ = ["retrieval_hits", "InfoNCE", "RetrievalAccuracy", "ScaledMeanAbsoluteError"]


def retrieval_hits(anchor: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Per molecule (row), whether its own candidate is the most cosine-similar one, (n_molecules,) bool."""
    sim = F.normalize(anchor, dim=-1) @ F.normalize(candidates, dim=-1).T
    return sim.argmax(-1) == torch.arange(sim.shape[0], device=sim.device)


class InfoNCE(MeanMetric):
    """Batch-averaged InfoNCE value, for logging."""

    def __init__(self, temperature: float = 0.07, symmetric: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        self.symmetric = symmetric

    def update(self, anchor: torch.Tensor, candidates: torch.Tensor):
        super().update(info_nce(anchor.detach(), candidates.detach(), self.temperature, self.symmetric))


class RetrievalAccuracy(MeanMetric):
    """Fraction of molecules whose own spectra are the most similar to their 3D representation."""

    def update(self, anchor: torch.Tensor, candidates: torch.Tensor):
        hits = retrieval_hits(anchor.detach(), candidates.detach()).float()
        super().update(hits.mean(), weight=hits.numel())


class ScaledMeanAbsoluteError(MeanAbsoluteError):
    """MAE multiplied by ``scale`` (e.g. 1000: eV -> meV)."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def compute(self):
        return super().compute() * self.scale
