"""The embedded default datasets: the shipped QM9 stick spectra, broadened, with QM9 labels (for
pre-training), and where all of QM9 is built for fine-tuning (:func:`qm9_dataset_path`).

Every molecule of ``schnetpack_molspectra/data/qm9_sticks`` (:mod:`.sticks`) that has IR,
Raman and UV sticks is broadened onto the QM9S grids once, on first use, into
``$MOLSPECTRA_CACHE`` (or ``~/.cache/schnetpack_molspectra``): seconds, offline, no
simulator needed. The file name carries a signature of the shipped chunks, so a package with
more shipped molecules builds a new file instead of reusing a stale one. The build writes a
``.partial.db`` that is renamed when complete, so a killed build never leaves a file that
would be taken for the dataset.
"""

import hashlib
import os
from importlib.metadata import version
from typing import Optional, Sequence

from schnetpack_molspectra.data.sticks import SHIPPED_DIR, SHIPPED_UV_METHOD, build_db_from_sticks, shipped_chunks

__all__ = ["cache_dir", "default_dataset_path", "ensure_default_dataset", "build_default_dataset", "qm9_dataset_path"]

_VERSION = 3


def cache_dir() -> str:
    """``$MOLSPECTRA_CACHE`` or ``~/.cache/schnetpack_molspectra``."""
    return os.environ.get("MOLSPECTRA_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "schnetpack_molspectra"
    )


def _signature(uv_method: str) -> str:
    """Short hash of the shipped chunk files (names and sizes) the default dataset is built from."""
    files = shipped_chunks("vib") + shipped_chunks(f"uv-{uv_method}")
    text = ";".join(f"{os.path.basename(f)}:{os.path.getsize(f)}" for f in files)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def default_dataset_path(n_molecules: Optional[int] = None, uv_method: str = SHIPPED_UV_METHOD) -> str:
    """Where the default spectra database lives, built or not: all shipped molecules, or the
    first ``n_molecules`` of them."""
    suffix = "" if n_molecules is None else f"_n{n_molecules}"
    return os.path.join(cache_dir(), f"default_spectra_v{_VERSION}_{uv_method}_{_signature(uv_method)}{suffix}.db")


def qm9_dataset_path() -> str:
    """Where all of QM9 (from ``qm9pack``, :func:`schnetpack_molspectra.data.qm9.build_qm9_db`) is
    built once for ``experiment=qm9_finetune`` without ``data.datapath``."""
    return os.path.join(cache_dir(), f"qm9_qm9pack-{version('qm9pack')}.db")


def build_default_dataset(
    path: Optional[str] = None, n_molecules: Optional[int] = None, sticks: Sequence[str] = ()
) -> str:
    """Broaden the shipped sticks into ``path`` (default :func:`default_dataset_path`).

    ``sticks``: further sticks folders (e.g. a repository's ``data/qm9_sticks``, the grown set)
    whose molecules are added after the shipped ones, those without UV sticks with their UV withheld
    (``properties.modality_missing``); ``path`` must then be given (the cache holds the shipped set).
    """
    if sticks and path is None:
        raise ValueError(f"give the database to write: the sticks of {list(sticks)} are not the default dataset")
    path = path or default_dataset_path(n_molecules)
    for folder in sticks:
        if not shipped_chunks("vib", folder):
            raise FileNotFoundError(f"{folder}: no sticks chunk (vib_<k>.npz) in this folder")
    build_db_from_sticks(path, n_molecules=n_molecules, folder=[SHIPPED_DIR, *sticks], require_uv=not sticks)
    return path


def ensure_default_dataset(path: Optional[str] = None, n_molecules: Optional[int] = None) -> str:
    """Path of the default dataset, building it first if it is not there."""
    path = path or default_dataset_path(n_molecules)
    if not os.path.exists(path):
        build_default_dataset(path, n_molecules)
    return path
