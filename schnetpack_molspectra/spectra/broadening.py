"""Lorentzian broadening of stick spectra onto the QM9S grids."""

import numpy as np

from .grids import SpectralGrid

#: Lorentzian FWHM per modality (grid units: eV for UV, cm^-1 for IR and Raman) with which the simulator
#: and the shipped sticks are broadened, and stick lists read from files (JCAMP peak tables)
DEFAULT_WIDTH = {"uv": 0.2, "ir": 15.0, "raman": 12.0}


def lorentzian(x: np.ndarray, centre: np.ndarray, width: float) -> np.ndarray:
    """Area-normalised Lorentzian ``(w/2pi) / ((x - x0)^2 + w^2/4)`` with FWHM ``width``.

    Broadcasts: x (n_points,), centre (n_lines, 1) -> (n_lines, n_points).
    """
    return (width / (2 * np.pi)) / ((x - centre) ** 2 + width**2 / 4)


def broaden(positions, intensities, grid: SpectralGrid, width: float) -> np.ndarray:
    """Sum of Lorentzians of FWHM ``width`` (grid units) at ``positions`` weighted by
    ``intensities``, sampled on ``grid``. Returns float32 (1, n_points)."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 1)
    intensities = np.asarray(intensities, dtype=np.float64).reshape(-1, 1)
    if positions.size == 0:
        return np.zeros((1, grid.n_points), dtype=np.float32)
    spectrum = (intensities * lorentzian(grid.values()[None, :], positions, width)).sum(0)
    return spectrum[None, :].astype(np.float32)
