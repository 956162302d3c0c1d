"""The embedded default dataset: simulated spectra for a fixed, seeded subset of QM9.

Built once on first use (a few minutes on 2 cores) into ``$MOLSPECTRA_CACHE`` or
``~/.cache/schnetpack_molspectra``; a killed build resumes where it stopped. The build
runs in a fresh ``spkspectra default`` process when this one has already loaded torch
before tblite (their OpenMP runtimes clash in one process otherwise).
"""
import os
import sys
from typing import Optional

from schnetpack_molspectra.data.fresh_process import run_spkspectra, tblite_blocked

__all__ = ["DEFAULT_SIZE", "DEFAULT_SEED", "default_dataset_path", "ensure_default_dataset", "build_default_dataset"]

DEFAULT_SIZE = 64  # molecules drawn from QM9
DEFAULT_SEED = 0
_VERSION = 1


def cache_dir() -> str:
    return os.environ.get("MOLSPECTRA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "schnetpack_molspectra")


def default_dataset_path() -> str:
    """Where the default spectra database lives (built or not)."""
    return os.path.join(cache_dir(), f"default_spectra_v{_VERSION}.db")


def _partial(path: str) -> str:
    return path[: -len(".db")] + ".partial.db" if path.endswith(".db") else path + ".partial.db"


def build_default_dataset(path: Optional[str] = None, workers: Optional[int] = None, size: int = DEFAULT_SIZE) -> str:
    """Simulate the default subset into ``path`` (in-process; tblite must import here)."""
    from schnetpack_molspectra.data.inputs import from_qm9
    from schnetpack_molspectra.data.qm9 import QM9_UNITS
    from schnetpack_molspectra.data.simulate.runner import failures_path, simulate_to_db

    path = path or default_dataset_path()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = _partial(path)
    molecules = from_qm9(n=size, seed=DEFAULT_SEED)
    workers = workers or min(4, os.cpu_count() or 1)
    print(f"Building the default MolSpectra dataset ({size} QM9 molecules, {workers} workers) at {path}", file=sys.stderr)
    simulate_to_db(molecules, partial, workers=workers, label_units=QM9_UNITS)
    os.replace(partial, path)
    if os.path.exists(failures_path(partial)):
        os.replace(failures_path(partial), failures_path(path))
    return path


def ensure_default_dataset(path: Optional[str] = None, workers: Optional[int] = None) -> str:
    """Path of the default dataset, building it first if it is not there yet."""
    path = path or default_dataset_path()
    if os.path.exists(path):
        return path
    if tblite_blocked():
        run_spkspectra("default", "--out", path, *(["--workers", str(workers)] if workers else []))
        return path
    return build_default_dataset(path, workers)
