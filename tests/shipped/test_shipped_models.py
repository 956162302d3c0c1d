"""The pre-trained models shipped inside the package, by name: in every experiment, in identify, in
the Python API, listed with their model cards; a bad name lists the shipped ones."""

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from schnetpack_molspectra.cli.spkspectra import main as spkspectra
from schnetpack_molspectra.pretrained import model_from_weights, read_weights
from schnetpack_molspectra.shipped import UnknownModelError, available_models, model_card, model_file

SHIPPED = ["denoise-painn-qm9", "molspectra-painn-qm9"]


def compose_model(experiment, *overrides):
    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides])
    return instantiate(cfg.model)


def test_the_shipped_models_are_in_the_package_and_small():
    import os

    assert set(SHIPPED) <= set(available_models())
    assert sum(os.path.getsize(model_file(n)) for n in available_models()) < 30e6
    for name in SHIPPED:
        stored = read_weights(model_file(name))  # weights only: no code is unpickled
        halves = [v for v in stored["state_dict"].values() if v.is_floating_point()]
        assert halves and all(v.dtype in (torch.float16, torch.float64) for v in halves)
        card = stored["card"]
        assert (
            card["name"] == name and card["pieces"] and all(p["steps"] > 0 and p["wall_s"] > 0 for p in card["pieces"])
        )
        assert "held out" in card["trained_on"] or "none held out" in card["trained_on"]


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("experiment", ["qm9_finetune", "md17_finetune", "molspectra_pretrain", "denoise_pretrain"])
def test_a_name_works_wherever_a_path_does(name, experiment):
    """``globals.pretrained_model=<name>`` in every experiment takes the shipped encoder and denoising head."""
    shipped = model_from_weights(name)
    model = compose_model(experiment, f"globals.pretrained_model={name}")
    for key, value in shipped.representation.state_dict().items():
        torch.testing.assert_close(model.representation.state_dict()[key], value)
    heads = [m for m in model.output_modules if type(m).__name__ == "DenoisingHead"]
    if heads:
        shipped_head = next(m for m in shipped.output_modules if type(m).__name__ == "DenoisingHead")
        assert int(heads[0].scale.count) == int(shipped_head.scale.count) > 0


def test_a_bad_name_lists_the_shipped_ones(capsys):
    # hydra wraps the error of the model it builds; the message stays
    with pytest.raises(
        Exception, match="named 'molspectra-painn-qm10' is shipped; available: denoise-painn-qm9, molspectra"
    ):
        compose_model("qm9_finetune", "globals.pretrained_model=molspectra-painn-qm10")
    with pytest.raises(UnknownModelError, match="runs/x/best_model does not exist .shipped models by name: denoise"):
        model_from_weights("runs/x/best_model")
    assert spkspectra(["models", "nope"]) == 2
    assert "no pre-trained model named 'nope' is shipped; available: denoise-painn-qm9" in capsys.readouterr().err


def test_models_command_prints_the_cards(capsys):
    assert spkspectra(["models"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        card = model_card(name)
        assert f"{name}: {card['description']}" in out
        assert f"{sum(p['steps'] for p in card['pieces']):,} steps" in out
