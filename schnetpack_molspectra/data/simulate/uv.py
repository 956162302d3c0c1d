"""UV-Vis stick spectra (excitation energies, oscillator strengths) with PySCF.

Levels (``method``; cost and accuracy measured by ``benchmarks/uv_methods.py``, README):
  "fast":  TDA on RHF/STO-3G. Qualitative only: minimal-basis HF excitation energies are
           several eV too high (ethanol: 12.4 eV vs 7.2 eV at TD-B3LYP/def2-SVP).
  "stda":  Grimme's simplified TDA (sTDA, J. Chem. Phys. 138, 244104 (2013)) on a
           B3LYP/6-31G ground state: two-electron integrals from Löwdin transition charges
           and Mataga-Nishimoto-Ohno-Klopman damped Coulomb interactions, no XC kernel,
           configuration space cut at ``STDA_ENERGY_WINDOW`` (the perturbative selection of
           further configurations is left out). Costs about one SCF.
  "tddft": TDA on a DFT reference, B3LYP/def2-SVP, closer to the QM9S level (B3LYP/def-TZVP);
           minutes per QM9 molecule on one core. DFT grid level 1: half the time of PySCF's
           default level 3, excitation energies within 1 meV of it (checked on gdb_2329);
           density fitting of J and K (RI-JK) in the SCF and the response: about half the core time,
           energies within 0.9 meV and strengths within 1e-4 of the exact integrals (gdb_2329, gdb_34592).
"""

from typing import Dict

import numpy as np
from ase import Atoms
from ase.units import Hartree

from .xtb import SimulationError

__all__ = ["uv_spectrum_sticks", "stda_sticks", "UV_METHODS", "NO_UV", "STDA_HARDNESS"]

#: the ``uv_method`` that skips the UV pass (IR and Raman sticks only)
NO_UV = "none"

UV_METHODS = {
    "fast": {"xc": "hf", "basis": "sto-3g"},
    # density fitting and a 1e-7 Hartree SCF tolerance: 1.6x faster than exact integrals at 1e-9,
    # sTDA energies within 1.5 meV and strengths within 0.6 % (10 shipped molecules, README)
    "stda": {"xc": "b3lyp", "basis": "6-31g", "grid_level": 0, "density_fit": True, "conv_tol": 1e-7},
    "tddft": {"xc": "b3lyp", "basis": "def2-svp", "grid_level": 1, "density_fit": True},
}

#: chemical hardness eta_A (Hartree) of sTDA's damped Coulomb operators: twice the values of
#: Ghosh & Islam, Int. J. Quantum Chem. 110, 1206 (2010), as sTDA uses them
STDA_HARDNESS = {
    1: 0.472592880,
    2: 0.922033910,
    3: 0.174528880,
    4: 0.257007330,
    5: 0.339490860,
    6: 0.421954120,
    7: 0.504381930,
    8: 0.586918630,
    9: 0.669313510,
    10: 0.751916070,
    11: 0.179641050,
    12: 0.221572760,
    13: 0.263485780,
    14: 0.305396450,
    15: 0.347340140,
    16: 0.389247250,
    17: 0.431156700,
    18: 0.473082690,
}
#: sTDA's global parameters for hybrid functionals: y_J = b1 + b2 a_x, y_K = a1 + a2 a_x (Grimme 2013)
STDA_BETA = (0.20, 1.83)
STDA_ALPHA = (1.42, 0.48)
#: configurations whose diagonal element A_ia,ia lies below this (eV) are kept
STDA_ENERGY_WINDOW = 10.0
#: fraction of exact exchange of the functionals sTDA accepts here
_EXACT_EXCHANGE = {"b3lyp": 0.20, "pbe0": 0.25, "bhandhlyp": 0.50}


def stda_sticks(mf, n_states: int, a_x: float, energy_window: float = STDA_ENERGY_WINDOW) -> Dict[str, np.ndarray]:
    """sTDA excitation energies (eV, (n_states,)) and oscillator strengths from a converged
    closed-shell SCF ``mf`` whose functional has ``a_x`` exact exchange.

    A'_ia,jb = delta_ij delta_ab (e_a - e_i) + 2 (ia|jb)' - (ij|ab)', with
    (pq|rs)' = sum_AB q_A^pq gamma_AB q_B^rs, q_A^pq = sum_{mu in A} C'_mu p C'_mu q from the
    Löwdin-orthogonalised orbitals C' = S^1/2 C, and gamma_AB the MNOK operators
    (R^y + eta^-y)^-1/y (exchange type: eta_AB; Coulomb type: a_x eta_AB)."""
    mol = mf.mol
    missing = sorted({mol.atom_pure_symbol(i) for i, z in enumerate(mol.atom_charges()) if int(z) not in STDA_HARDNESS})
    if missing:
        raise SimulationError(
            f"sTDA has no chemical hardness for {missing} (it covers H-Ar); use --uv-method fast or tddft"
        )
    s_eval, s_evec = np.linalg.eigh(mf.get_ovlp())
    c_orth = (s_evec * np.sqrt(s_eval)) @ s_evec.T @ mf.mo_coeff  # (n_ao, n_mo)
    atom_of_ao = np.zeros(mol.nao, dtype=int)
    for atom, (_, _, start, stop) in enumerate(mol.aoslice_by_atom()):
        atom_of_ao[start:stop] = atom
    on_atom = np.eye(mol.natm)[:, atom_of_ao]  # (n_atoms, n_ao)

    eps, occupied = mf.mo_energy, mf.mo_occ > 0
    window = energy_window / Hartree
    span = 2 * (1 + 0.8 * a_x) * window
    occ = np.flatnonzero(occupied & (eps > eps[~occupied].min() - span))
    vir = np.flatnonzero(~occupied & (eps < eps[occupied].max() + span))

    def charges(p, q):  # (n_atoms, len(p), len(q))
        pair = c_orth[:, p][:, :, None] * c_orth[:, q][:, None, :]
        return (on_atom @ pair.reshape(mol.nao, -1)).reshape(mol.natm, len(p), len(q))

    q_ia, q_ij, q_ab = charges(occ, vir), charges(occ, occ), charges(vir, vir)
    coords = mol.atom_coords()  # Bohr
    r = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    hardness = np.array([STDA_HARDNESS[int(z)] for z in mol.atom_charges()])
    eta = 0.5 * (hardness[:, None] + hardness[None, :])
    y_j, y_k = STDA_BETA[0] + STDA_BETA[1] * a_x, STDA_ALPHA[0] + STDA_ALPHA[1] * a_x
    gamma_j = (r**y_j + (a_x * eta) ** -y_j) ** (-1 / y_j)
    gamma_k = (r**y_k + eta**-y_k) ** (-1 / y_k)

    gap = eps[vir][None, :] - eps[occ][:, None]  # (n_occ, n_vir)
    q_ii = q_ij[:, np.arange(len(occ)), np.arange(len(occ))]  # (n_atoms, n_occ)
    q_aa = q_ab[:, np.arange(len(vir)), np.arange(len(vir))]  # (n_atoms, n_vir)
    diagonal = (
        gap + 2 * np.einsum("Aia,AB,Bia->ia", q_ia, gamma_k, q_ia) - np.einsum("Ai,AB,Ba->ia", q_ii, gamma_j, q_aa)
    )
    i_sel, a_sel = np.nonzero(diagonal < window)
    if len(i_sel) < n_states:
        order = np.argsort(diagonal, axis=None)[:n_states]
        i_sel, a_sel = np.unravel_index(order, diagonal.shape)
    k_charges = q_ia[:, i_sel, a_sel]  # (n_atoms, n_csf)
    coulomb = gamma_j @ q_ab.reshape(mol.natm, -1)  # (n_atoms, n_vir * n_vir)
    coulomb = coulomb.reshape(mol.natm, len(vir), len(vir))
    a_matrix = (
        np.diag(gap[i_sel, a_sel])
        + 2 * k_charges.T @ gamma_k @ k_charges
        - np.einsum("Apq,Apq->pq", q_ij[:, i_sel][:, :, i_sel], coulomb[:, a_sel][:, :, a_sel])
    )
    energies, vectors = np.linalg.eigh(a_matrix)
    energies, vectors = energies[:n_states], vectors[:, :n_states]
    dipole = np.einsum("xmn,mp,nq->xpq", mol.intor("int1e_r"), mf.mo_coeff[:, occ], mf.mo_coeff[:, vir])
    transition = np.sqrt(2) * dipole[:, i_sel, a_sel] @ vectors  # (3, n_states), e Bohr
    strengths = 2.0 / 3.0 * energies * (transition**2).sum(0)
    return {"energies": energies * Hartree, "strengths": strengths}


def uv_spectrum_sticks(
    atoms: Atoms,
    method: str = "stda",
    n_states: int = 10,
    xc: str = None,
    basis: str = None,
    charge: int = 0,
) -> Dict[str, np.ndarray]:
    """Excitation energies (eV) and oscillator strengths of the lowest ``n_states`` singlets.

    Raises:
        SimulationError: unknown method, an element the basis lacks, or SCF not converged.
    """
    if method not in UV_METHODS:
        raise SimulationError(f"unknown UV method {method!r}; choose from {sorted(UV_METHODS)}")
    from pyscf import dft, gto, scf  # PySCF (seconds to import): only for the TDDFT/TDA UV levels

    xc = xc or UV_METHODS[method]["xc"]
    basis = basis or UV_METHODS[method]["basis"]
    try:
        mol = gto.M(
            atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
            basis=basis,
            charge=charge,
            verbose=0,
        )
    except Exception as err:
        raise SimulationError(f"PySCF cannot build {basis} for {atoms.get_chemical_formula()}: {err}") from err
    if mol.nelectron % 2:
        raise SimulationError(f"odd electron count ({mol.nelectron}): only closed-shell molecules are supported")
    mf = scf.RHF(mol) if xc.lower() == "hf" else dft.RKS(mol, xc=xc)
    if "grid_level" in UV_METHODS[method] and xc.lower() != "hf":
        mf.grids.level = UV_METHODS[method]["grid_level"]
    if UV_METHODS[method].get("density_fit"):
        mf = mf.density_fit()  # RI-JK (def2-universal-jkfit) in the SCF and the TDA response
    if "conv_tol" in UV_METHODS[method]:
        mf.conv_tol = UV_METHODS[method]["conv_tol"]
    mf.kernel()
    if not mf.converged:
        raise SimulationError(f"PySCF {xc}/{basis} SCF did not converge")
    if method == "stda":
        if xc.lower() not in _EXACT_EXCHANGE:
            raise SimulationError(f"sTDA needs a hybrid functional of {sorted(_EXACT_EXCHANGE)}, not {xc!r}")
        return stda_sticks(mf, n_states, _EXACT_EXCHANGE[xc.lower()])
    td = mf.TDA()
    td.nstates = n_states
    td.kernel()
    energies = np.asarray(td.e) * Hartree
    strengths = np.asarray(td.oscillator_strength())
    return {"energies": energies, "strengths": strengths}
