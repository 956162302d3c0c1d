"""MolSpectra for SchNetPack: pre-training 3D molecular encoders with UV-Vis, IR and Raman spectra."""

import importlib.metadata

from schnetpack_molspectra.data.tblite_process import tblite_loads

tblite_loads()  # before torch, whichever part of the package is imported first (see data/tblite_process.py)

from schnetpack_molspectra import properties
from schnetpack_molspectra.compat import mend_schnetpack
from schnetpack_molspectra.model import MolSpectraModel
from schnetpack_molspectra.specformer import SpecFormer

mend_schnetpack()  # SchNetPack 2.2's SO3net with sympy >= 1.13 (see compat.py)

try:  # the version is written in one place, pyproject.toml; this is the installed package's
    __version__ = importlib.metadata.version("schnetpack-molspectra")
except importlib.metadata.PackageNotFoundError:  # the source tree on sys.path, not installed
    __version__ = "0+unknown"
__all__ = ["properties", "SpecFormer", "MolSpectraModel", "__version__"]
