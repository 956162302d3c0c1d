"""Run a data builder in a fresh ``spkspectra`` process when this one cannot load tblite.

tblite needs a newer OpenMP runtime than the one PyTorch bundles; once torch is loaded
first (as in ``spktrain``), tblite cannot load in the same process.
"""
import subprocess
import sys

__all__ = ["tblite_blocked", "run_spkspectra"]


def tblite_blocked() -> bool:
    """True when torch is loaded and tblite is not: tblite would fail to load here."""
    return "torch" in sys.modules and "tblite.interface" not in sys.modules


def run_spkspectra(*args: str) -> None:
    """``spkspectra *args`` in a fresh interpreter; raises naming the command if it fails."""
    cmd = [sys.executable, "-m", "schnetpack_molspectra.cli.spkspectra", *args]
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; run it by hand to see why")
