"""MD17-style data: the real MD17 ``.npz`` files, or GFN2-xTB molecular dynamics made locally.

Both give a SchNetPack database with ``energy`` (kcal/mol, (1,)) and ``forces``
(kcal/mol/A, (n_atoms, 3)), the names and units of ``schnetpack.datasets.MD17``.
"""

import os
from typing import Dict

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.db import connect
from ase.io import read
from ase.md.langevin import Langevin
from schnetpack import properties as structure
from schnetpack.data import ASEAtomsData
from tqdm import tqdm

from schnetpack_molspectra.data.files import check_new_database, damaged_zip, new_database, require_file
from schnetpack_molspectra.data.inputs import smiles_to_atoms
from schnetpack_molspectra.data.tblite_process import require_tblite

__all__ = [
    "MD17_SMILES",
    "MD17_UNITS",
    "MD17FormatError",
    "md17_atoms",
    "npz_to_db",
    "thermalize",
    "generate_xtb_md",
]

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
        return read(molecule)
    if molecule not in MD17_SMILES:
        raise ValueError(
            f"unknown MD17 molecule {molecule!r}; choose one of {sorted(MD17_SMILES)} or give a structure file"
        )
    return smiles_to_atoms(MD17_SMILES[molecule])


class MD17FormatError(ValueError):
    """An MD17 ``.npz`` that cannot be read; the message names the file (and the frame or array)."""


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # what numpy.load takes for an .npz


def _npz_arrays(npz: str) -> Dict[str, np.ndarray]:
    """The arrays ``R``, ``z``, ``E``, ``F`` of an ``.npz`` (no pickles), each named if unreadable."""
    require_file(npz, "MD17 file")
    with open(npz, "rb") as f:
        if not f.read(4).startswith(_ZIP_MAGIC):
            raise MD17FormatError(f"{npz}: not an .npz file (an .npz is a zip archive of arrays)")
    damage = damaged_zip(npz)
    if damage is not None:
        raise MD17FormatError(f"{npz}: not a readable .npz file: {damage}")
    with open(npz, "rb") as f:  # ours to close: numpy leaves a file it opened open when the zip is refused
        try:
            data = np.load(f, allow_pickle=False)
        except Exception as err:  # zipfile.BadZipFile, OSError, EOFError, ...: numpy does not wrap them
            raise MD17FormatError(f"{npz}: not a readable .npz file ({type(err).__name__}: {err})") from err
        with data:
            missing = [k for k in ("R", "z", "E", "F") if k not in data.files]
            if missing:
                what = "no forces" if "F" in missing else f"missing keys {missing}"
                raise MD17FormatError(f"{npz}: not an MD17 file with energies and forces ({what}; has {data.files})")
            arrays = {}
            for key in ("R", "z", "E", "F"):
                try:
                    arrays[key] = data[key]
                except Exception as err:  # damaged member, object array, ...
                    raise MD17FormatError(f"{npz}: array {key} cannot be read ({type(err).__name__}: {err})") from err
    return arrays


def _md17_frames(npz: str, arrays: Dict[str, np.ndarray]):
    """``(R (n, N, 3), z (N,), E (n, 1), F (n, N, 3))`` checked for shapes, types and finite values."""
    R, z, E, F = (arrays[k] for k in ("R", "z", "E", "F"))
    shapes = f"R {R.shape}, z {z.shape}, E {E.shape}, F {F.shape}; expected R (n, N, 3), z (N,), E (n,) or (n, 1), F (n, N, 3)"
    if any(a.dtype.kind not in "iuf" for a in (R, z, E, F)):
        raise MD17FormatError(f"{npz}: non-numeric arrays (R {R.dtype}, z {z.dtype}, E {E.dtype}, F {F.dtype})")
    if (
        R.ndim != 3
        or R.shape[0] == 0
        or R.shape[1] == 0
        or R.shape[2] != 3
        or F.shape != R.shape
        or z.shape != R.shape[1:2]
    ):
        raise MD17FormatError(f"{npz}: inconsistent shapes {shapes}")
    if E.ndim == 0 or E.shape[0] != len(R) or E.size != len(R):  # one energy per frame: not (n, 0), not (n, 2)
        raise MD17FormatError(f"{npz}: inconsistent shapes {shapes}")
    if not (np.isfinite(z).all() and (z == np.round(z)).all() and (z >= 1).all() and (z <= 118).all()):
        raise MD17FormatError(f"{npz}: z holds {z.tolist()[:10]}, not atomic numbers (1-118)")
    E = E.reshape(len(R), 1)
    for name, values in (("positions", R), ("energy", E), ("forces", F)):
        bad = ~np.isfinite(values.reshape(len(R), -1)).all(axis=1)
        if bad.any():
            raise MD17FormatError(
                f"{npz}: frame {int(np.flatnonzero(bad)[0])} has non-finite {name} ({int(bad.sum())} such frames)"
            )
    return R.astype(np.float64), z.astype(np.int64), E.astype(np.float64), F.astype(np.float64)


def npz_to_db(npz: str, db: str) -> int:
    """Convert a real MD17 ``.npz`` (keys ``R`` (n, N, 3) A, ``z`` (N,), ``E`` (n, 1) kcal/mol,
    ``F`` (n, N, 3) kcal/mol/A) into a new SchNetPack database; returns the number of frames.

    ``db`` is written through ``<db>.partial.db`` and renamed when complete: whole or absent.

    Raises:
        FileNotFoundError: ``npz`` is not a file.
        FileExistsError: ``db`` or ``<db>.partial.db`` exists (neither is touched).
        MD17FormatError: ``npz`` is not an MD17 file (named, with the array or frame at fault).
    """
    check_new_database(db)
    R, z, E, F = _md17_frames(npz, _npz_arrays(npz))
    frames = [Atoms(numbers=z, positions=r) for r in R]
    props = [{structure.energy: e, structure.forces: f} for e, f in zip(E, F)]
    with new_database(db) as partial:
        dataset = ASEAtomsData.create(partial, distance_unit="Ang", property_unit_dict=MD17_UNITS)
        for start in tqdm(range(0, len(frames), 1000), desc="writing", unit="kframe"):
            dataset.add_systems(props[start : start + 1000], frames[start : start + 1000])
    return len(frames)


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Momenta drawn from the Maxwell-Boltzmann distribution at ``temperature_K`` (K): ASE's
    ``thermalize_momenta`` (ASE >= 3.29; ``MaxwellBoltzmannDistribution`` before, deprecated since)."""
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    else:
        thermalize_momenta(atoms, temperature_K, rng=rng)


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
    require_tblite()
    from tblite.ase import TBLite  # tblite: only once require_tblite() says it loads (data/tblite_process.py)

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
        thermalize(atoms, temperature, np.random.default_rng(seed))
    # the centre of mass held by a constraint (ASE >= 3.28 deprecates Langevin's own fixcm, which biases the NVT
    # sampling of small molecules); the forces written are the calculator's, not the constrained ones
    atoms.set_constraint(FixCom())
    dynamics = Langevin(
        atoms,
        timestep * units.fs,
        temperature_K=temperature,
        friction=friction,
        fixcm=False,
        rng=np.random.default_rng(seed + done),
    )
    to_kcal = units.mol / units.kcal
    bar = tqdm(
        total=n_frames,
        initial=done,
        desc=f"xTB MD {os.path.basename(str(molecule))} {temperature:g} K",
        unit="frame",
        disable=not progress,
    )
    while done < n_frames:
        dynamics.run(interval)
        frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, momenta=atoms.get_momenta())
        data = {
            structure.energy: np.array([atoms.get_potential_energy() * to_kcal]),
            structure.forces: atoms.get_forces(apply_constraint=False) * to_kcal,
        }
        conn.write(frame, data=data)
        done += 1
        bar.update(1)
    bar.close()
    return done
