"""Loss functions of MolSpectra (``loss_fn`` of the task's model outputs)."""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["info_nce", "InfoNCELoss", "SmoothedLoss"]


def info_nce(anchor: torch.Tensor, candidates: torch.Tensor, temperature: float, symmetric: bool) -> torch.Tensor:
    """InfoNCE with in-batch negatives: cosine similarity / temperature, cross-entropy to the diagonal.

    Args:
        anchor: (n_molecules, n_features), e.g. 3D representations.
        candidates: (n_molecules, n_features), e.g. spectra representations of the same molecules.
        symmetric: average anchor->candidates and candidates->anchor (paper Eq. 7);
            otherwise only anchor->candidates (released code).
    """
    logits = F.normalize(anchor, dim=-1) @ F.normalize(candidates, dim=-1).T / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss


class InfoNCELoss(nn.Module):
    """Contrastive loss between 3D and spectra representations (see :func:`info_nce`)."""

    def __init__(self, temperature: float = 0.07, symmetric: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.symmetric = symmetric

    def forward(self, anchor: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return info_nce(anchor, candidates, self.temperature, self.symmetric)


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
