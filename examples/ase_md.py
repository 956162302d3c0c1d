"""Molecular dynamics with a fine-tuned MolSpectra model through SchNetPack's ASE calculator.

Loads ``best_model`` of an ``md17_finetune`` run with ``schnetpack.interfaces.SpkCalculator``,
equilibrates with Langevin dynamics, then runs NVE (velocity Verlet), writes the trajectory
and prints the total-energy drift per atom per ps over the NVE run.

    python examples/ase_md.py runs/<id>/best_model --molecule ethanol --nve-steps 1000

The start structure is the first frame of ``--structure`` (any ASE-readable file or a
SchNetPack db) or the named MD17 molecule built from SMILES.
"""

import argparse
import json
import sys

import numpy as np
import schnetpack as spk
from ase import units
from ase.constraints import FixCom
from ase.io import read
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet


def energy_drift(times_fs: np.ndarray, total_energy_ev: np.ndarray, n_atoms: int) -> float:
    """Slope of a linear fit of the total energy, in eV per atom per ps."""
    slope = np.polyfit(times_fs / 1000.0, total_energy_ev, 1)[0]
    return float(slope / n_atoms)


def run(
    model,
    molecule="ethanol",
    structure=None,
    cutoff=5.0,
    temperature=300.0,
    timestep=0.5,
    langevin_steps=200,
    nve_steps=1000,
    trajectory="md.traj",
    energy_unit="kcal/mol",
    seed=0,
):
    """Langevin then NVE MD; returns a summary dict (drift in eV/atom/ps, energy fluctuation)."""
    from schnetpack_molspectra.data.md17 import md17_atoms, thermalize

    atoms = read(structure, index=0) if structure else md17_atoms(molecule)
    atoms.calc = spk.interfaces.SpkCalculator(
        model,  # positional: SchNetPack 2.1 calls it model_file, 2.2 model
        neighbor_list=spk.transform.ASENeighborList(cutoff=cutoff),
        energy_key="energy",
        force_key="forces",
        energy_unit=energy_unit,
        position_unit="Ang",
    )
    thermalize(atoms, temperature, np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())  # the centre of mass stays put (Langevin's own fixcm is deprecated in ASE 3.28)
    Langevin(
        atoms,
        timestep * units.fs,
        temperature_K=temperature,
        friction=0.02,
        fixcm=False,
        rng=np.random.default_rng(seed),
    ).run(langevin_steps)

    times, energies, temperatures = [], [], []
    dyn = VelocityVerlet(atoms, timestep * units.fs)
    traj = Trajectory(trajectory, "w", atoms)

    def record():
        times.append(dyn.nsteps * timestep)
        energies.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())

    dyn.attach(record, interval=1)
    dyn.attach(traj.write, interval=10)
    dyn.run(nve_steps)
    traj.close()
    energies = np.array(energies)
    if not np.all(np.isfinite(energies)) or np.any(np.array(temperatures) > 20 * temperature):
        raise RuntimeError("MD blew up: non-finite energies or runaway temperature")
    return {
        "nve_steps": nve_steps,
        "timestep_fs": timestep,
        "n_atoms": len(atoms),
        "drift_eV_per_atom_per_ps": energy_drift(np.array(times), energies, len(atoms)),
        "energy_std_eV": float(energies.std()),
        "mean_temperature_K": float(np.mean(temperatures)),
        "trajectory": trajectory,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="best_model of an md17_finetune run")
    p.add_argument("--molecule", default="ethanol")
    p.add_argument("--structure", default=None)
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--langevin-steps", type=int, default=200)
    p.add_argument("--nve-steps", type=int, default=1000)
    p.add_argument("--trajectory", default="md.traj")
    args = p.parse_args(argv)
    summary = run(
        args.model,
        args.molecule,
        args.structure,
        args.cutoff,
        args.temperature,
        args.timestep,
        args.langevin_steps,
        args.nve_steps,
        args.trajectory,
    )
    print(json.dumps(summary, indent=2))
    print(f"NVE energy drift: {summary['drift_eV_per_atom_per_ps']:.3e} eV/atom/ps over {args.nve_steps} steps")


if __name__ == "__main__":
    sys.exit(main())
