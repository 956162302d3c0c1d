"""The model's two sides as embeddings: spectra through SpecFormer (intensities normalised as in
training; modalities the model uses but a query lacks are fully masked, zero-filled, as SpecFormer
sees a masked patch) and 3D structures through the encoder + ``MoleculeRepresentation``, after
checking that the model knows their elements; both unit-norm, so that a dot product is a cosine.
"""

import sys
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_masses, chemical_symbols
from schnetpack import properties as structure
from tqdm import tqdm

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.atomistic import missing_modality
from schnetpack_molspectra.data.spectrum_files import QuerySpectrum, rescale_to_reference
from schnetpack_molspectra.identify.model import EmbeddingModel, IdentifyError
from schnetpack_molspectra.spectra.baseline import remove_baseline
from schnetpack_molspectra.transform import NormalizeSpectra

__all__ = [
    "normalise_spectra",
    "query_values",
    "encode_spectra",
    "element_problem",
    "check_elements",
    "structures_batch",
    "CPU_PAIR_BUDGET",
    "GPU_BATCH_SIZE",
    "batch_slices",
    "represented_batches",
    "encode_structures",
]


def normalise_spectra(enc: EmbeddingModel, spectra: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:

    present = [m for m in enc.modalities if m in spectra]
    transform = NormalizeSpectra(present, enc.normalization, {m: enc.spectra_scale.get(m, 1.0) for m in present})
    out = transform({msp.spectrum_keys[m]: spectra[m] for m in present})
    return {m: out[msp.spectrum_keys[m]] for m in present}


def query_values(query: QuerySpectrum, modality: str, rescale: str = "auto", baseline: str = "auto") -> np.ndarray:
    """One query's spectrum of ``modality`` (L,) as :func:`encode_spectra` feeds it, before the
    normalisation: its ALS baseline subtracted and its peak rescaled as ``baseline`` and ``rescale`` say."""
    values = query.spectra[modality]
    if baseline == "als" or (baseline == "auto" and query.external_units):
        values = remove_baseline(values, modality)
    if rescale == "peak" or (rescale == "auto" and query.external_units):
        values = rescale_to_reference(values, modality)
    return values


@torch.no_grad()
def encode_spectra(
    enc: EmbeddingModel,
    queries: Sequence[QuerySpectrum],
    rescale: str = "auto",
    batch_size: int = 64,
    baseline: str = "auto",
) -> np.ndarray:
    """Unit-norm spectra embeddings (n_queries, n_features); modalities the model uses but a
    query lacks are fully masked (zero-filled), see the module docstring.

    ``baseline``: ``auto`` subtracts the ALS baseline (``spectra.baseline``) from x,y data in
    instrument units (CSV x,y, JCAMP-DX), ``als`` from every query, ``none`` from none; before the
    ``rescale`` (``auto``: x,y data to the training peak height, ``peak``: every query, ``none``)."""
    if rescale not in ("auto", "peak", "none"):
        raise ValueError(f"rescale must be auto, peak or none, got {rescale!r}")
    if baseline not in ("auto", "als", "none"):
        raise ValueError(f"baseline must be auto, als or none, got {baseline!r}")
    sf = enc.specformer
    for q in queries:
        if not any(m in q.spectra for m in sf.modalities):
            raise IdentifyError(
                f"{q.source}: spectrum '{q.name}' has {sorted(q.spectra) or 'no'} spectra, but the model "
                f"{enc.path} uses {sf.modalities}"
            )
    out = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        spectra, absent = {}, {}
        for m in sf.modalities:
            rows, missing = [], []
            for q in chunk:
                if m in q.spectra:
                    rows.append(query_values(q, m, rescale, baseline))
                    missing.append(False)
                else:
                    rows.append(np.zeros(sf.spectrum_length[m], dtype=np.float32))
                    missing.append(True)
            spectra[m] = torch.from_numpy(np.stack(rows).astype(np.float32)).to(enc.device)
            absent[m] = torch.tensor(missing, device=enc.device)
        spectra = normalise_spectra(enc, spectra)
        masks = {}
        for m, missing in absent.items():  # as modality dropout feeds a withheld modality in training
            if bool(missing.any()):
                spectra[m], masks[m] = missing_modality(spectra[m], None, missing, sf.n_patches[m])
        representation, _, _ = sf(spectra, masks)
        out.append(torch.nn.functional.normalize(representation, dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else "?"


def element_problem(
    model: torch.nn.Module, elements: Sequence[int], elements_source: str, atoms: Atoms
) -> Optional[str]:
    """Which elements of ``atoms`` the model never saw - not among ``elements`` (its training data's,
    from ``elements_source``) or beyond its representation's embedding table - as a message, or None."""
    known = set(elements)
    n_embed = getattr(getattr(model.representation, "embedding", None), "num_embeddings", None)
    bad = sorted(
        z for z in set(int(z) for z in atoms.numbers) if z not in known or (n_embed is not None and z >= n_embed)
    )
    if not bad:
        return None
    symbols = ", ".join(f"{_symbol(z)} (Z={z})" for z in bad)
    return (
        f"element {symbols} is not among the elements the model was trained on "
        f"({', '.join(_symbol(z) for z in sorted(known))}; from {elements_source})"
    )


def check_elements(enc: EmbeddingModel, atoms_list: Sequence[Atoms], names: Sequence[str], source: str) -> None:
    """Raise :class:`IdentifyError` naming the first molecule with an element the model does not know."""
    for i, atoms in enumerate(atoms_list):
        problem = element_problem(enc.model, enc.elements, enc.elements_source, atoms)
        if problem is not None:
            raise IdentifyError(
                f"{source}: molecule {i} ({names[i]}): {problem}; remove the molecule or pass elements= / --elements"
            )
        if len(atoms) == 0:
            raise IdentifyError(f"{source}: molecule {i} ({names[i]}) has no atoms")


def structures_batch(atoms_list: Sequence[Atoms], cutoff: float, device="cpu") -> Dict[str, torch.Tensor]:
    """SchNetPack inputs of molecules (no periodic cell) as the training transforms give them: positions
    relative to each molecule's centre of mass, float32, and every pair of atoms of a molecule closer
    than ``cutoff`` (Angstrom) as neighbours, found for the whole batch at once on ``device`` (all pairs
    of each molecule: sum of n_atoms^2 distances, what small molecules such as QM9's need)."""
    n_atoms = torch.tensor([len(a) for a in atoms_list], dtype=torch.long, device=device)
    numbers = torch.from_numpy(np.concatenate([a.numbers for a in atoms_list]).astype(np.int64)).to(device)
    positions = torch.from_numpy(np.concatenate([a.positions for a in atoms_list])).to(device, torch.float64)
    n = len(atoms_list)
    idx_m = torch.repeat_interleave(torch.arange(n, device=device), n_atoms)
    masses = torch.from_numpy(atomic_masses).to(device, torch.float64)[numbers]
    com = torch.zeros(n, 3, dtype=torch.float64, device=device).index_add_(0, idx_m, masses[:, None] * positions)
    com = com / torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, idx_m, masses)[:, None]
    positions = (positions - com[idx_m]).to(torch.float32)
    # all ordered pairs (i, j) of each molecule: atom i repeated n_atoms(mol) times, j running over the molecule
    first = torch.cumsum(n_atoms, 0) - n_atoms
    partners = n_atoms[idx_m]
    idx_i = torch.repeat_interleave(torch.arange(len(numbers), device=device), partners)
    offset = torch.arange(len(idx_i), device=device) - torch.repeat_interleave(
        torch.cumsum(partners, 0) - partners, partners
    )
    idx_j = first[idx_m[idx_i]] + offset
    distance = (positions[idx_j] - positions[idx_i]).norm(dim=-1)
    keep = (idx_i != idx_j) & (distance < cutoff)
    idx_i, idx_j = idx_i[keep], idx_j[keep]
    return {
        structure.Z: numbers,
        structure.R: positions,
        structure.n_atoms: n_atoms,
        structure.idx_m: idx_m,
        structure.idx: torch.arange(n, device=device),
        structure.idx_i: idx_i,
        structure.idx_j: idx_j,
        structure.offsets: torch.zeros(len(idx_i), 3, dtype=torch.float32, device=device),
        structure.cell: torch.zeros(n, 3, 3, dtype=torch.float32, device=device),
        structure.pbc: torch.zeros(n, 3, dtype=torch.bool, device=device),
    }


#: Atom pairs (sum of n_atoms^2 over a batch's molecules) a batch holds on a CPU when no batch size is
#: given: the pair tensors of the encoder's message passing (pairs x 3 x features) then stay in the
#: cache. ~16 QM9 molecules; measured by benchmarks/library_embedding.py (PaiNN 128x3 on 2 cores:
#: 1.8 ms a molecule at ~16 QM9 molecules a batch, 4.3 ms at 512).
CPU_PAIR_BUDGET = 4096
#: Molecules a batch holds on a GPU when no batch size is given.
GPU_BATCH_SIZE = 512


def batch_slices(n_atoms: Sequence[int], batch_size: Optional[int] = None, device="cpu") -> List[slice]:
    """Consecutive batches of molecules with ``n_atoms`` atoms each, as slices in input order.

    ``batch_size``: molecules a batch; ``None`` chooses by ``device``: on a GPU
    :data:`GPU_BATCH_SIZE` molecules, on a CPU as many molecules as keep the batch's atom pairs
    (sum of n_atoms^2) within :data:`CPU_PAIR_BUDGET` (at least one molecule a batch)."""
    n = len(n_atoms)
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        return [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if torch.device(device).type != "cpu":
        return batch_slices(n_atoms, GPU_BATCH_SIZE)
    slices, start, pairs = [], 0, 0
    for i, k in enumerate(n_atoms):
        if i > start and pairs + k * k > CPU_PAIR_BUDGET:
            slices.append(slice(start, i))
            start, pairs = i, 0
        pairs += k * k
    if start < n:
        slices.append(slice(start, n))
    return slices


def represented_batches(
    model: torch.nn.Module,
    atoms_list: Sequence[Atoms],
    cutoff: float,
    device="cpu",
    batch_size: Optional[int] = None,
    progress: bool = False,
    desc: str = "structures",
) -> Iterator[Dict[str, torch.Tensor]]:
    """Each batch of structures (:func:`batch_slices`: ``batch_size`` molecules, or chosen by the
    device when ``None``) as the model's output modules see it: the inputs of
    :func:`structures_batch` after ``model``'s input modules and representation (call it under
    ``torch.no_grad``); ``progress``: a progress bar on stderr, named ``desc``."""
    slices = batch_slices([len(a) for a in atoms_list], batch_size, device)
    if progress:
        slices = tqdm(slices, desc=desc, unit="batch", file=sys.stderr)
    for part in slices:
        inputs = structures_batch(atoms_list[part], cutoff, device)
        for module in model.input_modules:
            inputs = module(inputs)
        yield model.representation(inputs)


@torch.no_grad()
def encode_structures(
    enc: EmbeddingModel, atoms_list: Sequence[Atoms], batch_size: Optional[int] = None, progress: bool = False
) -> np.ndarray:
    """Unit-norm 3D embeddings (n_molecules, n_features): the encoder + ``MoleculeRepresentation``
    on each structure, with the training transforms (centre of mass, neighbour list, float32) done
    for a whole batch at once (:func:`represented_batches`; ``batch_size`` molecules a batch, or
    chosen by the device when ``None``: :func:`batch_slices`)."""
    out = []
    batches = represented_batches(
        enc.model, atoms_list, enc.cutoff, enc.device, batch_size, progress, desc="library 3D embeddings"
    )
    for inputs in batches:
        rep = enc.representation_3d(inputs)[enc.representation_3d.output_key]
        out.append(torch.nn.functional.normalize(rep, dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
