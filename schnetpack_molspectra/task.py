"""MolSpectra's loss terms as SchNetPack model outputs, and the task.

Loss functions, metrics and LR schedules are in ``schnetpack_molspectra.train``. Total loss =
beta_D * denoising + beta_MPR * MPR + beta_C * contrastive, each term an
output in ``AtomisticTask.outputs`` with its ``loss_weight``. Every term logs its own
metrics as ``{train,val,test}_{name}_{metric}`` (e.g. ``val_mpr_mse``).
"""

import inspect
import logging
import os
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule, seed_everything
from pytorch_lightning.utilities import rank_zero_only
from schnetpack import properties as structure
from schnetpack.task import AtomisticTask, UnsupervisedModelOutput
from torch import nn
from torchmetrics import MeanMetric, Metric

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.distributed import collective_step
from schnetpack_molspectra.provenance import record_written
from schnetpack_molspectra.train.losses import InfoNCELoss, SmoothedLoss
from schnetpack_molspectra.train.metrics import RetrievalAccuracy
from schnetpack_molspectra.train.trainer import LIGHTNING_WEIGHTS_ONLY, may_unpickle
from schnetpack_molspectra.transform import SpectraAugmentation

log = logging.getLogger(__name__)

__all__ = [
    "SelfSupervisedOutput",
    "DenoisingOutput",
    "ContrastiveOutput",
    "MaskedPatchReconstructionOutput",
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
            # no patch to reconstruct (ratio 0, or every molecule withheld the modality): 0, with
            # the graph kept so that under DDP the reconstruction head still counts as used
            errors[m] = F.mse_loss(recon, target) if recon.numel() else recon.sum() * 0.0
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
    (:class:`InfoNCELoss` with its defaults unless ``loss_fn`` is given; under DDP its
    ``negatives`` choose every rank's molecules, "global", or the device's own, "local")."""

    def __init__(
        self,
        name: str = "contrastive",
        loss_fn: Optional[nn.Module] = None,
        loss_weight: float = 1.0,
        metrics: Optional[Dict[str, Metric]] = None,
    ):
        loss_fn = InfoNCELoss() if loss_fn is None else loss_fn
        super().__init__(name, msp.representation_3d, msp.representation_spectra, loss_fn, loss_weight, metrics)


_LOG_SIGNATURE = inspect.signature(LightningModule.log)
#: seed of the perturbed validation spectra (plus the batch index)
PERTURBED_VALIDATION_SEED = 12345


class MolSpectraTask(AtomisticTask):
    """``AtomisticTask`` that can step its LR scheduler every optimiser step, and that trains
    under DDP (``trainer=ddp_trainer``, ``trainer.devices=N trainer.num_nodes=M``) as one process would.

    Args:
        scheduler_interval: "epoch" (SchNetPack's default) or "step" (the released
            MolSpectra schedules are in steps).
        augmentation: a ``transform.SpectraAugmentation`` (beyond the paper): with ``p > 0`` it
            perturbs each training batch's spectra; whenever the batches carry stick spectra,
            validation also logs ``val_perturbed_top1``, the 3D -> spectra top-1 with every
            molecule's spectra perturbed by a fixed draw (:meth:`perturbed_batch`), beside the
            clean ``val_contrastive_top1``.

    A scheduler that takes ``run_steps`` (``WarmupCosineLR``) gets the run's number of
    optimiser steps, ``trainer.estimated_stepping_batches``, so its lengths can be fractions
    of the run.

    Under DDP:

    - training, validation and test steps run inside ``distributed.collective_step``: there the
      contrastive loss and metrics with global negatives gather every rank's representations,
      ``SyncBatchNorm1d`` (``sync_batchnorm``) shares statistics, and the denoising head's running
      noise statistics add every rank's targets;
    - values logged with ``self.log`` (``train_loss``, ``val_loss``, ``test_loss``) are averaged over
      ranks (``sync_dist``), so checkpointing and early stopping see the same validation loss on every
      rank; torchmetrics metrics reduce their own states;
    - every rank takes rank 0's seed at setup (``spktrain`` without ``seed=`` draws one per process),
      so the distributed sampler shards each epoch's permutation without overlap; data-augmentation
      draws still differ per rank (``transform.rank_generator``);
    - ``save_model`` writes on global rank 0 only;
    - checkpoints carry, besides the weights and buffers (running noise and BatchNorm statistics),
      optimiser and LR-schedule state that Lightning saves, the running averages of
      ``SmoothedLoss`` terms, so a resumed run continues them.
    """

    def __init__(
        self, *args, scheduler_interval: str = "epoch", augmentation: Optional[SpectraAugmentation] = None, **kwargs
    ):
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        super().__init__(*args, **kwargs)
        self.scheduler_interval = scheduler_interval
        self.augmentation = augmentation
        if augmentation is not None:
            contrastive = [o for o in self.outputs if isinstance(o, ContrastiveOutput)]
            negatives = getattr(contrastive[0].loss_fn, "negatives", "global") if contrastive else "global"
            self.val_perturbed_top1 = RetrievalAccuracy(negatives)
        self._augmentation_generator = None

    def configure_optimizers(self):
        if self.scheduler_cls is not None and "run_steps" in inspect.signature(self.scheduler_cls).parameters:
            self.scheduler_kwargs = {
                **(self.scheduler_kwargs or {}),
                "run_steps": self.trainer.estimated_stepping_batches,
            }
        configured = super().configure_optimizers()
        if isinstance(configured, tuple) and self.scheduler_interval == "step":
            optimizers, schedulers = configured
            for conf in schedulers:
                conf["interval"] = "step"
                conf["frequency"] = 1
            return optimizers, schedulers
        return configured

    # --- distributed data parallel ------------------------------------------------------------

    def setup(self, stage=None):
        super().setup(stage)
        self._share_seed()

    def _share_seed(self):
        """Under DDP, reseed every rank whose seed differs from rank 0's with rank 0's (before the
        dataloaders, and so Lightning's ``DistributedSampler``, are made: it shuffles with
        ``PL_GLOBAL_SEED``, which must be one value on all ranks for the shards to be disjoint)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return
        seed = os.environ.get("PL_GLOBAL_SEED")
        shared = trainer.strategy.broadcast(seed, src=0)
        if shared is not None and shared != seed:
            log.info(f"rank {trainer.global_rank}: seed {seed} -> rank 0's seed {shared}")
            seed_everything(int(shared), workers=os.environ.get("PL_SEED_WORKERS") == "1", verbose=False)

    def _training_generator(self, device) -> Optional[torch.Generator]:
        """Augmentation draws: torch's global generator in one process; under DDP a generator on the
        batch's device seeded from the global one and the rank, so ranks draw differently."""
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        if self._augmentation_generator is None:
            seed = int(torch.randint(0, 2**62, (1,))) + 1_000_003 * trainer.global_rank
            self._augmentation_generator = torch.Generator(device=device).manual_seed(seed)
        return self._augmentation_generator

    def training_step(self, batch, batch_idx):
        if self.augmentation is not None and self.augmentation.p > 0:
            batch = self.augmentation(batch, generator=self._training_generator(batch[structure.R].device))
        with collective_step():
            return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        with collective_step():
            out = super().validation_step(batch, batch_idx)
            perturbed = self.perturbed_batch(batch, batch_idx)
            if perturbed is not None:
                pred = self.predict_without_postprocessing(perturbed)
                self.val_perturbed_top1(pred[msp.representation_3d], pred[msp.representation_spectra])
                self.log("val_perturbed_top1", self.val_perturbed_top1, on_step=False, on_epoch=True)
            return out

    def perturbed_batch(self, batch, batch_idx: int):
        """``batch`` with every molecule's spectra augmented by a draw fixed by ``batch_idx`` (the
        same perturbed spectra at every validation), or None without augmentation or sticks."""
        if self.augmentation is None or not self.augmentation.has_sticks(batch):
            return None
        generator = torch.Generator(device=batch[structure.R].device)
        generator.manual_seed(PERTURBED_VALIDATION_SEED + batch_idx)
        return self.augmentation(batch, generator=generator, p=1.0)

    def test_step(self, batch, batch_idx):
        with collective_step():
            return super().test_step(batch, batch_idx)

    def log(self, name, value, *args, **kwargs):
        """``LightningModule.log`` with ``sync_dist=True`` by default for plain values (mean over
        ranks under DDP; nothing changes in a single process). Metrics reduce their own states."""
        if not isinstance(value, Metric):
            given = _LOG_SIGNATURE.bind_partial(self, name, value, *args, **kwargs).arguments
            if "sync_dist" not in given:  # neither by position nor by name
                kwargs["sync_dist"] = True
        return super().log(name, value, *args, **kwargs)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """``LightningModule.load_from_checkpoint``; a checkpoint a run of yours wrote (``spktrain``
        reloads its best one to save ``best_model``) loads with ``weights_only=False``; any other one
        only if it reads with ``weights_only=True``, unless ``weights_only=False`` is given, the
        opt-in (``train.trainer.may_unpickle``)."""
        if kwargs.get("weights_only") is None:
            full = may_unpickle(checkpoint_path, False, "weights_only=False (MolSpectraTask.load_from_checkpoint)")
            if LIGHTNING_WEIGHTS_ONLY:
                kwargs["weights_only"] = not full
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def save_model(self, path: str, do_postprocessing: Optional[bool] = None):
        # spktrain saves best_model from a task loaded from the best checkpoint on every rank; that
        # task has no trainer (so global_rank is 0 everywhere): ask the process's rank instead
        if getattr(rank_zero_only, "rank", 0) == 0:
            super().save_model(path, do_postprocessing)
            record_written(path)  # a best_model of your run: later read without asking (provenance)

    def _smoothed_losses(self) -> Dict[str, SmoothedLoss]:
        return {o.name: o.loss_fn for o in self.outputs if isinstance(getattr(o, "loss_fn", None), SmoothedLoss)}

    def on_save_checkpoint(self, checkpoint):
        state = {
            name: {("train" if mode else "eval"): value.detach().cpu() for mode, value in loss.previous.items()}
            for name, loss in self._smoothed_losses().items()
        }
        if state:
            checkpoint["molspectra_smoothed_losses"] = state

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("molspectra_smoothed_losses", {})
        for name, loss in self._smoothed_losses().items():
            loss.previous = {mode == "train": value for mode, value in state.get(name, {}).items()}
