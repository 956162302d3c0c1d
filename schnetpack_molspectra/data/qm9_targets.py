"""The QM9 fine-tuning target table: SchNetPack's QM9 names and units for the qm9pack columns,
the 12 targets the paper fine-tunes on (:class:`QM9Target`: unit, reported unit, output module,
aggregation, atom references) and QM9's single-atom reference energies.

Targets get ``schnetpack.datasets.QM9``'s names and units (Hartree, Debye, a0^3, a0^2,
cal/mol/K, GHz); ``finetune.py`` and the ``qm9`` config resolver read them from here.
"""

from dataclasses import dataclass
from typing import Dict

from schnetpack.datasets import QM9

__all__ = [
    "QM9_COLUMNS",
    "QM9_UNITS",
    "QM9Target",
    "QM9_TARGETS",
    "qm9_target",
    "qm9_atomrefs",
]

#: qm9pack column -> SchNetPack QM9 property name (in the order of a QM9 xyz file's line 2)
QM9_COLUMNS = {
    "RotA_GHz": QM9.A,
    "RotB_GHz": QM9.B,
    "RotC_GHz": QM9.C,
    "Dipole_debye": QM9.mu,
    "Polarizability_bohr3": QM9.alpha,
    "HOMO_au": QM9.homo,
    "LUMO_au": QM9.lumo,
    "HOMO_LUMO_gap_au": QM9.gap,
    "R2_bohr2": QM9.r2,
    "ZPVE_au": QM9.zpve,
    "InternalEnergy_0K_au": QM9.U0,
    "InternalEnergy_298K_au": QM9.U,
    "Enthalphy_298K_au": QM9.H,
    "GibbsFreeEnergy_298K_au": QM9.G,
    "Heatcapacity_Cv_cal_mol_K": QM9.Cv,
}
#: SchNetPack QM9 property -> unit, as ``schnetpack.datasets.QM9`` stores them
QM9_UNITS = {
    QM9.A: "GHz",
    QM9.B: "GHz",
    QM9.C: "GHz",
    QM9.mu: "Debye",
    QM9.alpha: "a0 a0 a0",
    QM9.homo: "Ha",
    QM9.lumo: "Ha",
    QM9.gap: "Ha",
    QM9.r2: "a0 a0",
    QM9.zpve: "Ha",
    QM9.U0: "Ha",
    QM9.U: "Ha",
    QM9.H: "Ha",
    QM9.G: "Ha",
    QM9.Cv: "cal/mol/K",
}


@dataclass(frozen=True)
class QM9Target:
    """How one QM9 target is fine-tuned and reported (``finetune.py`` builds on it)."""

    key: str  # SchNetPack's QM9 property name
    unit: str  # unit the model is trained in (data=qm9 loads energies in eV)
    report_unit: str  # unit of the logged MAE (the paper's)
    report_scale: float  # report = scale * train unit
    module: str  # atomwise | dipole | spatial_extent
    aggregation: str = "sum"
    atomrefs: bool = False

    @property
    def is_extensive(self) -> bool:
        """Summed over atoms (grows with the molecule) rather than averaged."""
        return self.aggregation == "sum"


#: the paper's short target name (``schnetpack.datasets.QM9``'s attribute) -> its target
QM9_TARGETS: Dict[str, QM9Target] = {
    "mu": QM9Target(QM9.mu, "Debye", "D", 1.0, "dipole"),
    "alpha": QM9Target(QM9.alpha, "a0 a0 a0", "a0^3", 1.0, "atomwise"),
    "homo": QM9Target(QM9.homo, "eV", "meV", 1000.0, "atomwise", "avg"),
    "lumo": QM9Target(QM9.lumo, "eV", "meV", 1000.0, "atomwise", "avg"),
    "gap": QM9Target(QM9.gap, "eV", "meV", 1000.0, "atomwise", "avg"),
    "r2": QM9Target(QM9.r2, "a0 a0", "a0^2", 1.0, "spatial_extent"),
    "zpve": QM9Target(QM9.zpve, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "U0": QM9Target(QM9.U0, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "U": QM9Target(QM9.U, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "H": QM9Target(QM9.H, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "G": QM9Target(QM9.G, "eV", "meV", 1000.0, "atomwise", "sum", True),
    "Cv": QM9Target(QM9.Cv, "cal/mol/K", "cal/mol/K", 1.0, "atomwise", "sum", True),
}


def qm9_target(property: str) -> QM9Target:
    """The target for a short name (``homo``) or a SchNetPack key (``energy_U0``)."""
    if property in QM9_TARGETS:
        return QM9_TARGETS[property]
    for target in QM9_TARGETS.values():
        if target.key == property:
            return target
    raise ValueError(f"unknown QM9 property {property!r}; choose one of {list(QM9_TARGETS)}")


#: QM9's single-atom reference energies (Hartree; Cv in cal/mol/K) for H, C, N, O, F, as
#: published with QM9 (atomref table); schnetpack's RemoveOffsets(remove_atomrefs=True) reads them
_ATOMREF_TABLE = {
    # Z:   zpve, U0,          U,           H,           G,           Cv
    1: (0.0, -0.500273, -0.498857, -0.497912, -0.510927, 2.981),
    6: (0.0, -37.846772, -37.845355, -37.844411, -37.861317, 2.981),
    7: (0.0, -54.583861, -54.582445, -54.581501, -54.598897, 2.981),
    8: (0.0, -75.064579, -75.063162, -75.062219, -75.079532, 2.981),
    9: (0.0, -99.718730, -99.717314, -99.716370, -99.733544, 2.981),
}


def qm9_atomrefs(max_z: int = 100) -> dict:
    """Atom references in SchNetPack's layout: property -> list indexed by atomic number."""
    names = [QM9.zpve, QM9.U0, QM9.U, QM9.H, QM9.G, QM9.Cv]
    refs = {name: [0.0] * max_z for name in names}
    for z, values in _ATOMREF_TABLE.items():
        for name, value in zip(names, values):
            refs[name][z] = value
    return refs
