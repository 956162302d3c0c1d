"""The fine-tuning recipes: intensive offsets, the released defaults and every switch, what they build."""

import os

import numpy as np
import pytest
import schnetpack as spk
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from schnetpack import properties as structure
from schnetpack.utils import str2class
from spktrain import TINY_ENCODER, run_dir, spktrain

from schnetpack_molspectra.atomistic import DenoisingHead
from schnetpack_molspectra.data.datamodule import BoundedTestSplit
from schnetpack_molspectra.data.qm9 import build_qm9_db, load_qm9pack
from schnetpack_molspectra.data.qm9_targets import QM9_TARGETS
from schnetpack_molspectra.train import SmoothedLoss, WarmupCosineLR
from schnetpack_molspectra.transform import GaussianCoordinateNoise, StandardizeProperty


class Stats:
    """A stand-in for the data module: per-molecule mean 0.5 (as if divided by atoms: 0.5 per atom)."""

    class train_dataset:
        atomrefs = {}

    def get_stats(self, key, divide_by_atoms, remove_atomref):
        return torch.tensor([0.5], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)


def molecule(n_atoms, value):
    return {
        structure.n_atoms: torch.tensor([n_atoms]),
        structure.Z: torch.ones(n_atoms, dtype=torch.long),
        structure.R: torch.zeros(n_atoms, 3),
        structure.idx_m: torch.zeros(n_atoms, dtype=torch.long),
        "homo": torch.tensor([value], dtype=torch.float64),
    }


@pytest.mark.parametrize("name", ["homo", "lumo", "gap"])
def test_intensive_offsets_do_not_depend_on_molecule_size(name):
    key = QM9_TARGETS[name].key
    _, model, _, _, evaluation = compose_finetune("qm9_finetune", f"globals.property={name}")
    (remove,) = [t for t in evaluation if isinstance(t, spk.transform.RemoveOffsets)]
    (add,) = [t for t in model.postprocessors if isinstance(t, spk.transform.AddOffsets)]
    remove.datamodule(Stats())
    add.datamodule(Stats())
    for n_atoms in (3, 9, 27):
        inputs = molecule(n_atoms, -0.25)
        inputs[key] = inputs.pop("homo")
        assert float(remove(inputs)[key]) == pytest.approx(-0.75)  # y - mean, whatever the size
        assert float(add(inputs)[key]) == pytest.approx(-0.25)
    # extensive targets still remove a per-atom mean
    (u0,) = [
        t
        for t in compose_finetune("qm9_finetune", "globals.property=U0")[4]
        if isinstance(t, spk.transform.RemoveOffsets)
    ]
    assert u0.is_extensive and not remove.is_extensive


@pytest.fixture(scope="module")
def random_qm9_split(tmp_path_factory):
    """500 QM9 molecules drawn at random (sizes as in QM9, not only the smallest first ones) and
    one fixed split (300 train / 50 val / 150 test), the same whatever the run's random state."""
    folder = tmp_path_factory.mktemp("qm9")
    rng = np.random.default_rng(0)
    indices = rng.choice(np.asarray(load_qm9pack()["Index"]), 500, replace=False)
    build_qm9_db(str(folder / "qm9.db"), gdb_indices=sorted(int(i) for i in indices))
    order = rng.permutation(500)
    np.savez(folder / "split.npz", train_idx=order[:300], val_idx=order[300:350], test_idx=order[350:])
    return str(folder / "qm9.db"), str(folder / "split.npz")


@pytest.mark.slow
def test_short_training_beats_predicting_the_training_mean(tmp_path, random_qm9_split):
    """20 epochs on 300 molecules learn homo: test MAE well below the MAE of the training mean."""
    db, split_file = random_qm9_split
    spktrain(
        tmp_path,
        "experiment=qm9_finetune",
        f"data.datapath={db}",
        f"+data.split_file={split_file}",
        "globals.property=homo",
        "data.num_train=300",
        "data.num_val=50",
        "data.num_test=150",
        "data.batch_size=20",
        "data.num_workers=0",
        "trainer.max_epochs=20",
        "model.representation.n_atom_basis=32",
        "model.representation.n_interactions=2",
        "globals.lr=1e-3",
        "+seed=0",
        timeout=600,
    )
    run = run_dir(tmp_path)
    split = np.load(split_file)
    data = spk.data.ASEAtomsData(db, load_properties=["homo"], property_units={"homo": "eV"})  # as data=qm9 loads it
    homo = lambda idx: np.array([float(data[int(i)]["homo"][0]) for i in idx])  # noqa: E731
    mean_mae = np.abs(homo(split["test_idx"]) - homo(split["train_idx"]).mean()).mean()
    model = torch.load(os.path.join(run, "best_model"), weights_only=False)
    test = spk.data.ASEAtomsData(
        db,
        load_properties=["homo"],
        property_units={"homo": "eV"},
        transforms=[
            spk.transform.SubtractCenterOfMass(),
            spk.transform.MatScipyNeighborList(5.0),
            spk.transform.CastTo32(),
        ],
    )
    loader = spk.data.AtomsLoader(torch.utils.data.Subset(test, [int(i) for i in split["test_idx"]]), batch_size=50)
    errors = []
    for batch in loader:
        target = batch["homo"].double().clone()
        errors.append((model(batch)["homo"].detach().double() - target).abs())
    model_mae = float(torch.cat(errors).mean())
    print(f"homo test MAE {model_mae:.4f} eV, training mean {mean_mae:.4f} eV, ratio {model_mae / mean_mae:.3f}")
    assert model_mae < 0.85 * mean_mae, (model_mae, mean_mae)


def compose_finetune(experiment, *overrides):
    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        cfg = compose("train", overrides=[f"experiment={experiment}", "data.datapath=x.db", *TINY_ENCODER, *overrides])
        model = instantiate(cfg.model)
        task = instantiate(
            cfg.task,
            model=model,
            optimizer_cls=str2class(cfg.task.optimizer_cls),  # as spktrain does
            scheduler_cls=str2class(cfg.task.scheduler_cls),
        )
        train = instantiate(cfg.data.train_transforms)
        evaluation = instantiate(cfg.data.transforms)
    return cfg, model, task, train, evaluation


def test_qm9_released_recipe_is_the_default():
    cfg, model, task, train, evaluation = compose_finetune("qm9_finetune", "globals.property=gap")
    kinds = [type(m) for m in model.output_modules]
    assert kinds == [spk.atomistic.Atomwise, StandardizeProperty, DenoisingHead]
    (noise,) = [t for t in train if isinstance(t, GaussianCoordinateNoise)]
    assert noise.sigma == 0.005 and not any(isinstance(t, GaussianCoordinateNoise) for t in evaluation)
    assert [o.loss_weight for o in task.outputs] == [1.0, 0.1]
    assert task.scheduler_cls is WarmupCosineLR and task.scheduler_interval == "step"
    assert task.scheduler_kwargs == {"warmup_steps": 1 / 70, "total_steps": 1 / 7, "restart_mult": 2, "min_lr": 1e-7}
    assert task.lr == 4e-4 and cfg.data.batch_size == 128 and cfg.trainer.max_steps == 700_000
    assert "ema" not in cfg.callbacks and "last_checkpoint" in cfg.callbacks
    assert (cfg.data.num_train, cfg.data.num_val, cfg.data.num_test) == (110_000, 10_000, 10_831)
    assert cfg.data.splitting._target_.endswith("BoundedTestSplit")


def test_qm9_switches_give_schnetpack_behaviour():
    cfg, model, task, train, _ = compose_finetune(
        "qm9_finetune",
        "globals.property=gap",
        "globals.standardize=false",
        "globals.aux_denoising=false",
        "task/scheduler=reduce_on_plateau",
        "callbacks=[checkpoint,earlystopping,lrmonitor,last_checkpoint,ema]",
    )
    assert [type(m) for m in model.output_modules] == [spk.atomistic.Atomwise]
    assert not any(isinstance(t, GaussianCoordinateNoise) for t in train) and len(task.outputs) == 1
    assert task.scheduler_cls is spk.train.ReduceLROnPlateau and task.scheduler_interval == "epoch"
    assert "ema" in cfg.callbacks
    cfg, *_ = compose_finetune("qm9_finetune", "+schedule=qm9_released")
    assert (cfg.globals.warmup_steps, cfg.globals.total_steps, cfg.trainer.max_steps) == (10_000, 100_000, 700_000)


def test_md17_released_recipe_and_switches():
    cfg, model, task, train, evaluation = compose_finetune("md17_finetune")
    assert [type(m) for m in model.output_modules] == [
        spk.atomistic.Atomwise,
        StandardizeProperty,
        spk.atomistic.Forces,
    ]
    energy, forces = task.outputs
    assert isinstance(energy.loss_fn, SmoothedLoss) and energy.loss_fn.alpha == 0.05
    assert (energy.loss_weight, forces.loss_weight) == (0.2, 0.8)
    (noise,) = [t for t in train if isinstance(t, GaussianCoordinateNoise)]
    assert noise.sigma == 0.005 and not any(isinstance(t, GaussianCoordinateNoise) for t in evaluation)
    assert (cfg.data.batch_size, task.lr, task.warmup_steps, cfg.trainer.max_steps) == (8, 5e-4, 1000, 140_000)
    assert task.scheduler_cls is spk.train.ReduceLROnPlateau
    assert (task.scheduler_kwargs["factor"], task.scheduler_kwargs["patience"], task.scheduler_kwargs["cooldown"]) == (
        0.8,
        30,
        0,
    )
    assert "ema" not in cfg.callbacks
    assert cfg.data.n_frames - cfg.data.num_train - cfg.data.num_val >= 100  # held-out test frames by default
    cfg, model, task, train, _ = compose_finetune(
        "md17_finetune", "globals.energy_loss_smoothing=1.0", "globals.noise_sigma=0", "globals.standardize=false"
    )
    assert task.outputs[0].loss_fn.alpha == 1.0
    (noise,) = [t for t in train if isinstance(t, GaussianCoordinateNoise)]
    assert noise.sigma == 0
    assert float(model.output_modules[1].scale) == 1.0


def test_standardize_scales_by_the_label_std():
    module = StandardizeProperty("gap")
    module.datamodule(Stats())
    out = module({"gap": torch.tensor([1.5])})
    assert float(out["gap"]) == 3.0 and float(module.scale) == 2.0
    off = StandardizeProperty("gap", standardize=False)
    off.datamodule(Stats())
    assert float(off.scale) == 1.0


def test_bounded_test_split():
    parts = BoundedTestSplit().split(list(range(100)), 60, 20, 10_831)
    assert [len(p) for p in parts] == [60, 20, 20] and len(set().union(*parts)) == 100
    assert [len(p) for p in BoundedTestSplit().split(list(range(100)), 50, 20, 10)] == [50, 20, 10]


def test_a_file_without_denoising_head_is_named(tmp_path):
    """Carrying the head (released) from a file that has none stops with the file and the switch named."""
    from schnetpack_molspectra.pretrained import PretrainedModelError, load_pretrained_weights

    _, model, *_ = compose_finetune("qm9_finetune")
    state = {f"model.representation.{k}": v for k, v in model.representation.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "encoder_only.ckpt")
    with pytest.raises(
        PretrainedModelError, match="encoder_only.ckpt: has no denoising head .*globals.pretrained_denoising_head=false"
    ):
        load_pretrained_weights(model, str(tmp_path / "encoder_only.ckpt"))
    load_pretrained_weights(model, str(tmp_path / "encoder_only.ckpt"), denoising_head=False)  # encoder only: fine
