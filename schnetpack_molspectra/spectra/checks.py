"""Validation of spectra arrays, shared by the converters, the simulator and the training data."""

from typing import Optional

import numpy as np


class SpectrumError(ValueError):
    """A spectrum that cannot be used; the message names the source, molecule and problem."""


def spectrum_problem(values, expected_length: int, allow_negative: bool = False) -> Optional[str]:
    """Describe what is wrong with one spectrum, or return None if it is usable.

    Args:
        values: intensities, any shape whose size is the number of grid points.
        expected_length: number of grid points the spectrum must have.
        allow_negative: accept negative intensities (e.g. after baseline correction).
    """
    arr = np.asarray(values)
    if arr.size != expected_length:
        return f"has {arr.size} points, expected {expected_length}"
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad.ravel())[0])
        return f"has {int(bad.sum())} non-finite intensities (NaN/inf), first at point {first}"
    if not allow_negative and (arr < 0).any():
        first = int(np.flatnonzero(arr.ravel() < 0)[0])
        return (
            f"has {int((arr < 0).sum())} negative intensities, first at point {first} (value {arr.ravel()[first]:.3g})"
        )
    return None
