"""Files the readers and converters share: checks that name the file, and databases and files that are
whole or absent (built through ``<name>.partial.db`` or ``<name>.partial`` and renamed when complete)."""

import os
import zipfile
import zlib
from contextlib import contextmanager
from typing import BinaryIO, Callable, Iterator, Optional

__all__ = [
    "require_file",
    "damaged_zip",
    "partial_path",
    "check_new_database",
    "new_database",
    "write_whole",
    "write_whole_file",
]


def require_file(path: str, what: str, missing: str = "does not exist") -> None:
    """Raise :class:`FileNotFoundError` ``"<what> <path> <missing>"`` unless ``path`` is a file."""
    if os.path.isdir(path):
        raise FileNotFoundError(f"{what} {path} is a directory, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} {missing}")


def damaged_zip(path: str) -> Optional[str]:
    """Why the zip archive at ``path`` (``torch.save``, ``numpy.savez``) is damaged, or None if
    it is whole or not a zip archive. Reads every member once and checks its CRC.

    Run before unpickling: a damaged pickle can make ``torch.load(weights_only=False)``
    allocate gigabytes before it fails.
    """
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        zlib.error,
        NotImplementedError,
        ValueError,
        RuntimeError,
    ) as err:  # RuntimeError: a flipped flag bit makes a member "encrypted"
        return f"damaged zip archive ({type(err).__name__}: {err})"
    return f"damaged zip archive (CRC mismatch in {bad})" if bad else None


def partial_path(path: str) -> str:
    """Where :func:`new_database` builds ``path`` (``x.db`` -> ``x.partial.db``)."""
    return path[: -len(".db")] + ".partial.db"


def check_new_database(path: str) -> None:
    """Raise unless ``path`` can be a new SchNetPack database: ``.db``, and neither it nor its
    partial file (:func:`partial_path`) there yet."""
    if not str(path).endswith(".db"):
        raise ValueError(f"{path}: a SchNetPack database needs the extension .db")
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; remove it or choose another path")
    partial = partial_path(str(path))
    if os.path.exists(partial):
        raise FileExistsError(
            f"{partial} exists: a conversion to {path} is running or was killed; remove {partial} and start again"
        )


@contextmanager
def new_database(path: str, leftover: str = "refuse") -> Iterator[str]:
    """Build a new database at ``path`` through ``<path>.partial.db``; yields the partial path.

    The partial file is renamed to ``path`` when the block ends and removed when it raises,
    so ``path`` is whole or absent. An existing ``path`` is refused, never overwritten. An
    existing partial file is refused too (``leftover="refuse"``: a conversion to ``path`` that
    runs or was killed, whose user decides) or removed (``leftover="remove"``: builds that take
    seconds and own their partial file, like the default dataset's cache).
    """
    if leftover not in ("refuse", "remove"):
        raise ValueError(f"leftover must be 'refuse' or 'remove', not {leftover!r}")
    partial = partial_path(path)
    if leftover == "remove" and os.path.exists(partial):
        os.remove(partial)
    check_new_database(path)
    try:
        yield partial
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    _rename_new(partial, path)


def _rename_new(partial: str, path: str) -> None:
    """Rename ``partial`` to ``path`` unless ``path`` appeared meanwhile (then ``partial`` is kept)."""
    appeared = FileExistsError(f"{path} was created while this conversion ran; its result is kept in {partial}")
    try:
        os.link(partial, path)  # fails if path exists, unlike os.replace
    except FileExistsError:
        raise appeared from None
    except OSError:  # a file system without hard links
        if os.path.exists(path):
            raise appeared from None
        os.replace(partial, path)
        return
    os.remove(partial)


def write_whole(path: str, write: Callable[[str], object]) -> str:
    """``write(partial)`` (a callable given a file name: ``<path>.partial``), then the partial file
    renamed to ``path`` (replacing it), so ``path`` is whole - the old or the new one - or absent; the
    partial file is removed when ``write`` raises. Returns ``path``. Writers of an open file (and those
    that add a suffix to a name, as ``np.savez`` does): :func:`write_whole_file`."""
    partial = path + ".partial"
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return path


def write_whole_file(path: str, write: Callable[[BinaryIO], object]) -> str:
    """:func:`write_whole` for a writer of an open binary file: ``write(f)``, ``f`` opened on ``<path>.partial``."""

    def to_file(partial):
        with open(partial, "wb") as f:
            write(f)

    return write_whole(path, to_file)
