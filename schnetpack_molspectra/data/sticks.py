"""Stick spectra shipped inside the package, and spectra databases built from them in seconds.

The simulator (GFN2-xTB relaxation, IR and Raman; PySCF UV) costs seconds per QM9 molecule,
so the spectra of a fixed, seeded selection of QM9 molecules are computed once by the
maintainers (``scripts/ship_sticks.py``) and shipped as sticks: ~1 KB per molecule in
``schnetpack_molspectra/data/qm9_sticks/``. Broadening them onto the QM9S grids builds a
database of thousands of molecules anywhere, offline, without tblite or PySCF.

Layout of the shipped folder, in chunks of ``CHUNK_SIZE`` consecutive molecules of
:func:`shipped_selection` (chunk ``k`` holds selection positions ``k*CHUNK_SIZE ...``):

``vib_<k>.npz``
    ``gdb_index`` (n,), ``n_atoms`` (n,), ``numbers`` (sum n_atoms,), ``positions``
    (sum n_atoms, 3; Angstrom, xTB-relaxed), ``n_modes`` (n,), ``frequencies`` (cm^-1),
    ``ir_intensities`` (km/mol), ``raman_activities`` (A^4/amu), each (sum n_modes,);
    ``settings``: the simulator settings, JSON.
``uv-<method>_<k>.npz``
    ``gdb_index`` (n,), ``n_states`` (n,), ``energies`` (eV), ``strengths``, each
    (sum n_states,); ``settings``: JSON. Computed on the relaxed structures of ``vib_<k>``.
``failures.jsonl``
    One record per molecule a pass could not simulate (``pass``, ``gdb_index``, ``reason``).

Ragged arrays are concatenated; the ``n_*`` arrays give each molecule's share.
"""

import json
import os
from dataclasses import dataclass
from typing import Collection, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase.db import connect
from schnetpack.data import ASEAtomsData

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.files import new_database, write_whole_file
from schnetpack_molspectra.data.qm9 import gdb_positions, load_qm9pack, row_labels
from schnetpack_molspectra.data.qm9_targets import QM9_UNITS
from schnetpack_molspectra.data.simulate.runner import SIMULATED_UNITS, SimulationSettings, stick_properties

__all__ = [
    "SHIPPED_DIR",
    "CHUNK_SIZE",
    "SELECTION_SEED",
    "SHIPPED_UV_METHOD",
    "MoleculeSticks",
    "HELD_OUT",
    "shipped_selection",
    "held_out_selection",
    "chunk_path",
    "write_chunk",
    "read_chunk",
    "shipped_chunks",
    "load_sticks",
    "sticks_to_spectra",
    "build_db_from_sticks",
]

#: the folder of shipped sticks inside the installed package
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qm9_sticks")
#: molecules per chunk file
CHUNK_SIZE = 250
#: seed of the permutation of all QM9 molecules that fixes the shipped selection and its order
SELECTION_SEED = 0
#: molecules at the end of the selection that no shipped pre-trained model was trained on: the
#: benchmarks take their fine-tuning labels, validation and test molecules and their retrieval
#: queries from them (:func:`held_out_selection`)
HELD_OUT = 10_000
#: the UV level whose sticks the default dataset uses
SHIPPED_UV_METHOD = "stda"

_VIB_RAGGED = {"frequencies": "n_modes", "ir_intensities": "n_modes", "raman_activities": "n_modes"}
_UV_RAGGED = {"energies": "n_states", "strengths": "n_states"}


@dataclass
class MoleculeSticks:
    """One molecule's relaxed structure and sticks (units as in the module docstring); the UV
    sticks are None for a molecule without a UV spectrum."""

    gdb_index: int
    atoms: Atoms
    frequencies: np.ndarray
    ir_intensities: np.ndarray
    raman_activities: np.ndarray
    uv_energies: Optional[np.ndarray]
    uv_strengths: Optional[np.ndarray]


def shipped_selection(table=None) -> np.ndarray:
    """GDB indices of all QM9 molecules in a seeded random order; the shipped molecules are
    its first ``CHUNK_SIZE * n_chunks``. Fine-tuning splits that must not overlap the
    pre-training molecules take theirs from the end of this order."""
    table = load_qm9pack() if table is None else table
    gdb = np.sort(table["Index"].to_numpy().astype(np.int64))
    return np.random.default_rng(SELECTION_SEED).permutation(gdb)


def held_out_selection(table=None) -> np.ndarray:
    """GDB indices of the last :data:`HELD_OUT` molecules of :func:`shipped_selection`, in that order:
    the molecules no shipped pre-trained model saw."""
    return shipped_selection(table)[-HELD_OUT:]


def chunk_path(kind: str, chunk: int, folder: Optional[str] = None) -> str:
    """``<folder>/<kind>_<chunk:03d>.npz``; kind is ``vib`` or ``uv-<method>``."""
    return os.path.join(folder or SHIPPED_DIR, f"{kind}_{chunk:03d}.npz")


def write_chunk(path: str, records: Sequence[Dict[str, np.ndarray]], settings: dict) -> None:
    """Write per-molecule ``records`` as one chunk, ragged arrays concatenated.

    Each record has ``gdb_index`` and either the vib keys (``numbers``, ``positions``,
    ``frequencies``, ``ir_intensities``, ``raman_activities``) or the UV keys (``energies``,
    ``strengths``). Written to a temporary name and renamed, so a chunk file is always whole."""
    if not records:
        raise ValueError(f"{path}: no molecules to write")
    ragged = _VIB_RAGGED if "frequencies" in records[0] else _UV_RAGGED
    arrays = {"gdb_index": np.array([r["gdb_index"] for r in records], dtype=np.int64)}
    for key, count in ragged.items():
        arrays[key] = np.concatenate([np.asarray(r[key], dtype=np.float32).ravel() for r in records])
        arrays[count] = np.array([np.asarray(r[key]).size for r in records], dtype=np.int32)
    if "numbers" in records[0]:
        arrays["numbers"] = np.concatenate([np.asarray(r["numbers"], dtype=np.uint8) for r in records])
        arrays["n_atoms"] = np.array([len(r["numbers"]) for r in records], dtype=np.int32)
        arrays["positions"] = np.concatenate(
            [np.asarray(r["positions"], dtype=np.float32).reshape(-1, 3) for r in records]
        )
    arrays["settings"] = np.array(json.dumps(settings, sort_keys=True))
    write_whole_file(path, lambda f: np.savez_compressed(f, **arrays))


def read_chunk(path: str) -> Dict[int, Dict[str, np.ndarray]]:
    """gdb index -> that molecule's arrays (ragged arrays split back), plus key ``settings``.

    Raises:
        ValueError: naming the file, when it is not a whole chunk.
    """
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # numpy leaks a file it opened on a bad zip
            data = {k: z[k] for k in z.files}
    except Exception as err:
        raise ValueError(f"{path}: not a readable sticks chunk ({type(err).__name__}: {err})") from err
    ragged = _VIB_RAGGED if "frequencies" in data else _UV_RAGGED
    counts = {c for c in ragged.values()} | ({"n_atoms"} if "numbers" in data else set())
    missing = [k for k in ["gdb_index", *ragged, *counts] if k not in data]
    if missing:
        raise ValueError(f"{path}: sticks chunk lacks {missing}")
    out: Dict[int, Dict[str, np.ndarray]] = {}
    splits = {}
    for key, count in list(ragged.items()) + (
        [("numbers", "n_atoms"), ("positions", "n_atoms")] if "numbers" in data else []
    ):
        n = data[count]
        if n.sum() != len(data[key]) or len(n) != len(data["gdb_index"]):
            raise ValueError(f"{path}: {key} holds {len(data[key])} entries, {count} says {int(n.sum())}")
        splits[key] = np.split(data[key], np.cumsum(n)[:-1])
    for i, gdb in enumerate(data["gdb_index"]):
        out[int(gdb)] = {key: parts[i] for key, parts in splits.items()}
    out["settings"] = json.loads(str(data["settings"])) if "settings" in data else {}
    return out


def shipped_chunks(kind: str, folder: Optional[str] = None) -> List[str]:
    """Paths of the chunks of one kind (``vib`` or ``uv-<method>``), in chunk order."""
    folder = folder or SHIPPED_DIR
    if not os.path.isdir(folder):
        return []
    names = sorted(f for f in os.listdir(folder) if f.startswith(kind + "_") and f.endswith(".npz") and ".tmp" not in f)
    return [os.path.join(folder, f) for f in names]


def load_sticks(
    uv_method: str = SHIPPED_UV_METHOD,
    folder: Union[None, str, Sequence[str]] = None,
    n_molecules: Optional[int] = None,
    require_uv: bool = True,
    gdb_indices: Optional[Collection[int]] = None,
) -> Iterator[MoleculeSticks]:
    """The molecules of the sticks folder(s) ``folder`` (default: the shipped one), in folder and
    selection order (at most ``n_molecules``; only those of ``gdb_indices`` when given).

    ``require_uv=True``: only those with every spectrum; a molecule whose UV pass failed, or whose
    UV chunk is not computed (or was never asked for: ``--uv-method none``), is left out.
    ``require_uv=False``: those too, with ``uv_energies`` and ``uv_strengths`` None."""
    folders = [folder] if folder is None or isinstance(folder, str) else list(folder)
    yielded = 0
    for vib_path in (path for f in folders for path in shipped_chunks("vib", f)):
        chunk = os.path.basename(vib_path)[len("vib_") : -len(".npz")]
        uv_path = os.path.join(os.path.dirname(vib_path), f"uv-{uv_method}_{chunk}.npz")
        if require_uv and not os.path.exists(uv_path):
            continue
        vib = read_chunk(vib_path)
        uv = read_chunk(uv_path) if os.path.exists(uv_path) else {}
        for gdb, v in vib.items():
            if gdb == "settings" or (require_uv and gdb not in uv):
                continue
            if gdb_indices is not None and gdb not in gdb_indices:
                continue
            if n_molecules is not None and yielded >= n_molecules:
                return
            u = uv.get(gdb, {"energies": None, "strengths": None})
            yield MoleculeSticks(
                gdb_index=gdb,
                atoms=Atoms(numbers=v["numbers"], positions=v["positions"].astype(np.float64)),
                frequencies=v["frequencies"],
                ir_intensities=v["ir_intensities"],
                raman_activities=v["raman_activities"],
                uv_energies=u["energies"],
                uv_strengths=u["strengths"],
            )
            yielded += 1


def sticks_to_spectra(sticks: MoleculeSticks, settings=None) -> Dict[str, np.ndarray]:
    """The broadened spectra (1, n_points) and sticks of one molecule, as database properties.

    ``settings``: a :class:`~schnetpack_molspectra.data.simulate.runner.SimulationSettings`
    (widths and scales; default widths if None). A molecule without UV sticks gets no UV sticks
    and a zero UV spectrum, and ``properties.modality_missing("uv")`` True."""
    no_uv = sticks.uv_energies is None
    props = stick_properties(
        sticks.frequencies,
        sticks.ir_intensities,
        sticks.raman_activities,
        np.zeros(0) if no_uv else sticks.uv_energies,
        np.zeros(0) if no_uv else sticks.uv_strengths,
        settings or SimulationSettings(),
    )
    props[msp.modality_missing("uv")] = np.array([no_uv])
    return props


def build_db_from_sticks(
    path: str,
    n_molecules: Optional[int] = None,
    uv_method: str = SHIPPED_UV_METHOD,
    folder: Union[None, str, Sequence[str]] = None,
    settings=None,
    labels: Optional[Dict[int, Tuple[Dict[str, float], str]]] = None,
    require_uv: bool = True,
    gdb_indices: Optional[Collection[int]] = None,
) -> int:
    """Broaden the sticks of ``folder`` (default: the shipped ones; a list: several folders, e.g. the
    shipped and a grown set) into a SchNetPack database at ``path`` with QM9 labels.

    ``require_uv=False`` takes the molecules without UV sticks too (:func:`load_sticks`): their UV
    spectrum is zero and their ``properties.modality_missing("uv")`` True, so pre-training treats
    it as withheld. Every row then has that flag; with ``require_uv=True`` no row has it.

    ``labels``: GDB index -> (QM9 targets in SchNetPack's names and units, SMILES) of every molecule,
    where ``qm9pack`` is not installed (e.g. a GPU node given only what it needs); read from qm9pack if None.
    ``gdb_indices``: only these molecules of the folders (e.g. those ``labels`` has, where a folder has grown
    since the labels were written).

    Writes ``<path>.partial.db`` in one transaction and renames it (:func:`.files.new_database`),
    so ``path`` is whole or absent. Returns the number of molecules written.

    Raises:
        FileNotFoundError: when no molecule has every spectrum in ``folder``.
        FileExistsError: ``path`` exists (it is never overwritten).
        ValueError: ``path`` does not end in ``.db``.
    """
    molecules = list(load_sticks(uv_method, folder, n_molecules, require_uv, gdb_indices))
    if not molecules:
        raise FileNotFoundError(
            f"{folder or SHIPPED_DIR}: no shipped molecule has IR, Raman"
            + (f" and UV ({uv_method}) sticks" if require_uv else " sticks")
        )
    if labels is None:
        table = load_qm9pack()
        rows = table.iloc[gdb_positions(table, [m.gdb_index for m in molecules])]
        labels = {m.gdb_index: (row_labels(r), r.SMILES) for m, r in zip(molecules, rows.itertuples(index=False))}
    missing = [m.gdb_index for m in molecules if m.gdb_index not in labels]
    if missing:
        raise ValueError(f"no labels given for GDB {missing[:5]} ({len(missing)} molecules)")
    smiles = [labels[m.gdb_index][1] for m in molecules]
    labels = [labels[m.gdb_index][0] for m in molecules]

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    units = dict(SIMULATED_UNITS, **QM9_UNITS, **{msp.gdb_index: "1"})
    if not require_uv:
        units[msp.modality_missing("uv")] = "1"
    with new_database(path, leftover="remove") as partial:  # a leftover is a killed build's, incomplete
        ASEAtomsData.create(partial, distance_unit="Ang", property_unit_dict=units)
        with connect(partial, use_lock_file=False) as conn:  # one transaction
            for i, (m, lab, smi) in enumerate(zip(molecules, labels, smiles)):
                data = sticks_to_spectra(m, settings)
                if require_uv:
                    del data[msp.modality_missing("uv")]
                for key in QM9_UNITS:
                    data[key] = np.array([lab[key]], dtype=np.float64)
                data[msp.gdb_index] = np.array([m.gdb_index], dtype=np.int64)
                conn.write(m.atoms, data=data, input_index=i, label=f"gdb_{m.gdb_index}", smiles=smi)
    return len(molecules)
