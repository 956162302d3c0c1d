"""QM9 offline, from the ``qm9pack`` PyPI package (130,831 molecules), in SchNetPack's QM9 layout.

Targets get ``schnetpack.datasets.QM9``'s names and units (Hartree, Debye, a0^3, a0^2,
cal/mol/K, GHz), so ``spktrain experiment=qm9_atomwise data.datapath=<db>`` works on it.
"""

import ast
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from schnetpack.datasets import QM9
from tqdm import tqdm

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.files import check_new_database, new_database

__all__ = [
    "QM9_COLUMNS",
    "QM9_UNITS",
    "QM9Target",
    "QM9_TARGETS",
    "qm9_target",
    "load_qm9pack",
    "qm9_molecules",
    "build_qm9_db",
    "QM9FormatError",
    "read_qm9_xyz",
    "qm9_xyz_archive",
]

#: qm9pack column -> SchNetPack QM9 property name (in the order of a QM9 xyz file's line 2)
QM9_COLUMNS = {
    "RotA_GHz": QM9.A,
    "RotB_GHz": QM9.B,
    "RotC_GHz": QM9.C,
    "Dipole_debye": QM9.mu,
    "Polarizability_bohr3": QM9.alpha,
    "HOMO_au": QM9.homo,
    "LUMO_au": QM9.lumo,
    "HOMO_LUMO_gap_au": QM9.gap,
    "R2_bohr2": QM9.r2,
    "ZPVE_au": QM9.zpve,
    "InternalEnergy_0K_au": QM9.U0,
    "InternalEnergy_298K_au": QM9.U,
    "Enthalphy_298K_au": QM9.H,
    "GibbsFreeEnergy_298K_au": QM9.G,
    "Heatcapacity_Cv_cal_mol_K": QM9.Cv,
}
#: SchNetPack QM9 property -> unit, as ``schnetpack.datasets.QM9`` stores them
QM9_UNITS = {
    QM9.A: "GHz",
    QM9.B: "GHz",
    QM9.C: "GHz",
    QM9.mu: "Debye",
    QM9.alpha: "a0 a0 a0",
    QM9.homo: "Ha",
    QM9.lumo: "Ha",
    QM9.gap: "Ha",
    QM9.r2: "a0 a0",
    QM9.zpve: "Ha",
    QM9.U0: "Ha",
    QM9.U: "Ha",
    QM9.H: "Ha",
    QM9.G: "Ha",
    QM9.Cv: "cal/mol/K",
}


@dataclass(frozen=True)
class QM9Target:
    """How one QM9 target is fine-tuned and reported (``finetune.py`` builds on it)."""

    key: str  # SchNetPack's QM9 property name
    unit: str  # unit the model is trained in (data=qm9 loads energies in eV)
    report_unit: str  # unit of the logged MAE (the paper's)
    report_scale: float  # report = scale * train unit
    module: str  # atomwise | dipole | spatial_extent
    aggregation: str = "sum"
    atomrefs: bool = False

    @property
    def is_extensive(self) -> bool:
        """Summed over atoms (grows with the molecule) rather than averaged."""
        return self.aggregation == "sum"


#: the paper's short target name (``schnetpack.datasets.QM9``'s attribute) -> its target
QM9_TARGETS: Dict[str, QM9Target] = {
    "mu": QM9Target(QM9.mu, "Debye", "D", 1.0, "dipole"),
    "alpha": QM9Target(QM9.alpha, "a0 a0 a0", "a0^3", 1.0, "atomwise"),
    "homo": QM9Target(QM9.homo, "eV", "meV", 1000.0, "atomwise", "avg"),
    "lumo": QM9Target(QM9.lumo, "eV", "meV", 1000.0, "atomwise", "avg"),
    "gap": QM9Target(QM9.gap, "eV", "meV", 1000.0, "atomwise", "avg"),
    "r2": QM9Target(QM9.r2, "a0 a0", "a0^2", 1.0, "spatial_extent"),
    "zpve": QM9Target(QM9.zpve, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "U0": QM9Target(QM9.U0, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "U": QM9Target(QM9.U, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "H": QM9Target(QM9.H, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "G": QM9Target(QM9.G, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "Cv": QM9Target(QM9.Cv, "cal/mol/K", "cal/mol/K", 1.0, "atomwise", "sum", True),
}


def qm9_target(property: str) -> QM9Target:
    """The target for a short name (``homo``) or a SchNetPack key (``energy_U0``)."""
    if property in QM9_TARGETS:
        return QM9_TARGETS[property]
    for target in QM9_TARGETS.values():
        if target.key == property:
            return target
    raise ValueError(f"unknown QM9 property {property!r}; choose one of {list(QM9_TARGETS)}")


#: QM9's single-atom reference energies (Hartree; Cv in cal/mol/K) for H, C, N, O, F, as
#: published with QM9 (atomref table); schnetpack's RemoveOffsets(remove_atomrefs=True) reads them
_ATOMREF_TABLE = {
    # Z:   zpve, U0,          U,           H,           G,           Cv
    1: (0.0, -0.500273, -0.498857, -0.497912, -0.510927, 2.981),
    6: (0.0, -37.846772, -37.845355, -37.844411, -37.861317, 2.981),
    7: (0.0, -54.583861, -54.582445, -54.581501, -54.598897, 2.981),
    8: (0.0, -75.064579, -75.063162, -75.062219, -75.079532, 2.981),
    9: (0.0, -99.718730, -99.717314, -99.716370, -99.733544, 2.981),
}


def qm9_atomrefs(max_z: int = 100) -> dict:
    """Atom references in SchNetPack's layout: property -> list indexed by atomic number."""
    names = [QM9.zpve, QM9.U0, QM9.U, QM9.H, QM9.G, QM9.Cv]
    refs = {name: [0.0] * max_z for name in names}
    for z, values in _ATOMREF_TABLE.items():
        for name, value in zip(names, values):
            refs[name][z] = value
    return refs


def load_qm9pack():
    """All of QM9 as a pandas DataFrame (one row per molecule, ordered by GDB index).

    Reads the CSV files that ``qm9pack`` ships, as its ``get_data("qm9")`` does (three parts plus the
    polarizabilities, joined on ``XYZ_file``), without importing ``qm9pack`` itself: its module imports
    ``pkg_resources``, which setuptools >= 81 (as on Python 3.12 stacks) no longer has.
    """
    import importlib.util

    import pandas as pd

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


class QM9FormatError(ValueError):
    """A QM9 xyz file or archive not in the standard format; the message names the file and molecule."""


#: properties on line 2 of a dsgdb9nsd xyz file, after "gdb <index>"
_XYZ_PROPERTIES = list(QM9_COLUMNS.values())
_ELEMENTS = frozenset(chemical_symbols[1:])


def _xyz_number(text: str, where: str) -> float:
    """A finite number as the QM9 files write it (``1.2*^-6`` for 1.2e-6)."""
    try:
        value = float(text.replace("*^", "e"))
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise ValueError(f"{where}: {text[:30]!r} is not a finite number")
    return value


def _xyz_fields(lines: List[str], i: int, what: str) -> List[str]:
    """The whitespace-separated fields of line ``i`` (0-based), which must exist."""
    if i >= len(lines):
        raise ValueError(f"the file ends after line {len(lines)}, before the {what} (line {i + 1})")
    return lines[i].split()


def _xyz_header(lines: List[str]) -> tuple:
    """Number of atoms (line 1) and labels (line 2: ``gdb <index>`` + the 15 properties)."""
    count = _xyz_fields(lines, 0, "number of atoms")
    if len(count) != 1 or not count[0].isdigit() or int(count[0]) < 1:
        raise ValueError(f"line 1 is {lines[0][:40]!r}, expected the number of atoms")
    header = _xyz_fields(lines, 1, "properties")
    if len(header) != 2 + len(_XYZ_PROPERTIES) or header[0] != "gdb" or not header[1].isdigit():
        raise ValueError(f"line 2 has {len(header)} fields, expected 'gdb <index>' + {len(_XYZ_PROPERTIES)} properties")
    labels = {k: _xyz_number(v, f"line 2, {k}") for k, v in zip(_XYZ_PROPERTIES, header[2:])}
    labels[msp.gdb_index] = int(header[1])
    return int(count[0]), labels


def _xyz_atoms(lines: List[str], n: int) -> Atoms:
    """The ``n`` atom lines (``<element> x y z <charge>``) after the header."""
    symbols, positions = [], []
    for i in range(2, 2 + n):
        fields = _xyz_fields(lines, i, f"atom {i - 1} of {n}")
        if len(fields) < 4 or fields[0] not in _ELEMENTS:
            raise ValueError(
                f"line {i + 1} is {lines[i][:60]!r}, expected atom {i - 1} of {n}: '<element> x y z charge'"
            )
        symbols.append(fields[0])
        positions.append([_xyz_number(x, f"line {i + 1}") for x in fields[1:4]])
    return Atoms(symbols=symbols, positions=positions)


def read_qm9_xyz(text: str, name: str = "xyz"):
    """One molecule of the standard QM9 archive (``dsgdb9nsd_NNNNNN.xyz``):
    ``(atoms, labels, smiles, harmonic frequencies)`` with SchNetPack names and QM9 units.

    Raises:
        QM9FormatError: naming ``name`` and the line that is not in the standard format.
    """
    lines = [line.rstrip("\r") for line in text.strip("\n").split("\n")]
    try:
        n, labels = _xyz_header(lines)
        atoms = _xyz_atoms(lines, n)
        frequencies = np.array(
            [_xyz_number(x, f"line {n + 3}") for x in _xyz_fields(lines, 2 + n, "harmonic frequencies")]
        )
        smiles = _xyz_fields(lines, 3 + n, "SMILES")
        if not smiles:
            raise ValueError(f"line {n + 4} is empty, expected the SMILES")
        _xyz_fields(lines, 4 + n, "InChI")  # the last line: a file cut short (in its SMILES, say) lacks it
    except ValueError as err:
        raise QM9FormatError(f"{name}: not a QM9 xyz file ({err})") from err
    return atoms, labels, smiles[0], frequencies


def _xyz_text(raw: bytes, name: str) -> str:
    """The text of one xyz file (UTF-8, a byte-order mark allowed)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise QM9FormatError(
            f"{name}: not a QM9 xyz file (not UTF-8 text: byte {err.start} is {raw[err.start : err.start + 1]!r})"
        ) from err


def _tar_xyz_members(path: str) -> Iterator[tuple]:
    """``(name, bytes)`` of the ``.xyz`` files of a tar archive (any compression), in archive order."""
    import lzma
    import tarfile
    import zlib

    last = None
    try:
        with tarfile.open(path, "r|*") as archive:  # streamed: no seeking in the bz2 stream
            for member in archive:
                last = member.name
                if member.isfile() and member.name.endswith(".xyz"):
                    yield member.name, archive.extractfile(member).read()
            unread = _unread_data(archive.fileobj)
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as err:
        where = f" after {last}" if last else ""
        raise QM9FormatError(f"{path}: not a readable tar archive{where} ({type(err).__name__}: {err})") from err
    if unread:
        where = f"after {last}" if last else "at its start"
        raise QM9FormatError(
            f"{path}: damaged tar archive: a member header {where} cannot be read ({unread} non-zero bytes unread)"
        )


def _unread_data(stream, block: int = 1 << 16) -> int:
    """How many non-zero bytes (not padding) follow the end of a tar archive in ``stream``.

    tarfile ends an archive at the first header it cannot read, silently dropping the members
    after it; the two zero blocks and the zero padding of a whole archive come out as 0.
    """
    count = 0
    while True:
        chunk = stream.read(block)
        if not chunk:
            return count
        count += len(chunk) - chunk.count(0)


def _xyz_sources(path: str) -> Iterator[tuple]:
    """``(name, bytes)`` of the xyz files in a folder (sorted) or a tar archive."""
    if os.path.isdir(path):
        for name in sorted(f for f in os.listdir(path) if f.endswith(".xyz")):
            full = os.path.join(path, name)
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    yield full, f.read()
        return
    for name, raw in _tar_xyz_members(path):
        yield f"{path}:{name}", raw


def qm9_xyz_archive(path: str) -> Iterator:
    """Molecules of the standard ``dsgdb9nsd.xyz.tar.bz2`` (or a folder of its xyz files), by GDB index.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        QM9FormatError: an unreadable archive, or a molecule not in the standard format (both named).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"QM9 archive {path} does not exist")
    n = 0
    for name, raw in _xyz_sources(path):
        n += 1
        yield read_qm9_xyz(_xyz_text(raw, name), name)
    if n == 0:
        raise QM9FormatError(f"{path}: no QM9 xyz files (dsgdb9nsd_*.xyz) in it")


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
            import itertools

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
    from ase.db import connect
    from schnetpack.data import ASEAtomsData

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
