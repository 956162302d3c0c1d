"""Carry pre-trained weights into a new model.

Reads a ``best_model`` (a whole model saved by SchNetPack), a Lightning checkpoint
(keys ``model.*``) written by ``molspectra_pretrain`` / ``denoise_pretrain``, or a weights file
(:func:`save_weights`: the model's weights, in half precision where they are float32, with the
run's resolved config and a model card; read with ``torch.load(weights_only=True)``, so any
torch reads it without unpickling code; the shipped pre-trained models are such files). What is taken,
as in the released MolSpectra code (which loads every matching key):

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
from torch import nn

__all__ = [
    "PretrainedModelError",
    "stored_state",
    "representation_state",
    "denoising_head_state",
    "load_state_checked",
    "load_pretrained_weights",
    "WEIGHTS_FORMAT",
    "save_weights",
    "read_weights",
    "update_card",
    "model_from_weights",
]

#: the ``format`` entry of a weights file written by :func:`save_weights`
WEIGHTS_FORMAT = "schnetpack-molspectra-weights/1"

_REPRESENTATION = "representation."


class PretrainedModelError(ValueError):
    """A pre-trained model that cannot be loaded into the requested model."""


def stored_state(path: str) -> Dict[str, torch.Tensor]:
    """All weights and buffers stored in ``path`` (a ``best_model``, a Lightning ``.ckpt``, a weights
    file or the name of a shipped model), keyed as in the model (``representation.*``, ``output_modules.0.*``, ...).

    Raises:
        FileNotFoundError: ``path`` does not exist and is not a shipped model's name (they are listed).
        PretrainedModelError: ``path`` is a directory, not readable by ``torch.load``, or holds
            something other than a SchNetPack model or a Lightning checkpoint (named).
    """
    from schnetpack_molspectra.shipped import resolve_model

    path = resolve_model(path)  # a shipped model's name -> its file
    if os.path.isdir(path):
        raise PretrainedModelError(
            f"pre-trained model {path} is a directory; give its best_model or a .ckpt file in it"
        )
    from schnetpack_molspectra.data.files import damaged_zip

    damage = damaged_zip(path)  # before unpickling: a damaged pickle can allocate gigabytes
    if damage is not None:
        raise PretrainedModelError(f"cannot read pre-trained model {path}: {damage}")
    stored = _torch_load(path, "pre-trained model", weights_only=False)
    if isinstance(stored, dict) and stored.get("format") == WEIGHTS_FORMAT:
        return _full_precision(_checked_state(stored["state_dict"], path, ""))
    if isinstance(stored, nn.Module):
        if not hasattr(stored, "representation"):
            raise PretrainedModelError(f"{path}: model {type(stored).__name__} has no 'representation' (encoder)")
        return stored.state_dict()
    if isinstance(stored, dict) and "state_dict" in stored:
        return _checked_state(stored["state_dict"], path)
    raise PretrainedModelError(
        f"{path}: neither a SchNetPack model nor a Lightning checkpoint ({type(stored).__name__})"
    )


def _torch_load(path: str, what: str, weights_only: bool):
    """``torch.load`` on the CPU; any failure as a :class:`PretrainedModelError` naming ``what`` and ``path``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        raise PretrainedModelError(f"cannot read {what} {path}: {type(err).__name__}: {message}") from err


def _full_precision(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A weights file's state with its half-precision tensors back in float32."""
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}


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


def representation_state(path: str, state: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Encoder weights stored in ``path`` (``state``: its :func:`stored_state`, if already read)."""
    encoder = _sub_state(stored_state(path) if state is None else state, _REPRESENTATION)
    if not encoder:
        raise PretrainedModelError(f"{path}: checkpoint has no encoder weights ('model.{_REPRESENTATION}*')")
    return encoder


def denoising_head_state(
    path: str, state: Optional[Dict[str, torch.Tensor]] = None
) -> Optional[Dict[str, torch.Tensor]]:
    """Weights and noise statistics of the stored model's denoising head, or None if it has none.

    The head is the output module whose state holds ``scale.sum_squares`` (``DenoisingHead``).
    """
    state = stored_state(path) if state is None else state
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
    model: nn.Module, path: str, denoising_head: bool = True, spectra_encoder: bool = False
) -> nn.Module:
    """Copy the pre-trained encoder (and denoising head) of ``path`` into ``model`` in place.

    Args:
        model: a model with ``representation`` and ``output_modules``.
        denoising_head: also carry the denoising head and its noise statistics into the
            model's ``DenoisingHead``, if it has one (released behaviour); False keeps the
            model's fresh head.
        spectra_encoder: also carry SpecFormer (``SpectraEncoder``) into the model's, which must
            have one: a MolSpectra pre-training that continues an earlier one.

    Raises:
        PretrainedModelError: the stored encoder or head does not match, or the model has a
            denoising head to carry into but the file has none.
    """
    from schnetpack_molspectra.atomistic import DenoisingHead

    state = stored_state(path)
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
        from schnetpack_molspectra.atomistic import SpectraEncoder

        index = [i for i, m in enumerate(getattr(model, "output_modules", [])) if isinstance(m, SpectraEncoder)]
        stored = [k for k in state if k.startswith("output_modules.") and ".specformer." in k]
        if not index or not stored:
            where = "this model" if not index else path
            raise PretrainedModelError(f"{path}: carrying the spectra encoder needs one in {where}")
        prefix = stored[0][: stored[0].index(".specformer.") + 1]
        spectra_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        load_state_checked(model.output_modules[index[0]], spectra_state, path, "spectra encoder")
    return model


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
    partial = path + ".partial"
    torch.save({"format": WEIGHTS_FORMAT, "state_dict": state, "config": config or {}, "card": card or {}}, partial)
    os.replace(partial, path)
    return path


def read_weights(path: str) -> dict:
    """A weights file's entries (``state_dict`` as stored, ``config``, ``card``), read without unpickling code.

    Raises:
        FileNotFoundError: no file at ``path``.
        PretrainedModelError: not a weights file of :func:`save_weights` (named).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    stored = _torch_load(path, "weights file", weights_only=True)
    if not isinstance(stored, dict) or stored.get("format") != WEIGHTS_FORMAT:
        raise PretrainedModelError(f"{path}: not a weights file ({WEIGHTS_FORMAT})")
    return stored


def update_card(path: str, card: dict) -> str:
    """Replace the model card of the weights file ``path`` (weights and config stay byte for byte as
    stored). Written to ``<path>.partial`` and renamed, so ``path`` is whole or absent."""
    stored = read_weights(path)
    stored["card"] = card
    partial = path + ".partial"
    torch.save(stored, partial)
    os.replace(partial, path)
    return path


def model_from_weights(path: str, device: str = "cpu", stored: Optional[dict] = None) -> nn.Module:
    """The whole model of a weights file (or a shipped model's name), rebuilt from its stored config
    (``model``, built by hydra as the run built it) with its weights, in eval mode.

    ``stored``: the file's :func:`read_weights`, when the caller has read it already.

    Raises:
        PretrainedModelError: the file has no model config, or its weights do not fit the model built.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import schnetpack_molspectra.configs  # noqa: F401  (the configs' resolvers)
    from schnetpack_molspectra.shipped import resolve_model

    path = resolve_model(path)
    stored = read_weights(path) if stored is None else stored
    if "model" not in (stored.get("config") or {}):
        raise PretrainedModelError(f"{path}: the weights file has no model config to rebuild the model from")
    cfg = OmegaConf.create(stored["config"])
    cfg.model.pretrained_model = None  # the weights come from this file
    model = instantiate(cfg.model)
    load_state_checked(model, _full_precision(stored["state_dict"]), path, "model")
    return model.to(device).eval()
