"""QM9 offline from qm9pack, in SchNetPack's QM9 layout; stock spktrain trains on it."""

import os

import numpy as np
import pytest
from schnetpack.data import ASEAtomsData
from schnetpack.datasets import QM9
from spktrain import run_dir, spktrain

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.qm9 import build_qm9_db, parse_numbers


@pytest.fixture(scope="module")
def first_120_qm9_db(tmp_path_factory):
    """The first 120 QM9 molecules (qm9pack) as a SchNetPack database."""
    path = str(tmp_path_factory.mktemp("qm9") / "qm9.db")
    assert build_qm9_db(path, limit=120) == 120
    return path


def test_names_units_and_values_match_schnetpack_qm9(first_120_qm9_db):
    data = ASEAtomsData(first_120_qm9_db)
    for key in (QM9.mu, QM9.alpha, QM9.homo, QM9.lumo, QM9.gap, QM9.r2, QM9.zpve, QM9.U0, QM9.U, QM9.H, QM9.G, QM9.Cv):
        assert key in data.available_properties
    assert data.units[QM9.homo] == "Ha" and data.units[QM9.mu] == "Debye"
    methane = data[0]  # gdb_1 is methane: 5 atoms, HOMO -0.3877 Ha (QM9)
    assert int(methane[msp.gdb_index][0]) == 1 and int(methane["_n_atoms"][0]) == 5
    assert methane[QM9.homo].item() == pytest.approx(-0.3877, abs=1e-4)
    assert len(methane[msp.harmonic_frequencies]) == 9
    # atom references let schnetpack's RemoveOffsets(remove_atomrefs=True) work
    assert data.metadata["atomrefs"][QM9.U0][6] == pytest.approx(-37.846772)


def test_refuses_to_overwrite(first_120_qm9_db):
    with pytest.raises(FileExistsError, match="exists"):
        build_qm9_db(first_120_qm9_db, limit=1)


def test_number_parser_accepts_qm9pack_forms():
    assert parse_numbers("[[-0.2,0.,1e-3],[.5,-2,3.]]").tolist() == [-0.2, 0.0, 1e-3, 0.5, -2.0, 3.0]


@pytest.mark.slow
def test_stock_spktrain_qm9_atomwise_runs_on_it(tmp_path, first_120_qm9_db):
    # SchNetPack's own experiments cannot reload their checkpoints on torch >= 2.6 (weights_only); the
    # plugin's trainer and task, two overrides, let them (README, "Stacks")
    import torch

    weights_only_default = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6)
    reload_own = (
        [
            "trainer._target_=schnetpack_molspectra.train.Trainer",
            "task._target_=schnetpack_molspectra.task.MolSpectraTask",
        ]
        if weights_only_default
        else []
    )
    spktrain(
        tmp_path,
        *reload_own,
        "experiment=qm9_atomwise",
        f"data.datapath={first_120_qm9_db}",
        "data.num_train=80",
        "data.num_val=20",
        "data.batch_size=20",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "model/representation=schnet",
        "model.representation.n_atom_basis=8",
        "model.representation.n_interactions=1",
    )
    assert os.path.exists(os.path.join(run_dir(tmp_path), "best_model"))


def write_qm9_xyz(row, atoms, frequencies, exponent_form=False):
    """A dsgdb9nsd xyz file in the standard layout, from one qm9pack molecule."""
    from schnetpack_molspectra.data.qm9_targets import QM9_COLUMNS

    props = "\t".join(f"{getattr(row, c)}" for c in QM9_COLUMNS)
    coords = []
    for symbol, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions):
        xs = f"{x:.10f}"
        if exponent_form and symbol == "H":
            xs = f"{x * 1e6:.6f}*^-6"  # the archive writes some numbers this way
        coords.append(f"{symbol}\t{xs}\t{y:.10f}\t{z:.10f}\t0.0")
    freqs = "\t".join(f"{f:.4f}" for f in frequencies)
    return (
        f"{len(atoms)}\ngdb {row.Index}\t{props}\n"
        + "\n".join(coords)
        + f"\n{freqs}\n{row.SMILES}\t{row.SMILES}\nInChI=1S/x\tInChI=1S/x\n"
    )


def test_standard_qm9_xyz_archive(tmp_path):
    import io
    import tarfile

    from schnetpack_molspectra.data.qm9 import load_qm9pack, qm9_molecules

    table = load_qm9pack().iloc[:3]
    archive = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        for (atoms, _labels, _smiles, freqs), row in zip(qm9_molecules(table), table.itertuples(index=False)):
            data = write_qm9_xyz(row, atoms, freqs, exponent_form=True).encode()
            info = tarfile.TarInfo(f"dsgdb9nsd_{row.Index:06d}.xyz")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    from_archive = str(tmp_path / "a.db")
    from_pack = str(tmp_path / "b.db")
    assert build_qm9_db(from_archive, xyz_archive=str(archive)) == 3
    build_qm9_db(from_pack, limit=3)
    a, b = ASEAtomsData(from_archive), ASEAtomsData(from_pack)
    for i in range(3):
        for key in (QM9.U0, QM9.homo, QM9.mu, msp.gdb_index):
            assert float(a[i][key][0]) == pytest.approx(float(b[i][key][0]), rel=1e-9)
        assert np.allclose(a[i]["_positions"].numpy(), b[i]["_positions"].numpy(), atol=1e-6)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dsgdb9nsd_000001.xyz").write_text("5\nnot a header\n")
    with pytest.raises(ValueError, match="dsgdb9nsd_000001.xyz: not a QM9 xyz file"):
        build_qm9_db(str(tmp_path / "c.db"), xyz_archive=str(broken))
    assert not (tmp_path / "c.db").exists()  # no half-written database left behind


def test_a_qm9_database_is_an_identify_library_named_by_gdb_index(first_120_qm9_db, tmp_path):
    """``spkspectra qm9 out.db`` gives a library for ``identify``: its hits are named gdb_<n> with their SMILES; a
    database row without a QM9 index keeps its label, else its row id."""
    from ase import Atoms
    from ase.db import connect

    from schnetpack_molspectra.identify.library import load_library

    lib = load_library(first_120_qm9_db)
    assert len(lib.names) == 120 and lib.names[:3] == ["gdb_1", "gdb_2", "gdb_3"]
    assert lib.smiles[0] == "C" and len(lib.atoms[0]) == 5
    other = str(tmp_path / "other.db")
    with connect(other) as db:
        db.write(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), label="hydrogen")
        db.write(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    assert load_library(other).names == ["hydrogen", "row 2"]
