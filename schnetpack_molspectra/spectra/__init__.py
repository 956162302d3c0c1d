"""Pure functions on spectra arrays: grids, broadening, normalisation, patching."""
from .grids import GRIDS, IR_GRID, RAMAN_GRID, SPECTRUM_LENGTHS, UV_GRID, SpectralGrid
from .checks import SpectrumError, check_spectrum, spectrum_problem
from .broadening import broaden, lorentzian
from .patches import PATCH_LENGTH, PATCH_STRIDE, PatchGeometry, n_patches, patch_geometry
