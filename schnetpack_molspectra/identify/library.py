"""Candidate structures from files: a SchNetPack/ASE database, an xyz/extxyz file (every frame,
read by :func:`schnetpack_molspectra.data.inputs.from_file`) or a SMILES list (3D by
:func:`schnetpack_molspectra.data.inputs.smiles_to_atoms`), and the SMILES derived back from a
geometry (RDKit) for the hits of a library that has none.
"""

import os
from dataclasses import dataclass
from typing import List, Tuple

from ase import Atoms
from ase.db import connect
from rdkit import Chem
from rdkit.Chem import AllChem, rdDetermineBonds

from schnetpack_molspectra.data.inputs import from_file, smiles_to_atoms
from schnetpack_molspectra.data.spectrum_files import row_name
from schnetpack_molspectra.identify.model import IdentifyError

__all__ = ["Library", "LIBRARY_EXTENSIONS", "smiles_to_3d", "load_library", "smiles_from_structure"]

LIBRARY_EXTENSIONS = (".db", ".xyz", ".extxyz", ".smi", ".txt", ".csv")


@dataclass
class Library:
    """Candidate structures: names, SMILES ('' where unknown) and 3D structures."""

    path: str
    names: List[str]
    smiles: List[str]
    atoms: List[Atoms]


def smiles_to_3d(smiles: str) -> Atoms:
    """``data.inputs.smiles_to_atoms`` (RDKit ETKDG + MMFF, seed 0); for the strained cages where
    that embedding fails, RDKit again from random coordinates."""

    try:
        return smiles_to_atoms(smiles)
    except ValueError as err:
        if "embed" not in str(err):
            raise
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        if AllChem.EmbedMolecule(mol, randomSeed=0, useRandomCoords=True, maxAttempts=50) != 0:
            raise
        AllChem.MMFFOptimizeMolecule(mol)
        return Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())


def _read_smiles_list(path: str) -> Tuple[List[str], List[str], List[Atoms]]:
    names, smiles, atoms = [], [], []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = [p for p in text.replace(",", " ").replace("\t", " ").split(" ") if p]
            if line_no == 1 and parts[0].lower() in ("smiles", "smi"):
                continue  # header
            smi, name = parts[0], " ".join(parts[1:]) or parts[0]
            try:
                atoms.append(smiles_to_3d(smi))
            except Exception as err:
                raise IdentifyError(f"{path}: line {line_no}: {err}") from err
            names.append(name)
            smiles.append(smi)
    return names, smiles, atoms


def load_library(path: str) -> Library:
    """Candidate structures from a database (names: :func:`~schnetpack_molspectra.data.spectrum_files.row_name`), an
    xyz/extxyz file or a SMILES list."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"library {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".db":
        names, smiles, atoms = [], [], []
        with connect(path, use_lock_file=False) as db:
            for row in db.select():
                atoms.append(row.toatoms())
                names.append(row_name(row))
                smiles.append(str(row.get("smiles") or ""))
    elif ext in (".xyz", ".extxyz"):
        try:
            molecules = from_file(path)
        except (OSError, ValueError):  # named by the reader
            raise
        except Exception as err:
            raise IdentifyError(f"{path}: cannot read structures ({type(err).__name__}: {err})") from err
        atoms = [m.atoms for m in molecules]
        names = [str(m.atoms.info.get("name") or m.name) for m in molecules]
        smiles = [m.smiles for m in molecules]  # from_file reads the extxyz "smiles" info key
    elif ext in (".smi", ".txt", ".csv"):
        names, smiles, atoms = _read_smiles_list(path)
    else:
        raise IdentifyError(f"{path}: unknown library format {ext!r}; use one of {', '.join(LIBRARY_EXTENSIONS)}")
    if not atoms:
        raise IdentifyError(f"{path}: library has no molecules")
    return Library(path, names, smiles, atoms)


def smiles_from_structure(atoms: Atoms) -> str:
    """SMILES of a neutral closed-shell structure, bonds from its geometry (RDKit); '' if that fails."""
    try:
        xyz = f"{len(atoms)}\n\n" + "\n".join(
            f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)
        )
        mol = Chem.MolFromXYZBlock(xyz)
        rdDetermineBonds.DetermineBonds(mol, charge=0)
        return Chem.MolToSmiles(Chem.RemoveHs(mol))
    except Exception:
        return ""
