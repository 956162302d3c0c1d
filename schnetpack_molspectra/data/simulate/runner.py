"""Simulate the three spectra for many molecules into a SchNetPack database: parallel,
resumable, and with every failure recorded.

Each finished molecule is written to the database at once (one row, one sqlite
transaction) by the parent process, tagged with its ``input_index``; a failed molecule is
appended to ``<db>.failures.jsonl`` with its reason. A run that is killed and started
again skips both, so no molecule is computed twice or lost.
"""
import json
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from ase import Atoms
from tqdm import tqdm

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.tblite_process import tblite_loads
from schnetpack_molspectra.spectra.broadening import broaden
from schnetpack_molspectra.spectra.grids import GRIDS

from .uv import uv_spectrum_sticks
from .xtb import SimulationError, relax, vibrational_spectra

__all__ = ["MoleculeInput", "SimulationSettings", "simulate_molecule", "simulate_to_db", "failures_path"]


@dataclass
class MoleculeInput:
    """One molecule to simulate: ``index`` identifies it across resumed runs."""

    index: int
    atoms: Atoms
    name: str = ""
    smiles: str = ""
    labels: Dict[str, float] = field(default_factory=dict)  # e.g. QM9 targets, SchNetPack names


@dataclass
class SimulationSettings:
    """Options of the simulator (units in brackets)."""

    relax: bool = True
    fmax: float = 0.01  # relaxation threshold (eV/A)
    frequency_scale: float = 1.0  # multiply xTB harmonic frequencies
    ir_width: float = 15.0  # Lorentzian FWHM (cm^-1)
    raman_width: float = 12.0  # Lorentzian FWHM (cm^-1)
    uv_width: float = 0.2  # Lorentzian FWHM (eV)
    uv_method: str = "stda"  # a key of uv.UV_METHODS (the levels are described in uv.py)
    uv_states: int = 10
    uv_energy_scale: float = 1.0  # multiply excitation energies (empirical correction)
    imaginary_threshold: float = 50.0  # fail on modes more imaginary than this (cm^-1)


def simulate_molecule(atoms: Atoms, settings: SimulationSettings) -> Tuple[Atoms, Dict[str, np.ndarray]]:
    """Relaxed structure and its properties: broadened spectra (1, n_points) and sticks."""
    structure = relax(atoms, fmax=settings.fmax) if settings.relax else atoms.copy()
    vib = vibrational_spectra(structure, imaginary_threshold=settings.imaginary_threshold)
    uv = uv_spectrum_sticks(structure, settings.uv_method, settings.uv_states)
    frequencies = vib["frequencies"] * settings.frequency_scale
    energies = uv["energies"] * settings.uv_energy_scale
    props = {
        msp.uv_spectrum: broaden(energies, uv["strengths"], GRIDS["uv"], settings.uv_width),
        msp.ir_spectrum: broaden(frequencies, vib["ir_intensities"], GRIDS["ir"], settings.ir_width),
        msp.raman_spectrum: broaden(frequencies, vib["raman_activities"], GRIDS["raman"], settings.raman_width),
        msp.vib_frequencies: frequencies.astype(np.float32),
        msp.ir_intensities: vib["ir_intensities"].astype(np.float32),
        msp.raman_activities: vib["raman_activities"].astype(np.float32),
        msp.uv_energies: energies.astype(np.float32),
        msp.uv_strengths: uv["strengths"].astype(np.float32),
    }
    return structure, props


#: properties every simulated row has, with their units
SIMULATED_UNITS = {
    msp.uv_spectrum: "1",
    msp.ir_spectrum: "1",
    msp.raman_spectrum: "1",
    msp.vib_frequencies: "1",  # cm^-1 (not an ASE unit)
    msp.ir_intensities: "1",  # km/mol
    msp.raman_activities: "1",  # A^4/amu
    msp.uv_energies: "eV",
    msp.uv_strengths: "1",
}


def failures_path(db_path: str) -> str:
    return f"{db_path}.failures.jsonl"


def _work(job: Tuple[MoleculeInput, SimulationSettings]):
    item, settings = job
    try:
        structure, props = simulate_molecule(item.atoms, settings)
        return item, structure, props, None
    except SimulationError as err:
        return item, None, None, str(err)
    except Exception as err:  # anything else is recorded too, never silently dropped
        return item, None, None, f"{type(err).__name__}: {err}"


def _start_pool(workers: int):
    """Worker processes with one OpenMP thread each (set before they start: an OpenMP
    runtime already running in this process cannot be narrowed in forked children)."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        return multiprocessing.get_context("spawn").Pool(workers)
    finally:
        if previous is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = previous


def _open_db(path: str, label_units: Dict[str, str]):
    from ase.db import connect
    from schnetpack.data import ASEAtomsData

    if not os.path.exists(path):
        units = dict(SIMULATED_UNITS, **label_units)
        if label_units:
            units[msp.gdb_index] = "1"
        ASEAtomsData.create(path, distance_unit="Ang", property_unit_dict=units)
    return connect(path, use_lock_file=False)


def done_indices(db_path: str) -> Tuple[set, set]:
    """Input indices already written to ``db_path`` and those recorded as failed."""
    from ase.db import connect

    done, failed = set(), set()
    if os.path.exists(db_path):
        with connect(db_path, use_lock_file=False) as conn:
            done = {row.key_value_pairs["input_index"] for row in conn.select(include_data=False)}
    fpath = failures_path(db_path)
    if os.path.exists(fpath):
        with open(fpath) as f:
            failed = {json.loads(line)["input_index"] for line in f if line.strip()}
    return done, failed


def simulate_to_db(
    molecules: Iterable[MoleculeInput],
    db_path: str,
    settings: Optional[SimulationSettings] = None,
    workers: int = 1,
    label_units: Optional[Dict[str, str]] = None,
    retry_failed: bool = False,
    progress: bool = True,
) -> Dict[str, int]:
    """Simulate ``molecules`` into the SchNetPack database ``db_path`` (created or resumed).

    Returns counts: ``written`` now, ``failed`` now, ``skipped`` (done or failed before).
    """
    settings = settings or SimulationSettings()
    label_units = label_units or {}
    molecules = list(molecules)
    indices = [m.index for m in molecules]
    if len(set(indices)) != len(indices):
        raise ValueError("molecule input indices must be unique")
    done, failed = done_indices(db_path)
    skip = done | (set() if retry_failed else failed)
    pending = [m for m in molecules if m.index not in skip]
    counts = {"written": 0, "failed": 0, "skipped": len(molecules) - len(pending)}
    if not pending:
        return counts

    conn = _open_db(db_path, label_units)
    jobs = [(m, settings) for m in pending]
    pool = None
    if workers > 1 or not tblite_loads():  # workers are fresh processes: tblite loads there
        pool = _start_pool(workers)
        results = pool.imap_unordered(_work, jobs, chunksize=1)
    else:
        results = map(_work, jobs)
    bar = tqdm(total=len(pending), desc="simulating spectra", unit="mol", disable=not progress)
    try:
        with open(failures_path(db_path), "a") as failures:
            for item, structure, props, error in results:
                if error is None:
                    data = dict(props)
                    for key in label_units:
                        data[key] = np.array([item.labels[key]], dtype=np.float64)
                    if label_units:
                        data[msp.gdb_index] = np.array([item.labels.get(msp.gdb_index, -1)], dtype=np.int64)
                    conn.write(structure, data=data, input_index=item.index, label=item.name or str(item.index), smiles=item.smiles)
                    counts["written"] += 1
                else:
                    record = {"input_index": item.index, "name": item.name, "smiles": item.smiles, "reason": error}
                    failures.write(json.dumps(record) + "\n")
                    failures.flush()
                    counts["failed"] += 1
                bar.update(1)
                bar.set_postfix(failed=counts["failed"])
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return counts


def read_failures(db_path: str) -> List[dict]:
    """The failure records of ``db_path`` (input index, name, smiles, reason)."""
    fpath = failures_path(db_path)
    if not os.path.exists(fpath):
        return []
    with open(fpath) as f:
        return [json.loads(line) for line in f if line.strip()]
