"""MD17-style data: the real MD17 ``.npz`` files, or GFN2-xTB molecular dynamics made locally.

Both give a SchNetPack database with ``energy`` (kcal/mol, (1,)) and ``forces``
(kcal/mol/A, (n_atoms, 3)), the names and units of ``schnetpack.datasets.MD17``.
"""
import os

import numpy as np
from ase import Atoms, units
from schnetpack import properties as structure
from tqdm import tqdm

from schnetpack_molspectra.data.tblite_process import require_tblite

__all__ = ["MD17_SMILES", "MD17_UNITS", "md17_atoms", "npz_to_db", "generate_xtb_md"]

#: property -> unit, as ``schnetpack.datasets.MD17`` stores them
MD17_UNITS = {structure.energy: "kcal/mol", structure.forces: "kcal/mol/Ang"}

#: the eight MD17 molecules
MD17_SMILES = {
    "aspirin": "CC(=O)OC1=CC=CC=C1C(=O)O",
    "benzene": "c1ccccc1",
    "ethanol": "CCO",
    "malonaldehyde": "O=CCC=O",
    "naphthalene": "c1ccc2ccccc2c1",
    "salicylic_acid": "OC(=O)c1ccccc1O",
    "toluene": "Cc1ccccc1",
    "uracil": "O=C1C=CNC(=O)N1",
}


def md17_atoms(molecule: str) -> Atoms:
    """An MD17 molecule by name (3D from RDKit), or the first structure of a file."""
    if os.path.exists(molecule):
        from ase.io import read

        return read(molecule)
    if molecule not in MD17_SMILES:
        raise ValueError(f"unknown MD17 molecule {molecule!r}; choose one of {sorted(MD17_SMILES)} or give a structure file")
    from schnetpack_molspectra.data.inputs import smiles_to_atoms

    return smiles_to_atoms(MD17_SMILES[molecule])


def npz_to_db(npz: str, db: str) -> int:
    """Convert a real MD17 ``.npz`` (keys ``R`` (n, N, 3) A, ``z`` (N,), ``E`` (n, 1) kcal/mol,
    ``F`` (n, N, 3) kcal/mol/A) into a SchNetPack database; returns the number of frames."""
    from schnetpack.data import ASEAtomsData

    if not os.path.exists(npz):
        raise FileNotFoundError(f"MD17 file {npz} does not exist")
    data = np.load(npz)
    missing = [k for k in ("R", "z", "E", "F") if k not in data.files]
    if missing:
        what = "no forces" if "F" in missing else f"missing keys {missing}"
        raise ValueError(f"{npz}: not an MD17 file with energies and forces ({what}; has {data.files})")
    R, z, E, F = data["R"], data["z"], data["E"].reshape(len(data["R"]), -1)[:, :1], data["F"]
    if not (len(R) == len(E) == len(F)) or R.shape != F.shape or R.shape[1] != len(z):
        raise ValueError(f"{npz}: inconsistent shapes R {R.shape}, z {z.shape}, E {data['E'].shape}, F {F.shape}")
    dataset = ASEAtomsData.create(db, distance_unit="Ang", property_unit_dict=MD17_UNITS)
    frames = [Atoms(numbers=z, positions=r) for r in R]
    props = [{structure.energy: e.astype(np.float64), structure.forces: f.astype(np.float64)} for e, f in zip(E, F)]
    for start in tqdm(range(0, len(frames), 1000), desc="writing", unit="kframe"):
        dataset.add_systems(props[start : start + 1000], frames[start : start + 1000])
    return len(frames)


def generate_xtb_md(
    molecule: str,
    db: str,
    n_frames: int = 1000,
    temperature: float = 500.0,
    timestep: float = 0.5,
    interval: int = 10,
    friction: float = 0.01,
    seed: int = 0,
    progress: bool = True,
) -> int:
    """GFN2-xTB Langevin MD at ``temperature`` (K), one frame every ``interval`` steps of
    ``timestep`` (fs), written to ``db`` as it runs. A killed run resumes from the last
    frame written (its positions and momenta). Returns the number of frames in ``db``."""
    from ase.db import connect
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from schnetpack.data import ASEAtomsData

    require_tblite()
    from tblite.ase import TBLite

    if os.path.exists(db):
        conn = connect(db, use_lock_file=False)
        done = conn.count()
        if done >= n_frames:
            return done
        last = conn.get(id=done) if done else None
        atoms = last.toatoms() if last else md17_atoms(molecule)
    else:
        atoms = md17_atoms(molecule)
        ASEAtomsData.create(db, distance_unit="Ang", property_unit_dict=MD17_UNITS)
        conn = connect(db, use_lock_file=False)
        done, last = 0, None
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    if last is None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    dynamics = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=friction, rng=np.random.default_rng(seed + done))
    to_kcal = units.mol / units.kcal
    bar = tqdm(total=n_frames, initial=done, desc=f"xTB MD {os.path.basename(str(molecule))} {temperature:g} K", unit="frame", disable=not progress)
    while done < n_frames:
        dynamics.run(interval)
        frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, momenta=atoms.get_momenta())
        data = {
            structure.energy: np.array([atoms.get_potential_energy() * to_kcal]),
            structure.forces: atoms.get_forces() * to_kcal,
        }
        conn.write(frame, data=data)
        done += 1
        bar.update(1)
    bar.close()
    return done
