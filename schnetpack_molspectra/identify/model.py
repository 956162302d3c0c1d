"""Loading a pre-trained MolSpectra model for identification, and reading its run's ``config.yaml``:
the spectra normalisation the model was trained with and the elements of its training data (or of
a weights file's model card), which decide the library molecules it can embed; the package
docstring (:mod:`schnetpack_molspectra.identify`) describes both.
"""

import os
import sqlite3
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ase.data import chemical_symbols
from omegaconf import DictConfig, OmegaConf

import schnetpack_molspectra.configs  # noqa: F401  (the configs' resolvers)
from schnetpack_molspectra.atomistic import MoleculeRepresentation, SpectraEncoder
from schnetpack_molspectra.data.default import default_dataset_path
from schnetpack_molspectra.pretrained import model_from_weights
from schnetpack_molspectra.provenance import file_sha256
from schnetpack_molspectra.shipped import resolve_model
from schnetpack_molspectra.weights import PretrainedModelError, load_file, read_weights

__all__ = [
    "IdentifyError",
    "QM9_ELEMENTS",
    "EmbeddingModel",
    "find_model_file",
    "run_config",
    "training_db",
    "database_elements",
    "load_model",
    "SavedModel",
    "read_saved_model",
    "atomic_number",
    "model_cutoff",
    "model_elements",
    "TRUST_OPT_IN",
]

#: how a user of ``spkspectra identify`` / ``plot`` or of :func:`load_model` trusts a model file
#: that is not their own run's (named in the error)
TRUST_OPT_IN = "--trust-model (spkspectra identify, plot; trust=True in Python)"

#: elements assumed when neither the run's training data nor ``elements=`` says otherwise
QM9_ELEMENTS = (1, 6, 7, 8, 9)


class IdentifyError(ValueError):
    """A model, spectrum or library that identification cannot use; the message names it."""


@dataclass
class EmbeddingModel:
    """The two sides of a pre-trained MolSpectra model, ready for embedding."""

    path: str
    model: torch.nn.Module
    spectra_encoder: torch.nn.Module  # atomistic.SpectraEncoder
    representation_3d: torch.nn.Module  # atomistic.MoleculeRepresentation
    cutoff: float
    normalization: str = "log10"
    spectra_scale: Dict[str, float] = field(default_factory=dict)
    elements: Tuple[int, ...] = QM9_ELEMENTS
    elements_source: str = "default (QM9: H, C, N, O, F)"
    sha256: str = ""
    device: str = "cpu"

    @property
    def specformer(self):
        return self.spectra_encoder.specformer

    @property
    def modalities(self) -> List[str]:
        return list(self.specformer.modalities)


def find_model_file(path: str) -> str:
    if os.path.isdir(path):  # a run directory
        candidate = os.path.join(path, "best_model")
        if not os.path.isfile(candidate):
            raise FileNotFoundError(f"{path} is a directory without a best_model")
        return candidate
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model {path} does not exist")
    return path


def run_config(model_path: str):
    """The ``config.yaml`` spktrain wrote in the model's run directory, or None when there is none.

    Raises:
        IdentifyError: the file is there but cannot be read: it holds the spectra normalisation the
            model was trained with, so it is not silently replaced by the defaults.
    """
    config = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.yaml")
    if not os.path.isfile(config):
        return None
    try:
        return OmegaConf.load(config)
    except Exception as err:  # yaml and omegaconf raise several kinds
        raise IdentifyError(
            f"{config}: cannot read the run's config ({type(err).__name__}: {err}); it gives the spectra "
            "normalisation the model was trained with"
        ) from err


def _normalisation_from_config(cfg, source: str) -> Optional[Tuple[str, Dict[str, float]]]:
    """(method, scale per modality) of the run's ``NormalizeSpectra`` transform; None if it has none."""
    transforms = OmegaConf.select(cfg, "data.transforms", default=None)
    if transforms is None:
        return None
    nodes = transforms.values() if OmegaConf.is_dict(transforms) else transforms
    for node in nodes:
        if OmegaConf.is_dict(node) and str(node.get("_target_", "")).endswith("NormalizeSpectra"):
            try:
                node = OmegaConf.to_container(node, resolve=True)
                scale = {k: float(v) for k, v in (node.get("scale") or {}).items()}
            except Exception as err:
                raise IdentifyError(
                    f"{source}: cannot resolve the run's spectra normalisation ({type(err).__name__}: {err})"
                ) from err
            return str(node.get("method", "log10")), scale
    return None


def training_db(cfg) -> Optional[str]:
    """The database the run trained on (``data.datapath``; the default dataset when null), or None."""
    if OmegaConf.select(cfg, "data", default=None) is None or "datapath" not in cfg.data:
        return None
    path = cfg.data.datapath
    if path is None:
        return default_dataset_path()
    return str(path)


def database_elements(path: str) -> Tuple[int, ...]:
    """Atomic numbers present in an ASE sqlite database (its ``species`` table)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return tuple(sorted(int(z) for (z,) in conn.execute("SELECT DISTINCT Z FROM species")))


@dataclass
class SavedModel:
    """A saved model as :func:`read_saved_model` reads it: the model file, the model, the run's config
    (a weights file's own, else the ``config.yaml`` beside the file, else None) and its model card
    (a weights file's; empty otherwise)."""

    path: str
    model: torch.nn.Module
    config: Optional[DictConfig]
    card: Dict


def read_saved_model(
    path: str, device: str = "cpu", trust: bool = False, opt_in: str = TRUST_OPT_IN, expected: str = "a saved model"
) -> SavedModel:
    """A saved SchNetPack model by shipped name, weights file, ``best_model`` or run directory: a weights
    file is read without unpickling, a ``best_model`` only when a run of yours wrote it, or with
    ``trust`` (``opt_in`` says how the caller's user asks for it;
    :func:`schnetpack_molspectra.weights.load_file`).

    Raises:
        FileNotFoundError: no such file, and no shipped model of that name.
        IdentifyError: the file is not readable, not trusted, or not a SchNetPack model (``expected``
            says what to pass instead).
    """
    path = find_model_file(resolve_model(path))  # a shipped model's name -> its weights file
    stored = None  # a weights file's entries: its config and card replace the run directory's
    try:
        if path.endswith(".pt"):  # a weights file (the shipped models): config and card inside
            stored = read_weights(path)
            model = model_from_weights(path, device=device, stored=stored)
        else:
            model = load_file(path, "model", trust=trust, opt_in=opt_in, map_location=device)
    except PretrainedModelError as err:
        raise IdentifyError(str(err)) from err
    except Exception as err:  # hydra's instantiation and torch raise several kinds for a config that does not fit
        raise IdentifyError(f"cannot read model {path}: {type(err).__name__}: {err}") from err
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "representation"):
        raise IdentifyError(f"{path}: not a saved SchNetPack model ({type(model).__name__}); pass {expected}")
    config = run_config(path) if stored is None else OmegaConf.create(stored["config"])
    return SavedModel(path, model, config, {} if stored is None else dict(stored.get("card") or {}))


def load_model(
    path: Union[str, SavedModel], elements: Optional[Sequence] = None, device: str = "cpu", trust: bool = False
) -> EmbeddingModel:
    """Load a MolSpectra ``best_model`` (or a run directory holding one), a weights file or a shipped
    model by name (``molspectra-painn-qm9``) for identification.

    A weights file (and so a shipped model) is read without unpickling; a ``best_model`` (a pickled
    model) only when a run of yours wrote it, or with ``trust`` (``--trust-model``): unpickling runs
    the code a file holds (:func:`schnetpack_molspectra.weights.load_file`). ``path`` may also be what
    :func:`read_saved_model` read.

    Raises:
        IdentifyError: the file is not a saved model, is not trusted (the message names the opt-in),
            or has no spectra encoder / 3D representation (a ``denoise_pretrain`` or fine-tuned model).
    """
    if isinstance(path, SavedModel):  # read already (on ``device``)
        saved = path
    else:
        saved = read_saved_model(
            path, device=device, trust=trust, expected="the best_model of a molspectra_pretrain run"
        )
    path, model, cfg, card = saved.path, saved.model, saved.config, saved.card
    outputs = list(getattr(model, "output_modules", []))
    spectra = [m for m in outputs if isinstance(m, SpectraEncoder)]
    rep3d = [m for m in outputs if isinstance(m, MoleculeRepresentation)]
    if not spectra or not rep3d:
        have = [type(m).__name__ for m in outputs]
        raise IdentifyError(
            f"{path}: model has no {'spectra encoder (SpectraEncoder)' if not spectra else '3D representation (MoleculeRepresentation)'}"
            f" among its output modules {have}: identification needs the best_model of molspectra_pretrain, "
            "not of denoise_pretrain or a fine-tuning run"
        )
    model.eval()
    enc = EmbeddingModel(
        path, model, spectra[0], rep3d[0], model_cutoff(model, cfg), sha256=file_sha256(path), device=device
    )
    found = _normalisation_from_config(cfg, path) if cfg is not None else None
    if found is not None:
        enc.normalization, enc.spectra_scale = found
    if elements is not None:
        enc.elements = tuple(sorted(atomic_number(e) for e in elements))
        enc.elements_source = "given"
    else:
        enc.elements, enc.elements_source = model_elements(card, cfg, path)
    return enc


def atomic_number(element) -> int:
    """The atomic number of an element given by symbol (``"C"``) or number (``6``, ``"6"``)."""
    if isinstance(element, (int, np.integer)) or str(element).isdigit():
        return int(element)
    if element not in chemical_symbols:
        raise ValueError(f"unknown element {element!r}")
    return chemical_symbols.index(element)


def model_cutoff(model: torch.nn.Module, cfg=None) -> float:
    """The neighbour-list cutoff of a saved model: its representation's, else the run config's
    ``globals.cutoff``, else 5 Angstrom."""
    representation = model.representation
    cutoff = getattr(representation, "cutoff", None)
    if cutoff is None and hasattr(representation, "cutoff_fn"):
        cutoff = getattr(representation.cutoff_fn, "cutoff", None)
    if cutoff is None and cfg is not None:
        cutoff = OmegaConf.select(cfg, "globals.cutoff", default=None)
    return float(cutoff if cutoff is not None else 5.0)


def model_elements(card: Dict, cfg, path: str) -> Tuple[Tuple[int, ...], str]:
    """(atomic numbers, where they came from) of the elements a saved model was trained on: its
    model card's ``elements``, else its run's training database, else QM9's."""
    if card.get("elements"):
        return tuple(sorted(atomic_number(e) for e in card["elements"])), f"model card of {os.path.basename(path)}"
    if cfg is not None:
        db = training_db(cfg)
        if db and os.path.isfile(db):
            try:
                return database_elements(db), f"training data {db}"
            except sqlite3.Error:
                pass
    return QM9_ELEMENTS, "default (QM9: H, C, N, O, F)"
