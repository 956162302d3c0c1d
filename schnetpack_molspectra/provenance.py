"""Which files the running user's own runs wrote, so that only those are ever unpickled unasked.

A ``best_model`` (a whole pickled model) and a SchNetPack Lightning checkpoint (pickled
hyperparameters) can only be read by full unpickling, which runs whatever code the pickle holds.
Every ``spktrain`` run of this package records the SHA-256 of each ``best_model`` and checkpoint it
writes (``MolSpectraTask.save_model``, ``train.Trainer.save_checkpoint``) in a ledger of the running
user: ``$MOLSPECTRA_STATE/written_files.tsv``, by default ``$XDG_STATE_HOME/schnetpack_molspectra``
(``~/.local/state/schnetpack_molspectra``). A file is "written by an own run" when its bytes are
those of a recorded file, wherever it lies now; any other file (one a colleague sends, one
downloaded next to a paper, one changed since) is unpickled only on an explicit opt-in, which the
callers name in their errors. A ledger that another user owns or may write to counts as empty.
"""

import hashlib
import os
import stat
from typing import Optional

__all__ = [
    "STATE_ENV",
    "state_dir",
    "ledger_path",
    "sha256_bytes",
    "file_sha256",
    "record_written",
    "written_by_own_run",
]

#: environment variable naming the folder of the ledger
STATE_ENV = "MOLSPECTRA_STATE"
_LEDGER = "written_files.tsv"


def state_dir() -> str:
    """``$MOLSPECTRA_STATE``, else ``$XDG_STATE_HOME/schnetpack_molspectra``, else ``~/.local/state/schnetpack_molspectra``."""
    if os.environ.get(STATE_ENV):
        return os.environ[STATE_ENV]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "schnetpack_molspectra")


def ledger_path() -> str:
    """The ledger of the files this user's runs wrote."""
    return os.path.join(state_dir(), _LEDGER)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str:
    """SHA-256 of the file ``path`` (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_written(path: str) -> None:
    """Record the file ``path``, just written by this user's run, in the ledger (one line appended:
    SHA-256, tab, absolute path). The folder is made private to the user (0700), the ledger 0600."""
    folder = state_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    line = f"{file_sha256(path)}\t{os.path.abspath(path)}\n"
    fd = os.open(ledger_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())  # one short write with O_APPEND: whole lines from concurrent runs
    finally:
        os.close(fd)


def _private(path: str) -> bool:
    """Whether ``path`` belongs to this user and no one else may write to it."""
    info = os.stat(path)
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False
    return not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def written_by_own_run(path: Optional[str] = None, sha256: Optional[str] = None) -> bool:
    """Whether the file ``path`` (or the bytes whose SHA-256 is ``sha256``) is one that a run of
    the running user recorded (:func:`record_written`)."""
    ledger = ledger_path()
    try:
        if not (_private(ledger) and _private(os.path.dirname(ledger))):
            return False
        digest = sha256 if sha256 is not None else file_sha256(path)
        with open(ledger) as f:
            return any(line.split("\t", 1)[0] == digest for line in f)
    except OSError:  # no ledger yet, or the file is gone
        return False
