"""The embedded default dataset: simulated spectra for a fixed, seeded subset of small QM9 molecules.

``DEFAULT_SIZE`` molecules with at most ``DEFAULT_MAX_HEAVY_ATOMS`` heavy atoms (C, N, O, F) are
drawn from QM9 (qm9pack) with ``DEFAULT_SEED``, simulated with the default
:class:`~schnetpack_molspectra.data.simulate.runner.SimulationSettings` (GFN2-xTB IR/Raman,
fast UV) and stored with their QM9 labels. Built once on first use (about 1-2 min on 2 cores)
into ``$MOLSPECTRA_CACHE`` or ``~/.cache/schnetpack_molspectra``. The build writes into a
``.partial.db`` that is renamed when complete, so a killed build resumes where it stopped and
a half-built file is never taken for the dataset. It runs in a fresh ``spkspectra default``
process when this one has already loaded torch before tblite (their OpenMP runtimes clash).
"""
import os
import sys
from typing import List, Optional

import numpy as np

from schnetpack_molspectra.data.fresh_process import run_spkspectra, tblite_blocked

__all__ = [
    "DEFAULT_SIZE",
    "DEFAULT_SEED",
    "DEFAULT_MAX_HEAVY_ATOMS",
    "cache_dir",
    "default_dataset_path",
    "default_gdb_indices",
    "ensure_default_dataset",
    "build_default_dataset",
]

DEFAULT_SIZE = 200  # molecules drawn from QM9
DEFAULT_SEED = 0
DEFAULT_MAX_HEAVY_ATOMS = 6  # 783 QM9 molecules qualify; ~0.5-1 s each to simulate on one core
_VERSION = 2


def cache_dir() -> str:
    """``$MOLSPECTRA_CACHE`` or ``~/.cache/schnetpack_molspectra``."""
    return os.environ.get("MOLSPECTRA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "schnetpack_molspectra")


def default_dataset_path(n_molecules: Optional[int] = None) -> str:
    """Where the default spectra database of ``n_molecules`` (default ``DEFAULT_SIZE``) lives, built or not."""
    n = n_molecules or DEFAULT_SIZE
    suffix = "" if n == DEFAULT_SIZE else f"_n{n}"
    return os.path.join(cache_dir(), f"default_spectra_v{_VERSION}{suffix}.db")


def _partial(path: str) -> str:
    return path[: -len(".db")] + ".partial.db" if path.endswith(".db") else path + ".partial.db"


def default_gdb_indices(n_molecules: int = DEFAULT_SIZE, table=None) -> List[int]:
    """The GDB indices of the default subset: a seeded draw among the small QM9 molecules, sorted."""
    from schnetpack_molspectra.data.qm9 import load_qm9pack

    table = load_qm9pack() if table is None else table
    n_atoms = table["Elements"].str.count(",") + 1
    n_heavy = (n_atoms - table["Elements"].str.count("'H'")).to_numpy()
    small = np.flatnonzero(n_heavy <= DEFAULT_MAX_HEAVY_ATOMS)
    if n_molecules > len(small):
        raise ValueError(
            f"the default dataset draws from the {len(small)} QM9 molecules with <= "
            f"{DEFAULT_MAX_HEAVY_ATOMS} heavy atoms; {n_molecules} requested"
        )
    chosen = np.random.default_rng(DEFAULT_SEED).choice(small, size=n_molecules, replace=False)
    return sorted(int(i) for i in table["Index"].to_numpy()[chosen])


def build_default_dataset(path: Optional[str] = None, workers: Optional[int] = None, size: Optional[int] = None) -> str:
    """Simulate the default subset of ``size`` molecules into ``path`` (in-process; tblite must import here).

    Resumes a killed build (``<path minus .db>.partial.db``); failures go to ``<path>.failures.jsonl``.
    """
    from schnetpack_molspectra.data.inputs import from_qm9
    from schnetpack_molspectra.data.qm9 import QM9_UNITS, load_qm9pack
    from schnetpack_molspectra.data.simulate.runner import failures_path, simulate_to_db

    size = size or DEFAULT_SIZE
    path = path or default_dataset_path(size)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = _partial(path)
    table = load_qm9pack()
    molecules = from_qm9(gdb_indices=default_gdb_indices(size, table), table=table)
    workers = workers or min(4, os.cpu_count() or 1)
    print(f"Building the default MolSpectra dataset ({size} small QM9 molecules, {workers} workers) at {path}", file=sys.stderr)
    simulate_to_db(molecules, partial, workers=workers, label_units=QM9_UNITS)
    if os.path.exists(failures_path(partial)):
        os.replace(failures_path(partial), failures_path(path))
    os.replace(partial, path)  # last: the final name appears only once everything is in place
    return path


def ensure_default_dataset(path: Optional[str] = None, n_molecules: Optional[int] = None, workers: Optional[int] = None) -> str:
    """Path of the default dataset (``n_molecules``, default ``DEFAULT_SIZE``), building it first if needed."""
    size = n_molecules or DEFAULT_SIZE
    path = path or default_dataset_path(size)
    if os.path.exists(path):
        return path
    if tblite_blocked():
        args = ["default", "--out", path, "--n-molecules", str(size)]
        run_spkspectra(*args, *(["--workers", str(workers)] if workers else []))
        return path
    return build_default_dataset(path, workers, size)
