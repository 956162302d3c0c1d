"""Bringing spectra of two levels of theory (or a computed and a measured one) onto each other before
they are compared: a frequency-axis scale (the scale factors spectroscopists apply to computed
harmonic frequencies) and a Gaussian smoothing that forgives lines a few cm^-1 apart. Vectorised over
the rows of an (n, L) array on a modality's QM9S grid (``spectra.grids``)."""

from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

from schnetpack_molspectra.spectra.grids import GRIDS

__all__ = ["VIBRATIONAL", "FWHM_PER_SIGMA", "scale_axis", "smooth", "smoothed_stride", "scale_grid"]

#: modalities on a wavenumber axis, whose lines a frequency scale moves (UV's eV axis is left alone)
VIBRATIONAL = ("ir", "raman")

#: FWHM = this x the Gaussian's standard deviation
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def scale_axis(values: np.ndarray, modality: str, scale: float) -> np.ndarray:
    """``values`` (n, L) on the modality's grid with the frequency axis scaled by ``scale``: a line at
    ``scale * nu`` moves to ``nu`` (out[:, k] = values at ``scale * grid[k]``, linear interpolation,
    0 beyond the grid). A computed spectrum whose frequencies are ``scale`` times another's is brought
    onto it. Modalities not in :data:`VIBRATIONAL` and ``scale == 1`` are returned unchanged."""
    values = np.asarray(values, dtype=np.float32)
    if modality not in VIBRATIONAL or scale == 1.0:
        return values
    grid = GRIDS[modality]
    position = (scale * grid.values() - grid.start) / grid.step  # fractional index of each sample
    inside = (position >= 0) & (position <= grid.n_points - 1)
    low = np.clip(np.floor(position).astype(np.int64), 0, grid.n_points - 1)
    high = np.clip(low + 1, 0, grid.n_points - 1)
    weight = (position - low).astype(np.float32)
    out = (1.0 - weight) * values[..., low] + weight * values[..., high]
    return np.where(inside, out, 0.0).astype(np.float32)


def smooth(values: np.ndarray, modality: str, fwhm: float) -> np.ndarray:
    """``values`` (n, L) convolved along the grid with a Gaussian of full width at half maximum
    ``fwhm`` (in the grid's unit: cm^-1 for IR/Raman, eV for UV); ``fwhm <= 0`` returns them unchanged."""
    values = np.asarray(values, dtype=np.float32)
    if fwhm <= 0:
        return values
    sigma = fwhm / FWHM_PER_SIGMA / GRIDS[modality].step
    return gaussian_filter1d(values, sigma, axis=-1, mode="constant").astype(np.float32)


def smoothed_stride(modality: str, fwhm: float) -> int:
    """Every how many grid points a spectrum smoothed by :func:`smooth` with ``fwhm`` still keeps at least five
    samples per standard deviation of the Gaussian (1 without smoothing): dot products and cosines of
    smoothed spectra taken on those points are those of the full grid to a fraction of a percent, for a
    fraction of the cost."""
    if fwhm <= 0:
        return 1
    return max(1, int(fwhm / FWHM_PER_SIGMA / GRIDS[modality].step / 5))


def scale_grid(low: float, high: float, step: float) -> Sequence[float]:
    """The frequency scales ``low, low + step, ..., high`` (inclusive, 1.0 among them when in range), for
    :func:`scale_axis`; ``low == high`` gives that one scale."""
    if not (0 < low <= high) or step <= 0:
        raise ValueError(f"frequency scales need 0 < low <= high and step > 0, got {low}:{high}:{step}")
    scales = low + step * np.arange(int(np.floor((high - low) / step + 1e-9)) + 1)
    if low <= 1.0 <= high:
        scales = np.union1d(scales, [1.0])
    return [float(s) for s in np.round(scales, 10)]
