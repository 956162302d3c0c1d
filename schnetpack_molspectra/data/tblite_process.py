"""tblite in this process, or in a fresh one: the one guard for the tblite/torch OpenMP clash.

tblite (GFN2-xTB) needs a newer OpenMP runtime than the one PyTorch bundles: it loads only if it
comes first. Importing any part of this package calls :func:`tblite_loads` (package
``__init__``), so a process that imports this package before torch (``spkspectra``, the scripts,
spawned simulator workers) has tblite. Where torch came first (``spktrain``, anything that imports
SchNetPack first), code that needs tblite asks :func:`tblite_loads` and moves the work to a fresh
process (:func:`run_spkspectra`, the simulator's worker pool) or stops with :func:`require_tblite`'s message.
"""

import functools
import subprocess
import sys

__all__ = ["tblite_loads", "require_tblite", "run_spkspectra"]


@functools.lru_cache(maxsize=None)
def tblite_loads() -> bool:
    """Load tblite's library into this process if it can; whether tblite is usable here (False:
    not installed, or torch's OpenMP runtime was loaded first)."""
    try:
        import tblite.interface  # noqa: F401

        return True
    except ImportError:
        return False


def require_tblite() -> None:
    """Raise a clear error when tblite cannot be used in this process."""
    if not tblite_loads():
        raise RuntimeError(
            "tblite (GFN2-xTB) cannot load in this process: it is not installed, or torch was imported "
            "before it (torch bundles an older OpenMP runtime); import schnetpack_molspectra before torch, "
            "or run the `spkspectra` command"
        )


def run_spkspectra(*args: str) -> None:
    """``spkspectra *args`` in a fresh interpreter; raises naming the command if it fails."""
    cmd = [sys.executable, "-m", "schnetpack_molspectra.cli.spkspectra", *args]
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; run it by hand to see why")
