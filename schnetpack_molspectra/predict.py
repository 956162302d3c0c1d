"""Spectra from 3D structures with a spectra model (``spkspectra predict``).

A spectra model is a ``MolSpectraModel`` whose output modules hold a
:class:`~schnetpack_molspectra.atomistic.SpectraHead`: the ``best_model`` of ``spktrain
experiment=spectra_finetune``, its run directory, a weights file of one, or a shipped one by
name (``spectra-painn-qm9``, :data:`DEFAULT_MODEL`)::

    from schnetpack_molspectra.predict import load_predictor, collect_inputs, predict_spectra
    predictor = load_predictor("spectra-painn-qm9")
    molecules = collect_inputs(predictor, smiles=["CCO", "c1ccccc1"])
    spectra = predict_spectra(predictor, molecules.atoms)   # {"ir": (2, 3501), "raman": (2, 3501)}

:func:`predict_spectra` returns each modality's spectra as the head writes them: area-normalised
(each row sums to 1 over its grid points, :mod:`schnetpack_molspectra.spectra.grids`), float32,
in input order. :func:`reference_scaled` brings each spectrum's peak to the training data's
typical height (:func:`~schnetpack_molspectra.data.spectrum_files.rescale_to_reference`): what
``spkspectra predict`` writes, so that ``spkspectra identify`` reads the written arrays on the
intensity scale of its training data.

A weights file (and so a shipped model) is read without unpickling; a ``best_model`` only when
a run of yours wrote it, or with ``trust`` (``--trust-model``): unpickling runs the code a file
holds (:func:`schnetpack_molspectra.weights.load_file`).

Structures the model cannot handle are named and left out, the others predicted
(:func:`collect_inputs`): a SMILES RDKit cannot parse or embed, a structure without atoms or
with non-finite positions, and an element the model never saw - one missing from its model
card's ``elements`` (else the elements of its run's training database, else QM9's H, C, N, O,
F; as ``identify`` decides them) or beyond its embedding table.
"""

import sys
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from tqdm import tqdm

from schnetpack_molspectra.atomistic import SpectraHead
from schnetpack_molspectra.data import inputs as structure_inputs
from schnetpack_molspectra.data.spectrum_files import rescale_to_reference
from schnetpack_molspectra.identify.encode import element_problem, represented_batches
from schnetpack_molspectra.identify.model import (
    QM9_ELEMENTS,
    IdentifyError,
    SavedModel,
    model_cutoff,
    model_elements,
    read_saved_model,
)
from schnetpack_molspectra.provenance import file_sha256
from schnetpack_molspectra.spectra.grids import SPECTRUM_LENGTHS

__all__ = [
    "DEFAULT_MODEL",
    "TRUST_OPT_IN",
    "PredictError",
    "SpectraPredictor",
    "Skipped",
    "PredictInputs",
    "load_predictor",
    "structure_problem",
    "collect_inputs",
    "predicted_batches",
    "predict_spectra",
    "reference_scaled",
]

#: the shipped spectra model ``spkspectra predict`` uses unless ``--model`` names another
DEFAULT_MODEL = "spectra-painn-qm9"

#: how a user of ``spkspectra predict`` / :func:`load_predictor` trusts a model file that is not their own run's
TRUST_OPT_IN = "--trust-model (spkspectra predict; trust=True in Python)"


class PredictError(ValueError):
    """A model or structures that prediction cannot use; the message names the file or the input."""


@dataclass
class SpectraPredictor:
    """A spectra model ready to predict: the model (eval mode, on ``device``), what it predicts and
    the structures it can take (``cutoff`` of its neighbour list, ``elements`` it was trained on)."""

    model: torch.nn.Module
    path: str
    modalities: List[str]
    cutoff: float
    elements: tuple = QM9_ELEMENTS
    elements_source: str = "default (QM9: H, C, N, O, F)"
    device: str = "cpu"
    card: Dict = field(default_factory=dict)
    sha256: str = ""  # of the model file: what cached predictions (identify.cache) were made with

    @property
    def head(self) -> SpectraHead:
        """The model's (first) :class:`SpectraHead`."""
        return next(m for m in self.model.output_modules if isinstance(m, SpectraHead))


@dataclass
class Skipped:
    """An input left out: its position among the inputs, its name and why."""

    index: int
    name: str
    reason: str

    def __str__(self) -> str:
        return f"input {self.index} ({self.name}): {self.reason}"


@dataclass
class PredictInputs:
    """The usable structures of the inputs, in input order (``index``: their positions among the
    inputs), and the inputs left out (:class:`Skipped`)."""

    names: List[str] = field(default_factory=list)
    smiles: List[str] = field(default_factory=list)
    atoms: List[Atoms] = field(default_factory=list)
    index: List[int] = field(default_factory=list)
    skipped: List[Skipped] = field(default_factory=list)
    n_inputs: int = 0


def load_predictor(path_or_name: Union[str, SavedModel], device: str = "cpu", trust: bool = False) -> SpectraPredictor:
    """Load a spectra model: a shipped model's name, a weights file (``.pt``, read without
    unpickling), a ``best_model`` or a run directory holding one (unpickled only when a run of
    yours wrote it, or with ``trust``); or what ``identify.model.read_saved_model`` read (on ``device``).

    Raises:
        FileNotFoundError: no such file, and no shipped model of that name (they are listed).
        PredictError: the file is not a readable model, is not trusted (the opt-in is named), or
            the model has no :class:`SpectraHead` (not a ``spectra_finetune`` model); names the file.
    """
    try:
        saved = path_or_name
        if not isinstance(saved, SavedModel):
            expected = "a model of spktrain experiment=spectra_finetune"
            saved = read_saved_model(path_or_name, device, trust, TRUST_OPT_IN, expected=expected)
    except IdentifyError as err:
        raise PredictError(str(err)) from err
    path, model, cfg, card = saved.path, saved.model, saved.config, saved.card
    outputs = list(getattr(model, "output_modules", []))
    heads = [m for m in outputs if isinstance(m, SpectraHead)]
    if not heads:
        raise PredictError(
            f"{path}: the model has no SpectraHead among its output modules {[type(m).__name__ for m in outputs]}, "
            "so it predicts no spectra; pass a model of spktrain experiment=spectra_finetune (its best_model, run "
            "directory or weights file)"
        )
    model = model.to(device).eval()
    elements, source = model_elements(card, cfg, path)
    return SpectraPredictor(
        model=model,
        path=path,
        modalities=list(heads[0].modalities),
        cutoff=model_cutoff(model, cfg),
        elements=elements,
        elements_source=source,
        device=str(device),
        card=card,
        sha256=file_sha256(path),
    )


def structure_problem(predictor: SpectraPredictor, atoms: Atoms) -> Optional[str]:
    """Why the model cannot predict the spectra of ``atoms`` (no atoms, non-finite positions, an
    element it never saw), or None."""
    problem = structure_inputs.structure_problem(atoms)
    if problem is not None:
        return problem
    return element_problem(predictor.model, predictor.elements, predictor.elements_source, atoms)


def _keep(found: PredictInputs, predictor, i: int, name: str, smiles: str, atoms: Atoms) -> None:
    problem = structure_problem(predictor, atoms)
    if problem is None:
        found.names.append(name)
        found.smiles.append(smiles)
        found.atoms.append(atoms)
        found.index.append(i)
    else:
        found.skipped.append(Skipped(i, name, problem))


def collect_inputs(
    predictor: SpectraPredictor,
    smiles: Optional[Sequence[str]] = None,
    file: Optional[str] = None,
    progress: bool = False,
) -> PredictInputs:
    """The structures of ``smiles`` (3D by RDKit, :func:`~schnetpack_molspectra.data.inputs.smiles_to_atoms`;
    name = the SMILES) or of a structure ``file`` (xyz/extxyz/ASE db as ``spkspectra simulate`` reads
    it; name ``<file>:<i>``, SMILES from an extxyz ``smiles`` info key), with those the model cannot take
    left out and named (:class:`Skipped`: a SMILES RDKit cannot handle, no atoms, non-finite
    positions, an element the model never saw).

    Raises:
        ValueError: neither or both of ``smiles`` and ``file``.
        FileNotFoundError, StructureInputError: ``file`` is missing or not readable as structures.
    """
    if (smiles is None) == (file is None):
        raise ValueError("give either smiles or file")
    found = PredictInputs()
    if smiles is not None:
        found.n_inputs = len(smiles)
        items = enumerate(smiles)
        if progress:
            items = tqdm(items, total=len(smiles), desc="3D structures (RDKit)", unit="mol", file=sys.stderr)
        for i, s in items:
            try:
                atoms = structure_inputs.smiles_to_atoms(s)
            except ValueError as err:
                found.skipped.append(Skipped(i, s, str(err)))
                continue
            _keep(found, predictor, i, s, s, atoms)
        return found
    molecules = structure_inputs.structure_file_inputs(file)  # every frame; an unusable one is skipped, not fatal
    found.n_inputs = len(molecules)
    for m in molecules:
        _keep(found, predictor, m.index, m.name, m.smiles, m.atoms)
    return found


def predicted_batches(
    predictor: SpectraPredictor,
    atoms_list: Sequence[Atoms],
    batch_size: Optional[int] = None,
    progress: bool = False,
    names: Optional[Sequence[str]] = None,
) -> Iterator[Dict[str, np.ndarray]]:
    """:func:`predict_spectra` a batch at a time: per batch, modality -> (batch, L) float32 area-normalised
    spectra, the batches in input order (for consumers that reduce each batch and need not hold all the
    spectra at once). Every structure is checked before the first batch.

    Raises:
        PredictError: a structure the model cannot take (:func:`structure_problem`; named by position
            and by ``names[i]``, else its formula).
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    for i, atoms in enumerate(atoms_list):
        problem = structure_problem(predictor, atoms)
        if problem is not None:
            name = names[i] if names is not None else atoms.get_chemical_formula()
            raise PredictError(f"molecule {i} ({name}): {problem}")
    head = predictor.head
    batches = represented_batches(
        predictor.model, atoms_list, predictor.cutoff, predictor.device, batch_size, progress, "predicted spectra"
    )
    with torch.no_grad():
        for inputs in batches:
            inputs = head(inputs)
            yield {m: inputs[key].float().cpu().numpy() for m, key in zip(head.modalities, head.model_outputs)}


def predict_spectra(
    predictor: SpectraPredictor,
    atoms_list: Sequence[Atoms],
    batch_size: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, np.ndarray]:
    """The predicted spectra of the structures: per modality of the model an (n, L) float32 array on
    its grid, area-normalised (each row sums to 1), row i for ``atoms_list[i]``.

    The structures go through the training transforms (centre of mass, neighbour list within the
    model's cutoff, float32; :func:`~schnetpack_molspectra.identify.encode.structures_batch`) in
    batches of ``batch_size`` molecules on the predictor's device (``None``: chosen by the device,
    :func:`~schnetpack_molspectra.identify.encode.batch_slices`); ``progress``: a progress bar on stderr.

    Raises:
        PredictError: a structure the model cannot take (:func:`structure_problem`; named by position).
    """
    out = {m: [] for m in predictor.modalities}
    for batch in predicted_batches(predictor, atoms_list, batch_size, progress):
        for m, values in batch.items():
            out[m].append(values)
    return {
        m: np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, SPECTRUM_LENGTHS[m]), np.float32)
        for m, rows in out.items()
    }


def reference_scaled(spectra: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Each spectrum scaled so that its peak is the training data's typical height
    (:func:`~schnetpack_molspectra.data.spectrum_files.rescale_to_reference`, ``REFERENCE_PEAK``):
    the scale ``spkspectra identify`` expects of arrays and CSV rows. An all-zero row stays zero."""
    return {
        m: np.stack([rescale_to_reference(r, m) for r in a]).astype(np.float32) if len(a) else np.asarray(a, np.float32)
        for m, a in spectra.items()
    }
