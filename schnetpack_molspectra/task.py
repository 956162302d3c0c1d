"""MolSpectra losses as SchNetPack model outputs, and the pre-training task.

Total loss = beta_D * denoising + beta_MPR * MPR + beta_C * contrastive, each term an
output in ``AtomisticTask.outputs`` with its ``loss_weight``. Every term logs its own
metrics as ``{train,val,test}_{name}_{metric}`` (e.g. ``val_mpr_mse``).
"""
import inspect
import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, Metric
from schnetpack.task import AtomisticTask, UnsupervisedModelOutput

import schnetpack_molspectra.properties as msp

__all__ = [
    "SelfSupervisedOutput",
    "DenoisingOutput",
    "ContrastiveOutput",
    "MaskedPatchReconstructionOutput",
    "InfoNCELoss",
    "SmoothedLoss",
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

    def __init__(self, name: str = "mpr", modalities: Sequence[str] = msp.modalities, loss_weight: float = 1.0):
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


class DenoisingOutput(SelfSupervisedOutput):
    """The denoising term: ``predicted_noise`` against ``noise_target``, the outputs of
    ``DenoisingHead`` (MSE unless ``loss_fn`` is given)."""

    def __init__(
        self,
        name: str = "denoising",
        loss_fn: Optional[nn.Module] = None,
        loss_weight: float = 1.0,
        metrics: Optional[Dict[str, Metric]] = None,
        optional: bool = False,
    ):
        loss_fn = nn.MSELoss() if loss_fn is None else loss_fn
        super().__init__(name, msp.predicted_noise, msp.noise_target, loss_fn, loss_weight, metrics, optional)


class ContrastiveOutput(SelfSupervisedOutput):
    """The contrastive term: ``representation_3d`` against ``representation_spectra``
    (:class:`InfoNCELoss` with its defaults unless ``loss_fn`` is given)."""

    def __init__(
        self,
        name: str = "contrastive",
        loss_fn: Optional[nn.Module] = None,
        loss_weight: float = 1.0,
        metrics: Optional[Dict[str, Metric]] = None,
    ):
        loss_fn = InfoNCELoss() if loss_fn is None else loss_fn
        super().__init__(name, msp.representation_3d, msp.representation_spectra, loss_fn, loss_weight, metrics)


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


def resolve_steps(steps: float, run_steps: Optional[int], name: str) -> int:
    """A step count given absolutely (an int >= 1) or as a fraction of the run (a float in (0, 1])."""
    if isinstance(steps, float) and 0 < steps <= 1:
        if run_steps is None or not math.isfinite(run_steps):
            raise ValueError(
                f"{name}={steps} is a fraction of the run, but the run's length is unknown: "
                f"set trainer.max_epochs or trainer.max_steps, or give {name} in steps"
            )
        return max(1, round(steps * run_steps))
    if steps < 0 or steps != int(steps):
        raise ValueError(f"{name} must be a whole number of steps or a fraction in (0, 1], got {steps}")
    return int(steps)


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up, then cosine annealing to ``min_lr`` (optionally with warm restarts), per step.

    As in the released MolSpectra / TorchMD-Net code, the cosine is counted from step 0 and
    the warm-up overrides it for the first ``warmup_steps`` steps: the learning rate is
    ``lr * (step + 1) / warmup_steps`` during warm-up, then ``min_lr + (lr - min_lr) *
    (1 + cos(pi * t / T)) / 2``, with t the step within the current cosine period of length T.

    Args:
        warmup_steps: length of the linear warm-up.
        total_steps: length of the (first) cosine period. Without restarts the learning rate
            stays at ``min_lr`` after it.
        restart_mult: None: one cosine (pre-training: ``CosineAnnealingLR``). A number:
            warm restarts, each period ``restart_mult`` times longer than the one before
            (QM9 fine-tuning: ``CosineAnnealingWarmRestarts(T_0=total_steps, T_mult=2)``).
        run_steps: the run's number of optimiser steps (``MolSpectraTask`` passes Lightning's
            ``trainer.estimated_stepping_batches``). ``warmup_steps`` and ``total_steps`` given
            as a float in (0, 1] are fractions of it, so a schedule scales with the run.
    """

    def __init__(
        self,
        optimizer,
        warmup_steps: float = 10_000,
        total_steps: float = 400_000,
        min_lr: float = 1e-7,
        restart_mult: Optional[float] = None,
        run_steps: Optional[int] = None,
    ):
        warmup = resolve_steps(warmup_steps, run_steps, "warmup_steps")
        period = max(1, resolve_steps(total_steps, run_steps, "total_steps"))
        if restart_mult is not None and restart_mult < 1:
            raise ValueError(f"restart_mult must be >= 1, got {restart_mult}")
        self.warmup_steps, self.period = warmup, period
        base = optimizer.param_groups[0]["lr"]
        floor = min(min_lr / base, 1.0) if base > 0 else 0.0

        def position(step: int) -> float:
            """Fraction of the current cosine period that has passed."""
            if restart_mult is None:
                return min(1.0, step / period)
            if restart_mult == 1:
                return (step % period) / period
            cycle = int(math.log(step / period * (restart_mult - 1) + 1, restart_mult))
            start = period * (restart_mult**cycle - 1) / (restart_mult - 1)
            length = period * restart_mult**cycle
            if step < start:  # floating-point edge at a cycle boundary
                start, length = start - length / restart_mult, length / restart_mult
            elif step >= start + length:
                start, length = start + length, length * restart_mult
            return (step - start) / length

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * position(step)))

        super().__init__(optimizer, factor)


class MolSpectraTask(AtomisticTask):
    """``AtomisticTask`` that can step its LR scheduler every optimiser step.

    Args:
        scheduler_interval: "epoch" (SchNetPack's default) or "step" (the released
            MolSpectra schedules are in steps).

    A scheduler that takes ``run_steps`` (``WarmupCosineLR``) gets the run's number of
    optimiser steps, ``trainer.estimated_stepping_batches``, so its lengths can be fractions
    of the run.
    """

    def __init__(self, *args, scheduler_interval: str = "epoch", **kwargs):
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        super().__init__(*args, **kwargs)
        self.scheduler_interval = scheduler_interval

    def configure_optimizers(self):
        if self.scheduler_cls is not None and "run_steps" in inspect.signature(self.scheduler_cls).parameters:
            self.scheduler_kwargs = {**(self.scheduler_kwargs or {}), "run_steps": self.trainer.estimated_stepping_batches}
        configured = super().configure_optimizers()
        if isinstance(configured, tuple) and self.scheduler_interval == "step":
            optimizers, schedulers = configured
            for conf in schedulers:
                conf["interval"] = "step"
                conf["frequency"] = 1
            return optimizers, schedulers
        return configured
