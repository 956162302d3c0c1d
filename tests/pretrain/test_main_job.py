"""The main job - ``spktrain experiment=molspectra_pretrain`` from an empty directory - run once
for the suite (the ``main_job`` fixture, tests/conftest.py): the shipped default dataset, a
schedule sized to the run, the three loss terms logged, the end-of-run summary; its configuration
(a finite run, the released schedule one preset away) and the summary's figures on a hand-made batch."""

import json
import os

import numpy as np
import pytest
import torch
from ase.db import connect
from hydra import compose, initialize_config_module

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.default import default_dataset_path
from schnetpack_molspectra.data.sticks import load_sticks
from schnetpack_molspectra.task import SelfSupervisedOutput
from schnetpack_molspectra.train.logs import read_scalars
from schnetpack_molspectra.train.summary import summarise_validation


def compose_train(*overrides):
    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("experiment", ["molspectra_pretrain", "denoise_pretrain"])
def test_pretraining_runs_are_finite_and_their_schedule_is_sized_to_them(experiment):
    cfg = compose_train(f"experiment={experiment}")
    assert 0 < cfg.trainer.max_steps <= 5000 and cfg.trainer.max_epochs == -1
    assert (cfg.globals.warmup_steps, cfg.globals.total_steps) == (0.05, 1.0)  # fractions of the run
    assert cfg.task.scheduler_cls == "schnetpack_molspectra.train.WarmupCosineLR"
    assert cfg.callbacks.pretraining_summary._target_ == "schnetpack_molspectra.train.PretrainingSummary"
    released = compose_train(f"experiment={experiment}", "+schedule=pretrain_released")
    assert (released.globals.warmup_steps, released.globals.total_steps, released.trainer.max_steps) == (
        10_000,
        400_000,
        400_000,
    )
    assert released.data.batch_size == 128 and released.trainer.max_epochs == -1


class _Task(torch.nn.Module):
    """Stands in for an AtomisticTask: a fixed 'model' and the denoising + contrastive outputs."""

    grad_enabled = False

    def __init__(self, noise_scale):
        super().__init__()
        self.noise_scale = noise_scale
        self.outputs = torch.nn.ModuleList(
            [
                SelfSupervisedOutput("denoising", msp.predicted_noise, msp.noise_target, torch.nn.MSELoss()),
                SelfSupervisedOutput(
                    "contrastive",
                    msp.representation_3d,
                    msp.representation_spectra,
                    torch.nn.MSELoss(),
                    loss_weight=0.5,
                ),
            ]
        )

    @property
    def device(self):
        return torch.device("cpu")

    def predict_without_postprocessing(self, batch):
        target = batch["noise"] / self.noise_scale
        return {
            msp.noise_target: target,
            msp.predicted_noise: 0.5 * target,  # explains 75 % of the variance, whatever the scale
            msp.representation_3d: batch["rep"],
            msp.representation_spectra: batch["rep"] + 0.01 * torch.randn_like(batch["rep"]),
        }


def test_summary_reports_relative_denoising_and_retrieval_against_chance():
    torch.manual_seed(0)
    batches = [
        {"noise": torch.randn(30, 3) * 0.04, "rep": torch.randn(10, 16), "_n_atoms": torch.full((10,), 3)}
        for _ in range(3)
    ]
    for scale in (1.0, 0.04):  # before the first training step (scale 1) and after (noise sigma)
        summary = summarise_validation(_Task(scale), batches)
        assert summary["denoising"] == pytest.approx(0.25, rel=1e-5)  # MSE(0.5 t, t) / MSE(0, t)
        assert summary["molecules"] == 30 and summary["retrieval_chance"] == pytest.approx(1 / 30)
        assert summary["retrieval_top1"] == 1.0  # the spectra side is the 3D side plus a little noise
        assert summary["contrastive"] == pytest.approx(1e-4, rel=0.2)  # unweighted (loss_weight 0.5 divided out)


@pytest.mark.slow
def test_main_job_uses_the_default_dataset_sizes_its_schedule_and_summarises(main_job):
    proc, run = main_job
    path = default_dataset_path()
    with connect(path) as conn:
        n_rows = conn.count()
        row = next(conn.select(limit=1))
    assert (
        n_rows == sum(1 for _ in load_sticks()) > 0
        and row.data[msp.raman_spectrum].shape == (1, 3501)
        and "energy_U0" in row.data
    )

    # the summary: printed and written, each loss at the start and the end, retrieval vs chance
    assert proc.stdout.count("MolSpectra pre-training summary") == 1  # once, after the test stage
    with open(os.path.join(run, "pretraining_summary.json")) as f:
        summary = json.load(f)
    n_val = summary["end"]["molecules"]
    assert 0 < n_val <= 0.1 * n_rows + 1  # all of the validation split (num_val 0.1)
    for when in ("start", "end"):
        assert {"denoising", "mpr", "contrastive", "retrieval_top1", "retrieval_chance"} <= set(summary[when])
        assert summary[when]["retrieval_chance"] == pytest.approx(1 / n_val)
    assert summary["end"]["denoising"] < summary["start"]["denoising"]  # it learned to denoise in between
    assert summary["end"]["contrastive"] < summary["start"]["contrastive"]
    assert summary["best_model"] == os.path.join(run, "best_model") and os.path.exists(summary["best_model"])
    assert f"globals.pretrained_model={summary['best_model']}" in summary["finetune_command"]
    assert summary["finetune_command"] in proc.stdout

    # schedule sized to the run: warm-up a quarter of its steps, cosine ending with it at min_lr
    state = torch.load(os.path.join(run, "checkpoints", "last.ckpt"), map_location="cpu", weights_only=False)
    scheduler = state["lr_schedulers"][0]
    steps = summary["steps"]
    assert steps == state["global_step"] and steps > 20
    assert scheduler["warmup_steps"] == round(0.25 * steps) and scheduler["period"] == steps
    assert scheduler["_last_lr"][0] == pytest.approx(1e-7, rel=1e-3)


@pytest.mark.slow
def test_main_job_writes_best_model_and_logs_the_three_terms(main_job):
    _, run = main_job
    scalars = read_scalars(run)
    losses = {
        tag: [v for _, v in points] for tag, points in scalars.items() if tag.endswith(("_loss", "_mse", "_infonce"))
    }
    assert len(losses) >= 8 and all(np.isfinite(v).all() for v in losses.values()), losses
    for term in ("denoising_mse", "mpr_mse", "contrastive_infonce"):
        assert f"train_{term}" in scalars and f"val_{term}" in scalars, sorted(scalars)
    assert {"val_mpr_uv_mse", "val_mpr_ir_mse", "val_mpr_raman_mse", "val_loss"} <= set(scalars)
    model = torch.load(os.path.join(run, "best_model"), weights_only=False)
    assert type(model).__name__ == "MolSpectraModel" and type(model.output_modules[2]).__name__ == "SpectraEncoder"
    assert os.path.exists(os.path.join(run, "checkpoints", "last.ckpt"))
