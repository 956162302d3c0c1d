"""Simulate the three spectra for many molecules into a SchNetPack database: parallel,
resumable, and with every failure recorded.

Each finished molecule is written to the database at once (one row, one sqlite
transaction) by the parent process, tagged with its ``input_index``; a failed molecule is
appended to ``<db>.failures.jsonl`` with its reason. A run that is killed and started
again skips both, so no molecule is computed twice or lost.

Serially (``workers=1``) the molecules run in this process; in parallel they run on Dask
distributed (a local cluster, a running scheduler or batch jobs: ``cluster.py``), one task per
molecule, and this process stays the only writer: it takes the results as they complete.
"""

import itertools
import json
import multiprocessing
import os
import sys
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from ase import Atoms
from ase.db import connect
from schnetpack.data import ASEAtomsData
from tqdm import tqdm

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.tblite_process import require_tblite, tblite_loads
from schnetpack_molspectra.spectra.broadening import DEFAULT_WIDTH, broaden
from schnetpack_molspectra.spectra.grids import GRIDS

from .cluster import ClusterSpec, dask_client
from .uv import NO_UV, uv_spectrum_sticks
from .xtb import SimulationError, relax, vibrational_spectra

__all__ = [
    "MoleculeInput",
    "SimulationSettings",
    "ClusterSpec",
    "simulate_molecule",
    "stick_properties",
    "simulate_to_db",
    "failures_path",
    "start_pool",
]


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
    ir_width: float = DEFAULT_WIDTH["ir"]  # Lorentzian FWHM (cm^-1)
    raman_width: float = DEFAULT_WIDTH["raman"]  # Lorentzian FWHM (cm^-1)
    uv_width: float = DEFAULT_WIDTH["uv"]  # Lorentzian FWHM (eV)
    uv_method: str = "stda"  # a key of uv.UV_METHODS (the levels are described in uv.py), or uv.NO_UV
    uv_states: int = 10
    uv_energy_scale: float = 1.0  # multiply excitation energies (empirical correction)
    imaginary_threshold: float = 50.0  # fail on modes more imaginary than this (cm^-1)


def simulate_molecule(atoms: Atoms, settings: SimulationSettings) -> Tuple[Atoms, Dict[str, np.ndarray]]:
    """Relaxed structure and its properties: broadened spectra (1, n_points) and sticks."""
    structure = relax(atoms, fmax=settings.fmax) if settings.relax else atoms.copy()
    vib = vibrational_spectra(structure, imaginary_threshold=settings.imaginary_threshold)
    if settings.uv_method == NO_UV:  # IR and Raman only: no UV sticks, a zero UV spectrum
        uv = {"energies": np.zeros(0), "strengths": np.zeros(0)}
    else:
        uv = uv_spectrum_sticks(structure, settings.uv_method, settings.uv_states)
    props = stick_properties(
        vib["frequencies"], vib["ir_intensities"], vib["raman_activities"], uv["energies"], uv["strengths"], settings
    )
    return structure, props


def stick_properties(
    frequencies, ir_intensities, raman_activities, uv_energies, uv_strengths, settings: SimulationSettings
) -> Dict[str, np.ndarray]:
    """One molecule's database properties from its sticks: the spectra broadened onto the QM9S grids
    (1, n_points) with ``settings``' widths and scales, and the (scaled) sticks themselves, float32.

    Args:
        frequencies: harmonic frequencies (cm^-1), (n_modes,); ir_intensities (km/mol) and
            raman_activities (A^4/amu) of those modes.
        uv_energies: excitation energies (eV), (n_states,); uv_strengths: their oscillator strengths.
    """
    frequencies = np.asarray(frequencies, dtype=np.float64) * settings.frequency_scale
    energies = np.asarray(uv_energies, dtype=np.float64) * settings.uv_energy_scale
    return {
        msp.uv_spectrum: broaden(energies, uv_strengths, GRIDS["uv"], settings.uv_width),
        msp.ir_spectrum: broaden(frequencies, ir_intensities, GRIDS["ir"], settings.ir_width),
        msp.raman_spectrum: broaden(frequencies, raman_activities, GRIDS["raman"], settings.raman_width),
        msp.vib_frequencies: frequencies.astype(np.float32),
        msp.ir_intensities: np.asarray(ir_intensities).astype(np.float32),
        msp.raman_activities: np.asarray(raman_activities).astype(np.float32),
        msp.uv_energies: energies.astype(np.float32),
        msp.uv_strengths: np.asarray(uv_strengths).astype(np.float32),
    }


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


def _dask_work(job: Tuple[MoleculeInput, SimulationSettings]):
    """:func:`_work` on a Dask worker. A worker where tblite cannot load raises (the run stops,
    naming the molecule) rather than recording every molecule as failed."""
    require_tblite()
    return _work(job)


#: molecules submitted to a Dask cluster ahead of their results (bounds the memory of the
#: client and the scheduler for long inputs, e.g. all of QM9; more than any cluster has cores)
MAX_IN_FLIGHT = 1000


def _dask_results(
    client, jobs: Iterable[Tuple[MoleculeInput, SimulationSettings]], max_in_flight: int = MAX_IN_FLIGHT
) -> Iterator[tuple]:
    """:func:`_work`'s results of ``jobs`` computed on the cluster of the ``distributed.Client``
    ``client``, in the order they complete.

    At most ``max_in_flight`` molecules are submitted ahead. A molecule whose worker process died
    on every try (crash or out of memory; Dask retries ``distributed.scheduler.allowed-failures``
    times) is a failure like any other; any other task error stops the run, naming the molecule.
    Tasks not yet done when the generator is closed are cancelled.
    """
    # dask.distributed (about a second to import): only for a run on a cluster
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    run = uuid.uuid4().hex[:8]  # keys unique across runs sharing a scheduler
    jobs = iter(jobs)
    submitted = {}  # key -> (future, molecule)

    def submit(job):
        future = client.submit(_dask_work, job, key=f"spectra-{job[0].index}-{run}", pure=False)
        submitted[future.key] = (future, job[0])
        return future

    completed = as_completed([submit(job) for job in itertools.islice(jobs, max_in_flight)])
    try:
        for future in completed:
            _, item = submitted.pop(future.key)
            try:
                result = future.result()
            except KilledWorker as err:
                reason = f"KilledWorker: the Dask worker process died on every try at this molecule (crash or out of memory): {err}"
                result = (item, None, None, reason)
            except Exception as err:
                raise RuntimeError(
                    f"the Dask task of molecule {item.index} ({item.name or item.smiles or 'unnamed'}) failed: "
                    f"{type(err).__name__}: {err}"
                ) from err
            future.release()
            for job in itertools.islice(jobs, 1):  # keep the cluster busy while this one is written
                completed.add(submit(job))
            yield result
    finally:
        if submitted:
            client.cancel([future for future, _ in submitted.values()])


def start_pool(workers: int):
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
    if not os.path.exists(path):
        units = dict(SIMULATED_UNITS, **label_units)
        if label_units:
            units[msp.gdb_index] = "1"
        ASEAtomsData.create(path, distance_unit="Ang", property_unit_dict=units)
    return connect(path, use_lock_file=False)


def done_indices(db_path: str) -> Tuple[set, set]:
    """Input indices already written to ``db_path`` and those recorded as failed."""
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
    cluster: Union[None, ClusterSpec, "distributed.Client"] = None,  # noqa: F821
    max_in_flight: int = MAX_IN_FLIGHT,
) -> Dict[str, int]:
    """Simulate ``molecules`` into the SchNetPack database ``db_path`` (created or resumed).

    ``workers=1`` and no ``cluster``: one molecule after the other in this process (in one fresh
    worker process where tblite cannot load here). ``workers > 1``: a Dask ``LocalCluster`` of
    that many single-threaded worker processes. ``cluster``: a :class:`ClusterSpec` (local, a
    scheduler address, batch jobs; started and shut down here) or a ``distributed.Client`` already
    connected (left open). On Dask, results are written by this process as they complete.

    Returns counts: ``written`` now, ``failed`` now, ``skipped`` (done or failed before).
    """
    settings = settings or SimulationSettings()
    label_units = label_units or {}
    if cluster is not None and workers != 1:
        raise ValueError(f"give either workers={workers} (a local Dask cluster) or a cluster, not both")
    if cluster is None and workers > 1:
        cluster = ClusterSpec("local", workers=workers)
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

    jobs = [(m, settings) for m in pending]
    with ExitStack() as stack:  # closed in reverse: results, then pool or Dask client/cluster
        if cluster is not None:
            client = stack.enter_context(dask_client(cluster)) if isinstance(cluster, ClusterSpec) else cluster
            if progress:
                print(f"simulating on Dask: {client} (dashboard {client.dashboard_link})", file=sys.stderr)
            results = _dask_results(client, jobs, max_in_flight)
            stack.callback(results.close)
        elif not tblite_loads():  # a fresh process: tblite loads there
            pool = start_pool(1)
            stack.callback(pool.terminate)
            results = pool.imap_unordered(_work, jobs, chunksize=1)
        else:
            results = map(_work, jobs)
        _write_results(results, db_path, label_units, len(pending), counts, progress)
    return counts


def _write_results(
    results, db_path: str, label_units: Dict[str, str], total: int, counts: Dict[str, int], progress: bool
) -> None:
    """Write each of :func:`_work`'s results as it comes: a row of ``db_path`` (with its
    ``input_index``) or a line of ``<db>.failures.jsonl``; ``counts`` are updated as it goes."""
    conn = _open_db(db_path, label_units)
    bar = tqdm(total=total, desc="simulating spectra", unit="mol", disable=not progress)
    try:
        with open(failures_path(db_path), "a") as failures:
            for item, structure, props, error in results:
                if error is None:
                    data = dict(props)
                    for key in label_units:
                        data[key] = np.array([item.labels[key]], dtype=np.float64)
                    if label_units:
                        data[msp.gdb_index] = np.array([item.labels.get(msp.gdb_index, -1)], dtype=np.int64)
                    conn.write(
                        structure,
                        data=data,
                        input_index=item.index,
                        label=item.name or str(item.index),
                        smiles=item.smiles,
                    )
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


def read_failures(db_path: str) -> List[dict]:
    """The failure records of ``db_path`` (input index, name, smiles, reason)."""
    fpath = failures_path(db_path)
    if not os.path.exists(fpath):
        return []
    with open(fpath) as f:
        return [json.loads(line) for line in f if line.strip()]
