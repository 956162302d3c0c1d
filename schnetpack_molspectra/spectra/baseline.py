"""Baseline correction of measured spectra: asymmetric least squares (ALS; Eilers & Boelens, 2005),
the smooth baseline that spectroscopy software subtracts before comparing spectra."""

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

__all__ = ["als_baseline", "remove_baseline", "BASELINE_SMOOTHNESS"]

#: ALS smoothness (the weight of the second-difference penalty) per modality, for their grids
#: (UV 701 points of 0.02 eV, IR and Raman 3501 points of 1 cm^-1): baselines that bend over
#: hundreds of points, under lines a few to tens of points wide
BASELINE_SMOOTHNESS = {"uv": 1e5, "ir": 1e7, "raman": 1e7}


def als_baseline(y: np.ndarray, smoothness: float = 1e7, asymmetry: float = 0.01, n_iter: int = 10) -> np.ndarray:
    """The ALS baseline of one spectrum ``y`` (L,): the smooth curve z minimising
    sum_i w_i (y_i - z_i)^2 + smoothness * sum_i (second difference of z)_i^2, where points above
    the curve (peaks) get weight ``asymmetry`` and points below it 1 - ``asymmetry``, re-weighted
    ``n_iter`` times. Returns z (L,)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n = y.size
    if n < 3:
        return np.zeros_like(y)
    d = sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    penalty = smoothness * (d.T @ d)
    w = np.ones(n)
    z = y
    for _ in range(n_iter):
        z = spsolve((sparse.diags(w) + penalty).tocsc(), w * y)
        w = np.where(y > z, asymmetry, 1.0 - asymmetry)
    return z


def remove_baseline(values: np.ndarray, modality: str) -> np.ndarray:
    """``values`` (L,) on the modality's grid minus its ALS baseline, clipped at 0 (float32)."""
    z = als_baseline(values, BASELINE_SMOOTHNESS[modality])
    return np.clip(np.asarray(values, dtype=np.float64) - z, 0.0, None).astype(np.float32)
