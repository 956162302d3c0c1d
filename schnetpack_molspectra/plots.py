"""Pictures of what a MolSpectra model learned (matplotlib, Agg backend; ``spkspectra plot ...``).

- :func:`plot_attention`: SpecFormer attention maps per head of one layer for one molecule
  (the paper's Fig. A2 a-c), tokens in UV | IR | Raman order, block borders drawn; the
  attention mass each modality's queries put on each modality's keys is returned.
- :func:`plot_tsne`: t-SNE (scikit-learn) of the spectra representations and of the 3D
  representations of a database's molecules, coloured by a property (QM9 label, ``n_atoms``,
  or a count such as ``n_O``).
- :func:`plot_mpr`: one molecule's normalised spectra with randomly masked patches (shaded) and
  SpecFormer's reconstructions of them.
- :func:`plot_curves`: learning curves of a run from its TensorBoard logs (``train.logs.read_scalars``).
- :func:`plot_predicted_spectra`: predicted spectra of up to ``max_molecules`` molecules, one
  panel per modality (``spkspectra predict --plot``).

``model`` is a ``best_model`` or a run directory; ``data`` a spectra database (default: the
database the run trained on, from its ``config.yaml``, e.g. the embedded default dataset).
A ``best_model`` is unpickled only when a run of yours wrote it, or with ``trust``
(``spkspectra plot --trust-model``; :func:`schnetpack_molspectra.identify.load_model`).
"""

import os
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from ase.db import connect

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.default import default_dataset_path, ensure_default_dataset
from schnetpack_molspectra.data.spectrum_files import read_spectra
from schnetpack_molspectra.identify import (
    encode_spectra,
    encode_structures,
    find_model_file,
    load_model,
    normalise_spectra,
    run_config,
    training_db,
)
from schnetpack_molspectra.spectra.grids import GRIDS
from schnetpack_molspectra.train.logs import read_scalars
from schnetpack_molspectra.transform import MaskSpectraPatches

__all__ = ["plot_attention", "plot_tsne", "plot_mpr", "plot_curves", "plot_predicted_spectra", "run_data"]

MODALITY_LABEL = {"uv": "UV-Vis", "ir": "IR", "raman": "Raman"}
MODALITY_COLOR = {"uv": "tab:purple", "ir": "tab:red", "raman": "tab:blue"}


def _pyplot():
    # matplotlib (an optional dependency) only when a plot is drawn, and then with the Agg backend
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_data(model_path: str, data: Optional[str] = None) -> str:
    """``data``, or the spectra database the model's run trained on (its ``config.yaml``)."""
    if data is not None:
        if not os.path.exists(data):
            raise FileNotFoundError(f"spectra database {data} does not exist")
        return data
    cfg = run_config(find_model_file(model_path))
    path = training_db(cfg) if cfg is not None else None
    if path is None:
        path = default_dataset_path()
    if not os.path.exists(path):
        if os.path.basename(path).startswith("default_spectra"):
            return ensure_default_dataset(path)
        raise FileNotFoundError(f"the run's database {path} does not exist; pass data=/--data")
    return path


def _normalised(enc, spectra: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    return normalise_spectra(
        enc,
        {
            m: torch.as_tensor(np.asarray(v, dtype=np.float32), device=enc.device).reshape(1, -1)
            for m, v in spectra.items()
        },
    )


def _molecule(data: str, index: int, modalities: Sequence[str]):
    records = read_spectra(data)
    if not 0 <= index < len(records):
        raise ValueError(f"{data}: molecule {index} out of range (0-{len(records) - 1})")
    r = records[index]
    missing = [m for m in modalities if m not in r.spectra]
    if missing:
        raise ValueError(f"{r.source}: has no {missing} spectrum; the model uses {list(modalities)}")
    return r


def _save(fig, out: str, dpi: int = 110) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    return out


# ---------------------------------------------------------------- attention
def _token_position(sf, token: int) -> str:
    """'IR 1725 cm^-1': modality and centre of the patch behind a token."""
    for m in sf.modalities:
        if token < sf.n_patches[m]:
            g = GRIDS[m]
            centre = g.start + g.step * (token * sf.patch_stride[m] + (sf.patch_length[m] - 1) / 2)
            return f"{MODALITY_LABEL[m]} {centre:.4g} {g.unit}"
        token -= sf.n_patches[m]
    raise IndexError(token)


def plot_attention(
    model: str,
    out: str = "attention.png",
    data: Optional[str] = None,
    index: int = 0,
    layer: int = -1,
    heads: Optional[Sequence[int]] = None,
    span: float = 2.0,
    device: str = "cpu",
    trust: bool = False,
) -> Dict[str, object]:
    """Attention maps (query patches x key patches) of every head (or ``heads``) of ``layer``
    for molecule ``index`` of ``data``. Colour: log10 of the weight relative to uniform
    attention (1 / tokens), clipped to +-``span``: red = attended more than uniform.

    Returns ``{"out", "molecule", "layer", "block_mass": {head: rows x cols}, "top_key": {head: patch}}``:
    per head, the attention mass queries of modality row put on keys of modality column (rows sum
    to 1; uniform attention gives each modality's token share), and the most attended key patch."""
    plt = _pyplot()
    enc = load_model(model, device=device, trust=trust)
    sf = enc.specformer
    record = _molecule(run_data(model, data), index, sf.modalities)
    maps = sf.attention_maps(_normalised(enc, {m: record.spectra[m] for m in sf.modalities}))
    n_layers = len(maps)
    layer_index = layer % n_layers
    att = maps[layer_index][0].cpu().numpy()  # (heads, N, N)
    n_tokens = att.shape[-1]
    heads = list(range(att.shape[0])) if heads is None else list(heads)
    bounds = np.cumsum([0] + [sf.n_patches[m] for m in sf.modalities])
    centres = (bounds[:-1] + bounds[1:]) / 2
    labels = [MODALITY_LABEL[m] for m in sf.modalities]
    n_cols = int(np.ceil(np.sqrt(len(heads))))
    n_rows = int(np.ceil(len(heads) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.7 * n_cols, 2.75 * n_rows + 0.8), squeeze=False)
    block_mass, top_key = {}, {}
    image = None
    for ax, h in zip(axes.flat, heads):
        a = att[h]
        ratio = np.log10(np.clip(a * n_tokens, 1e-12, None))
        image = ax.imshow(ratio, cmap="RdBu_r", vmin=-span, vmax=span, interpolation="nearest")
        for b in bounds[1:-1]:
            ax.axhline(b - 0.5, color="black", lw=0.5)
            ax.axvline(b - 0.5, color="black", lw=0.5)
        ax.set_xticks(centres, labels, fontsize=6)
        ax.set_yticks(centres, labels, fontsize=6, rotation=90, va="center")
        mass = [
            [
                float(a[bounds[i] : bounds[i + 1], bounds[j] : bounds[j + 1]].sum(1).mean())
                for j in range(len(bounds) - 1)
            ]
            for i in range(len(bounds) - 1)
        ]
        block_mass[h] = mass
        top = int(a.mean(0).argmax())
        top_key[h] = _token_position(sf, top)
        ax.set_title(f"head {h}: top key {top_key[h]}", fontsize=6.5)
    for ax in list(axes.flat)[len(heads) :]:
        ax.axis("off")
    fig.suptitle(
        f"SpecFormer attention, layer {layer_index + 1}/{n_layers}, molecule {record.name}"
        f"{' (' + record.smiles + ')' if record.smiles else ''}\nrows: query patches, columns: key patches; "
        f"colour: log10(weight x {n_tokens} tokens), 0 = uniform attention",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    cax = fig.add_axes((0.945, 0.3, 0.012, 0.4))
    fig.colorbar(image, cax=cax, label="log10(weight / uniform)")
    return {
        "out": _save(fig, out, dpi=100),
        "molecule": record.name,
        "layer": layer_index,
        "block_mass": block_mass,
        "top_key": top_key,
    }


# ---------------------------------------------------------------- t-SNE
def _db_property(data: str, key: str) -> np.ndarray:
    values = []
    with connect(data, use_lock_file=False) as db:
        for row in db.select():
            if key == "n_atoms":
                values.append(row.natoms)
            elif key.startswith("n_") and key[2:].isalpha() and key not in row.data:
                values.append(sum(1 for s in row.symbols if s == key[2:]))
            elif key in row.data:
                values.append(float(np.asarray(row.data[key]).reshape(-1)[0]))
            elif key in row.key_value_pairs:
                values.append(float(row.key_value_pairs[key]))
            else:
                have = sorted(k for k, v in row.data.items() if np.asarray(v).size == 1)
                raise ValueError(
                    f"{data}: row {row.id} has no property {key!r}; scalar properties: {have}, or n_atoms, n_C, n_O, ..."
                )
    return np.array(values, dtype=np.float64)


def plot_tsne(
    model: str,
    out: str = "tsne.png",
    data: Optional[str] = None,
    color_by: str = "gap",
    perplexity: float = 30.0,
    seed: int = 0,
    max_molecules: Optional[int] = None,
    device: str = "cpu",
    trust: bool = False,
) -> Dict[str, object]:
    """t-SNE of the spectra and the 3D representations of ``data``'s molecules, coloured by ``color_by``.

    Returns ``{"out", "molecules", "color_by", "colour": (n,) the colour values, "xy": {"spectra",
    "structures"}: (n, 2) the t-SNE coordinates}``."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:
        raise ImportError("the t-SNE plot needs scikit-learn: pip install scikit-learn") from err
    plt = _pyplot()
    enc = load_model(model, device=device, trust=trust)
    data = run_data(model, data)
    colour = _db_property(data, color_by)
    records = read_spectra(data)
    with connect(data, use_lock_file=False) as db:
        atoms = [row.toatoms() for row in db.select()]
    if max_molecules is not None:
        records, atoms, colour = records[:max_molecules], atoms[:max_molecules], colour[:max_molecules]
    spectra = encode_spectra(enc, records)
    structures = encode_structures(enc, atoms)
    perplexity = min(perplexity, (len(records) - 1) / 3)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    coordinates = {}
    for ax, (side, title, x) in zip(
        axes,
        (
            ("spectra", "spectra representation (SpecFormer)", spectra),
            ("structures", "3D representation (encoder)", structures),
        ),
    ):
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(
            x
        )
        coordinates[side] = xy
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, s=9, cmap="viridis")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    with connect(data, use_lock_file=False) as db:
        unit = (db.metadata.get("_property_unit_dict") or {}).get(color_by)
    fig.colorbar(sc, ax=axes, label=f"{color_by} ({unit})" if unit and unit != "1" else color_by, shrink=0.85)
    fig.suptitle(
        f"t-SNE (cosine, perplexity {perplexity:g}) of {len(records)} molecules of {os.path.basename(data)}",
        fontsize=10,
    )
    return {
        "out": _save(fig, out),
        "molecules": len(records),
        "color_by": color_by,
        "colour": colour,
        "xy": coordinates,
    }


# ---------------------------------------------------------------- masked patch reconstruction
def plot_mpr(
    model: str,
    out: str = "mpr.png",
    data: Optional[str] = None,
    index: int = 0,
    mask_ratio: Optional[float] = None,
    seed: int = 0,
    device: str = "cpu",
    trust: bool = False,
) -> Dict[str, object]:
    """Molecule ``index``'s normalised spectra, randomly masked patches (ratio as in training:
    the run's ``globals.mask_ratio``, else 0.1) shaded, and SpecFormer's reconstructions.

    Returns per modality the MSE on the masked patches and the MSE of predicting zero there."""
    plt = _pyplot()
    enc = load_model(model, device=device, trust=trust)
    sf = enc.specformer
    if mask_ratio is None:
        cfg = run_config(find_model_file(model))
        mask_ratio = float(cfg.globals.get("mask_ratio", 0.1)) if cfg is not None and "globals" in cfg else 0.1
    record = _molecule(run_data(model, data), index, sf.modalities)
    torch.manual_seed(seed)
    masker = MaskSpectraPatches(mask_ratio, sf.modalities, sf.patch_length, sf.patch_stride, sf.spectrum_length)
    masks = {m: masker({})[msp.patch_mask(m)].to(enc.device) for m in sf.modalities}
    spectra = _normalised(enc, {m: record.spectra[m] for m in sf.modalities})
    with torch.no_grad():
        _, reconstructions, _ = sf(spectra, masks)
    fig, axes = plt.subplots(len(sf.modalities), 1, figsize=(10, 2.6 * len(sf.modalities)), squeeze=False)
    errors = {}
    for ax, m in zip(axes[:, 0], sf.modalities):
        x = GRIDS[m].values()
        y = spectra[m][0].cpu().numpy()
        P, D = sf.patch_length[m], sf.patch_stride[m]
        masked = torch.nonzero(masks[m][0]).flatten().tolist()
        ax.plot(x, y, color="black", lw=0.8, label="normalised spectrum log10(1+x)")
        sq, zero = [], []
        for k, p in enumerate(masked):
            lo, hi = p * D, p * D + P
            ax.axvspan(
                x[lo], x[hi - 1], color="0.85", zorder=0, label="masked patch (zero-filled input)" if k == 0 else None
            )
            rec = reconstructions[m][0, p].cpu().numpy()
            ax.plot(x[lo:hi], rec, color=MODALITY_COLOR[m], lw=1.4, label="reconstruction" if k == 0 else None)
            sq.append(np.mean((rec - y[lo:hi]) ** 2))
            zero.append(np.mean(y[lo:hi] ** 2))
        errors[m] = {"mse": float(np.mean(sq)), "mse_zero": float(np.mean(zero)), "masked_patches": len(masked)}
        ax.set_title(
            f"{MODALITY_LABEL[m]}: {len(masked)} of {sf.n_patches[m]} patches masked, "
            f"MSE {errors[m]['mse']:.4f} (predicting zero: {errors[m]['mse_zero']:.4f})",
            fontsize=9,
        )
        ax.set_xlabel(GRIDS[m].unit)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"masked patch reconstruction, molecule {record.name}{' (' + record.smiles + ')' if record.smiles else ''}",
        fontsize=10,
    )
    fig.tight_layout()
    return {"out": _save(fig, out), "molecule": record.name, "errors": errors}


# ---------------------------------------------------------------- learning curves
def plot_curves(run: str, out: str = "curves.png") -> Dict[str, object]:
    """Train/validation curves of every loss term, the retrieval top-1 and the learning rate.

    Returns ``{"out", "tags": every logged scalar, "panels": {panel title: {tag: [(step, value), ...]}}}``:
    what each panel plots."""
    plt = _pyplot()
    if os.path.isfile(run):
        run = os.path.dirname(os.path.abspath(run))
    s = read_scalars(run)
    panels = [
        ("total loss", ["train_loss", "val_loss"]),
        ("denoising MSE", ["train_denoising_mse", "val_denoising_mse"]),
        ("masked patch reconstruction MSE", [t for t in sorted(s) if t.startswith(("train_mpr", "val_mpr"))]),
        ("contrastive InfoNCE", ["train_contrastive_infonce", "val_contrastive_infonce"]),
        ("3D->spectra top-1 (batch)", ["train_contrastive_top1", "val_contrastive_top1"]),
        ("learning rate", [t for t in sorted(s) if t.startswith("lr")]),
    ]
    panels = [(title, [t for t in tags if t in s]) for title, tags in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        raise ValueError(f"{run}: no known training scalars in its logs; found {sorted(s)}")
    n_cols = 3
    n_rows = int(np.ceil(len(panels) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.2 * n_rows), squeeze=False)
    for ax, (title, tags) in zip(axes.flat, panels):
        for tag in tags:
            steps, values = zip(*s[tag])
            style = "-o" if len(steps) < 30 else "-"
            ax.plot(steps, values, style, ms=3, lw=1.2, label=tag)
        if "MSE" in title or "InfoNCE" in title or title == "total loss":
            if all(v > 0 for tag in tags for _, v in s[tag]):
                ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"learning curves of {os.path.basename(os.path.normpath(run))}", fontsize=10)
    fig.tight_layout()
    return {
        "out": _save(fig, out),
        "tags": sorted(s),
        "panels": {title: {t: s[t] for t in tags} for title, tags in panels},
    }


# ---------------------------------------------------------------- predicted spectra
def plot_predicted_spectra(
    spectra: Dict[str, np.ndarray],
    names: Sequence[str],
    out: str = "predicted.png",
    max_molecules: int = 6,
    ylabel: str = "intensity",
) -> Dict[str, object]:
    """The spectra ``spectra[m]`` (n, L) on the grids of the first ``max_molecules`` of the n
    molecules ``names``, one panel per modality (UV, IR, Raman order), one line per molecule.

    Returns ``{"out", "molecules": the names plotted, "modalities": the panels}``."""
    plt = _pyplot()
    modalities = [m for m in msp.modalities if m in spectra]
    if not modalities:
        raise ValueError(f"no spectra to plot (got {sorted(spectra)}; expected some of {list(msp.modalities)})")
    n = min(len(names), int(max_molecules))
    if n < 1:
        raise ValueError("no molecules to plot")
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(modalities), 1, figsize=(10, 2.8 * len(modalities)), squeeze=False)
    for ax, m in zip(axes[:, 0], modalities):
        x = GRIDS[m].values()
        for i in range(n):
            label = names[i] if len(names[i]) <= 40 else names[i][:37] + "..."
            ax.plot(x, np.asarray(spectra[m][i]), lw=1.0, color=colors[i % len(colors)], label=label)
        ax.set_title(f"predicted {MODALITY_LABEL[m]} spectra", fontsize=9)
        ax.set_xlabel(GRIDS[m].unit)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    more = f" (first {n} of {len(names)})" if len(names) > n else ""
    fig.suptitle(f"predicted spectra{more}", fontsize=10)
    fig.tight_layout()
    return {"out": _save(fig, out), "molecules": list(names[:n]), "modalities": modalities}
