"""The pre-trained models shipped inside the package, by name.

Each is a weights file (:func:`schnetpack_molspectra.weights.save_weights`, read without unpickling code) in
``schnetpack_molspectra/pretrained_models/<name>.pt``: half-precision weights, the resolved config
of the run that trained it and its model card (data, steps, wall time, machine, measured figures).
A name works wherever a path to a pre-trained model does (``globals.pretrained_model=<name>``,
``spkspectra identify --model <name>``): :func:`resolve_model`. They were trained by
``scripts/train_shipped.py`` on QM9 structures and the shipped spectra molecules, never on the
held-out molecules (``data.sticks.held_out_selection``) that the benchmarks test on.
"""

import os
from typing import Dict, List, Optional

from schnetpack_molspectra.weights import read_weights

__all__ = [
    "MODELS_DIR",
    "available_models",
    "model_file",
    "resolve_model",
    "model_card",
    "format_card",
    "UnknownModelError",
]

#: the folder of shipped weights files inside the installed package
MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_models")
_SUFFIX = ".pt"


class UnknownModelError(FileNotFoundError):
    """Neither a file nor the name of a shipped model; the message lists the shipped ones."""


def available_models() -> List[str]:
    """Names of the shipped models, sorted."""
    if not os.path.isdir(MODELS_DIR):
        return []
    return sorted(f[: -len(_SUFFIX)] for f in os.listdir(MODELS_DIR) if f.endswith(_SUFFIX))


def model_file(name: str, must_exist: bool = True) -> str:
    """Path of the shipped model ``name``.

    Raises:
        UnknownModelError: ``must_exist`` and no shipped model has that name (the available ones listed).
    """
    path = os.path.join(MODELS_DIR, name + _SUFFIX)
    if must_exist and not os.path.isfile(path):
        names = ", ".join(available_models()) or "none"
        raise UnknownModelError(f"no pre-trained model named {name!r} is shipped; available: {names}")
    return path


def resolve_model(path_or_name: str) -> str:
    """``path_or_name`` itself when it is an existing file or directory, else the file of the shipped
    model of that name.

    Raises:
        UnknownModelError: neither (the message names the missing path and lists the shipped models).
    """
    if os.path.exists(path_or_name):
        return path_or_name
    if os.sep not in path_or_name and not path_or_name.endswith((".ckpt", _SUFFIX)):
        return model_file(path_or_name)
    names = ", ".join(available_models()) or "none"
    raise UnknownModelError(f"pre-trained model {path_or_name} does not exist (shipped models by name: {names})")


def model_card(name: str) -> Dict:
    """The model card stored in the shipped model ``name``."""
    return read_weights(model_file(name))["card"]


def format_card(card: Dict) -> str:
    """A model card as a few lines of text: what it is, its data, its training (steps, wall time,
    machine, per piece) and what was measured with it."""
    pieces = card.get("pieces", [])
    steps = sum(p["steps"] for p in pieces)
    wall = sum(p["wall_s"] for p in pieces)
    machines = sorted({p["machine"] for p in pieces})
    lines = [
        f"{card.get('name', '?')}: {card.get('description', '')}",
        f"  data: {card.get('trained_on', '?')}",
        f"  training: {len(pieces)} piece(s), {steps:,} steps, {wall / 3600:.1f} h on {', '.join(machines) or '?'}",
    ]
    for piece in pieces:
        summary = piece.get("summary", {}).get("end", {})
        figures = ", ".join(
            f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float) and k != "retrieval_chance"
        )
        lines.append(
            f"    piece {piece['piece']}: {piece['steps']:,} steps of batch {piece['batch_size']}, "
            f"{piece['wall_s'] / 60:.0f} min; validation at its end: {figures or 'n/a'}"
        )
    for key, value in (card.get("measured") or {}).items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def cards_table(names: Optional[List[str]] = None) -> str:
    """The model cards of the shipped models (or ``names``) as one Markdown table: the README's."""
    rows = ["| model | what | trained on | training | measured |", "|---|---|---|---|---|"]
    for name in names or available_models():
        card = model_card(name)
        pieces = card.get("pieces", [])
        steps = sum(p["steps"] for p in pieces)
        wall = sum(p["wall_s"] for p in pieces) / 3600
        machines = ", ".join(sorted({p["machine"] for p in pieces}))
        measured = "; ".join(f"{k}: {v}" for k, v in (card.get("measured") or {}).items()) or "not yet"
        rows.append(
            f"| `{name}` | {card.get('description', '')} | {card.get('trained_on', '')} | "
            f"{len(pieces)} piece(s), {steps:,} steps, {wall:.1f} h on {machines} | {measured} |"
        )
    return "\n".join(rows)
