"""QM9 offline from qm9pack, in SchNetPack's QM9 layout; stock spktrain trains on it."""
import os

import numpy as np
import pytest
from schnetpack.data import ASEAtomsData
from schnetpack.datasets import QM9

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.qm9 import build_qm9_db, parse_numbers
from spktrain import run_dir, spktrain


@pytest.fixture(scope="module")
def qm9_db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("qm9") / "qm9.db")
    assert build_qm9_db(path, limit=120) == 120
    return path


def test_names_units_and_values_match_schnetpack_qm9(qm9_db):
    data = ASEAtomsData(qm9_db)
    for key in (QM9.mu, QM9.alpha, QM9.homo, QM9.lumo, QM9.gap, QM9.r2, QM9.zpve, QM9.U0, QM9.U, QM9.H, QM9.G, QM9.Cv):
        assert key in data.available_properties
    assert data.units[QM9.homo] == "Ha" and data.units[QM9.mu] == "Debye"
    methane = data[0]  # gdb_1 is methane: 5 atoms, HOMO -0.3877 Ha (QM9)
    assert int(methane[msp.gdb_index][0]) == 1 and int(methane["_n_atoms"][0]) == 5
    assert methane[QM9.homo].item() == pytest.approx(-0.3877, abs=1e-4)
    assert len(methane[msp.harmonic_frequencies]) == 9
    # atom references let schnetpack's RemoveOffsets(remove_atomrefs=True) work
    assert data.metadata["atomrefs"][QM9.U0][6] == pytest.approx(-37.846772)


def test_refuses_to_overwrite(qm9_db):
    with pytest.raises(FileExistsError, match="exists"):
        build_qm9_db(qm9_db, limit=1)


def test_number_parser_accepts_qm9pack_forms():
    assert parse_numbers("[[-0.2,0.,1e-3],[.5,-2,3.]]").tolist() == [-0.2, 0.0, 1e-3, 0.5, -2.0, 3.0]


@pytest.mark.slow
def test_stock_spktrain_qm9_atomwise_runs_on_it(tmp_path, qm9_db):
    spktrain(
        tmp_path,
        "experiment=qm9_atomwise",
        f"data.datapath={qm9_db}",
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
