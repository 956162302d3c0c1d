"""The QM9S spectral grids: UV-Vis 1-15 eV in steps of 0.02 eV (701 points), IR and Raman
500-4000 cm^-1 in steps of 1 cm^-1 (3501 points each), the columns of the QM9S spectra files."""

from dataclasses import dataclass

import numpy as np

from schnetpack_molspectra.properties import modalities


@dataclass(frozen=True)
class SpectralGrid:
    """A uniform grid ``start, start + step, ..., stop`` (inclusive), in ``unit``."""

    start: float
    stop: float
    step: float
    unit: str

    @property
    def n_points(self) -> int:
        return int(round((self.stop - self.start) / self.step)) + 1

    def values(self) -> np.ndarray:
        """Grid points, shape (n_points,), float64."""
        return self.start + self.step * np.arange(self.n_points, dtype=np.float64)


UV_GRID = SpectralGrid(1.0, 15.0, 0.02, "eV")  # 701 points
IR_GRID = SpectralGrid(500.0, 4000.0, 1.0, "cm^-1")  # 3501 points
RAMAN_GRID = SpectralGrid(500.0, 4000.0, 1.0, "cm^-1")  # 3501 points

#: modality -> grid, in SpecFormer's token order
GRIDS = dict(zip(modalities, (UV_GRID, IR_GRID, RAMAN_GRID)))
SPECTRUM_LENGTHS = {m: g.n_points for m, g in GRIDS.items()}
