"""Pure functions on spectra arrays: grids, broadening, normalisation, patching."""

from .broadening import broaden, lorentzian
from .checks import SpectrumError, spectrum_problem
from .grids import GRIDS, IR_GRID, RAMAN_GRID, SPECTRUM_LENGTHS, UV_GRID, SpectralGrid
from .patches import PATCH_LENGTH, PATCH_STRIDE, PatchGeometry, n_patches, patch_geometry

__all__ = [
    "broaden",
    "lorentzian",
    "SpectrumError",
    "spectrum_problem",
    "GRIDS",
    "IR_GRID",
    "RAMAN_GRID",
    "SPECTRUM_LENGTHS",
    "UV_GRID",
    "SpectralGrid",
    "PATCH_LENGTH",
    "PATCH_STRIDE",
    "PatchGeometry",
    "n_patches",
    "patch_geometry",
]
