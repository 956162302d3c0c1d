"""GFN2-xTB (tblite) vibrational analysis: harmonic frequencies, IR intensities and Raman activities.

Everything comes from analytic xTB gradients by finite differences:
  Hessian            d2E/dR2             central differences of gradients (6N gradients)
  dipole derivative  dmu_i/dR = -d2E/dF_i dR      gradients at fields +-F_i
  Raman tensor       dalpha_ij/dR = -d3E/dF_i dF_j dR   gradients at fields +-F_i +-F_j
so IR and Raman together cost 6N + 19 gradient evaluations (~0.5 ms each for a QM9 molecule).
"""

from typing import Dict, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_masses
from ase.optimize import BFGS
from ase.units import Bohr

from schnetpack_molspectra.data.tblite_process import require_tblite

__all__ = [
    "XTB",
    "SimulationError",
    "relax",
    "hessian",
    "field_derivatives",
    "normal_mode_spectra",
    "vibrational_spectra",
    "SUPPORTED_ELEMENTS",
]

#: GFN2-xTB is parametrised for Z = 1..86
SUPPORTED_ELEMENTS = range(1, 87)
#: 1 / (2 pi c) * sqrt(Hartree / (Bohr^2 amu)) in cm^-1: eigenvalue (Ha/Bohr^2/amu) -> wavenumber
_HESSIAN_TO_WAVENUMBER = 5140.48714
#: (e / sqrt(amu))^2 -> km/mol: 42.2561 * (4.80320 D/A per e)^2
_IR_TO_KM_PER_MOL = 974.864
#: (Bohr^2 / sqrt(amu))^2 -> A^4 / amu
_RAMAN_TO_A4_PER_AMU = Bohr**4


class SimulationError(RuntimeError):
    """A molecule the simulator cannot handle; the message says why."""


class XTB:
    """GFN2-xTB gradients of one molecule at a uniform electric field, in atomic units.

    Keeps one tblite calculator per field value and restarts from its last wavefunction.
    """

    def __init__(self, numbers: Sequence[int], accuracy: float = 0.01, charge: float = 0.0):
        require_tblite()
        from tblite.interface import Calculator  # tblite: only once require_tblite() says it loads

        self.numbers = np.asarray(numbers)
        bad = sorted({int(z) for z in self.numbers if int(z) not in SUPPORTED_ELEMENTS})
        if bad:
            raise SimulationError(f"unsupported elements (GFN2-xTB covers Z=1-86): Z={bad}")
        self._Calculator = Calculator
        self.accuracy = accuracy
        self.charge = charge
        self._calculators: Dict[tuple, object] = {}
        self._results: Dict[tuple, object] = {}

    def _calculator(self, positions_bohr: np.ndarray, field: tuple):
        calc = self._calculators.get(field)
        if calc is None:
            from tblite.library import ffi  # tblite: loaded by now (the Calculator above)

            calc = self._Calculator("GFN2-xTB", self.numbers, positions_bohr, charge=self.charge)
            calc.set("verbosity", 0)
            calc.set("accuracy", self.accuracy)
            if any(field):
                calc.add("electric-field", ffi.new("double[3]", [float(f) for f in field]))
            self._calculators[field] = calc
        else:
            calc.update(positions_bohr)
        return calc

    def compute(self, positions_bohr: np.ndarray, field=(0.0, 0.0, 0.0)):
        """Energy (Ha), gradient (n_atoms, 3; Ha/Bohr) and dipole (3; e Bohr)."""
        field = tuple(float(f) for f in field)
        calc = self._calculator(positions_bohr, field)
        try:
            result = calc.singlepoint(self._results.get(field))
        except Exception as err:  # tblite raises TBLiteRuntimeError on SCF failure
            raise SimulationError(f"xTB SCF failed: {err}") from err
        self._results[field] = result
        return result.get("energy"), result.get("gradient"), result.get("dipole")


def relax(atoms: Atoms, fmax: float = 0.01, steps: int = 500) -> Atoms:
    """GFN2-xTB geometry optimisation (ASE BFGS on tblite's ASE calculator); returns a copy, its
    ``info["relax_steps"]`` the optimizer's steps."""
    require_tblite()
    from tblite.ase import TBLite  # tblite: only once require_tblite() says it loads

    relaxed = atoms.copy()
    relaxed.calc = TBLite(method="GFN2-xTB", verbosity=0)
    optimizer = BFGS(relaxed, logfile=None)
    try:
        converged = optimizer.run(fmax=fmax, steps=steps)
    except Exception as err:
        raise SimulationError(f"xTB relaxation failed: {err}") from err
    if not converged:
        raise SimulationError(f"xTB relaxation did not converge to fmax={fmax} eV/A in {steps} steps")
    relaxed.calc = None
    relaxed.info["relax_steps"] = optimizer.nsteps
    return relaxed


def _rigid_motions(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal mass-weighted translations and rotations, (3N, k), k = 5 or 6."""
    sqrt_m = np.sqrt(masses)
    centred = positions - (masses[:, None] * positions).sum(0) / masses.sum()
    vectors = []
    for axis in np.eye(3):
        vectors.append((sqrt_m[:, None] * axis[None, :]).ravel())
        vectors.append((sqrt_m[:, None] * np.cross(axis, centred)).ravel())
    q, r = np.linalg.qr(np.array(vectors).T)
    keep = np.abs(np.diag(r)) > 1e-6 * np.abs(np.diag(r)).max()
    return q[:, keep]


def _field_gradients(xtb: XTB, positions_bohr: np.ndarray, h: float) -> Dict[tuple, np.ndarray]:
    """Gradients at zero field, +-h along each axis and +-h along each pair of axes."""
    grads = {}
    steps = [(0, 0, 0)]
    for i in range(3):
        for s in (1, -1):
            e = [0, 0, 0]
            e[i] = s
            steps.append(tuple(e))
    for i in range(3):
        for j in range(i + 1, 3):
            for si in (1, -1):
                for sj in (1, -1):
                    e = [0, 0, 0]
                    e[i], e[j] = si, sj
                    steps.append(tuple(e))
    for step in steps:
        grads[step] = xtb.compute(positions_bohr, tuple(h * s for s in step))[1]
    return grads


def hessian(xtb: XTB, positions_bohr: np.ndarray, displacement: float = 0.005, scheme: str = "central") -> np.ndarray:
    """Cartesian Hessian (3N, 3N; Ha/Bohr^2) by finite differences of xTB gradients, symmetrised.

    ``scheme="central"``: 6N gradients, error O(displacement^2); ``"forward"``: 3N + 1 gradients,
    error O(displacement): 1.7x faster a pass but frequencies off by up to 34 cm^-1 and intensities
    by up to 50 % (``benchmarks/simulator_profile.py``)."""
    if scheme not in ("central", "forward"):
        raise ValueError(f"finite-difference scheme {scheme!r}: choose central or forward")
    n3 = positions_bohr.size
    out = np.empty((n3, n3))
    g0 = xtb.compute(positions_bohr)[1].ravel() if scheme == "forward" else None
    for k in range(n3):
        plus = positions_bohr.copy()
        plus.flat[k] += displacement
        if scheme == "forward":
            out[k] = (xtb.compute(plus)[1].ravel() - g0) / displacement
        else:
            minus = positions_bohr.copy()
            minus.flat[k] -= displacement
            out[k] = (xtb.compute(plus)[1] - xtb.compute(minus)[1]).ravel() / (2 * displacement)
    return 0.5 * (out + out.T)


def field_derivatives(xtb: XTB, positions_bohr: np.ndarray, field_step: float = 0.002):
    """Dipole derivatives dmu_i/dR (3, 3N; e / Bohr * Bohr) and polarizability derivatives
    dalpha_ij/dR (3, 3, 3N; Bohr^2), from 19 gradients at finite uniform fields."""
    n3 = positions_bohr.size
    g = _field_gradients(xtb, positions_bohr, field_step)
    h = field_step
    # dmu_i/dR = -d/dF_i (dE/dR); dalpha_ij/dR = -d2/dF_i dF_j (dE/dR)
    dmu = np.empty((3, n3))
    dalpha = np.empty((3, 3, n3))
    for i in range(3):
        e = [0, 0, 0]
        e[i] = 1
        p, m = tuple(e), tuple(-x for x in e)
        dmu[i] = -(g[p] - g[m]).ravel() / (2 * h)
        dalpha[i, i] = -(g[p] - 2 * g[(0, 0, 0)] + g[m]).ravel() / h**2
        for j in range(i + 1, 3):

            def at(si, sj):
                e = [0, 0, 0]
                e[i], e[j] = si, sj
                return g[tuple(e)]

            d = -(at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)).ravel() / (4 * h**2)
            dalpha[i, j] = dalpha[j, i] = d
    return dmu, dalpha


def normal_mode_spectra(
    atoms: Atoms, hessian_au: np.ndarray, dmu: np.ndarray, dalpha: np.ndarray, imaginary_threshold: float = 50.0
) -> Dict[str, np.ndarray]:
    """Frequencies (cm^-1), IR intensities (km/mol) and Raman activities (A^4/amu) of the internal
    normal modes, from the Cartesian Hessian and the field derivatives (atomic units).

    Raises:
        SimulationError: a mode more imaginary than ``imaginary_threshold`` (cm^-1); smaller
            imaginary modes (numerical noise) are dropped.
    """
    n = len(atoms)
    positions = atoms.positions / Bohr
    masses = atomic_masses[atoms.numbers]
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    mw_hessian = hessian_au * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    rigid = _rigid_motions(positions, masses)
    projector = np.eye(3 * n) - rigid @ rigid.T
    eigval, eigvec = np.linalg.eigh(projector @ mw_hessian @ projector)
    # drop the rigid-body modes: the eigenvectors with most weight in the rigid subspace
    rigid_weight = (np.abs(rigid.T @ eigvec) ** 2).sum(0)
    internal = np.argsort(rigid_weight)[: 3 * n - rigid.shape[1]]
    internal = internal[np.argsort(eigval[internal])]
    eigval, modes = eigval[internal], eigvec[:, internal]
    frequencies = np.sign(eigval) * np.sqrt(np.abs(eigval)) * _HESSIAN_TO_WAVENUMBER

    if (frequencies < -imaginary_threshold).any():
        bad = frequencies[frequencies < -imaginary_threshold]
        raise SimulationError(f"{len(bad)} imaginary modes: {np.round(bad, 1).tolist()} cm^-1 (not a minimum)")
    real = frequencies > 0
    frequencies, modes = frequencies[real], modes[:, real]

    cartesian_modes = modes * inv_sqrt_m[:, None]  # dR/dQ, Bohr per sqrt(amu)
    dmu_dq = dmu @ cartesian_modes  # (3, n_modes)
    ir = (dmu_dq**2).sum(0) * _IR_TO_KM_PER_MOL
    dalpha_dq = np.einsum("ijk,km->ijm", dalpha, cartesian_modes)
    mean = np.trace(dalpha_dq) / 3
    xx, yy, zz = dalpha_dq[0, 0], dalpha_dq[1, 1], dalpha_dq[2, 2]
    gamma2 = 0.5 * ((xx - yy) ** 2 + (yy - zz) ** 2 + (zz - xx) ** 2) + 3 * (
        dalpha_dq[0, 1] ** 2 + dalpha_dq[1, 2] ** 2 + dalpha_dq[0, 2] ** 2
    )
    raman = (45 * mean**2 + 7 * gamma2) * _RAMAN_TO_A4_PER_AMU
    return {"frequencies": frequencies, "ir_intensities": ir, "raman_activities": raman}


def vibrational_spectra(
    atoms: Atoms,
    displacement: float = 0.005,
    field_step: float = 0.002,
    imaginary_threshold: float = 50.0,
    accuracy: float = 0.01,
    scheme: str = "central",
) -> Dict[str, np.ndarray]:
    """Harmonic frequencies (cm^-1), IR intensities (km/mol) and Raman activities (A^4/amu).

    Args:
        atoms: a (relaxed) molecule, positions in Angstrom.
        displacement: finite-difference step for the Hessian (Bohr).
        field_step: finite-difference step of the electric field (atomic units).
        imaginary_threshold: fail if any mode is more imaginary than this (cm^-1);
            smaller imaginary modes (numerical noise) are dropped.
        accuracy: tblite's numerical accuracy (SCC convergence and integral cut-offs scale with it).
        scheme: the Hessian's finite differences, ``central`` or ``forward`` (:func:`hessian`).

    Raises:
        SimulationError: unsupported element, SCF failure, or imaginary modes.
    """
    xtb = XTB(atoms.numbers, accuracy=accuracy)
    positions = atoms.positions / Bohr
    h = hessian(xtb, positions, displacement, scheme)
    dmu, dalpha = field_derivatives(xtb, positions, field_step)
    return normal_mode_spectra(atoms, h, dmu, dalpha, imaginary_threshold)
