"""QM9 offline, from the ``qm9pack`` PyPI package (130,831 molecules), in SchNetPack's QM9 layout:
reading qm9pack's tables into molecules and labels, and writing QM9 (from qm9pack or the standard
xyz archive, :mod:`schnetpack_molspectra.data.qm9_xyz`) as a SchNetPack database.

Targets get ``schnetpack.datasets.QM9``'s names and units
(:mod:`schnetpack_molspectra.data.qm9_targets`), so ``spktrain experiment=qm9_atomwise
data.datapath=<db>`` works on it.
"""

import ast
import importlib.util
import itertools
import os
import re
from typing import Iterator, List, Optional, Sequence

import numpy as np
from ase import Atoms
from ase.db import connect
from schnetpack.data import ASEAtomsData
from tqdm import tqdm

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.files import check_new_database, new_database
from schnetpack_molspectra.data.qm9_targets import QM9_COLUMNS, QM9_UNITS, qm9_atomrefs
from schnetpack_molspectra.data.qm9_xyz import qm9_xyz_archive

__all__ = [
    "load_qm9pack",
    "parse_numbers",
    "row_atoms",
    "row_labels",
    "gdb_positions",
    "qm9_molecules",
    "build_qm9_db",
]


def load_qm9pack():
    """All of QM9 as a pandas DataFrame (one row per molecule, ordered by GDB index).

    Reads the CSV files that ``qm9pack`` ships, as its ``get_data("qm9")`` does (three parts plus the
    polarizabilities, joined on ``XYZ_file``), without importing ``qm9pack`` itself: its module imports
    ``pkg_resources``, which setuptools >= 81 (as on Python 3.12 stacks) no longer has.
    """
    import pandas as pd  # comes with qm9pack; a GPU node given only train_inputs.npz has neither

    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("QM9 offline needs the 'qm9pack' package: pip install qm9pack")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    parts = [pd.read_csv(os.path.join(folder, f"qm9_part{k}.csv")) for k in (1, 2, 3)]
    polarizability = pd.read_csv(os.path.join(folder, "qm9_polarizability.csv"))
    table = pd.concat(parts, ignore_index=True).merge(polarizability, on="XYZ_file", how="inner")
    return table.sort_values("Index").reset_index(drop=True)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_numbers(text: str) -> np.ndarray:
    """All numbers in a qm9pack list cell (it holds forms such as ``0.`` that JSON rejects)."""
    return np.array([float(x) for x in _NUMBER.findall(text)], dtype=np.float64)


def row_atoms(row) -> Atoms:
    """The molecule of one qm9pack row (positions in Angstrom)."""
    symbols = ast.literal_eval(row.Elements)
    positions = parse_numbers(row.XYZ_Ang)
    if positions.size != 3 * len(symbols):
        raise ValueError(f"qm9pack gdb_{row.Index}: {positions.size} coordinates for {len(symbols)} atoms")
    return Atoms(symbols=symbols, positions=positions.reshape(-1, 3))


def row_labels(row) -> dict:
    """QM9 targets of one row, SchNetPack names and units, plus the GDB index."""
    labels = {name: float(getattr(row, column)) for column, name in QM9_COLUMNS.items()}
    labels[msp.gdb_index] = int(row.Index)
    return labels


def gdb_positions(table, gdb_indices: Sequence[int]) -> List[int]:
    """Row positions in ``table`` (from :func:`load_qm9pack`) of the given GDB indices, in their order."""
    by_index = {int(i): pos for pos, i in enumerate(table["Index"])}
    unknown = [i for i in gdb_indices if int(i) not in by_index]
    if unknown:
        raise ValueError(f"GDB indices not in QM9: {unknown[:10]}")
    return [by_index[int(i)] for i in gdb_indices]


def qm9_molecules(table, positions: Optional[Sequence[int]] = None) -> Iterator:
    """``(atoms, labels, smiles, harmonic_frequencies)`` for rows at ``positions`` (all if None)."""
    rows = table if positions is None else table.iloc[list(positions)]
    for row in rows.itertuples(index=False):
        frequencies = parse_numbers(row.Harmonic_Freq_cmi)
        yield row_atoms(row), row_labels(row), row.SMILES, frequencies


def build_qm9_db(
    path: str,
    limit: Optional[int] = None,
    gdb_indices: Optional[List[int]] = None,
    chunk: int = 5000,
    xyz_archive: Optional[str] = None,
) -> int:
    """Write QM9 (or the first ``limit`` molecules, or the given GDB indices) as a SchNetPack db,
    from ``qm9pack`` or, with ``xyz_archive``, from the standard ``dsgdb9nsd.xyz.tar.bz2``.

    Keeps the DFT harmonic frequencies (``harmonic_frequencies``, cm^-1), the GDB index and,
    per row, the SMILES (ASE key ``smiles``). Refuses to overwrite an existing file; a
    failure leaves no file at ``path`` (:func:`new_database`).
    """
    check_new_database(path)
    if xyz_archive is not None:
        molecules = qm9_xyz_archive(xyz_archive)
        if gdb_indices is not None:
            wanted = set(int(i) for i in gdb_indices)
            molecules = (m for m in molecules if m[1][msp.gdb_index] in wanted)
        total = len(gdb_indices) if gdb_indices is not None else limit
        if limit is not None:
            molecules = itertools.islice(molecules, limit)
        return _write_qm9(path, molecules, total, chunk)
    table = load_qm9pack()
    if gdb_indices is not None:
        positions = gdb_positions(table, gdb_indices)
    else:
        positions = range(len(table) if limit is None else min(limit, len(table)))
    return _write_qm9(path, qm9_molecules(table, positions), len(positions), chunk)


def _write_qm9(path: str, molecules, total: Optional[int], chunk: int) -> int:
    """Write ``molecules`` to a new db at ``path`` (:func:`new_database`: whole or absent)."""
    units = dict(QM9_UNITS, **{msp.gdb_index: "1", msp.harmonic_frequencies: "1"})
    n = 0
    with new_database(path) as partial:
        ASEAtomsData.create(partial, distance_unit="Ang", property_unit_dict=units, atomrefs=qm9_atomrefs())
        conn = connect(partial, use_lock_file=False)
        batch = []
        for atoms, labels, smiles, frequencies in tqdm(molecules, total=total, desc="QM9", unit="mol"):
            data = {k: np.array([v], dtype=np.float64) for k, v in labels.items() if k != msp.gdb_index}
            data[msp.gdb_index] = np.array([labels[msp.gdb_index]], dtype=np.int64)
            data[msp.harmonic_frequencies] = frequencies
            batch.append((atoms, data, smiles))
            if len(batch) == chunk:
                n += _write(conn, batch)
                batch = []
        n += _write(conn, batch)
    return n


def _write(conn, batch) -> int:
    with conn:  # one transaction per chunk
        for atoms, data, smiles in batch:
            conn.write(atoms, data=data, smiles=smiles)
    return len(batch)
