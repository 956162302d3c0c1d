"""Molecules to simulate, from SMILES (3D by RDKit), structure files (xyz/extxyz/ASE db) or QM9."""
from typing import List, Optional, Sequence

import numpy as np
from ase import Atoms

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.simulate.runner import MoleculeInput

__all__ = ["from_smiles", "from_file", "from_qm9"]


def smiles_to_atoms(smiles: str, seed: int = 0) -> Atoms:
    """A 3D structure (with hydrogens) embedded and force-field relaxed by RDKit."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise ValueError(f"RDKit could not embed SMILES {smiles!r} in 3D")
    AllChem.MMFFOptimizeMolecule(mol)
    return Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())


def from_smiles(smiles: Sequence[str]) -> List[MoleculeInput]:
    """One input per SMILES; a SMILES RDKit cannot handle raises, naming it."""
    return [MoleculeInput(i, smiles_to_atoms(s), name=s, smiles=s) for i, s in enumerate(smiles)]


def from_file(path: str) -> List[MoleculeInput]:
    """Every structure in an xyz/extxyz file or an ASE/SchNetPack db (read by ``ase.io``)."""
    import os

    from ase.io import read

    if not os.path.exists(path):
        raise FileNotFoundError(f"structure file {path} does not exist")
    frames = read(path, index=":")
    return [MoleculeInput(i, a, name=f"{os.path.basename(path)}:{i}") for i, a in enumerate(frames)]


def from_qm9(
    n: Optional[int] = None, gdb_indices: Optional[Sequence[int]] = None, seed: int = 0, table=None
) -> List[MoleculeInput]:
    """QM9 molecules (from qm9pack) with their labels: the given GDB indices, or ``n`` drawn at random.

    ``table``: the qm9pack table if the caller has already loaded it (:func:`load_qm9pack`)."""
    from schnetpack_molspectra.data.qm9 import gdb_positions, load_qm9pack, qm9_molecules

    table = load_qm9pack() if table is None else table
    if gdb_indices is None:
        positions = np.sort(np.random.default_rng(seed).choice(len(table), size=n, replace=False))
    else:
        positions = gdb_positions(table, gdb_indices)
    return [
        MoleculeInput(labels[msp.gdb_index], atoms, name=f"gdb_{labels[msp.gdb_index]}", smiles=smiles, labels=labels)
        for atoms, labels, smiles, _ in qm9_molecules(table, positions)
    ]
