"""Convert the real QM9S files into a MolSpectra SchNetPack database.

Inputs, the files of the QM9S release:
  qm9s.pt            pickled list of torch_geometric ``Data`` (``number`` = GDB index, ``z``, ``pos``, ``smile``)
  uv_boraden.csv     header: empty first column, then the 701 grid values; rows: 0-based index, intensities
  ir_boraden.csv     same with 3501 columns (~8 GB: streamed in chunks, never read whole)
  raman_boraden.csv  same with 3501 columns

CSV rows are matched to molecules by their index column (never by position). Every
mismatch is reported in a summary (printed and written next to the output as JSON):
molecules without a row in some modality, rows without a molecule, duplicate rows, and
rows with non-finite, negative, missing, empty (NaN as pandas writes it) or unparsable
values. Such molecules are not written; the rest are. The database is written to
``<out>.partial.db`` and renamed when complete, so ``out`` is whole or absent; an existing
``out`` or ``<out>.partial.db`` (a conversion running or killed) is refused, never touched.
"""

import csv
import json
import os
import sqlite3
import tempfile
import warnings
from contextlib import closing
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule
from ase.db import connect
from schnetpack.data import ASEAtomsData
from tqdm import tqdm

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.files import check_new_database, damaged_zip, new_database, require_file
from schnetpack_molspectra.data.qm9_targets import QM9_UNITS
from schnetpack_molspectra.spectra.checks import spectrum_problem
from schnetpack_molspectra.spectra.grids import GRIDS

__all__ = ["QM9SFormatError", "read_qm9s_graphs", "stream_spectra_csv", "convert_qm9s", "write_synthetic_qm9s"]


class QM9SFormatError(ValueError):
    """A QM9S file that is not in the expected format; the message names the file."""


def read_qm9s_graphs(path: str):
    """The molecules of ``qm9s.pt``: list of (gdb_index, atomic numbers, positions (A), smiles).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        QM9SFormatError: not a list of graphs, or a graph without a usable molecule (file and
            graph position named).
    """
    require_file(path, "QM9S structures", "do not exist")
    damage = damaged_zip(path)
    if damage is not None:
        raise QM9SFormatError(f"{path}: not a readable torch file: {damage}")
    try:
        graphs = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as err:
        raise QM9SFormatError(
            f"{path}: reading it needs {err.name} (pip install 'schnetpack-molspectra[qm9s]')"
        ) from err
    except Exception as err:
        raise QM9SFormatError(f"{path}: not a readable torch file: {type(err).__name__}: {err}") from err
    if not isinstance(graphs, (list, tuple)):
        raise QM9SFormatError(f"{path}: holds a {type(graphs).__name__}, expected a list of torch_geometric Data")
    return [_graph_molecule(g, path, position) for position, g in enumerate(graphs)]


def _integers(values) -> Optional[np.ndarray]:
    """``values`` as a flat int64 array, or None if they are not whole numbers."""
    arr = np.asarray(values).reshape(-1)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if (
        arr.dtype.kind == "f"
        and np.isfinite(arr).all()
        and (arr == np.round(arr)).all()
        and (np.abs(arr) < 2**62).all()
    ):
        return arr.astype(np.int64)
    return None


def _molecule_problem(number, z, pos) -> Optional[str]:
    """What is wrong with one graph's GDB index, atomic numbers and positions, or None."""
    if number is None or number.size == 0:
        return "'number' (GDB index) is not an integer"
    if z is None or z.size == 0 or (z < 1).any() or (z > 118).any():
        return "'z' is not a list of atomic numbers (1-118)"
    if pos.shape != (len(z), 3):
        return f"'pos' has shape {pos.shape}, expected ({len(z)}, 3) for its {len(z)} atoms"
    if not np.isfinite(pos).all():
        return "'pos' has non-finite coordinates"
    return None


def _graph_molecule(g, path: str, position: int):
    """``(gdb_index, z, pos, smiles)`` of one graph, or :class:`QM9SFormatError` naming it."""
    try:
        number, z = _integers(g.number), _integers(g.z)
        pos = np.asarray(g.pos, dtype=np.float64)
        smiles = getattr(g, "smile", "")
    except AttributeError as err:
        raise QM9SFormatError(f"{path}: graph {position} lacks {err}") from err
    except (TypeError, ValueError, RuntimeError) as err:
        raise QM9SFormatError(f"{path}: graph {position}: unreadable values ({type(err).__name__}: {err})") from err
    problem = _molecule_problem(number, z, pos)
    if problem is None and not isinstance(smiles, str):
        problem = f"'smile' is a {type(smiles).__name__}, not a string"
    if problem is not None:
        raise QM9SFormatError(f"{path}: graph {position}: {problem}")
    return int(number[0]), z, pos, smiles


def _csv_header(raw: bytes, path: str, n_points: int) -> None:
    """Check the header line: an empty index column and ``n_points`` grid values."""
    if not raw:
        raise QM9SFormatError(f"{path}: empty file (expected a header line and one row per molecule)")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise QM9SFormatError(f"{path}: UTF-16 text; expected UTF-8/ASCII CSV as the QM9S release writes it")
    # parsed as CSV: an index cell written as "" (quoted empty) is the empty cell it stands for
    try:
        header = next(csv.reader([raw.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")]), [])
    except csv.Error as err:  # e.g. a lone carriage return inside the line
        raise QM9SFormatError(f"{path}: header line is not CSV ({err})") from err
    if len(header) != n_points + 1 or header[0].strip() not in ("", "Unnamed: 0"):
        raise QM9SFormatError(
            f"{path}: header has {len(header)} columns (expected an empty index column + {n_points} grid values)"
        )


def _row_index(text: str) -> Optional[int]:
    """The index column of a row (``12`` or ``12.0``), or None if it is not a whole number."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not np.isfinite(value) or value != int(value) or abs(value) >= 2**63:
        return None
    return int(value)


def _row_values(text: str, n_points: int) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """The intensities of one row (the text after the index), or None and the problem."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.fromstring(text, dtype=np.float32, sep=",")
    except ValueError:  # numpy >= 2.3 raises on an empty or unparsable field
        values = None
    if values is not None and values.size == n_points:
        return values, spectrum_problem(values, n_points)
    fields = text.split(",")
    empty = [i for i, x in enumerate(fields) if not x.strip()]
    if empty:
        return None, f"has {len(empty)} empty values (NaN as pandas writes it), first at point {empty[0]}"
    for i, x in enumerate(fields):
        try:
            float(x)
        except ValueError:
            return None, f"has an unparsable value {x[:20]!r} at point {i}"
    return None, "has unparsable values"


def stream_spectra_csv(path: str, modality: str) -> Iterator[Tuple[Optional[int], Optional[np.ndarray], Optional[str]]]:
    """Yield ``(row index, intensities float32 (n,), problem or None)`` for each CSV row.

    Reads one line at a time (memory bounded by one row, ~14 KB for IR). A row with the
    wrong number of columns, empty (pandas' NaN), unparsable or non-finite values, or
    negative intensities, and a last row without line end (a truncated file) come with
    their problem; the index is None if it cannot be parsed (the problem then names the line).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        QM9SFormatError: the file is empty or its header is not the ``modality`` grid.
    """
    require_file(path, f"{modality} spectra", "do not exist")
    n_points = GRIDS[modality].n_points
    with open(path, "rb") as f:
        _csv_header(f.readline(), path, n_points)
        for line_number, raw in enumerate(f, start=2):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line.strip():
                continue
            head, _, rest = line.partition(",")
            index = _row_index(head)
            if index is None:
                yield None, None, f"line {line_number}: unparsable index {head[:20]!r}"
                continue
            n_columns = rest.count(",") + 1
            if n_columns != n_points:
                yield index, None, f"has {n_columns} values, expected {n_points} (truncated or malformed row)"
                continue
            if not raw.endswith(b"\n"):  # pandas ends every row with one: the file was cut inside this row's last value
                yield index, None, "has no line end: the file ends inside it (truncated?)"
                continue
            values, problem = _row_values(rest, n_points)
            yield index, values, problem


def _index_csv(path: str, modality: str, store: sqlite3.Connection, summary: Dict) -> None:
    """Copy one modality's rows into an on-disk sqlite table keyed by index (bounded memory)."""
    store.execute(f"CREATE TABLE {modality} (idx INTEGER PRIMARY KEY, spectrum BLOB)")
    problems, duplicates = summary["bad_rows"], summary["duplicate_rows"]
    n = 0
    for index, values, problem in tqdm(
        stream_spectra_csv(path, modality), desc=f"reading {os.path.basename(path)}", unit="row"
    ):
        n += 1
        if problem is not None:
            problems.append({"file": path, "index": index, "problem": problem})
            continue
        try:
            store.execute(f"INSERT INTO {modality} VALUES (?, ?)", (index, values.tobytes()))
        except sqlite3.IntegrityError:
            duplicates.append({"file": path, "index": index})
    store.commit()
    summary["rows"][modality] = n


def _qm9_labels(qm9_db: str) -> Dict[int, Dict]:
    """GDB index -> QM9 labels of a ``spkspectra qm9`` database."""
    require_file(qm9_db, "QM9 database")  # ase.db.connect would create an empty one
    try:
        with connect(qm9_db, use_lock_file=False) as conn:
            rows = [(row.id, row.data) for row in conn.select()]
    except (sqlite3.DatabaseError, ValueError, KeyError) as err:
        raise QM9SFormatError(f"{qm9_db}: not a readable ASE database ({type(err).__name__}: {err})") from err
    labels = {}
    for row_id, data in rows:
        index = _integers(data[msp.gdb_index]) if msp.gdb_index in data else None
        if index is None or index.size != 1:
            raise QM9SFormatError(f"{qm9_db}: row {row_id} has no {msp.gdb_index} (not a database of spkspectra qm9)")
        labels[int(index[0])] = {k: data[k] for k in QM9_UNITS if k in data}
    return labels


def _molecule_spectra(store: sqlite3.Connection, position: int) -> Optional[Dict[str, np.ndarray]]:
    """The spectra of the molecule at ``position`` in every modality, or None if one is missing."""
    data = {}
    for modality in GRIDS:
        found = store.execute(f"SELECT spectrum FROM {modality} WHERE idx = ?", (position,)).fetchone()
        if found is None:
            return None
        data[msp.spectrum_keys[modality]] = np.frombuffer(found[0], dtype=np.float32)[None, :].copy()
    return data


def _write_molecules(path: str, molecules, store: sqlite3.Connection, labels: Optional[Dict], summary: Dict) -> None:
    """Write every molecule with all its spectra (and its QM9 labels if ``labels``) to a new db at ``path``."""
    property_units = {msp.spectrum_keys[m]: "1" for m in GRIDS}
    property_units[msp.gdb_index] = "1"
    if labels is not None:
        property_units.update(QM9_UNITS)
    ASEAtomsData.create(path, distance_unit="Ang", property_unit_dict=property_units)
    written, skipped = 0, []
    with connect(path, use_lock_file=False) as conn:
        for position, (gdb, z, pos, smiles) in enumerate(tqdm(molecules, desc="writing", unit="mol")):
            data = _molecule_spectra(store, position)
            if data is None:
                skipped.append(position)
                continue
            data[msp.gdb_index] = np.array([gdb], dtype=np.int64)
            if labels is not None:
                if gdb not in labels:
                    summary["molecules_without_qm9_labels"].append(gdb)
                    skipped.append(position)
                    continue
                data.update(labels[gdb])
            conn.write(Atoms(numbers=z, positions=pos), data=data, input_index=position, smiles=smiles)
            written += 1
    summary["written"] = written
    summary["not_written"] = skipped


def convert_qm9s(
    pt: str,
    csvs: Dict[str, str],
    out: str,
    qm9_db: Optional[str] = None,
    summary_path: Optional[str] = None,
    workdir: Optional[str] = None,
) -> Dict:
    """Convert QM9S into the MolSpectra layout at ``out``; return the mismatch summary.

    Bad CSV rows are reported in the summary and skipped; ``out`` is written through
    ``<out>.partial.db`` and renamed when complete (an existing ``out`` or partial file is
    refused, never touched).

    Args:
        pt: ``qm9s.pt``.
        csvs: modality -> CSV path (``uv``, ``ir``, ``raman``).
        qm9_db: optional QM9 database (``spkspectra qm9``) whose labels are attached by GDB index.
        summary_path: where to write the JSON summary (default ``<out>.summary.json``).

    Raises:
        FileExistsError: ``out`` or ``<out>.partial.db`` exists.
        ValueError: ``out`` does not end in ``.db``.
        FileNotFoundError: an input is missing (or a directory).
        QM9SFormatError: an input that is not in the QM9S format, named (rows excepted: those go to the summary).
    """
    check_new_database(out)  # before hours of reading
    missing_modalities = sorted(set(GRIDS) - set(csvs))
    if missing_modalities:
        raise ValueError(f"missing spectra CSVs for {missing_modalities}")
    for modality, path in csvs.items():
        require_file(path, f"{modality} spectra", "do not exist")
    molecules = read_qm9s_graphs(pt)
    summary = {
        "molecules_in_pt": len(molecules),
        "rows": {},
        "bad_rows": [],
        "duplicate_rows": [],
        "missing_rows": {},
        "orphan_rows": {},
    }
    labels = _qm9_labels(qm9_db) if qm9_db is not None else None
    summary["molecules_without_qm9_labels"] = []

    with (
        tempfile.TemporaryDirectory(dir=workdir) as tmp,
        closing(sqlite3.connect(os.path.join(tmp, "spectra.sqlite"))) as store,
    ):
        for modality in GRIDS:
            _index_csv(csvs[modality], modality, store, summary)
        n_pt = len(molecules)
        for modality in GRIDS:
            indices = {i for (i,) in store.execute(f"SELECT idx FROM {modality}")}
            summary["missing_rows"][modality] = sorted(set(range(n_pt)) - indices)
            summary["orphan_rows"][modality] = sorted(i for i in indices if i >= n_pt or i < 0)
        with new_database(out) as partial:
            _write_molecules(partial, molecules, store, labels, summary)
    summary_path = summary_path or f"{out}.summary.json"
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1)
    return summary


#: the molecules :func:`write_synthetic_qm9s` cycles through (ASE's g2 names)
SYNTHETIC_MOLECULES = ["CH4", "NH3", "H2O", "C2H6", "CH3OH", "HCN", "C2H4", "CH3CHO", "HCOOH", "CH3CN", "C2H2", "CO2"]


def write_synthetic_qm9s(
    folder: str,
    n: int = 12,
    drop_ir: Sequence[int] = (),
    nan_raman: Sequence[int] = (),
    short_uv: Sequence[int] = (),
    rng: Optional[np.random.Generator] = None,
) -> Tuple[str, Dict[str, str]]:
    """Write ``n`` small molecules in exactly the real QM9S layout - ``qm9s.pt`` (torch_geometric
    ``Data``: ``number`` = GDB index 1000 + i, ``z``, ``pos``, ``smile``) and the three
    ``*_boraden.csv`` (header: the grid; one row of random intensities per molecule) - for tests
    and benchmarks of :func:`convert_qm9s`. ``drop_ir``, ``nan_raman``, ``short_uv``: molecules
    whose IR row is left out, whose Raman row holds a NaN, whose UV row lacks its last 3 values.

    Returns (path of ``qm9s.pt``, {modality: path of its CSV}).
    """
    from torch_geometric.data import Data  # the optional ``qm9s`` extra: only where QM9S files are written

    rng = rng or np.random.default_rng(0)
    graphs = []
    for i in range(n):
        atoms = molecule(SYNTHETIC_MOLECULES[i % len(SYNTHETIC_MOLECULES)])
        graphs.append(
            Data(
                number=torch.tensor([1000 + i]),
                z=torch.tensor(atoms.numbers),
                pos=torch.tensor(atoms.positions, dtype=torch.float32),
                smile=SYNTHETIC_MOLECULES[i % len(SYNTHETIC_MOLECULES)],
            )
        )
    torch.save(graphs, os.path.join(folder, "qm9s.pt"))
    paths = {}
    for m, grid in GRIDS.items():
        path = os.path.join(folder, f"{m}_boraden.csv")
        with open(path, "w") as f:
            f.write("," + ",".join(f"{x:g}" for x in grid.values()) + "\n")
            for i in range(n):
                if m == "ir" and i in drop_ir:
                    continue
                values = rng.random(grid.n_points) * 10
                text = ",".join(f"{v:.6g}" for v in values)
                if m == "raman" and i in nan_raman:
                    text = text.replace(text.split(",")[7], "nan", 1)
                if m == "uv" and i in short_uv:
                    text = ",".join(text.split(",")[:-3])
                f.write(f"{i},{text}\n")
        paths[m] = path
    return os.path.join(folder, "qm9s.pt"), paths
