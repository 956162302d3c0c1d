"""``spkspectra simulate`` on Dask distributed: a LocalCluster of 2 worker processes, real xTB calls.

The client process is the only writer: every molecule lands once, with the spectra of the serial
path, failures are recorded, and a client killed mid-run is resumed without duplicates.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ase import Atoms
from ase.db import connect
from conftest import RESUME_SMILES, rows_so_far, simulate_command

from schnetpack_molspectra.cli import spkspectra
from schnetpack_molspectra.data.inputs import from_smiles
from schnetpack_molspectra.data.simulate.cluster import ClusterSpec, make_cluster
from schnetpack_molspectra.data.simulate.runner import (
    SIMULATED_UNITS,
    MoleculeInput,
    SimulationSettings,
    failures_path,
    simulate_to_db,
)

distributed = pytest.importorskip("distributed")

FAST = SimulationSettings(uv_states=3)  # as tests/data/test_simulate_db.py: ~0.5 s a tiny molecule
SMILES = ["C", "O", "N", "CO"]


def molecules():
    """Four tiny molecules and an invalid structure (two atoms in one place: xTB refuses it)."""
    collapsed = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    return from_smiles(SMILES) + [MoleculeInput(len(SMILES), collapsed, name="collapsed H2")]


def rows_by_index(db):
    """Rows of ``db`` by input index; fails on a molecule written twice."""
    with connect(db) as conn:
        rows = list(conn.select())
    indices = [r.key_value_pairs["input_index"] for r in rows]
    assert len(indices) == len(set(indices)), f"{db}: molecules written twice: {sorted(indices)}"
    return dict(zip(indices, rows))


def failure_lines(db):
    with open(failures_path(db)) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A Dask LocalCluster of 2 single-threaded worker processes (as ``--workers 2`` starts it)."""
    scratch = str(tmp_path_factory.mktemp("dask-scratch"))
    with make_cluster(ClusterSpec("local", workers=2, local_directory=scratch)) as cluster:
        with distributed.Client(cluster) as dask_client:
            yield dask_client


def test_dask_writes_every_molecule_once_with_the_serial_spectra(client, tmp_path):
    serial, parallel = str(tmp_path / "serial.db"), str(tmp_path / "dask.db")
    expected = {"written": 4, "failed": 1, "skipped": 0}
    assert simulate_to_db(molecules(), serial, FAST, progress=False) == expected
    assert simulate_to_db(molecules(), parallel, FAST, cluster=client, progress=False) == expected
    # both worker processes computed molecules (the task's module was loaded to run one)
    assert all(client.run(lambda: "schnetpack_molspectra.data.simulate.runner" in sys.modules).values())

    reference, got = rows_by_index(serial), rows_by_index(parallel)
    assert sorted(got) == [0, 1, 2, 3]
    for index, row in got.items():
        ref = reference[index]
        assert row.key_value_pairs["smiles"] == SMILES[index] and row.numbers.tolist() == ref.numbers.tolist()
        np.testing.assert_allclose(row.positions, ref.positions, atol=1e-4)  # A
        for key in SIMULATED_UNITS:
            value, expected_value = row.data[key], ref.data[key]
            assert value.shape == expected_value.shape and value.dtype == expected_value.dtype, key
            scale = max(float(np.abs(expected_value).max()), 1e-12)
            np.testing.assert_allclose(
                value, expected_value, rtol=1e-3, atol=1e-3 * scale, err_msg=f"{SMILES[index]}: {key}"
            )

    (failure,) = failure_lines(parallel)
    assert failure["input_index"] == 4 and failure["name"] == "collapsed H2" and "Too close" in failure["reason"]

    # a second run computes nothing again
    again = simulate_to_db(molecules(), parallel, FAST, cluster=client, progress=False)
    assert again == {"written": 0, "failed": 0, "skipped": 5}
    assert len(rows_by_index(parallel)) == 4 and len(failure_lines(parallel)) == 1


def test_killed_client_resumes_on_the_scheduler_without_duplicates_or_losses(client, tmp_path):
    """``spkspectra simulate --scheduler ADDRESS`` killed after 2 molecules, then the run started again."""
    db = str(tmp_path / "resume.db")
    smiles = RESUME_SMILES
    cmd = simulate_command(db, "--scheduler", client.scheduler.address)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if rows_so_far(db) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    first = len(rows_by_index(db))
    assert 0 < first < len(smiles), "the run was not interrupted mid-way"

    # started again (in this process, on the same scheduler; the CLI computes the same)
    counts = simulate_to_db(from_smiles(smiles), db, FAST, cluster=client, progress=False)
    assert counts == {"written": len(smiles) - first, "failed": 0, "skipped": first}
    written = rows_by_index(db)  # no duplicates
    assert sorted(written) == list(range(len(smiles)))
    assert [written[i].key_value_pairs["smiles"] for i in range(len(smiles))] == smiles
    assert not os.path.exists(failures_path(db)) or failure_lines(db) == []


def test_cluster_options_fail_clearly(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "x.db")

    def error(*options):
        assert spkspectra.main(["simulate", db, "--smiles", "C", *options]) == 2
        return capsys.readouterr().err

    assert "--jobs only apply to batch jobs" in error("--jobs", "3")
    assert "--workers sets worker processes on this machine" in error(
        "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"
    )
    assert "--workers must be at least 1" in error("--workers", "0")
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # as if it were not installed
    assert "needs dask-jobqueue, which is not installed: pip install dask-jobqueue" in error(
        "--jobqueue", "slurm", "--jobs", "2"
    )
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert "cannot connect to the Dask scheduler at address tcp://127.0.0.1:9" in error(
            "--scheduler", "tcp://127.0.0.1:9"
        )
    assert not os.path.exists(db)  # nothing was started, nothing written


def test_slurm_job_script_from_the_options():
    """``--jobqueue slurm`` options as dask-jobqueue writes them (no job is submitted)."""
    pytest.importorskip("dask_jobqueue")
    spec = ClusterSpec(
        "slurm",
        jobs=3,
        cores=4,
        queue="short",
        account="chem",
        walltime="01:00:00",
        job_extra=["--constraint=cpu"],
        job_prologue=["source ~/venv/bin/activate"],
    )
    with make_cluster(spec) as cluster:
        script = cluster.job_script()
    for line in [
        "#SBATCH -p short",
        "#SBATCH -A chem",
        "#SBATCH -t 01:00:00",
        "#SBATCH --constraint=cpu",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8G",
        "export OMP_NUM_THREADS=1",
        "source ~/venv/bin/activate",
    ]:
        assert line in script, script
    # 4 single-threaded workers per job, 2 GB each by default
    assert "--nworkers 4" in script and "--nthreads 1" in script and "--memory-limit 1.86GiB" in script, script


def test_ship_sticks_chunks_on_a_running_scheduler(client, tmp_path):
    """``scripts/ship_sticks.py --scheduler ADDRESS``: a chunk simulated by the scheduler's workers (a cluster's
    nodes) is the chunk the local path writes, molecule for molecule."""
    import importlib.util

    from schnetpack_molspectra.data.qm9 import load_qm9pack
    from schnetpack_molspectra.data.sticks import read_chunk

    spec = importlib.util.spec_from_file_location("ship_sticks", os.path.join("scripts", "ship_sticks.py"))
    ship_sticks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship_sticks)
    inputs = str(tmp_path / "inputs.npz")
    ship_sticks.write_inputs(inputs, {3: [1, 3]}, load_qm9pack())  # methane and water as "chunk 3"
    common = ["--chunks", "3:4", "--uv-method", "none", "--inputs", inputs]
    remote, local = tmp_path / "remote", tmp_path / "local"
    argv = ["--folder", str(remote), "--workdir", str(tmp_path / "w1"), "--scheduler", client.scheduler.address]
    assert ship_sticks.main([*common, *argv]) == 0
    assert ship_sticks.main([*common, "--folder", str(local), "--workdir", str(tmp_path / "w2"), "--workers", "1"]) == 0
    on_cluster, here = read_chunk(str(remote / "vib_003.npz")), read_chunk(str(local / "vib_003.npz"))
    assert [k for k in on_cluster if k != "settings"] == [1, 3]
    for gdb in (1, 3):
        np.testing.assert_allclose(on_cluster[gdb]["frequencies"], here[gdb]["frequencies"], rtol=1e-4)
