"""Carry pre-trained weights into a new model.

Reads a weights file (:func:`~schnetpack_molspectra.weights.save_weights`; the shipped pre-trained
models, by name, are such files) with ``torch.load(weights_only=True)``, which runs no code; a
``best_model`` (a whole model saved by SchNetPack) or a Lightning checkpoint (keys ``model.*``)
written by ``molspectra_pretrain`` / ``denoise_pretrain`` needs full unpickling, done only for a
file a run of the running user wrote or on the opt-in ``trust`` (``globals.trust_pretrained_model=true``;
:func:`schnetpack_molspectra.weights.load_file`). What is taken, as in the released MolSpectra code
(which loads every matching key):

- the encoder (``representation``), always; it must match the new encoder exactly;
- the denoising head **and its running noise statistics** (``DenoisingHead.scale``), when the
  new model has a denoising head (stage 1 -> stage 2, auxiliary denoising while fine-tuning)
  and ``denoising_head=True``. A fresh head instead starts from a noise scale of 1, which makes
  the auxiliary loss ~50x larger at the start of fine-tuning.

SpecFormer and the other pre-training heads stay behind.
"""

import os
from typing import Dict, Mapping, Optional

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

import schnetpack_molspectra.configs  # noqa: F401  (the configs' resolvers, for model_from_weights)
from schnetpack_molspectra.atomistic import DenoisingHead, SpectraEncoder, SpectraHead
from schnetpack_molspectra.shipped import resolve_model
from schnetpack_molspectra.weights import (
    TRUST_OPT_IN,
    WEIGHTS_FORMAT,
    PretrainedModelError,
    UntrustedModelError,
    full_precision,
    load_file,
    read_weights,
    save_weights,
    update_card,
)

__all__ = [
    "PretrainedModelError",
    "UntrustedModelError",
    "stored_state",
    "representation_state",
    "denoising_head_state",
    "load_state_checked",
    "load_pretrained_weights",
    "TRUST_OPT_IN",
    "WEIGHTS_FORMAT",
    "save_weights",
    "read_weights",
    "update_card",
    "model_from_weights",
]

_REPRESENTATION = "representation."


def stored_state(path: str, trust: bool = False, opt_in: str = TRUST_OPT_IN) -> Dict[str, torch.Tensor]:
    """All weights and buffers stored in ``path`` (a ``best_model``, a Lightning ``.ckpt``, a weights
    file or the name of a shipped model), keyed as in the model (``representation.*``, ``output_modules.0.*``, ...).

    A shipped model's name and a weights file are read with ``weights_only=True``; a file that needs
    full unpickling only when a run of yours wrote it, or with ``trust`` (:func:`~schnetpack_molspectra.weights.load_file`).

    Raises:
        FileNotFoundError: ``path`` does not exist and is not a shipped model's name (they are listed).
        UntrustedModelError: ``path`` needs full unpickling, was not written by a run of yours and
            ``trust`` is not given (the message names ``opt_in``).
        PretrainedModelError: ``path`` is a directory, not readable by ``torch.load``, or holds
            something other than a SchNetPack model or a Lightning checkpoint (named).
    """
    file = resolve_model(path)  # a shipped model's name -> its weights file
    if os.path.isdir(file):
        raise PretrainedModelError(
            f"pre-trained model {file} is a directory; give its best_model or a .ckpt file in it"
        )
    if file != path:  # shipped: a weights file, nothing else
        stored = read_weights(file)
    else:
        stored = load_file(file, "pre-trained model", trust=trust, opt_in=opt_in)
    path = file
    if isinstance(stored, dict) and stored.get("format") == WEIGHTS_FORMAT:
        return full_precision(_checked_state(stored["state_dict"], path, ""))
    if isinstance(stored, nn.Module):
        if not hasattr(stored, "representation"):
            raise PretrainedModelError(f"{path}: model {type(stored).__name__} has no 'representation' (encoder)")
        return stored.state_dict()
    if isinstance(stored, dict) and "state_dict" in stored:
        return _checked_state(stored["state_dict"], path)
    raise PretrainedModelError(
        f"{path}: neither a SchNetPack model nor a Lightning checkpoint ({type(stored).__name__})"
    )


def _checked_state(state_dict, path: str, prefix: str = "model.") -> Dict[str, torch.Tensor]:
    """The ``<prefix>*`` entries of a ``state_dict`` (Lightning's: ``model.``), which must map names to tensors."""
    if not isinstance(state_dict, Mapping):
        raise PretrainedModelError(
            f"{path}: its 'state_dict' is a {type(state_dict).__name__}, not a mapping of names to tensors"
        )
    state = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise PretrainedModelError(f"{path}: its 'state_dict' has a key {key!r} that is not a parameter name")
        if key.startswith(prefix):
            if not isinstance(value, torch.Tensor):
                raise PretrainedModelError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
            state[key[len(prefix) :]] = value
    return state


def _sub_state(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def representation_state(
    path: str, state: Optional[Dict[str, torch.Tensor]] = None, trust: bool = False
) -> Dict[str, torch.Tensor]:
    """Encoder weights stored in ``path`` (``state``: its :func:`stored_state`, if already read)."""
    encoder = _sub_state(stored_state(path, trust) if state is None else state, _REPRESENTATION)
    if not encoder:
        raise PretrainedModelError(f"{path}: checkpoint has no encoder weights ('model.{_REPRESENTATION}*')")
    return encoder


def denoising_head_state(
    path: str, state: Optional[Dict[str, torch.Tensor]] = None, trust: bool = False
) -> Optional[Dict[str, torch.Tensor]]:
    """Weights and noise statistics of the stored model's denoising head, or None if it has none.

    The head is the output module whose state holds ``scale.sum_squares`` (``DenoisingHead``).
    """
    state = stored_state(path, trust) if state is None else state
    prefixes = sorted({k[: -len("scale.sum_squares")] for k in state if k.endswith(".scale.sum_squares")})
    prefixes = [p for p in prefixes if p.startswith("output_modules.")]
    if len(prefixes) > 1:
        raise PretrainedModelError(f"{path}: more than one denoising head ({prefixes})")
    return _sub_state(state, prefixes[0]) if prefixes else None


def _kind(tensor: torch.Tensor) -> str:
    """The kind of number a tensor holds; float32 and float64 are one kind, load_state_dict converts them."""
    if tensor.is_complex():
        return "complex"
    if tensor.is_floating_point():
        return "float"
    return "bool" if tensor.dtype == torch.bool else "integer"


def load_state_checked(module: nn.Module, state: Dict[str, torch.Tensor], path: str, what: str) -> nn.Module:
    """``module.load_state_dict(state)`` after checking the keys and shapes match.

    Raises:
        PretrainedModelError: naming ``path`` and the missing, unexpected, mis-shaped and
            mis-typed (complex, bool or integer for a float) parameters when the stored ``what``
            has another architecture, or the parameters holding NaN/inf.
    """
    target = module.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in set(state) & set(target)
        if state[k].shape != target[k].shape
    )
    mis_typed = sorted(  # load_state_dict would cast them silently (complex -> real, bool -> 0/1)
        f"{k} {state[k].dtype} vs {target[k].dtype}"
        for k in set(state) & set(target)
        if _kind(state[k]) != _kind(target[k])
    )
    if missing or unexpected or mis_shaped or mis_typed:
        problems = []
        for label, names in (
            ("missing in checkpoint", missing),
            (f"not in this {what}", unexpected),
            (f"shape (checkpoint vs {what})", mis_shaped),
            (f"type (checkpoint vs {what})", mis_typed),
        ):
            if names:
                problems.append(f"{label}: {names[:8]}{' ...' if len(names) > 8 else ''}")
        raise PretrainedModelError(f"{path}: its {what} does not match {type(module).__name__}: " + "; ".join(problems))
    non_finite = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if non_finite:
        raise PretrainedModelError(f"{path}: its {what} has non-finite values (NaN/inf) in {non_finite[:8]}")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:  # e.g. a tensor whose dtype cannot be copied into the parameter
        raise PretrainedModelError(f"{path}: its {what} cannot be loaded into {type(module).__name__}: {err}") from err
    return module


def load_pretrained_weights(
    model: nn.Module,
    path: str,
    denoising_head: bool = True,
    spectra_encoder: bool = False,
    trust: bool = False,
    opt_in: str = TRUST_OPT_IN,
    spectra_head: bool = False,
) -> nn.Module:
    """Copy the pre-trained encoder (and denoising head) of ``path`` into ``model`` in place.

    Args:
        model: a model with ``representation`` and ``output_modules``.
        denoising_head: also carry the denoising head and its noise statistics into the
            model's ``DenoisingHead``, if it has one (released behaviour); False keeps the
            model's fresh head.
        spectra_encoder: also carry SpecFormer (``SpectraEncoder``) into the model's, which must
            have one: a MolSpectra pre-training that continues an earlier one.
        trust: unpickle ``path`` even when no run of yours wrote it (:func:`stored_state`);
            ``opt_in`` is how the caller's user says so (named in the error).
        spectra_head: also carry the spectrum-prediction head (``SpectraHead``) into the model's,
            which must have one at the same place among the output modules: a spectra fine-tuning
            that continues an earlier one.

    Raises:
        UntrustedModelError: ``path`` needs full unpickling and is not trusted (:func:`stored_state`).
        PretrainedModelError: the stored encoder or head does not match, or the model has a
            denoising head to carry into but the file has none.
    """
    state = stored_state(path, trust, opt_in)
    load_state_checked(model.representation, representation_state(path, state), path, "encoder")
    heads = [m for m in getattr(model, "output_modules", []) if isinstance(m, DenoisingHead)]
    if denoising_head and heads:
        head_state = denoising_head_state(path, state)
        if head_state is None:
            raise PretrainedModelError(
                f"{path}: has no denoising head to carry into this model's; "
                "set globals.pretrained_denoising_head=false to start a fresh head"
            )
        load_state_checked(heads[0], head_state, path, "denoising head")
    if spectra_encoder:
        index = [i for i, m in enumerate(getattr(model, "output_modules", [])) if isinstance(m, SpectraEncoder)]
        stored = [k for k in state if k.startswith("output_modules.") and ".specformer." in k]
        if not index or not stored:
            where = "this model" if not index else path
            raise PretrainedModelError(f"{path}: carrying the spectra encoder needs one in {where}")
        prefix = stored[0][: stored[0].index(".specformer.") + 1]
        spectra_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        load_state_checked(model.output_modules[index[0]], spectra_state, path, "spectra encoder")
    if spectra_head:
        index = [i for i, m in enumerate(getattr(model, "output_modules", [])) if isinstance(m, SpectraHead)]
        prefix = f"output_modules.{index[0]}." if index else None
        head_state = {k[len(prefix) :]: v for k, v in state.items() if prefix and k.startswith(prefix)}
        if not head_state:
            where = "this model" if not index else path
            raise PretrainedModelError(
                f"{path}: carrying the spectra head needs one in {where} (output module {prefix})"
            )
        load_state_checked(model.output_modules[index[0]], head_state, path, "spectra head")
    return model


def model_from_weights(path: str, device: str = "cpu", stored: Optional[dict] = None) -> nn.Module:
    """The whole model of a weights file (or a shipped model's name), rebuilt from its stored config
    (``model``, built by hydra as the run built it) with its weights, in eval mode.

    ``stored``: the file's :func:`read_weights`, when the caller has read it already.

    Raises:
        PretrainedModelError: the file has no model config, or its weights do not fit the model built.
    """
    path = resolve_model(path)
    stored = read_weights(path) if stored is None else stored
    if "model" not in (stored.get("config") or {}):
        raise PretrainedModelError(f"{path}: the weights file has no model config to rebuild the model from")
    cfg = OmegaConf.create(stored["config"])
    cfg.model.pretrained_model = None  # the weights come from this file
    model = instantiate(cfg.model)
    load_state_checked(model, full_precision(stored["state_dict"]), path, "model")
    return model.to(device).eval()
