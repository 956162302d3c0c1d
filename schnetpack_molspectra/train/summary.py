"""End-of-run summary of pre-training: did it learn, where is the model, what to run next."""

import atexit
import json
import os
import shlex
from typing import Dict, List, Optional

import schnetpack.properties as structure
import torch
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning import Callback
from pytorch_lightning.utilities import rank_zero_only

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.train.metrics import retrieval_hits

__all__ = ["PretrainingSummary", "summarise_validation", "encoder_overrides"]


def summarise_validation(task, dataloader, max_molecules: Optional[int] = None) -> Dict[str, float]:
    """Each loss term of ``task`` (unweighted, averaged over batches) on ``dataloader``, and the
    3D -> spectra retrieval top-1 over all its molecules at once, with chance = 1 / molecules, and
    where the task augments spectra (``MolSpectraTask.perturbed_batch``) the same top-1 with every
    molecule's spectra perturbed (``retrieval_top1_perturbed``).

    An MSE term (denoising) is reported relative to the MSE of predicting zero, so 1.0 means
    nothing learned whatever the scale of its target (the denoising head's running noise
    scale is still 1 before the first training step and about the noise sigma after).

    The model runs in eval mode as in validation; its training mode is restored after."""
    was_training = task.training
    task.eval()
    sums: Dict[str, float] = {}
    zero_baseline: Dict[str, float] = {}
    n_batches, n_molecules = 0, 0
    reps_3d, reps_spectra, perturbed_3d, perturbed_spectra = [], [], [], []
    try:
        for i, batch in enumerate(dataloader):
            batch = {k: v.to(task.device) for k, v in batch.items()}
            with torch.set_grad_enabled(task.grad_enabled):
                pred = task.predict_without_postprocessing(batch)
                perturbed = getattr(task, "perturbed_batch", lambda *_: None)(batch, i)
                if perturbed is not None:
                    perturbed = task.predict_without_postprocessing(perturbed)
                    perturbed_3d.append(perturbed[msp.representation_3d].detach())
                    perturbed_spectra.append(perturbed[msp.representation_spectra].detach())
            targets = {
                o.target_property: batch[o.target_property]
                for o in task.outputs
                if getattr(o, "target_property", None) in batch
            }
            for output in task.outputs:
                if output.loss_weight == 0:
                    continue
                loss = output.calculate_loss(pred, targets)
                sums[output.name] = sums.get(output.name, 0.0) + float(loss) / output.loss_weight
                if isinstance(getattr(output, "loss_fn", None), torch.nn.MSELoss) and output.target_key in pred:
                    baseline = float(pred[output.target_key].detach().pow(2).mean())
                    zero_baseline[output.name] = zero_baseline.get(output.name, 0.0) + baseline
            if msp.representation_3d in pred and msp.representation_spectra in pred:
                reps_3d.append(pred[msp.representation_3d].detach())
                reps_spectra.append(pred[msp.representation_spectra].detach())
            n_batches += 1
            n_molecules += len(batch[structure.n_atoms])
            if max_molecules is not None and n_molecules >= max_molecules:
                break
    finally:
        task.train(was_training)
    summary = {name: total / (zero_baseline.get(name) or max(n_batches, 1)) for name, total in sums.items()}
    summary["molecules"] = n_molecules
    summary["relative"] = sorted(zero_baseline)
    if reps_3d:
        summary["retrieval_top1"] = retrieval_hits(torch.cat(reps_3d), torch.cat(reps_spectra)).float().mean().item()
        summary["retrieval_chance"] = 1.0 / n_molecules
    if perturbed_3d:
        hits = retrieval_hits(torch.cat(perturbed_3d), torch.cat(perturbed_spectra))
        summary["retrieval_top1_perturbed"] = hits.float().mean().item()
    return summary


def encoder_overrides() -> List[str]:
    """The command-line overrides of the hydra run in progress that shape the encoder
    (``model/representation=...``, ``model.representation.*``, ``globals.cutoff``): a fine-tuning run
    must repeat them to take the pre-trained encoder. Empty outside a hydra run."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # no hydra run in progress
        return []
    return [
        o
        for o in overrides
        if o.lstrip("+~").startswith(("model.representation.", "model/representation=", "globals.cutoff="))
    ]


class PretrainingSummary(Callback):
    """Prints, at the end of a pre-training run, each loss on the validation split at the start
    and at the end, the 3D -> spectra retrieval top-1 next to chance, where ``best_model`` is,
    and the command that fine-tunes it, once, after the test stage (or when the process ends); also
    written to ``<run dir>/pretraining_summary.{json,txt}`` as soon as fitting ends.

    Args:
        max_molecules: validation molecules to evaluate (all if None).
        finetune_command: the command printed with the model's path appended, and the run's
            encoder overrides (:func:`encoder_overrides`) after it.
    """

    def __init__(
        self,
        max_molecules: Optional[int] = 2000,
        finetune_command: str = "spktrain experiment=qm9_finetune globals.property=gap globals.pretrained_model=",
    ):
        self.max_molecules = max_molecules
        self.finetune_command = finetune_command
        self.start: Optional[Dict[str, float]] = None
        self.text: Optional[str] = None
        self.printed = False

    def _evaluate(self, trainer, task) -> Dict[str, float]:
        return summarise_validation(task, trainer.datamodule.val_dataloader(), self.max_molecules)

    def on_train_start(self, trainer, task):
        if trainer.is_global_zero and self.start is None:
            self.start = self._evaluate(trainer, task)

    def on_fit_end(self, trainer, task):
        if trainer.is_global_zero:
            self._report(trainer, task)

    def teardown(self, trainer, task, stage):
        if stage == "test" and trainer.is_global_zero:  # spktrain tests after fitting: after its output
            self._print_once()

    def _print_once(self):
        if self.text and not self.printed:
            self.printed = True
            print("\n" + self.text, flush=True)

    @staticmethod
    def _best_model(trainer) -> Optional[str]:
        for callback in trainer.callbacks:
            path = getattr(callback, "model_path", None)
            if path:
                return os.path.abspath(path)
        return None

    @rank_zero_only
    def _report(self, trainer, task):
        end = self._evaluate(trainer, task)
        start = self.start or {}
        best = self._best_model(trainer)
        result = {
            "start": start,
            "end": end,
            "best_model": best,
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
        }
        lines = [
            f"MolSpectra pre-training summary ({trainer.global_step} steps, {end['molecules']} validation molecules)"
        ]
        retrieval = ("retrieval_top1", "retrieval_chance", "retrieval_top1_perturbed")
        for name in [k for k in end if k not in ("molecules", "relative", *retrieval)]:
            relative = "  (MSE / MSE of predicting zero)" if name in end.get("relative", ()) else ""
            lines.append(f"  {name:<22s} loss {start.get(name, float('nan')):9.4f} -> {end[name]:9.4f}{relative}")
        if "retrieval_top1" in end:
            lines.append(
                f"  3D->spectra top-1      {start.get('retrieval_top1', float('nan')):9.4f} -> {end['retrieval_top1']:9.4f}"
                f"   (chance {end['retrieval_chance']:.4f}, {end['retrieval_top1'] / end['retrieval_chance']:.1f}x)"
            )
        if "retrieval_top1_perturbed" in end:
            lines.append(
                f"  ... perturbed spectra  {start.get('retrieval_top1_perturbed', float('nan')):9.4f} -> "
                f"{end['retrieval_top1_perturbed']:9.4f}   (every molecule's spectra augmented, a fixed draw)"
            )
        if best and os.path.exists(best):
            lines.append(f"  best model: {best}")
            command = " ".join([self.finetune_command + shlex.quote(best), *map(shlex.quote, encoder_overrides())])
            lines.append(f"  fine-tune it: {command}")
            result["finetune_command"] = command
        else:
            lines.append("  best model: none written (no validation improvement logged)")
        text = self.text = "\n".join(lines)
        # printed once: after the test stage that spktrain runs next, or when the process ends
        atexit.register(self._print_once)
        root = os.getcwd()  # spktrain runs in the run directory (hydra.job.chdir)
        with open(os.path.join(root, "pretraining_summary.json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(root, "pretraining_summary.txt"), "w") as f:
            f.write(text + "\n")
