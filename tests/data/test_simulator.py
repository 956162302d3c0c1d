"""The xTB vibrational analysis and the broadening, on real tblite calls."""

import numpy as np
import pytest
from ase.build import molecule

from schnetpack_molspectra.data.simulate.xtb import XTB, SimulationError, relax, vibrational_spectra
from schnetpack_molspectra.spectra.broadening import broaden
from schnetpack_molspectra.spectra.grids import IR_GRID


def test_co2_obeys_ir_and_raman_selection_rules():
    spectra = vibrational_spectra(relax(molecule("CO2")))
    freq, ir, raman = spectra["frequencies"], spectra["ir_intensities"], spectra["raman_activities"]
    assert len(freq) == 4  # linear: 3N - 5
    bend = freq[:2]
    assert abs(bend[0] - bend[1]) < 1.0  # degenerate bending pair
    sym, asym = 2, 3
    # symmetric stretch: Raman active, IR silent; antisymmetric stretch: IR active, Raman silent
    assert ir[sym] < 1e-2 * ir[asym] and raman[asym] < 1e-2 * raman[sym]
    assert (ir[:2] > 1).all()


def test_water_modes_and_unit_scale():
    spectra = vibrational_spectra(relax(molecule("H2O")))
    freq = spectra["frequencies"]
    assert len(freq) == 3
    assert 1300 < freq[0] < 1800 and 3300 < freq[1] < 4000 and 3300 < freq[2] < 4000
    # the bend is the strongest IR band of water; intensities are O(10-100) km/mol
    assert 10 < spectra["ir_intensities"][0] < 500


def test_distorted_geometry_has_imaginary_modes():
    water = molecule("H2O")
    linear = water.copy()
    linear.positions = np.array([[0, 0, 0], [0.96, 0, 0], [-0.96, 0, 0]])
    with pytest.raises(SimulationError, match="imaginary modes"):
        vibrational_spectra(linear, imaginary_threshold=50)


def test_unsupported_element_is_named():
    with pytest.raises(SimulationError, match=r"unsupported elements .*Z=\[118\]"):
        XTB([1, 118])


def test_lorentzian_broadening_keeps_area_and_peak_position():
    spectrum = broaden([1000.0, 2000.0], [10.0, 5.0], IR_GRID, width=15.0)
    assert spectrum.shape == (1, 3501) and spectrum.dtype == np.float32
    grid = IR_GRID.values()
    assert grid[spectrum[0, :1500].argmax()] == 1000.0
    # area under the curve ~ sum of stick intensities (minus the tails beyond the grid)
    assert spectrum.sum() * IR_GRID.step == pytest.approx(15.0, rel=0.01)
    assert broaden([], [], IR_GRID, 15.0).sum() == 0
