"""The standard QM9 xyz archive (``dsgdb9nsd.xyz.tar.bz2``, any tar compression, or a folder of its
``dsgdb9nsd_NNNNNN.xyz`` files): parsing each file into ``(atoms, labels, smiles, harmonic
frequencies)`` with SchNetPack's QM9 names and units, and :class:`QM9FormatError` naming the file
and line of anything not in the standard format.
"""

import lzma
import os
import tarfile
import zlib
from typing import Iterator, List

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.qm9_targets import QM9_COLUMNS

__all__ = [
    "QM9FormatError",
    "read_qm9_xyz",
    "qm9_xyz_archive",
]


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
    index = int(header[1])
    if not 1 <= index < 2**63:  # stored as int64
        raise ValueError(f"line 2: GDB index {header[1][:30]} is not a molecule's index (1 ... 2^63 - 1)")
    labels[msp.gdb_index] = index
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
