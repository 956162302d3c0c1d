"""Shipped stick spectra: the chunk format, the seeded selection, and the default dataset
built from them by broadening alone (no simulator), cached and never rebuilt."""

import os
import subprocess
import sys

import numpy as np
import pytest
from ase.db import connect

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.default import default_dataset_path, ensure_default_dataset
from schnetpack_molspectra.data.qm9 import load_qm9pack
from schnetpack_molspectra.data.sticks import (
    CHUNK_SIZE,
    SHIPPED_UV_METHOD,
    load_sticks,
    read_chunk,
    shipped_chunks,
    shipped_selection,
    write_chunk,
)
from schnetpack_molspectra.spectra.broadening import broaden
from schnetpack_molspectra.spectra.grids import GRIDS


def vib_record(gdb, n_atoms, rng):
    n_modes = 3 * n_atoms - 6
    return {
        "gdb_index": gdb,
        "numbers": rng.integers(1, 10, n_atoms),
        "positions": rng.normal(size=(n_atoms, 3)),
        "frequencies": rng.uniform(500, 4000, n_modes),
        "ir_intensities": rng.uniform(0, 100, n_modes),
        "raman_activities": rng.uniform(0, 100, n_modes),
    }


def test_chunks_round_trip_ragged_molecules(tmp_path):
    rng = np.random.default_rng(0)
    records = [vib_record(g, n, rng) for g, n in [(7, 3), (2, 9), (11, 4)]]
    path = str(tmp_path / "vib_000.npz")
    write_chunk(path, records, {"relax": "GFN2-xTB"})
    chunk = read_chunk(path)
    assert chunk.pop("settings") == {"relax": "GFN2-xTB"}
    assert list(chunk) == [7, 2, 11]  # order kept
    for rec in records:
        got = chunk[rec["gdb_index"]]
        assert got["positions"].shape == (len(rec["numbers"]), 3)
        np.testing.assert_array_equal(got["numbers"], rec["numbers"])
        np.testing.assert_allclose(got["frequencies"], rec["frequencies"], rtol=1e-6)
        np.testing.assert_allclose(got["raman_activities"], rec["raman_activities"], rtol=1e-6)
    uv = str(tmp_path / "uv-fast_000.npz")
    write_chunk(
        uv,
        [
            {"gdb_index": 7, "energies": [5.0, 6.0], "strengths": [0.1, 0.0]},
            {"gdb_index": 11, "energies": [7.0], "strengths": [0.3]},
        ],
        {},
    )
    molecules = list(load_sticks("fast", folder=str(tmp_path)))
    assert [m.gdb_index for m in molecules] == [7, 11]  # gdb 2 has no UV: left out
    assert len(molecules[0].atoms) == 3 and list(molecules[1].uv_energies) == [7.0]


def test_a_damaged_chunk_is_named(tmp_path):
    path = tmp_path / "vib_003.npz"
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="vib_003.npz"):
        read_chunk(str(path))
    np.savez(
        tmp_path / "vib_004.npz",
        gdb_index=np.array([1, 2]),
        frequencies=np.ones(5),
        n_modes=np.array([2, 2]),
        ir_intensities=np.ones(5),
        raman_activities=np.ones(5),
    )
    with pytest.raises(ValueError, match=r"vib_004.npz.*(frequencies|n_modes)"):
        read_chunk(str(tmp_path / "vib_004.npz"))


def test_selection_is_a_seeded_permutation_of_qm9():
    table = load_qm9pack()
    selection = shipped_selection(table)
    assert len(selection) == len(table) == len(set(selection.tolist()))
    np.testing.assert_array_equal(selection, shipped_selection(table))
    assert not np.all(np.diff(selection[:CHUNK_SIZE]) > 0)  # shuffled, not sorted


def test_shipped_chunks_follow_the_selection():
    vib = shipped_chunks("vib")
    assert vib, "no shipped vib chunk in the package"
    selection = shipped_selection()
    for path in vib[:2]:
        k = int(os.path.basename(path)[4:7])
        gdbs = [g for g in read_chunk(path) if g != "settings"]
        assert set(gdbs) <= set(selection[k * CHUNK_SIZE : (k + 1) * CHUNK_SIZE].tolist())
        assert len(gdbs) >= 0.95 * CHUNK_SIZE


def test_default_dataset_builds_from_shipped_sticks_without_the_simulator(tmp_path):
    """A fresh process with tblite and PySCF unimportable builds the database: broadening only."""
    code = (
        "import sys; sys.modules['tblite'] = None; sys.modules['pyscf'] = None\n"
        "import time; t = time.perf_counter()\n"
        "from schnetpack_molspectra.data.default import ensure_default_dataset\n"
        "print(ensure_default_dataset()); print(f'{time.perf_counter() - t:.1f} s', file=sys.stderr)\n"
    )
    env = dict(os.environ, MOLSPECTRA_CACHE=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = proc.stdout.strip().splitlines()[-1]
    assert os.path.dirname(path) == str(tmp_path) and os.listdir(tmp_path) == [
        os.path.basename(path)
    ]  # no partial left

    molecules = list(load_sticks(SHIPPED_UV_METHOD))
    with connect(path) as conn:
        rows = list(conn.select())
    assert len(rows) == len(molecules) > 0
    table = load_qm9pack().set_index("Index")
    for row, sticks in zip(rows[:: max(1, len(rows) // 5)], molecules[:: max(1, len(rows) // 5)]):
        assert row.data[msp.gdb_index][0] == sticks.gdb_index
        assert row.data[msp.uv_spectrum].shape == (1, 701) and row.data[msp.ir_spectrum].shape == (1, 3501)
        np.testing.assert_allclose(
            row.data[msp.raman_spectrum],
            broaden(sticks.frequencies, sticks.raman_activities, GRIDS["raman"], 12.0),
            rtol=1e-5,
        )
        assert row.data["gap"][0] == pytest.approx(table.loc[sticks.gdb_index, "HOMO_LUMO_gap_au"])
        assert row.key_value_pairs["smiles"] == table.loc[sticks.gdb_index, "SMILES"]
        np.testing.assert_allclose(row.positions, sticks.atoms.positions, atol=1e-5)


def test_default_dataset_is_cached_and_a_subset_has_its_own_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLSPECTRA_CACHE", str(tmp_path))
    path = ensure_default_dataset(n_molecules=5)
    assert path == default_dataset_path(5) != default_dataset_path()
    with connect(path) as conn:
        assert conn.count() == 5
    stamp = os.path.getmtime(path)
    assert ensure_default_dataset(n_molecules=5) == path and os.path.getmtime(path) == stamp  # not rebuilt


def test_default_dataset_replaces_a_killed_build_and_never_overwrites(tmp_path, monkeypatch):
    """A killed build's partial file is removed and built anew; an existing database is refused."""
    from schnetpack_molspectra.data.default import build_default_dataset

    monkeypatch.setenv("MOLSPECTRA_CACHE", str(tmp_path))
    path = default_dataset_path(3)
    partial = path[: -len(".db")] + ".partial.db"
    with open(partial, "wb") as f:
        f.write(b"half a database from a killed build")
    assert ensure_default_dataset(n_molecules=3) == path and not os.path.exists(partial)
    with connect(path) as conn:
        assert conn.count() == 3

    mine = tmp_path / "mine.db"
    mine.write_bytes(b"someone's database")
    with pytest.raises(FileExistsError, match="mine.db exists"):
        build_default_dataset(str(mine), n_molecules=3)
    assert mine.read_bytes() == b"someone's database"


def test_given_labels_replace_qm9pack_and_a_missing_one_is_named(tmp_path, monkeypatch):
    """build_db_from_sticks(labels=...) never reads qm9pack (a GPU node without it): what it writes is
    what was given; a molecule without labels stops the build, named, and leaves no file, unless only the
    labelled molecules are asked for (gdb_indices)."""
    import schnetpack_molspectra.data.qm9 as qm9
    from schnetpack_molspectra.data.qm9_targets import QM9_UNITS
    from schnetpack_molspectra.data.sticks import build_db_from_sticks

    monkeypatch.setattr(qm9, "load_qm9pack", lambda: pytest.fail("qm9pack read although labels were given"))
    molecules = list(load_sticks(n_molecules=3))
    labels = {
        m.gdb_index: ({key: float(i + k) for k, key in enumerate(QM9_UNITS)}, f"C{i}") for i, m in enumerate(molecules)
    }
    assert build_db_from_sticks(str(tmp_path / "a.db"), n_molecules=3, labels=labels) == 3
    with connect(tmp_path / "a.db") as conn:
        for row, m in zip(conn.select(), molecules):
            given, smiles = labels[m.gdb_index]
            assert row.key_value_pairs["smiles"] == smiles and row.data[msp.gdb_index][0] == m.gdb_index
            assert {key: float(row.data[key][0]) for key in QM9_UNITS} == given
    del labels[molecules[1].gdb_index]
    with pytest.raises(ValueError, match=f"no labels given for GDB \\[{molecules[1].gdb_index}\\]"):
        build_db_from_sticks(str(tmp_path / "b.db"), n_molecules=3, labels=labels)
    assert not os.path.exists(tmp_path / "b.db")
    # gdb_indices: only the molecules given (those with labels, where the folder grew since they were written)
    assert build_db_from_sticks(str(tmp_path / "c.db"), n_molecules=3, labels=labels, gdb_indices=labels) == 2
    with connect(tmp_path / "c.db") as conn:
        written = [int(r.data[msp.gdb_index][0]) for r in conn.select()]
    assert written == [molecules[0].gdb_index, molecules[2].gdb_index]


def test_a_folder_without_uv_adds_its_molecules_with_uv_withheld(tmp_path):
    """IR + Raman chunks alone (``ship_sticks --uv-method none``): with ``require_uv=False`` their
    molecules come with the others, each with a zero UV spectrum and ``uv_missing`` True."""
    from schnetpack.data import ASEAtomsData

    from schnetpack_molspectra.data.qm9_targets import QM9_UNITS
    from schnetpack_molspectra.data.sticks import SHIPPED_DIR, build_db_from_sticks

    rng = np.random.default_rng(1)
    grown = tmp_path / "grown"
    grown.mkdir()
    write_chunk(str(grown / "vib_021.npz"), [vib_record(g, n, rng) for g, n in [(900001, 4), (900002, 5)]], {})
    assert list(load_sticks(folder=str(grown))) == []  # no UV chunk: none by default
    gdbs = [m.gdb_index for m in load_sticks(folder=[SHIPPED_DIR, str(grown)], require_uv=False)]
    assert gdbs[-2:] == [900001, 900002] and len(gdbs) > 5000  # in folder order
    labels = {g: ({key: 1.0 for key in QM9_UNITS}, "C") for g in gdbs}
    path = str(tmp_path / "grown.db")
    # the grown folder first, then the first shipped molecule (which has UV)
    assert build_db_from_sticks(path, 3, folder=[str(grown), SHIPPED_DIR], labels=labels, require_uv=False) == 3
    assert msp.modality_missing("uv") in ASEAtomsData(path).available_properties
    with connect(path) as conn:
        rows = list(conn.select())
    assert [int(r.data[msp.gdb_index][0]) for r in rows] == gdbs[-2:] + gdbs[:1]
    for row in rows[:2]:
        assert bool(row.data[msp.modality_missing("uv")][0]) and not row.data[msp.uv_spectrum].any()
        assert row.data[msp.ir_spectrum].max() > 0 and len(row.data[msp.uv_energies]) == 0
    assert not bool(rows[2].data[msp.modality_missing("uv")][0]) and rows[2].data[msp.uv_spectrum].max() > 0
    with pytest.raises(FileNotFoundError, match="no shipped molecule has IR, Raman sticks"):
        build_db_from_sticks(str(tmp_path / "none.db"), folder=str(tmp_path / "empty"), labels=labels, require_uv=False)


def test_ship_sticks_from_an_inputs_file_without_qm9pack(tmp_path, monkeypatch):
    """A machine without qm9pack simulates chunks from a file of their geometries: IR + Raman only
    (``--uv-method none``) writes the vib chunk alone; a chunk the file lacks is named."""
    import importlib.util

    import schnetpack_molspectra.data.qm9 as qm9

    spec = importlib.util.spec_from_file_location("ship_sticks", os.path.join("scripts", "ship_sticks.py"))
    ship_sticks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship_sticks)
    table = load_qm9pack()
    inputs = str(tmp_path / "inputs.npz")
    ship_sticks.write_inputs(inputs, {7: [1, 3]}, table)  # methane and water as "chunk 7"
    monkeypatch.setattr(qm9, "load_qm9pack", lambda: pytest.fail("qm9pack read although --inputs was given"))
    folder, work = tmp_path / "sticks", tmp_path / "work"
    common = [
        "--uv-method",
        "none",
        "--inputs",
        inputs,
        "--folder",
        str(folder),
        "--workdir",
        str(work),
        "--workers",
        "1",
    ]
    assert ship_sticks.main(["--chunks", "7:8", *common]) == 0
    assert sorted(os.listdir(folder)) == ["failures.jsonl", "vib_007.npz"]
    chunk = read_chunk(str(folder / "vib_007.npz"))
    assert [k for k in chunk if k != "settings"] == [1, 3]
    assert len(chunk[1]["frequencies"]) == 9 and len(chunk[3]["frequencies"]) == 3  # CH4: 3N-6, H2O: 3N-6
    with pytest.raises(SystemExit, match="inputs.npz: no molecules of chunks \\[8\\]"):
        ship_sticks.main(["--chunks", "7:9", *common])
