"""Fine-tuning on QM9 from a pre-trained encoder, with the stock spktrain, and its bad inputs."""

import glob
import os

import numpy as np
import pytest
import torch
from conftest import write_hostile_pickle
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from spktrain import TINY_ENCODER, run_dir, scalar_values, spktrain

from schnetpack_molspectra.atomistic import DenoisingHead
from schnetpack_molspectra.data.qm9 import build_qm9_db
from schnetpack_molspectra.data.qm9_targets import QM9_TARGETS, qm9_target
from schnetpack_molspectra.pretrained import PretrainedModelError, representation_state

pytestmark = pytest.mark.slow
FINETUNE = [
    "data.num_train=60",
    "data.num_val=20",
    "data.batch_size=20",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    *TINY_ENCODER,
]


@pytest.fixture(scope="module")
def finetune_db(tmp_path_factory):
    """The first 100 QM9 molecules (qm9pack) as a SchNetPack database."""
    path = str(tmp_path_factory.mktemp("qm9") / "qm9.db")
    build_qm9_db(path, limit=100)
    return path


@pytest.fixture(scope="module")
def pretrained(main_job):
    """The main job's pre-training run (tests/conftest.py; tiny PaiNN, denoising head included):
    its best_model and a Lightning checkpoint."""
    _, run = main_job
    return os.path.join(run, "best_model"), glob.glob(os.path.join(run, "checkpoints", "*.ckpt"))[0]


def compose_model(*overrides):
    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        return instantiate(compose("train", overrides=["experiment=qm9_finetune", *TINY_ENCODER, *overrides]).model)


def denoising_head(model):
    (head,) = [m for m in model.output_modules if isinstance(m, DenoisingHead)]
    return head


def test_encoder_and_denoising_head_are_the_pretrained_ones(pretrained):
    best_model, checkpoint = pretrained
    stored_model = torch.load(best_model, weights_only=False)
    stored = stored_model.representation.state_dict()
    stored_head = denoising_head(stored_model).state_dict()
    assert stored_head["scale.count"] > 0
    fresh = compose_model()
    assert any(not torch.equal(fresh.representation.state_dict()[k], v) for k, v in stored.items())
    assert denoising_head(fresh).scale.count == 0
    for path in (best_model, checkpoint):
        loaded = compose_model(f"globals.pretrained_model='{path}'")
        state = loaded.representation.state_dict()
        assert all(torch.equal(state[k], v) for k, v in stored.items())
        # released: the denoising head and its noise statistics come along for auxiliary denoising
        head = denoising_head(loaded).state_dict()
        assert set(head) == set(stored_head) and all(torch.equal(head[k], v) for k, v in stored_head.items())
        assert not any("specformer" in n for n, _ in loaded.named_modules())
    # the switch: a fresh head with no noise statistics, the encoder still pre-trained
    fresh_head = compose_model(f"globals.pretrained_model='{best_model}'", "globals.pretrained_denoising_head=false")
    assert denoising_head(fresh_head).scale.count == 0
    assert all(torch.equal(fresh_head.representation.state_dict()[k], v) for k, v in stored.items())
    # without auxiliary denoising there is no head to carry into
    plain = compose_model(f"globals.pretrained_model='{best_model}'", "globals.aux_denoising=false")
    assert not any(isinstance(m, DenoisingHead) for m in plain.output_modules)


def test_finetune_runs_from_scratch_and_from_pretrained(tmp_path, finetune_db, pretrained):
    source = f"globals.pretrained_model='{pretrained[0]}'"
    plain = "globals.aux_denoising=false"
    bf16 = "trainer.precision=bf16-mixed"  # mixed precision (on the CPU here) with the released recipe
    for name, extra in (("scratch", [plain]), ("pretrained", [source, plain]), ("aux", [source, bf16])):
        spktrain(
            tmp_path / name,
            "experiment=qm9_finetune",
            f"data.datapath={finetune_db}",
            "globals.property=gap",
            *FINETUNE,
            *extra,
        )
        run = run_dir(tmp_path / name)
        model = torch.load(os.path.join(run, "best_model"), weights_only=False)
        has_head = any(type(m).__name__ == "DenoisingHead" for m in model.output_modules)
        assert has_head == (name == "aux")
        values = scalar_values(run)
        assert "val_gap_mae_meV" in values and all(np.isfinite(v).all() for v in values.values())


def test_aux_denoising_perturbs_only_the_training_split():
    from schnetpack_molspectra.transform import GaussianCoordinateNoise

    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        cfg = compose(
            "train", overrides=["experiment=qm9_finetune", "globals.aux_denoising=true", "data.datapath=x.db"]
        )
        train = instantiate(cfg.data.train_transforms)
        evaluation = instantiate(cfg.data.transforms)
        outputs = instantiate(cfg.task.outputs)
    (noise,) = [t for t in train if isinstance(t, GaussianCoordinateNoise)]
    assert noise.sigma == 0.005
    assert not any(isinstance(t, GaussianCoordinateNoise) for t in evaluation)
    # the training split's transforms are the evaluation ones with the noise before the neighbour list
    names = [type(t).__name__ for t in train]
    assert names == [type(t).__name__ for t in evaluation][:-2] + ["GaussianCoordinateNoise"] + names[-2:]
    assert names[-2:] == ["MatScipyNeighborList", "CastTo32"]
    (aux,) = [o for o in outputs if o.name == "aux_denoising"]
    assert aux.loss_weight == 0.1 and aux.calculate_loss({"gap": torch.zeros(1)}) == 0.0


@pytest.mark.parametrize("experiment", ["qm9_finetune", "md17_finetune"])
def test_an_override_of_the_evaluation_transforms_reaches_the_training_ones(experiment):
    """train_transforms take transforms' entries by reference: one override changes both."""
    overrides = [
        f"experiment={experiment}",
        "data.datapath=x.db",
        "data.transforms.neighbors._target_=schnetpack.transform.ASENeighborList",
        "data.transforms.neighbors.cutoff=3.5",
    ]
    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        cfg = compose("train", overrides=overrides)
        for key in ("transforms", "train_transforms"):
            (neighbors,) = [t for t in instantiate(cfg.data[key]) if "NeighborList" in type(t).__name__]
            assert type(neighbors).__name__ == "ASENeighborList" and neighbors._cutoff == 3.5, key


def test_bad_inputs_stop_before_training(tmp_path, finetune_db, pretrained):
    marker = tmp_path / "marker"
    hostile = write_hostile_pickle(tmp_path / "colleague_best_model", marker)  # no run of yours wrote it
    cases = {
        "hostile": (
            [f"globals.pretrained_model='{hostile}'"],
            (
                f"cannot read pre-trained model {hostile} without unpickling it",
                "opt in with globals.trust_pretrained_model=true",
            ),
        ),
        "missing": (
            ["globals.pretrained_model=/no/such/best_model"],
            "pre-trained model /no/such/best_model does not exist",
        ),
        "property": (["globals.property=homo2"], "unknown QM9 property 'homo2'"),
        "encoder": (
            [f"globals.pretrained_model='{pretrained[0]}'", "model/representation=schnet"],
            "its encoder does not match SchNet",
        ),
        "width": (
            [f"globals.pretrained_model='{pretrained[0]}'", "model.representation.n_atom_basis=24"],
            "shape (checkpoint vs encoder)",
        ),
    }
    for name, (overrides, message) in cases.items():
        proc = spktrain(
            tmp_path / name,
            "experiment=qm9_finetune",
            f"data.datapath={finetune_db}",
            *FINETUNE,
            *overrides,
            check=False,
        )
        assert proc.returncode != 0, name
        for part in message if isinstance(message, tuple) else (message,):
            assert part in proc.stdout + proc.stderr, (name, part, proc.stderr[-2000:])
        assert not glob.glob(str(tmp_path / name / "runs" / "*" / "checkpoints" / "*.ckpt")), name
    assert not marker.exists()


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
        with initialize_config_module(config_module="schnetpack.configs", version_base=None):
            cfg = compose("train", overrides=["experiment=qm9_finetune", f"globals.property={name}", *TINY_ENCODER])
            module = instantiate(cfg.model.output_modules)[0]
            output = instantiate(cfg.task.outputs)[0]
        assert target.key in module.model_outputs
        (metric,) = output.metrics["train"]
        assert metric.startswith("mae_")
