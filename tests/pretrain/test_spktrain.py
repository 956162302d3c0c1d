"""End-to-end: the stock ``spktrain`` / ``spk-train`` CLI runs MolSpectra pre-training from any directory
with other encoders, ablations, two stages and bad inputs (the main job itself: test_main_job.py)."""

import os

import numpy as np
import pytest
import torch
from conftest import write_spectra_db
from spktrain import TINY_ENCODER, TINY_PRETRAIN, TINY_SPECFORMER, cli, run_dir, scalar_values, spktrain

from schnetpack_molspectra.train.logs import read_scalars

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return write_spectra_db(tmp_path_factory.mktemp("data") / "spectra.db", n_molecules=40)


def test_encoder_swap_and_ablation_overrides(tmp_path, db):
    spktrain(
        tmp_path,
        "experiment=molspectra_pretrain",
        f"data.datapath={db}",
        "model/representation=schnet",
        "globals.modalities=[uv,ir]",
        "globals.beta_mpr=0",
        "model.output_modules.spectra.specformer.pooling=mean",
        *TINY_PRETRAIN,
        *TINY_SPECFORMER,
    )
    model = torch.load(os.path.join(run_dir(tmp_path), "best_model"), weights_only=False)
    assert type(model.representation).__name__ == "SchNet"
    assert model.output_modules[0].mode == "gradient"
    specformer = model.output_modules[2].specformer
    assert specformer.modalities == ["uv", "ir"] and specformer.pooling == "mean"
    assert "val_mpr_raman_mse" not in read_scalars(run_dir(tmp_path))


def test_stage_one_then_stage_two_from_its_encoder(tmp_path):
    plain = write_spectra_db(tmp_path / "structures.db", n_molecules=30, with_spectra=False)
    spktrain(tmp_path / "stage1", "experiment=denoise_pretrain", f"data.datapath={plain}", *TINY_PRETRAIN)
    stage1 = os.path.join(run_dir(tmp_path / "stage1"), "best_model")
    stage1_model = torch.load(stage1, weights_only=False)
    encoder = stage1_model.representation.state_dict()
    head = stage1_model.output_modules[0].state_dict()
    assert head["scale.count"] > 0

    spectra = write_spectra_db(tmp_path / "spectra.db", n_molecules=30)
    spktrain(  # the spk-train alias, in bf16 mixed precision (on the CPU here)
        tmp_path / "stage2",
        "experiment=molspectra_pretrain",
        f"data.datapath={spectra}",
        f"globals.pretrained_model={stage1}",
        *TINY_PRETRAIN,
        *TINY_SPECFORMER,
        "trainer.precision=bf16-mixed",
        command="spk-train",
    )
    losses = {
        tag: values
        for tag, values in scalar_values(run_dir(tmp_path / "stage2")).items()
        if tag.endswith(("_loss", "_mse", "_infonce"))
    }
    assert len(losses) >= 8 and all(np.isfinite(v).all() for v in losses.values()), losses

    # the model the stage-2 config builds starts from exactly the stage-1 encoder ...
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        overrides = ["experiment=molspectra_pretrain", *TINY_ENCODER, *TINY_SPECFORMER]
        model = instantiate(compose("train", overrides=[*overrides, f"globals.pretrained_model={stage1}"]).model)
        fresh = instantiate(compose("train", overrides=overrides).model)
    for key, value in encoder.items():
        assert torch.equal(model.representation.state_dict()[key], value), key
    assert any(not torch.equal(fresh.representation.state_dict()[k], v) for k, v in encoder.items())
    # released: the denoising head and its running noise statistics come along too
    assert all(torch.equal(model.output_modules[0].state_dict()[k], v) for k, v in head.items())
    assert fresh.output_modules[0].scale.count == 0
    # ... and a missing stage-1 file stops the run before training, naming it
    proc = spktrain(
        tmp_path / "stage2b",
        "experiment=molspectra_pretrain",
        f"data.datapath={spectra}",
        "globals.pretrained_model=/no/such/best_model",
        *TINY_PRETRAIN,
        check=False,
    )
    assert proc.returncode != 0 and "/no/such/best_model" in proc.stderr + proc.stdout


def test_database_without_spectra_is_a_clear_error(tmp_path):
    plain = write_spectra_db(tmp_path / "plain.db", n_molecules=10, with_spectra=False)
    proc = spktrain(
        tmp_path / "run", "experiment=molspectra_pretrain", f"data.datapath={plain}", *TINY_PRETRAIN, check=False
    )
    assert proc.returncode != 0
    assert f"{plain}: database has no ['uv_spectrum', 'ir_spectrum', 'raman_spectrum']" in proc.stderr + proc.stdout


def test_missing_database_is_a_clear_error(tmp_path):
    proc = spktrain(
        tmp_path, "experiment=molspectra_pretrain", "data.datapath=/nonexistent/qm9s.db", *TINY_PRETRAIN, check=False
    )
    assert proc.returncode != 0
    assert "spectra database /nonexistent/qm9s.db does not exist" in proc.stderr + proc.stdout


def test_nan_spectrum_in_database_names_file_and_molecule(tmp_path):
    import numpy as np
    from conftest import random_spectra

    def spectra_fn(i, rng):
        spectra = random_spectra(rng)
        if i == 5:
            spectra["ir_spectrum"][0, 100] = np.nan
        return spectra

    bad = write_spectra_db(tmp_path / "bad.db", n_molecules=12, spectra_fn=spectra_fn)
    proc = spktrain(
        tmp_path / "run",
        "experiment=molspectra_pretrain",
        f"data.datapath={bad}",
        "data.num_train=10",
        "data.num_val=2",
        *TINY_PRETRAIN,
        *TINY_SPECFORMER,
        check=False,
    )
    assert proc.returncode != 0
    assert f"{bad}: molecule 5: ir spectrum has 1 non-finite intensities" in proc.stderr + proc.stdout


def test_killed_pretraining_resumes_from_its_last_checkpoint(tmp_path, db):
    """SIGKILL mid-run, start the same command again: training continues where the checkpoint left it.

    Nothing is repeated or lost: the step count, the LR schedule and the denoising head's running
    noise statistics all continue from the killed run's last checkpoint.
    """
    import signal
    import subprocess
    import time

    overrides = [
        "experiment=molspectra_pretrain",
        f"data.datapath={db}",
        "run.id=resumable",
        *TINY_PRETRAIN,
        *TINY_SPECFORMER,
    ]
    overrides = [o for o in overrides if not o.startswith("trainer.max_epochs")]
    last = tmp_path / "runs" / "resumable" / "checkpoints" / "last.ckpt"
    env = dict(os.environ, PWD=str(tmp_path))
    proc = subprocess.Popen(
        [cli("spktrain"), *overrides, "trainer.max_epochs=1000"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if last.exists():
                try:
                    if torch.load(last, weights_only=False, map_location="cpu")["epoch"] >= 1:
                        break
                except Exception:  # caught while being written: look again
                    pass
            time.sleep(0.5)
        assert proc.poll() is None, "the first run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = torch.load(last, weights_only=False, map_location="cpu")
    steps_per_epoch = killed["global_step"] // (killed["epoch"] + 1)
    assert steps_per_epoch > 0

    max_epochs = killed["epoch"] + 3
    resumed = spktrain(tmp_path, *overrides, f"trainer.max_epochs={max_epochs}")
    assert "Resuming from checkpoint" in resumed.stdout + resumed.stderr
    final = torch.load(last, weights_only=False, map_location="cpu")
    assert final["global_step"] == max_epochs * steps_per_epoch
    assert final["lr_schedulers"][0]["last_epoch"] == final["global_step"]  # stepped per optimiser step, continued

    def noise_count(ckpt):
        return next(v for k, v in ckpt["state_dict"].items() if k.endswith("scale.count")).item()

    # every epoch sees each training molecule once, so the running statistics grow by the same amount
    assert noise_count(killed) > 0
    assert noise_count(final) == pytest.approx(noise_count(killed) * max_epochs / (killed["epoch"] + 1))
