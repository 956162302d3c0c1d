"""Convert the real QM9S files into a MolSpectra SchNetPack database.

Inputs, the files of the QM9S release:
  qm9s.pt            pickled list of torch_geometric ``Data`` (``number`` = GDB index, ``z``, ``pos``, ``smile``)
  uv_boraden.csv     header: empty first column, then the 701 grid values; rows: 0-based index, intensities
  ir_boraden.csv     same with 3501 columns (~8 GB: streamed in chunks, never read whole)
  raman_boraden.csv  same with 3501 columns

CSV rows are matched to molecules by their index column (never by position). Every
mismatch is reported in a summary (printed and written next to the output as JSON):
molecules without a row in some modality, rows without a molecule, duplicate rows, and
rows with non-finite, negative or missing values. Such molecules are not written.
"""
import json
import os
import sqlite3
import tempfile
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
from tqdm import tqdm

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.spectra.checks import spectrum_problem
from schnetpack_molspectra.spectra.grids import GRIDS

__all__ = ["QM9SFormatError", "read_qm9s_graphs", "stream_spectra_csv", "convert_qm9s"]


class QM9SFormatError(ValueError):
    """A QM9S file that is not in the expected format; the message names the file."""


def read_qm9s_graphs(path: str):
    """The molecules of ``qm9s.pt``: list of (gdb_index, atomic numbers, positions (A), smiles)."""
    import torch

    if not os.path.exists(path):
        raise FileNotFoundError(f"QM9S structures {path} do not exist")
    try:
        graphs = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as err:
        raise QM9SFormatError(f"{path}: reading it needs {err.name} (pip install 'schnetpack-molspectra[qm9s]')") from err
    except Exception as err:
        raise QM9SFormatError(f"{path}: not a readable torch file: {err}") from err
    molecules = []
    for position, g in enumerate(graphs):
        try:
            molecules.append(
                (int(np.asarray(g.number).reshape(-1)[0]), np.asarray(g.z).reshape(-1), np.asarray(g.pos, dtype=np.float64), getattr(g, "smile", ""))
            )
        except AttributeError as err:
            raise QM9SFormatError(f"{path}: graph {position} lacks {err}") from err
    return molecules


def stream_spectra_csv(path: str, modality: str) -> Iterator[Tuple[int, Optional[np.ndarray], Optional[str]]]:
    """Yield ``(row index, intensities float32 (n,), problem or None)`` for each CSV row.

    Reads one line at a time (memory bounded by one row, ~14 KB for IR). A row with the
    wrong number of columns, unparsable or non-finite values, or negative intensities
    comes with its problem; -1 stands for an unparsable index.
    """
    import warnings

    if not os.path.exists(path):
        raise FileNotFoundError(f"{modality} spectra {path} do not exist")
    n_points = GRIDS[modality].n_points
    with open(path) as f:
        header = f.readline().rstrip("\r\n").split(",")
        if len(header) != n_points + 1 or header[0].strip() not in ("", "Unnamed: 0"):
            raise QM9SFormatError(
                f"{path}: header has {len(header)} columns (expected an empty index column + {n_points} grid values)"
            )
        for line in f:
            line = line.rstrip("\r\n")
            if not line:
                continue
            head, _, rest = line.partition(",")
            try:
                index = int(float(head))
            except ValueError:
                yield -1, None, f"unparsable index {head[:20]!r}"
                continue
            n_columns = rest.count(",") + 1
            if n_columns != n_points:
                yield index, None, f"has {n_columns} values, expected {n_points} (truncated or malformed row)"
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = np.fromstring(rest, dtype=np.float32, sep=",")
            if values.size != n_points:
                yield index, None, "has unparsable values"
                continue
            yield index, values, spectrum_problem(values, n_points)


def _index_csv(path: str, modality: str, store: sqlite3.Connection, summary: Dict) -> None:
    """Copy one modality's rows into an on-disk sqlite table keyed by index (bounded memory)."""
    store.execute(f"CREATE TABLE {modality} (idx INTEGER PRIMARY KEY, spectrum BLOB)")
    problems, duplicates = summary["bad_rows"], summary["duplicate_rows"]
    n = 0
    for index, values, problem in tqdm(stream_spectra_csv(path, modality), desc=f"reading {os.path.basename(path)}", unit="row"):
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


def convert_qm9s(
    pt: str,
    csvs: Dict[str, str],
    out: str,
    qm9_db: Optional[str] = None,
    summary_path: Optional[str] = None,
    workdir: Optional[str] = None,
) -> Dict:
    """Convert QM9S into the MolSpectra layout at ``out``; return the mismatch summary.

    Args:
        pt: ``qm9s.pt``.
        csvs: modality -> CSV path (``uv``, ``ir``, ``raman``).
        qm9_db: optional QM9 database (``spkspectra qm9``) whose labels are attached by GDB index.
        summary_path: where to write the JSON summary (default ``<out>.summary.json``).
    """
    from ase import Atoms
    from ase.db import connect
    from schnetpack.data import ASEAtomsData

    if os.path.exists(out):
        raise FileExistsError(f"{out} exists; remove it or choose another path")
    missing_modalities = sorted(set(GRIDS) - set(csvs))
    if missing_modalities:
        raise ValueError(f"missing spectra CSVs for {missing_modalities}")
    for modality, path in csvs.items():
        if not os.path.exists(path):
            raise FileNotFoundError(f"{modality} spectra {path} do not exist")
    molecules = read_qm9s_graphs(pt)
    summary = {"molecules_in_pt": len(molecules), "rows": {}, "bad_rows": [], "duplicate_rows": [], "missing_rows": {}, "orphan_rows": {}}

    labels = {}
    units = {}
    if qm9_db is not None:
        from schnetpack_molspectra.data.qm9 import QM9_UNITS

        with connect(qm9_db) as conn:
            for row in conn.select():
                labels[int(row.data[msp.gdb_index][0])] = {k: row.data[k] for k in QM9_UNITS if k in row.data}
        units = dict(QM9_UNITS)
    summary["molecules_without_qm9_labels"] = []

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = sqlite3.connect(os.path.join(tmp, "spectra.sqlite"))
        for modality in GRIDS:
            _index_csv(csvs[modality], modality, store, summary)
        n_pt = len(molecules)
        for modality in GRIDS:
            indices = {i for (i,) in store.execute(f"SELECT idx FROM {modality}")}
            summary["missing_rows"][modality] = sorted(set(range(n_pt)) - indices)
            summary["orphan_rows"][modality] = sorted(i for i in indices if i >= n_pt or i < 0)
        property_units = {msp.spectra[m]: "1" for m in GRIDS}
        property_units[msp.gdb_index] = "1"
        property_units.update(units)
        ASEAtomsData.create(out, distance_unit="Ang", property_unit_dict=property_units)
        conn = connect(out, use_lock_file=False)
        written, skipped = 0, []
        with conn:
            for position, (gdb, z, pos, smiles) in enumerate(tqdm(molecules, desc="writing", unit="mol")):
                data = {}
                for modality in GRIDS:
                    found = store.execute(f"SELECT spectrum FROM {modality} WHERE idx = ?", (position,)).fetchone()
                    if found is None:
                        break
                    data[msp.spectra[modality]] = np.frombuffer(found[0], dtype=np.float32)[None, :].copy()
                if len(data) != len(GRIDS):
                    skipped.append(position)
                    continue
                data[msp.gdb_index] = np.array([gdb], dtype=np.int64)
                if units:
                    if gdb not in labels:
                        summary["molecules_without_qm9_labels"].append(gdb)
                        skipped.append(position)
                        continue
                    data.update(labels[gdb])
                conn.write(Atoms(numbers=z, positions=pos), data=data, input_index=position, smiles=smiles)
                written += 1
        store.close()
    summary["written"] = written
    summary["not_written"] = skipped
    summary_path = summary_path or f"{out}.summary.json"
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1)
    return summary
