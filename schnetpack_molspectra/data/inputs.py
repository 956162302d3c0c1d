"""Molecules to simulate, from SMILES (3D by RDKit), structure files (xyz/extxyz/ASE db) or QM9."""

import os
from typing import List, Optional, Sequence

import numpy as np
from ase import Atoms
from ase.io import iread
from ase.io.formats import filetype
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.files import require_file
from schnetpack_molspectra.data.qm9 import gdb_positions, load_qm9pack, qm9_molecules
from schnetpack_molspectra.data.simulate.runner import MoleculeInput

__all__ = [
    "StructureInputError",
    "smiles_to_atoms",
    "from_smiles",
    "from_file",
    "from_qm9",
    "structure_file_inputs",
    "structure_problem",
]


class StructureInputError(ValueError):
    """Structures that cannot be read; the message names the file (or SMILES) and the molecule."""


def smiles_to_atoms(smiles: str, seed: int = 0) -> Atoms:
    """A 3D structure (with hydrogens) embedded and force-field relaxed by RDKit.

    Raises:
        ValueError: RDKit cannot parse or embed ``smiles`` (named), or it has dummy atoms (``*``).
    """
    with rdBase.BlockLogs():  # the reason goes into the error, not onto stderr
        try:
            mol = Chem.MolFromSmiles(smiles)
        except Exception as err:  # RDKit raises for some inputs (e.g. NUL bytes) instead of returning None
            raise ValueError(f"RDKit cannot parse SMILES {smiles!r} ({type(err).__name__}: {err})") from err
        if mol is None or mol.GetNumAtoms() == 0:
            raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
        if any(a.GetAtomicNum() == 0 for a in mol.GetAtoms()):
            raise ValueError(f"SMILES {smiles!r} has dummy atoms (*), which cannot be simulated")
        mol = Chem.AddHs(mol)
        if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
            raise ValueError(f"RDKit could not embed SMILES {smiles!r} in 3D")
        AllChem.MMFFOptimizeMolecule(mol)
    return Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())


def from_smiles(smiles: Sequence[str]) -> List[MoleculeInput]:
    """One input per SMILES.

    Raises:
        StructureInputError: naming the first SMILES RDKit cannot handle and its position.
    """
    inputs = []
    for i, s in enumerate(smiles):
        try:
            inputs.append(MoleculeInput(i, smiles_to_atoms(s), name=s, smiles=s))
        except ValueError as err:
            raise StructureInputError(f"SMILES {i}: {err}") from err
    return inputs


def structure_problem(atoms: Atoms) -> Optional[str]:
    """What makes one structure unusable (no atoms, unknown elements, non-finite positions), or None."""
    if len(atoms) == 0:
        return "has no atoms"
    if (atoms.numbers < 1).any() or (atoms.numbers > 118).any():
        return f"has atoms of no element (atomic numbers {sorted(set(atoms.numbers.tolist()))[:5]})"
    if not np.isfinite(atoms.positions).all():
        return "has non-finite positions"
    return None


def _xyz_count_problem(path: str) -> Optional[str]:
    """The first structure of an xyz/extxyz file whose atom count runs past the end of the file, or None.

    ``ase.io`` reads such a count (a garbled ``99999999999``) line by line for ever. Counts that
    are not integers are left to ``ase.io``, which names them.
    """
    with open(path, "rb") as f:
        total = sum(1 for _ in f)
        f.seek(0)
        number, frame = 0, 0
        line = f.readline()
        while line.strip():
            number += 1
            try:
                n_atoms = int(line)
            except ValueError:
                return None
            if n_atoms > total - number - 1:
                return f"structure {frame}: line {number} gives {n_atoms} atoms, but the file ends {total - number} lines later"
            for _ in range(n_atoms + 1):  # the comment line and the atoms
                f.readline()
            number += n_atoms + 1
            line = f.readline()
            while line.lstrip().startswith(b"VEC"):  # extxyz lattice vectors
                number += 1
                line = f.readline()
            frame += 1
    return None


def _read_structures(path: str) -> List[Atoms]:
    """Every structure in ``path`` by ``ase.io``; a failure names the structure it was reading."""
    try:
        xyz = filetype(path) in ("xyz", "extxyz")
    except Exception:  # an empty or unknown file: iread says so below
        xyz = False
    problem = _xyz_count_problem(path) if xyz else None
    if problem is not None:
        raise StructureInputError(f"{path}: {problem}")
    frames = []
    try:
        for atoms in iread(path, index=":"):
            frames.append(atoms)
    except Exception as err:  # ase.io raises what its parsers raise: XYZError, UnicodeDecodeError, KeyError, sqlite3...
        raise StructureInputError(
            f"{path}: cannot read structure {len(frames)} ({type(err).__name__}: {str(err)[:200]})"
        ) from err
    return frames


def structure_file_inputs(path: str) -> List[MoleculeInput]:
    """Every structure in an xyz/extxyz file or an ASE/SchNetPack db (read by ``ase.io``), named
    ``<file>:<i>``, with the SMILES an extxyz frame carries in its ``smiles`` info key; not checked
    (:func:`structure_problem` says what makes one unusable).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        StructureInputError: the file is not readable by ``ase.io`` or holds no structures.
    """
    require_file(path, "structure file")
    frames = _read_structures(path)
    if not frames:
        raise StructureInputError(f"{path}: no structures in it")
    # extxyz frames may carry their SMILES (info key ``smiles``): it goes into the database with them
    return [
        MoleculeInput(i, a, name=f"{os.path.basename(path)}:{i}", smiles=str(a.info.get("smiles") or ""))
        for i, a in enumerate(frames)
    ]


def from_file(path: str) -> List[MoleculeInput]:
    """Every structure in an xyz/extxyz file or an ASE/SchNetPack db (:func:`structure_file_inputs`),
    each checked.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        StructureInputError: the file is not readable by ``ase.io``, holds no structures, or a
            structure without atoms, with unknown elements or non-finite positions (named).
    """
    molecules = structure_file_inputs(path)
    for m in molecules:
        problem = structure_problem(m.atoms)
        if problem is not None:
            raise StructureInputError(f"{path}: structure {m.index} {problem}")
    return molecules


def from_qm9(
    n: Optional[int] = None, gdb_indices: Optional[Sequence[int]] = None, seed: int = 0, table=None
) -> List[MoleculeInput]:
    """QM9 molecules (from qm9pack) with their labels: the given GDB indices, or ``n`` drawn at random.

    ``table``: the qm9pack table if the caller has already loaded it (:func:`load_qm9pack`)."""
    table = load_qm9pack() if table is None else table
    if gdb_indices is None:
        positions = np.sort(np.random.default_rng(seed).choice(len(table), size=n, replace=False))
    else:
        positions = gdb_positions(table, gdb_indices)
    return [
        MoleculeInput(labels[msp.gdb_index], atoms, name=f"gdb_{labels[msp.gdb_index]}", smiles=smiles, labels=labels)
        for atoms, labels, smiles, _ in qm9_molecules(table, positions)
    ]
