"""Fine-tuning on QM9 from a pre-trained encoder, with the stock spktrain, and its bad inputs."""
import glob
import os

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from schnetpack_molspectra.data.qm9 import build_qm9_db
from schnetpack_molspectra.finetune import QM9_TARGETS, qm9_model_output, qm9_output_module, qm9_target
from schnetpack_molspectra.pretrained import PretrainedModelError, load_representation_weights, representation_state
from spktrain import TINY_ENCODER, TINY_PRETRAIN, logged_scalars, run_dir, spktrain

pytestmark = pytest.mark.slow
FINETUNE = ["data.num_train=60", "data.num_val=20", "data.batch_size=20", "data.num_workers=0", "trainer.max_epochs=1", "~callbacks.ema", *TINY_ENCODER]


@pytest.fixture(scope="module")
def qm9_db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("qm9") / "qm9.db")
    build_qm9_db(path, limit=100)
    return path


@pytest.fixture(scope="module")
def pretrained(qm9_db, tmp_path_factory):
    """A real stage-1 pre-training run on the QM9 structures (tiny PaiNN)."""
    cwd = tmp_path_factory.mktemp("pretrain")
    spktrain(cwd, "experiment=denoise_pretrain", f"data.datapath={qm9_db}", *TINY_PRETRAIN)
    run = run_dir(cwd)
    return os.path.join(run, "best_model"), glob.glob(os.path.join(run, "checkpoints", "*.ckpt"))[0]


def compose_model(*overrides):
    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        return instantiate(compose("train", overrides=["experiment=qm9_finetune", *TINY_ENCODER, *overrides]).model)


def test_encoder_weights_are_the_pretrained_ones(pretrained):
    best_model, checkpoint = pretrained
    stored = torch.load(best_model, weights_only=False).representation.state_dict()
    fresh = compose_model().representation.state_dict()
    for path in (best_model, checkpoint):
        loaded = compose_model(f"globals.pretrained_model='{path}'")
        state = loaded.representation.state_dict()
        assert all(torch.equal(state[k], v) for k, v in stored.items())
        assert any(not torch.equal(fresh[k], v) for k, v in stored.items())
        # SpecFormer / pre-training heads are not carried over
        assert not any("specformer" in n or "DenoisingHead" in type(m).__name__ for n, m in loaded.named_modules())


def test_finetune_runs_from_scratch_and_from_pretrained(tmp_path, qm9_db, pretrained):
    source = f"globals.pretrained_model='{pretrained[0]}'"
    for name, extra in (("scratch", []), ("pretrained", [source]), ("aux", [source, "globals.aux_denoising=true"])):
        spktrain(tmp_path / name, "experiment=qm9_finetune", f"data.datapath={qm9_db}", "globals.property=gap", *FINETUNE, *extra)
        run = run_dir(tmp_path / name)
        model = torch.load(os.path.join(run, "best_model"), weights_only=False)
        has_head = any(type(m).__name__ == "DenoisingHead" for m in model.output_modules)
        assert has_head == (name == "aux")
        assert "val_gap_mae_meV" in logged_scalars(run)


def test_aux_denoising_perturbs_only_the_training_split():
    from schnetpack_molspectra.transform import GaussianCoordinateNoise

    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        cfg = compose("train", overrides=["experiment=qm9_finetune", "globals.aux_denoising=true", "data.datapath=x.db"])
        train = instantiate(cfg.data.train_transforms)
        evaluation = instantiate(cfg.data.transforms)
        outputs = instantiate(cfg.task.outputs)
    (noise,) = [t for t in train if isinstance(t, GaussianCoordinateNoise)]
    assert noise.sigma == 0.005
    assert not any(isinstance(t, GaussianCoordinateNoise) for t in evaluation)
    (aux,) = [o for o in outputs if o.name == "aux_denoising"]
    assert aux.loss_weight == 0.1 and aux.calculate_loss({"gap": torch.zeros(1)}) == 0.0


def test_bad_inputs_stop_before_training(tmp_path, qm9_db, pretrained):
    cases = {
        "missing": (["globals.pretrained_model=/no/such/best_model"], "pre-trained model /no/such/best_model does not exist"),
        "property": (["globals.property=homo2"], "unknown QM9 property 'homo2'"),
        "encoder": ([f"globals.pretrained_model='{pretrained[0]}'", "model/representation=schnet"], "its encoder does not match SchNet"),
        "width": ([f"globals.pretrained_model='{pretrained[0]}'", "model.representation.n_atom_basis=24"], "shape (checkpoint vs encoder)"),
    }
    for name, (overrides, message) in cases.items():
        proc = spktrain(tmp_path / name, "experiment=qm9_finetune", f"data.datapath={qm9_db}", *FINETUNE, *overrides, check=False)
        assert proc.returncode != 0, name
        assert message in proc.stdout + proc.stderr, (name, proc.stderr[-2000:])
        assert not glob.glob(str(tmp_path / name / "runs" / "*" / "checkpoints" / "*.ckpt")), name


def test_unreadable_checkpoint_is_named(tmp_path):
    broken = tmp_path / "best_model"
    broken.write_bytes(b"\x00garbage")
    with pytest.raises(PretrainedModelError, match="cannot read pre-trained model .*best_model"):
        representation_state(str(broken))
    torch.save({"state_dict": {"model.output_modules.0.weight": torch.zeros(1)}}, tmp_path / "heads.ckpt")
    with pytest.raises(PretrainedModelError, match="no encoder weights"):
        representation_state(str(tmp_path / "heads.ckpt"))


def test_every_qm9_target_has_an_output():
    for name, target in QM9_TARGETS.items():
        assert qm9_target(target.key) is target
        module = qm9_output_module(name, n_in=8)
        assert target.key in module.model_outputs
        (metric,) = qm9_model_output(name).metrics["train"]
        assert metric.startswith("mae_")
