"""Simulating into a SchNetPack database: layout, failures, resuming, and the CLI."""

import signal
import subprocess
import sys
import time

import numpy as np
from ase.db import connect
from conftest import RESUME_SMILES, rows_so_far, simulate_command

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.inputs import from_smiles
from schnetpack_molspectra.data.simulate.runner import SimulationSettings, read_failures, simulate_to_db

FAST = SimulationSettings(uv_states=3)


def rows(db):
    with connect(db) as conn:
        return list(conn.select())


def test_database_layout_and_recorded_failure(tmp_path):
    db = str(tmp_path / "sim.db")
    counts = simulate_to_db(from_smiles(["O", "C", "[Xe]"]), db, FAST, progress=False)
    assert counts == {"written": 2, "failed": 1, "skipped": 0}
    written = rows(db)
    assert sorted(r.key_value_pairs["input_index"] for r in written) == [0, 1]
    for row in written:
        assert row.data[msp.uv_spectrum].shape == (1, 701)
        assert row.data[msp.ir_spectrum].shape == (1, 3501) and row.data[msp.ir_spectrum].dtype == np.float32
        assert row.data[msp.raman_spectrum].shape == (1, 3501)
        assert len(row.data[msp.vib_frequencies]) == 3 * row.natoms - 6
        assert row.data[msp.ir_spectrum].max() > 0 and row.data[msp.raman_spectrum].max() > 0
    (failure,) = read_failures(db)
    assert failure["input_index"] == 2 and failure["smiles"] == "[Xe]" and "Xe" in failure["reason"]

    # loadable by SchNetPack, and it passes the training-time checks
    from schnetpack.data import ASEAtomsData

    from schnetpack_molspectra.transform import ValidateSpectra

    data = ASEAtomsData(db, load_properties=list(msp.spectrum_keys.values()))
    assert ValidateSpectra(source=db)(data[0])[msp.ir_spectrum].shape == (1, 3501)

    # a second run does nothing twice
    assert simulate_to_db(from_smiles(["O", "C", "[Xe]"]), db, FAST, progress=False)["skipped"] == 3
    assert len(rows(db)) == 2


def test_killed_run_resumes_without_duplicates_or_losses(tmp_path):
    db = str(tmp_path / "resume.db")
    smiles = RESUME_SMILES
    cmd = simulate_command(db)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if rows_so_far(db) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(rows(db))
    assert 0 < first < len(smiles), "the run was not interrupted mid-way"
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert f"{first} already done" in out
    indices = [r.key_value_pairs["input_index"] for r in rows(db)]
    assert sorted(indices) == list(range(len(smiles)))


def test_cli_reports_bad_inputs(tmp_path):
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "schnetpack_molspectra.cli.spkspectra", *a], capture_output=True, text=True
    )
    bad = run("simulate", str(tmp_path / "x.db"), "--smiles", "C1CC")
    assert bad.returncode == 2 and "RDKit cannot parse SMILES 'C1CC'" in bad.stderr
    missing = run("simulate", str(tmp_path / "x.db"), "--file", str(tmp_path / "none.xyz"))
    assert missing.returncode == 2 and "none.xyz does not exist" in missing.stderr


def test_structures_from_an_xyz_file(tmp_path):
    from ase.build import molecule
    from ase.io import write

    from schnetpack_molspectra.data.inputs import from_file

    path = tmp_path / "mols.xyz"
    write(path, [molecule("H2O"), molecule("NH3")])
    inputs = from_file(str(path))
    assert [len(m.atoms) for m in inputs] == [3, 4] and inputs[1].name == "mols.xyz:1"
    assert [m.smiles for m in inputs] == ["", ""]


def test_smiles_of_extxyz_frames_reach_the_database(tmp_path):
    """``simulate --file x.extxyz`` keeps the SMILES the frames carry (``info['smiles']``), as identify reads it."""
    from ase.build import molecule
    from ase.io import write

    water = molecule("H2O")
    water.info["smiles"] = "O"
    write(tmp_path / "water.extxyz", [water], format="extxyz")
    out = str(tmp_path / "water.db")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "schnetpack_molspectra.cli.spkspectra",
            "simulate",
            out,
            "--file",
            str(tmp_path / "water.extxyz"),
            "--uv-method",
            "fast",
            "--uv-states",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = rows(out)
    assert row.smiles == "O" and row.data[msp.ir_spectrum].shape == (1, 3501)
