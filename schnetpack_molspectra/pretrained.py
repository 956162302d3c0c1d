"""Carry a pre-trained encoder into a new model.

Reads the representation (encoder) weights of a ``best_model`` (a whole model saved by
SchNetPack) or of a Lightning checkpoint (keys ``model.representation.*``) written by
``molspectra_pretrain`` / ``denoise_pretrain``. Only the encoder is taken: SpecFormer and
the pre-training heads stay behind.
"""
import os
from typing import Dict

import torch
from torch import nn
from schnetpack.model import NeuralNetworkPotential

__all__ = [
    "PretrainedModelError",
    "representation_state",
    "load_representation_weights",
    "pretrained_representation",
    "PretrainedNeuralNetworkPotential",
]

_PREFIX = "model.representation."


class PretrainedModelError(ValueError):
    """A pre-trained model that cannot be loaded into the requested encoder."""


def representation_state(path: str) -> Dict[str, torch.Tensor]:
    """Encoder weights stored in ``path`` (a ``best_model`` or a Lightning ``.ckpt``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pre-trained model {path} does not exist")
    try:
        stored = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise PretrainedModelError(f"cannot read pre-trained model {path}: {type(err).__name__}: {err}") from err
    if isinstance(stored, nn.Module):
        if not hasattr(stored, "representation"):
            raise PretrainedModelError(f"{path}: model {type(stored).__name__} has no 'representation' (encoder)")
        return stored.representation.state_dict()
    if isinstance(stored, dict) and "state_dict" in stored:
        state = {k[len(_PREFIX):]: v for k, v in stored["state_dict"].items() if k.startswith(_PREFIX)}
        if not state:
            raise PretrainedModelError(f"{path}: checkpoint has no encoder weights ('{_PREFIX}*')")
        return state
    raise PretrainedModelError(f"{path}: neither a SchNetPack model nor a Lightning checkpoint ({type(stored).__name__})")


def load_representation_weights(representation: nn.Module, path: str) -> nn.Module:
    """Copy the encoder weights of ``path`` into ``representation`` (in place) and return it.

    Raises:
        PretrainedModelError: naming the missing, unexpected and mis-shaped parameters when the
            stored encoder has another architecture (type, width, depth, cutoff basis ...).
    """
    state = representation_state(path)
    target = representation.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in set(state) & set(target)
        if state[k].shape != target[k].shape
    )
    if missing or unexpected or mis_shaped:
        problems = []
        if missing:
            problems.append(f"missing in checkpoint: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            problems.append(f"not in this encoder: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if mis_shaped:
            problems.append(f"shape (checkpoint vs encoder): {mis_shaped[:8]}{' ...' if len(mis_shaped) > 8 else ''}")
        raise PretrainedModelError(
            f"{path}: its encoder does not match {type(representation).__name__}: " + "; ".join(problems)
        )
    representation.load_state_dict(state)
    return representation


def pretrained_representation(representation: nn.Module, checkpoint: str = None) -> nn.Module:
    """Hydra-friendly: ``representation`` with the encoder weights of ``checkpoint``, or unchanged if None."""
    if checkpoint is None:
        return representation
    return load_representation_weights(representation, checkpoint)


class PretrainedNeuralNetworkPotential(NeuralNetworkPotential):
    """SchNetPack's ``NeuralNetworkPotential`` whose encoder starts from ``pretrained_model``.

    With ``pretrained_model=None`` it is exactly a ``NeuralNetworkPotential`` trained from
    scratch, so a fine-tuning experiment and its from-scratch baseline differ by one switch.
    The check happens at construction, i.e. before any training starts.
    """

    def __init__(self, representation: nn.Module, *args, pretrained_model: str = None, output_modules=None, **kwargs):
        from schnetpack_molspectra.atomistic import DenoisingHead

        for module in output_modules or []:
            if isinstance(module, DenoisingHead):  # auxiliary denoising while fine-tuning
                module.resolve_mode(representation)
        super().__init__(representation, *args, output_modules=output_modules, **kwargs)
        self.pretrained_model = pretrained_model
        if pretrained_model is not None:
            load_representation_weights(self.representation, pretrained_model)

    def extract_outputs(self, inputs):
        """Model outputs present in this batch (an auxiliary denoising target exists only for noisy inputs)."""
        return {k: inputs[k] for k in self.model_outputs if k in inputs}
