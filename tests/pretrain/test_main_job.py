"""The main job's configuration: a finite run, its schedule sized to it, the summary callback,
and the released schedule one preset away; the summary's figures on a hand-made batch."""

import pytest
import torch
from hydra import compose, initialize_config_module

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.task import SelfSupervisedOutput
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
