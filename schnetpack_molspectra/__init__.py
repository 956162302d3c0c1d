"""MolSpectra for SchNetPack: pre-training 3D molecular encoders with UV-Vis, IR and Raman spectra."""
import sys as _sys

if "torch" not in _sys.modules:
    # tblite needs a newer OpenMP runtime than the one torch bundles: load it first
    try:
        import tblite.interface  # noqa: F401
    except ImportError:
        pass

from schnetpack_molspectra import properties
from schnetpack_molspectra.specformer import SpecFormer
from schnetpack_molspectra.model import MolSpectraModel

__version__ = "0.1.0"
