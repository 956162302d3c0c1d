"""MolSpectra losses as SchNetPack model outputs, and the pre-training task.

Total loss = beta_D * denoising + beta_MPR * MPR + beta_C * contrastive, each term an
output in ``AtomisticTask.outputs`` with its ``loss_weight``. Every term logs its own
metrics as ``{train,val,test}_{name}_{metric}`` (e.g. ``val_mpr_mse``).
"""
import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MeanSquaredError, Metric
from schnetpack.task import AtomisticTask, UnsupervisedModelOutput

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.specformer import DEFAULT_MODALITIES

__all__ = [
    "SelfSupervisedOutput",
    "MaskedPatchReconstructionOutput",
    "InfoNCELoss",
    "InfoNCE",
    "RetrievalAccuracy",
    "WarmupCosineLR",
    "MolSpectraTask",
]


class SelfSupervisedOutput(UnsupervisedModelOutput):
    """A loss whose prediction *and* target are model outputs (no label in the batch).

    Args:
        name: term name used in logs (``train_{name}_{metric}``).
        prediction_key, target_key: keys of the model's result dict.
        loss_fn: ``loss_fn(prediction, target)``.
        optional: contribute nothing on batches without the target (e.g. auxiliary
            denoising while fine-tuning: only the training split is perturbed).
    """

    def __init__(
        self,
        name: str,
        prediction_key: str,
        target_key: str,
        loss_fn: Optional[nn.Module] = None,
        loss_weight: float = 1.0,
        metrics: Optional[Dict[str, Metric]] = None,
        optional: bool = False,
    ):
        super().__init__(name=name, loss_fn=loss_fn, loss_weight=loss_weight, metrics=metrics or {})
        self.prediction_key = prediction_key
        self.target_key = target_key
        self.optional = optional

    def _present(self, pred) -> bool:
        return not self.optional or (self.prediction_key in pred and self.target_key in pred)

    def _pair(self, pred):
        for key in (self.prediction_key, self.target_key):
            if key not in pred:
                raise KeyError(f"loss term '{self.name}' needs model output '{key}', model gave {sorted(pred)}")
        return pred[self.prediction_key], pred[self.target_key]

    def calculate_loss(self, pred, target=None):
        if self.loss_weight == 0 or self.loss_fn is None or not self._present(pred):
            return 0.0
        return self.loss_weight * self.loss_fn(*self._pair(pred))

    def update_metrics(self, pred, target, subset):
        if not self._present(pred):
            return
        prediction, reference = self._pair(pred)
        for metric in self.metrics[subset].values():
            metric(prediction, reference)


class MaskedPatchReconstructionOutput(UnsupervisedModelOutput):
    """MPR: MSE between reconstructed and clean masked patches, summed over modalities.

    Per modality the MSE is averaged over masked patches and patch points (as released);
    a modality with no masked patch (ratio 0) contributes 0. Logs ``{subset}_{name}_{m}_mse``
    per modality and their sum as ``{subset}_{name}_mse``.
    """

    def __init__(self, name: str = "mpr", modalities: Sequence[str] = DEFAULT_MODALITIES, loss_weight: float = 1.0):
        self.modalities = list(modalities)
        metrics = {f"{m}_mse": MeanMetric() for m in self.modalities}
        metrics["mse"] = MeanMetric()
        super().__init__(name=name, loss_fn=None, loss_weight=loss_weight, metrics=metrics)

    def per_modality(self, pred) -> Dict[str, torch.Tensor]:
        errors = {}
        for m in self.modalities:
            recon_key, target_key = msp.reconstructed_patches(m), msp.target_patches(m)
            if recon_key not in pred:
                raise KeyError(f"MPR loss needs '{recon_key}': is the {m} modality enabled in SpecFormer?")
            recon, target = pred[recon_key], pred[target_key]
            errors[m] = F.mse_loss(recon, target) if recon.numel() else recon.new_zeros(())
        return errors

    def calculate_loss(self, pred, target=None):
        if self.loss_weight == 0:
            return 0.0
        return self.loss_weight * sum(self.per_modality(pred).values())

    def update_metrics(self, pred, target, subset):
        errors = {m: e.detach() for m, e in self.per_modality(pred).items()}
        for m, e in errors.items():
            self.metrics[subset][f"{m}_mse"](e)
        self.metrics[subset]["mse"](sum(errors.values()))


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
        sim = F.normalize(anchor.detach(), dim=-1) @ F.normalize(candidates.detach(), dim=-1).T
        hits = (sim.argmax(-1) == torch.arange(sim.shape[0], device=sim.device)).float()
        super().update(hits.mean(), weight=hits.numel())


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr`` at ``total_steps`` (per step)."""

    def __init__(self, optimizer, warmup_steps: int = 10_000, total_steps: int = 400_000, min_lr: float = 1e-7):
        base = optimizer.param_groups[0]["lr"]
        floor = min(min_lr / base, 1.0) if base > 0 else 0.0

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor)


class MolSpectraTask(AtomisticTask):
    """``AtomisticTask`` that can step its LR scheduler every optimiser step.

    Args:
        scheduler_interval: "epoch" (SchNetPack's default) or "step" (the released
            MolSpectra schedules are in steps).
    """

    def __init__(self, *args, scheduler_interval: str = "epoch", **kwargs):
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        super().__init__(*args, **kwargs)
        self.scheduler_interval = scheduler_interval

    def configure_optimizers(self):
        configured = super().configure_optimizers()
        if isinstance(configured, tuple) and self.scheduler_interval == "step":
            optimizers, schedulers = configured
            for conf in schedulers:
                conf["interval"] = "step"
                conf["frequency"] = 1
            return optimizers, schedulers
        return configured
