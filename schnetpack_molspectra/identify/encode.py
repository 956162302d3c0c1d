"""The model's two sides as embeddings: spectra through SpecFormer (intensities normalised as in
training; modalities the model uses but a query lacks are fully masked, zero-filled, as SpecFormer
sees a masked patch) and 3D structures through the encoder + ``MoleculeRepresentation``, after
checking that the model knows their elements; both unit-norm, so that a dot product is a cosine.
"""

import sys
from typing import Dict, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.atomistic import missing_modality
from schnetpack_molspectra.data.spectrum_files import QuerySpectrum, rescale_to_reference
from schnetpack_molspectra.identify.model import EmbeddingModel, IdentifyError

__all__ = ["normalise_spectra", "encode_spectra", "check_elements", "encode_structures"]


def normalise_spectra(enc: EmbeddingModel, spectra: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    from schnetpack_molspectra.transform import NormalizeSpectra

    present = [m for m in enc.modalities if m in spectra]
    transform = NormalizeSpectra(present, enc.normalization, {m: enc.spectra_scale.get(m, 1.0) for m in present})
    out = transform({msp.spectrum_keys[m]: spectra[m] for m in present})
    return {m: out[msp.spectrum_keys[m]] for m in present}


@torch.no_grad()
def encode_spectra(
    enc: EmbeddingModel, queries: Sequence[QuerySpectrum], rescale: str = "auto", batch_size: int = 64
) -> np.ndarray:
    """Unit-norm spectra embeddings (n_queries, n_features); modalities the model uses but a
    query lacks are fully masked (zero-filled), see the module docstring."""
    if rescale not in ("auto", "peak", "none"):
        raise ValueError(f"rescale must be auto, peak or none, got {rescale!r}")
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
                    values = q.spectra[m]
                    if rescale == "peak" or (rescale == "auto" and q.external_units):
                        values = rescale_to_reference(values, m)
                    rows.append(values)
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


def check_elements(enc: EmbeddingModel, atoms_list: Sequence[Atoms], names: Sequence[str], source: str) -> None:
    """Raise :class:`IdentifyError` naming the first molecule with an element the model does not know."""
    known = set(enc.elements)
    n_embed = getattr(getattr(enc.model.representation, "embedding", None), "num_embeddings", None)
    for i, atoms in enumerate(atoms_list):
        zs = set(int(z) for z in atoms.numbers)
        bad = sorted(z for z in zs if z not in known or (n_embed is not None and z >= n_embed))
        if bad:
            symbols = ", ".join(f"{chemical_symbols[z] if z < len(chemical_symbols) else '?'} (Z={z})" for z in bad)
            known_text = ", ".join(chemical_symbols[z] for z in sorted(known))
            raise IdentifyError(
                f"{source}: molecule {i} ({names[i]}): element {symbols} is not among the elements the model was "
                f"trained on ({known_text}; from {enc.elements_source}); remove the molecule or pass elements= / --elements"
            )
        if len(atoms) == 0:
            raise IdentifyError(f"{source}: molecule {i} ({names[i]}) has no atoms")


@torch.no_grad()
def encode_structures(
    enc: EmbeddingModel, atoms_list: Sequence[Atoms], batch_size: int = 128, progress: bool = False
) -> np.ndarray:
    """Unit-norm 3D embeddings (n_molecules, n_features): the encoder + ``MoleculeRepresentation``
    on each structure, with the training transforms (centre of mass, neighbour list, float32)."""
    import schnetpack.transform as trn
    from schnetpack.interfaces import AtomsConverter

    converter = AtomsConverter(
        neighbor_list=None,
        transforms=[trn.SubtractCenterOfMass(), trn.MatScipyNeighborList(cutoff=enc.cutoff)],
        device=enc.device,
        dtype=torch.float32,
    )
    model = enc.model
    out = []
    starts = range(0, len(atoms_list), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="library 3D embeddings", unit="batch", file=sys.stderr)
    for start in starts:
        inputs = converter(list(atoms_list[start : start + batch_size]))
        for module in model.input_modules:
            inputs = module(inputs)
        inputs = model.representation(inputs)
        inputs = enc.representation_3d(inputs)
        rep = inputs[enc.representation_3d.output_key]
        out.append(torch.nn.functional.normalize(rep, dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
