"""Reading and writing pre-trained models' files, without running code a file holds.

A weights file (:func:`save_weights`: a model's weights, in half precision where they are float32,
with the run's resolved config and a model card; the shipped pre-trained models are such files)
holds only tensors and plain data, and is read with ``torch.load(weights_only=True)``: no code
runs. A ``best_model`` (the whole model pickled by SchNetPack) or a SchNetPack Lightning checkpoint
needs full unpickling, which runs whatever code the pickle holds; :func:`load_file` does it only
for a file that a run of the running user wrote (:mod:`schnetpack_molspectra.provenance`) or on an
explicit opt-in (``trust``), and otherwise raises :class:`UntrustedModelError` naming the file and
the opt-in of the caller (``globals.trust_pretrained_model=true``, ``--trust-model``, ``trust=True``).
"""

import io
import os
import pickle
import re
from typing import Dict, Optional

import torch
from torch import nn

from schnetpack_molspectra.data.files import damaged_zip, write_whole
from schnetpack_molspectra.provenance import ledger_path, sha256_bytes, written_by_own_run

__all__ = [
    "PretrainedModelError",
    "UntrustedModelError",
    "WEIGHTS_FORMAT",
    "TRUST_OPT_IN",
    "load_file",
    "save_weights",
    "read_weights",
    "update_card",
    "full_precision",
]

#: the ``format`` entry of a weights file written by :func:`save_weights`
WEIGHTS_FORMAT = "schnetpack-molspectra-weights/1"

#: the opt-in named by errors of Python calls (the CLIs and configs name their own)
TRUST_OPT_IN = "trust=True"


class PretrainedModelError(ValueError):
    """A pre-trained model that cannot be loaded into the requested model."""


class UntrustedModelError(PretrainedModelError):
    """A file that only full unpickling reads (it may run code), not written by a run of the
    running user, and not trusted explicitly; the message names the file and the opt-in."""


def _torch_load(source, path: str, what: str, weights_only: bool, map_location="cpu"):
    """``torch.load``; any failure as a :class:`PretrainedModelError` naming ``what`` and ``path``."""
    try:
        return torch.load(source, map_location=map_location, weights_only=weights_only)
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        raise PretrainedModelError(f"cannot read {what} {path}: {type(err).__name__}: {message}") from err


def _refusal(err: pickle.UnpicklingError, data: bytes) -> str:
    """What torch's weights-only unpickler refused, as the globals' full names (``builtins.exec``).

    torch >= 2.5 lists them (``torch.serialization.get_unsafe_globals_in_checkpoint``); older
    torch names them in its message (``Unsupported global: GLOBAL builtins.exec ...``).
    """
    list_unsafe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if list_unsafe is not None:
        try:
            names = list_unsafe(io.BytesIO(data))
        except Exception:  # a pickle it cannot walk: fall back to the message
            names = []
        if names:
            return "unsupported globals: " + ", ".join(names)
    found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global.*)?(?:\n|$)", str(err))
    return found.group(1).strip() if found else " ".join(str(err).split())[:200]


def load_file(path: str, what: str, trust: bool = False, opt_in: str = TRUST_OPT_IN, map_location="cpu"):
    """``torch.load`` of the file ``path`` that runs no code it did not write itself.

    Read with ``weights_only=True`` (weights files, plain state dicts); a file that needs full
    unpickling (a whole model, a SchNetPack checkpoint) is unpickled only when its bytes are those
    of a file a run of the running user wrote (:func:`~schnetpack_molspectra.provenance.written_by_own_run`)
    or with ``trust``. The file is read once: what is checked is what is loaded.

    Args:
        what: what the file is, for messages ("pre-trained model", "model").
        opt_in: how the caller's user says ``trust`` (named in the error).

    Raises:
        UntrustedModelError: the file needs full unpickling and is neither an own run's nor trusted.
        PretrainedModelError: the file is damaged or not readable by ``torch.load`` (named).
    """
    damage = damaged_zip(path)  # before unpickling: a damaged pickle can allocate gigabytes
    if damage is not None:
        raise PretrainedModelError(f"cannot read {what} {path}: {damage}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # Python objects beyond tensors and plain data
        refused = _refusal(err, data)
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        raise PretrainedModelError(f"cannot read {what} {path}: {type(err).__name__}: {message}") from err
    if not trust and not written_by_own_run(sha256=sha256_bytes(data)):
        raise UntrustedModelError(
            f"cannot read {what} {path} without unpickling it: it holds more than weights ({refused}), and "
            f"unpickling runs whatever code the file holds; no run of yours wrote it (its SHA-256 is not in "
            f"{ledger_path()}). If you trust its source, opt in with {opt_in}; or use a weights file "
            "(schnetpack_molspectra.weights.save_weights: read without unpickling)"
        )
    return _torch_load(io.BytesIO(data), path, what, weights_only=False, map_location=map_location)


def full_precision(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A weights file's state with its half-precision tensors back in float32."""
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}


def save_weights(
    path: str, model: nn.Module, config: Optional[dict] = None, card: Optional[dict] = None, half: bool = True
) -> str:
    """Write ``model``'s weights and buffers to ``path`` as a weights file: float32 tensors in half
    precision (``half``), the others as they are, with ``config`` (the run's resolved hydra config
    as a plain dict, which rebuilds the model) and ``card`` (what the model is: data, steps, wall
    time, measured figures). Written to ``<path>.partial`` and renamed, so ``path`` is whole or absent.
    """
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        state[key] = value.half() if half and value.dtype == torch.float32 else value.clone()
    stored = {"format": WEIGHTS_FORMAT, "state_dict": state, "config": config or {}, "card": card or {}}
    return write_whole(path, lambda partial: torch.save(stored, partial))


def read_weights(path: str) -> dict:
    """A weights file's entries (``state_dict`` as stored, ``config``, ``card``), read without unpickling code.

    Raises:
        FileNotFoundError: no file at ``path``.
        PretrainedModelError: not a weights file of :func:`save_weights` (named).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    stored = _torch_load(path, path, "weights file", weights_only=True)
    if not isinstance(stored, dict) or stored.get("format") != WEIGHTS_FORMAT:
        raise PretrainedModelError(f"{path}: not a weights file ({WEIGHTS_FORMAT})")
    return stored


def update_card(path: str, card: dict) -> str:
    """Replace the model card of the weights file ``path`` (weights and config stay byte for byte as
    stored). Written to ``<path>.partial`` and renamed, so ``path`` is whole or absent."""
    stored = read_weights(path)
    stored["card"] = card
    return write_whole(path, lambda partial: torch.save(stored, partial))
