"""UV levels: sTDA against the full TDA on the same B3LYP/6-31G ground state, and their errors."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from schnetpack_molspectra.data.simulate.uv import uv_spectrum_sticks
from schnetpack_molspectra.data.simulate.xtb import SimulationError


@pytest.mark.parametrize("name", ["H2CO", "CH3CHO"])
def test_stda_follows_the_full_tda_on_the_same_ground_state(name):
    atoms = molecule(name)
    stda = uv_spectrum_sticks(atoms, "stda", 6)
    full = uv_spectrum_sticks(atoms, "tddft", 6, basis="6-31g")  # full TDA, same functional and basis
    np.testing.assert_allclose(stda["energies"][:3], full["energies"][:3], atol=0.35)  # eV
    # the n -> pi* band is dark in both (symmetry forbidden in formaldehyde)
    assert stda["strengths"][0] < 2e-3 and full["strengths"][0] < 2e-3
    assert stda["energies"][0] == pytest.approx(4.0, abs=0.4)  # n -> pi* of a carbonyl, ~4 eV
    assert np.all(stda["strengths"] >= 0) and np.all(np.diff(stda["energies"]) >= 0)


def test_uv_errors_name_the_problem():
    with pytest.raises(SimulationError, match="stda"):
        uv_spectrum_sticks(molecule("H2O"), "nonsense")
    with pytest.raises(SimulationError, match="Br"):
        uv_spectrum_sticks(Atoms("HBr", positions=[[0, 0, 0], [0, 0, 1.41]]), "stda")
