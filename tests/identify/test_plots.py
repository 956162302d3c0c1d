"""``spkspectra plot attention|tsne|mpr|curves``: PNGs of a sensible size, and what each picture shows
checked against its source (the logged scalars, the database, SpecFormer's attention and masks)."""

import os

import numpy as np
import pytest
from identify_helpers import tiny  # noqa: F401  (the session fixture)

from schnetpack_molspectra import plots
from schnetpack_molspectra.cli.spkspectra import main

LOGGED = {
    "train_loss": lambda step: 3.0 / (1 + step),
    "val_loss": lambda step: 3.2 / (1 + step / 2),
    "val_contrastive_top1": lambda step: step / 50,
    "val_mpr_ir_mse": lambda step: 0.1 / (1 + step),
    "lr_schedule": lambda step: 1e-3,
}
STEPS = range(0, 50, 5)


def png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.fixture(scope="module")
def run(tiny):
    """The three-modality tiny model's folder, with TensorBoard logs of a short fake run."""
    from torch.utils.tensorboard import SummaryWriter

    folder = os.path.dirname(tiny["models"]["all"])
    writer = SummaryWriter(os.path.join(folder, "tensorboard", "default", "version_0"))
    for step in STEPS:
        for tag, value in LOGGED.items():
            writer.add_scalar(tag, value(step), step)
    writer.close()
    return folder


@pytest.mark.parametrize(
    "kind, minimum", [("attention", (500, 250)), ("tsne", (700, 300)), ("mpr", (600, 500)), ("curves", (600, 300))]
)
def test_plot_commands_write_pngs(tiny, run, tmp_path, capsys, kind, minimum):
    out = tmp_path / f"{kind}.png"
    extra = [] if kind == "curves" else ["--data", tiny["db"]] + (["--color-by", "n_atoms"] if kind == "tsne" else [])
    assert main(["plot", kind, run, "--out", str(out), *extra]) == 0
    assert os.path.getsize(out) > 10_000
    width, height = png_size(out)
    assert minimum[0] <= width <= 4000 and minimum[1] <= height <= 4000, (width, height)
    printed = capsys.readouterr().out
    assert str(out) in printed
    if kind == "attention":
        assert "head 1: most attended key patch" in printed
    if kind == "mpr":
        assert "ir: MSE on masked patches" in printed


def test_curves_plot_every_logged_value_in_its_panel(run, tmp_path):
    result = plots.plot_curves(run, out=str(tmp_path / "c.png"))
    plotted = {tag: points for panel in result["panels"].values() for tag, points in panel.items()}
    assert set(plotted) == set(LOGGED)  # each logged scalar in one panel, none invented
    for tag, points in plotted.items():
        steps, values = zip(*points)
        assert list(steps) == list(STEPS)
        np.testing.assert_allclose(values, [LOGGED[tag](s) for s in STEPS], rtol=1e-6)
    assert list(result["panels"]["3D->spectra top-1 (batch)"]) == ["val_contrastive_top1"]
    assert list(result["panels"]["learning rate"]) == ["lr_schedule"]


def test_attention_masses_are_distributions_over_the_modalities(tiny, run, tmp_path):
    from schnetpack_molspectra.identify import load_model

    sf = load_model(tiny["models"]["all"]).specformer
    result = plots.plot_attention(run, out=str(tmp_path / "a.png"), data=tiny["db"], index=1)
    n_heads = next(m.n_heads for m in sf.layers[-1].modules() if hasattr(m, "n_heads"))
    assert sorted(result["block_mass"]) == list(range(n_heads))
    for head, mass in result["block_mass"].items():
        mass = np.asarray(mass)
        assert mass.shape == (len(sf.modalities), len(sf.modalities))
        np.testing.assert_allclose(mass.sum(1), 1.0, rtol=1e-5)  # each query row's attention sums to one
        assert result["top_key"][head].split()[0] in {plots.MODALITY_LABEL[m] for m in sf.modalities}


def test_mpr_masks_as_many_patches_as_the_ratio_says(tiny, run, tmp_path):
    from schnetpack_molspectra.identify import load_model

    sf = load_model(tiny["models"]["all"]).specformer
    result = plots.plot_mpr(run, out=str(tmp_path / "m.png"), data=tiny["db"], mask_ratio=0.5)
    for m in sf.modalities:
        n = sf.n_patches[m]
        assert result["errors"][m]["masked_patches"] == n - int(n * 0.5)
        assert np.isfinite(result["errors"][m]["mse"]) and result["errors"][m]["mse_zero"] >= 0


def test_tsne_colours_each_molecule_by_its_database_value(tiny, run, tmp_path):
    from ase.db import connect

    with connect(tiny["db"]) as db:
        n_atoms = [row.natoms for row in db.select()]
    result = plots.plot_tsne(run, out=str(tmp_path / "t.png"), data=tiny["db"], color_by="n_atoms")
    assert result["molecules"] == len(n_atoms)
    np.testing.assert_array_equal(result["colour"], n_atoms)
    for side in ("spectra", "structures"):
        xy = result["xy"][side]
        assert xy.shape == (len(n_atoms), 2) and np.isfinite(xy).all() and xy.std(0).min() > 0


def test_plot_errors_are_named(tiny, run, tmp_path, capsys):
    assert (
        main(["plot", "tsne", run, "--data", tiny["db"], "--color-by", "homo", "--out", str(tmp_path / "x.png")]) == 2
    )
    assert "no property 'homo'" in capsys.readouterr().err
    assert main(["plot", "curves", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
