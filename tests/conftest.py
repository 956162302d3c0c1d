"""Shared fixtures: small SchNetPack databases with spectra, written by the tests themselves."""

import schnetpack_molspectra  # noqa: F401  (before schnetpack: the tests run tblite in this process; data/tblite_process.py)

# isort: split
import numpy as np
import pytest
from ase.build import molecule
from schnetpack.data import ASEAtomsData

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.spectra.broadening import broaden
from schnetpack_molspectra.spectra.grids import GRIDS

MOLECULES = ["H2O", "CH4", "NH3", "C2H6", "CH3OH", "C2H4", "HCN", "CH3CHO", "C2H2", "CO2", "HCOOH", "CH3CN"]


def random_spectra(rng):
    spectra = {}
    for m, grid in GRIDS.items():
        n_lines = rng.integers(2, 8)
        centres = rng.uniform(grid.start, grid.stop, n_lines)
        heights = rng.uniform(0.1, 50.0, n_lines)
        width = 0.3 if m == "uv" else 15.0
        spectra[msp.spectrum_keys[m]] = broaden(centres, heights, grid, width)
    return spectra


def write_spectra_db(path, n_molecules=24, seed=0, spectra_fn=None, with_spectra=True):
    """Write ``n_molecules`` small molecules (ASE's g2 set, jittered) with synthetic spectra."""
    rng = np.random.default_rng(seed)
    units = {msp.spectrum_keys[m]: "1" for m in GRIDS} if with_spectra else {"energy": "eV"}
    db = ASEAtomsData.create(str(path), distance_unit="Ang", property_unit_dict=units)
    atoms_list, props = [], []
    for i in range(n_molecules):
        atoms = molecule(MOLECULES[i % len(MOLECULES)])
        atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
        atoms_list.append(atoms)
        if with_spectra:
            p = spectra_fn(i, rng) if spectra_fn else random_spectra(rng)
        else:
            p = {"energy": np.array([rng.normal()], dtype=np.float64)}
        props.append(p)
    db.add_systems(props, atoms_list)
    return str(path)


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Each available device: the CPU, and the first GPU where torch sees one (skipped otherwise)."""
    import torch

    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)


@pytest.fixture(scope="session", autouse=True)
def own_runs_ledger(tmp_path_factory):
    """The ledger of the files "your runs" wrote (``schnetpack_molspectra.provenance``) in a folder of
    this test session, not the user's: the suite's spktrain runs (subprocesses inherit the
    environment) and the files the tests record as their own go there."""
    import os

    from schnetpack_molspectra.provenance import STATE_ENV

    before = os.environ.get(STATE_ENV)
    os.environ[STATE_ENV] = str(tmp_path_factory.mktemp("state"))
    yield os.environ[STATE_ENV]
    if before is None:
        del os.environ[STATE_ENV]
    else:
        os.environ[STATE_ENV] = before


@pytest.fixture
def spectra_db(tmp_path):
    return write_spectra_db(tmp_path / "spectra.db")


@pytest.fixture(scope="session")
def main_job(tmp_path_factory):
    """The README's main job as a new user runs it - ``spktrain experiment=molspectra_pretrain`` in an
    empty directory, on the embedded default dataset - with a tiny model, 160 training molecules,
    200 test molecules (not the thousands left over) and a summary of 200 validation molecules:
    ``(spktrain's CompletedProcess, run directory)``.
    The suite's one pre-training run of that experiment: the tests that need a pre-trained model
    (fine-tuning, MD17, the printed fine-tune command) start from it."""
    from spktrain import TINY_PRETRAIN, TINY_SPECFORMER, run_dir, spktrain

    cwd = tmp_path_factory.mktemp("main_job")
    proc = spktrain(
        cwd,
        "experiment=molspectra_pretrain",
        *TINY_PRETRAIN,
        *TINY_SPECFORMER,
        "data.num_train=160",
        "data.num_test=200",
        "callbacks.pretraining_summary.max_molecules=200",
        "trainer.max_epochs=2",
        "globals.warmup_steps=0.25",
        "globals.total_steps=1.0",
        timeout=900,
    )
    return proc, run_dir(cwd)


class _WritesMarker:
    """Unpickled, it writes ``marker``: what a hostile file would do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('unpickled')",)


def write_hostile_pickle(path, marker):
    """A file that ``torch.load(weights_only=False)`` reads by writing the file ``marker``."""
    import torch

    torch.save({"payload": _WritesMarker(marker)}, str(path))
    return str(path)


def rows_so_far(db):
    """Rows of a database another process is writing: 0 while it creates the file and its tables
    (ASE >= 3.23 does not wait for them: a missing table, or the version row not written yet)."""
    import os
    import sqlite3

    from ase.db import connect

    if not os.path.exists(db):
        return 0
    try:
        with connect(db) as conn:
            return conn.count()
    except (sqlite3.OperationalError, TypeError):
        return 0


#: eight small molecules for the resume tests of ``spkspectra simulate``
RESUME_SMILES = ["O", "C", "N", "CO", "CC", "C=O", "C#N", "OO"]


def simulate_command(db, *options):
    """``spkspectra simulate db`` of :data:`RESUME_SMILES` with 3 UV states (and ``options``), as a subprocess argv."""
    import sys

    cli = [sys.executable, "-m", "schnetpack_molspectra.cli.spkspectra", "simulate", db, "--uv-states", "3"]
    return [*cli, *options, "--smiles", *RESUME_SMILES]
