"""MD17-style data (xTB MD, real .npz), md17_finetune with the stock spktrain, and MD with the result (ASE and spkmd)."""

import importlib.util
import os

import numpy as np
import pytest
from ase import units
from ase.db import connect
from ase.io import write
from conftest import write_spectra_db
from spktrain import TINY_ENCODER, run_dir, spktrain

from schnetpack_molspectra.data.md17 import generate_xtb_md, npz_to_db
from schnetpack_molspectra.train.logs import read_scalars

pytestmark = pytest.mark.slow
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "ase_md.py")
MD17 = [
    "data.molecule=ethanol",
    "data.num_train=14",
    "data.num_val=6",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "task.warmup_steps=2",
    *TINY_ENCODER,
]


@pytest.fixture(scope="module")
def xtb_db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("md") / "ethanol.db")
    assert generate_xtb_md("ethanol", path, n_frames=20, progress=False) == 20
    return path


@pytest.fixture(scope="module")
def npz(xtb_db, tmp_path_factory):
    """The xTB frames written as a real-format MD17 file (R, z, E, F in kcal/mol)."""
    with connect(xtb_db) as conn:
        rows = list(conn.select())
    path = str(tmp_path_factory.mktemp("npz") / "md17_ethanol.npz")
    np.savez(
        path,
        R=np.array([r.positions for r in rows]),
        z=rows[0].numbers,
        E=np.array([r.data["energy"] for r in rows]),
        F=np.array([r.data["forces"] for r in rows]),
    )
    return path


def test_xtb_md_frames_and_resume(xtb_db, tmp_path):
    with connect(xtb_db) as conn:
        rows = list(conn.select())
    energies = np.array([r.data["energy"][0] for r in rows])
    assert rows[0].data["forces"].shape == (9, 3)
    assert np.ptp(energies) > 0.5  # kcal/mol: the molecule moves at 500 K
    assert np.abs(rows[0].data["forces"]).max() < 500
    # the centre of mass stays put (FixCom), and the forces written are the calculator's at the frame's positions
    # (to the SCC convergence of a cold start: ~5e-3 kcal/mol/Ang)
    centres = np.array([r.toatoms().get_center_of_mass() for r in rows])
    assert np.abs(centres - centres[0]).max() < 1e-6
    from tblite.ase import TBLite  # loaded by generate_xtb_md above (require_tblite)

    frame = rows[5].toatoms()
    frame.calc = TBLite(method="GFN2-xTB", verbosity=0)
    np.testing.assert_allclose(rows[5].data["forces"], frame.get_forces() * units.mol / units.kcal, atol=0.02)
    # a run stopped at 20 frames continues to 25 from frame 20 without rewriting any
    copy = str(tmp_path / "copy.db")
    import shutil

    shutil.copy(xtb_db, copy)
    assert generate_xtb_md("ethanol", copy, n_frames=25, progress=False) == 25
    with connect(copy) as conn:
        resumed = list(conn.select())
    assert [r.data["energy"][0] for r in resumed[:20]] == list(energies)
    step = np.linalg.norm(resumed[20].positions - resumed[19].positions, axis=1).max()
    assert step < 0.5  # continues the trajectory (10 steps of 0.5 fs), not a new start


def test_datamodule_continues_a_killed_generation(xtb_db, tmp_path, monkeypatch):
    """``md17_finetune`` without a datapath generates xTB MD into the cache, frame by frame: a generation
    killed after 20 of 24 frames is continued to 24 by the next run, never trained on as it is."""
    import shutil

    from schnetpack_molspectra.data.datamodule import MD17DataModule

    monkeypatch.setenv("MOLSPECTRA_CACHE", str(tmp_path))
    dm = MD17DataModule("ethanol", n_frames=24, num_train=16, num_val=4, batch_size=4, num_workers=0)
    shutil.copy(xtb_db, dm.datapath)  # what the killed run left: its first 20 frames
    dm.prepare_data()
    with connect(dm.datapath) as conn:
        energies = [r.data["energy"][0] for r in conn.select()]
    with connect(xtb_db) as conn:
        assert energies[:20] == [r.data["energy"][0] for r in conn.select()]  # kept, not regenerated
    assert len(energies) == 24


def test_npz_reader_and_its_errors(npz, tmp_path):
    from schnetpack_molspectra.data.md17 import MD17FormatError

    assert npz_to_db(npz, str(tmp_path / "a.db")) == 20
    data = dict(np.load(npz))
    data.pop("F")
    np.savez(tmp_path / "noforces.npz", **data)
    with pytest.raises(MD17FormatError, match="noforces.npz: not an MD17 file with energies and forces .no forces"):
        npz_to_db(str(tmp_path / "noforces.npz"), str(tmp_path / "b.db"))
    with pytest.raises(FileNotFoundError, match="nothere.npz does not exist"):
        npz_to_db(str(tmp_path / "nothere.npz"), str(tmp_path / "c.db"))
    with pytest.raises(FileExistsError, match="a.db exists"):  # the first conversion is kept as it is
        npz_to_db(npz, str(tmp_path / "a.db"))
    assert sorted(os.listdir(tmp_path)) == ["a.db", "noforces.npz"]  # no half-written database


def test_md17_finetune_from_scratch_and_pretrained_then_md(tmp_path, xtb_db, npz, main_job):
    """The user's flow after the main job: md17_finetune from its model, then MD on the result."""
    env = {"MOLSPECTRA_CACHE": str(tmp_path / "cache")}
    pretrained = os.path.join(main_job[1], "best_model")
    spktrain(tmp_path / "scratch", "experiment=md17_finetune", f"data.datapath={npz}", *MD17, env=env)
    spktrain(
        tmp_path / "ft",
        "experiment=md17_finetune",
        f"data.datapath={xtb_db}",
        f"globals.pretrained_model={pretrained}",
        *MD17,
        env=env,
    )
    run = run_dir(tmp_path / "ft")
    assert {"val_forces_mae_kcal_mol_Ang", "val_energy_mae_kcal_mol"} <= set(read_scalars(run))

    spec = importlib.util.spec_from_file_location("ase_md", EXAMPLE)
    ase_md = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ase_md)
    summary = ase_md.run(
        os.path.join(run, "best_model"),
        structure=xtb_db,
        langevin_steps=20,
        nve_steps=60,
        trajectory=str(tmp_path / "md.traj"),
    )
    assert np.isfinite(summary["drift_eV_per_atom_per_ps"]) and summary["n_atoms"] == 9
    assert os.path.getsize(tmp_path / "md.traj") > 0

    # SchNetPack's own MD driver with the configs we ship (its wheels lack md_configs)
    start = str(tmp_path / "ethanol.xyz")
    with connect(xtb_db) as conn:
        write(start, conn.get(1).toatoms())
    spktrain(
        tmp_path,
        "simulation_dir=md_run",
        f"system.molecule_file={start}",
        f"calculator.model_file={run}/best_model",
        "dynamics=nvt",
        "dynamics.n_steps=30",
        "dynamics.progress=false",
        "seed=1",
        command="spkmd",
    )
    from schnetpack.md.data import HDF5Loader

    log = HDF5Loader(str(tmp_path / "md_run" / "simulation.hdf5"))
    positions, energies = log.get_positions(), log.get_property("energy", atomistic=False)
    assert positions.shape == (30, 9, 3) and energies.shape == (30,) and np.isfinite(energies).all()
    assert 0 < np.abs(positions[-1] - positions[0]).max() < 1.0  # 15 fs at 300 K: the atoms move, a little
    assert os.path.getsize(tmp_path / "md_run" / "checkpoint.chk") > 0


def test_md17_bad_inputs_stop_before_training(tmp_path):
    proc = spktrain(tmp_path / "a", "experiment=md17_finetune", *MD17, "data.molecule=caffeine", check=False)
    assert proc.returncode != 0 and "unknown MD17 molecule 'caffeine'" in proc.stdout + proc.stderr
    no_forces = write_spectra_db(tmp_path / "energies.db", n_molecules=10, with_spectra=False)
    proc = spktrain(tmp_path / "b", "experiment=md17_finetune", f"data.datapath={no_forces}", *MD17, check=False)
    assert proc.returncode != 0 and "database has no ['forces']" in proc.stdout + proc.stderr


def test_split_larger_than_the_data_is_named(tmp_path, xtb_db):
    proc = spktrain(
        tmp_path, "experiment=md17_finetune", f"data.datapath={xtb_db}", *MD17, "data.num_train=20", check=False
    )
    assert (
        proc.returncode != 0
        and "the val split is empty (20 molecules, num_train=20, num_val=6)" in proc.stdout + proc.stderr
    )


def test_offline_default_generates_xtb_md_once(tmp_path):
    env = {"MOLSPECTRA_CACHE": str(tmp_path / "cache")}
    spktrain(tmp_path / "run", "experiment=md17_finetune", "data.n_frames=20", *MD17, env=env)
    (db,) = os.listdir(tmp_path / "cache")
    assert db == "md17_xtb_ethanol_500K_20.db"
    with connect(str(tmp_path / "cache" / db)) as conn:
        assert conn.count() == 20
