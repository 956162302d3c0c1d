"""``spkspectra plot attention|tsne|mpr|curves`` write non-empty PNGs of a sensible size."""

import os

import pytest
from identify_helpers import tiny  # noqa: F401  (the session fixture)

from schnetpack_molspectra.cli.spkspectra import main


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
    for step in range(0, 50, 5):
        for tag, value in (
            ("train_loss", 3.0 / (1 + step)),
            ("val_loss", 3.2 / (1 + step / 2)),
            ("val_contrastive_top1", step / 50),
            ("val_mpr_ir_mse", 0.1 / (1 + step)),
            ("lr_schedule", 1e-3),
        ):
            writer.add_scalar(tag, value, step)
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


def test_plot_errors_are_named(tiny, run, tmp_path, capsys):
    assert (
        main(["plot", "tsne", run, "--data", tiny["db"], "--color-by", "homo", "--out", str(tmp_path / "x.png")]) == 2
    )
    assert "no property 'homo'" in capsys.readouterr().err
    assert main(["plot", "curves", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
