"""The default dataset's subset and cache: seeded, small molecules, atomic build, no rebuild."""
import ast
import os

from ase.db import connect

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.default import (
    DEFAULT_MAX_HEAVY_ATOMS,
    DEFAULT_SIZE,
    default_dataset_path,
    default_gdb_indices,
    ensure_default_dataset,
)
from schnetpack_molspectra.data.qm9 import load_qm9pack
from schnetpack_molspectra.data.simulate.runner import read_failures


def test_subset_is_seeded_small_and_nested_in_qm9():
    table = load_qm9pack()
    indices = default_gdb_indices(DEFAULT_SIZE, table)
    assert indices == default_gdb_indices(DEFAULT_SIZE, table) and len(set(indices)) == DEFAULT_SIZE
    rows = table.set_index("Index").loc[indices]
    heavy = rows["Elements"].map(lambda e: sum(s != "H" for s in ast.literal_eval(e)))
    assert heavy.max() <= DEFAULT_MAX_HEAVY_ATOMS and heavy.min() >= 1


def test_small_build_is_cached_under_molspectra_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLSPECTRA_CACHE", str(tmp_path))
    path = ensure_default_dataset(n_molecules=3, workers=1)
    assert path == default_dataset_path(3) and os.path.dirname(path) == str(tmp_path)
    assert not any("partial" in name for name in os.listdir(tmp_path))  # renamed when complete
    with connect(path) as conn:
        rows = list(conn.select())
    assert len(rows) + len(read_failures(path)) == 3
    for row in rows:
        assert row.data[msp.uv_spectrum].shape == (1, 701) and "homo" in row.data and row.key_value_pairs["smiles"]
    stamp = os.path.getmtime(path)
    assert ensure_default_dataset(n_molecules=3) == path and os.path.getmtime(path) == stamp  # not rebuilt
