"""The pre-trained models shipped inside the package, by name: in every experiment, in identify, in
the Python API, listed with their model cards; a bad name lists the shipped ones."""

import numpy as np
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

    assert {*SHIPPED, "spectra-painn-qm9"} <= set(available_models())
    assert sum(os.path.getsize(model_file(n)) for n in available_models()) < 30e6
    for name in available_models():
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


@pytest.mark.slow
def test_identify_by_name_from_all_spectra_and_from_ir_alone(tmp_path, capsys):
    """``spkspectra identify --model molspectra-painn-qm9`` from a fresh install: the spectra of 40 shipped spectra
    molecules (its stage-2 data, most of them in its training split), all three and IR alone (modality dropout),
    against their 40 structures."""
    from ase.db import connect
    from ase.io import write
    from schnetpack.data import ASEAtomsData

    import schnetpack_molspectra.properties as msp
    from schnetpack_molspectra.data.default import ensure_default_dataset

    with connect(ensure_default_dataset(n_molecules=40)) as conn:
        rows = list(conn.select())
    structures = []
    for row in rows:
        atoms = row.toatoms()
        atoms.info["smiles"] = row.smiles
        structures.append(atoms)
    write(tmp_path / "library.extxyz", structures, format="extxyz")
    hits = {}
    for given in (["uv", "ir", "raman"], ["ir"]):
        query = str(tmp_path / f"{'_'.join(given)}.db")
        ASEAtomsData.create(query, distance_unit="Ang", property_unit_dict={msp.spectrum_keys[m]: "1" for m in given})
        with connect(query, use_lock_file=False) as conn:
            for row in rows:
                conn.write(
                    row.toatoms(),
                    data={msp.spectrum_keys[m]: row.data[msp.spectrum_keys[m]] for m in given},
                    smiles=row.smiles,
                )
        out_csv = str(tmp_path / f"{'_'.join(given)}.csv")
        argv = ["identify", query, "--model", "molspectra-painn-qm9", "--library", str(tmp_path / "library.extxyz")]
        assert spkspectra([*argv, "--top-k", "5", "--csv", out_csv, "--device", "cpu", "--no-cache"]) == 0
        capsys.readouterr()
        import csv

        with open(out_csv) as f:
            table = list(csv.DictReader(f))
        assert len(table) == 5 * len(rows)
        hits[tuple(given)] = sum(r["match"] == "1" for r in table) / len(rows)  # recall@5 among 40
    # chance is 5/40 = 0.125; all three spectra of training molecules retrieve nearly always
    assert hits[("uv", "ir", "raman")] >= 0.9, hits
    assert hits[("ir",)] >= 0.6, hits  # IR alone: what modality dropout is for


def test_a_continued_pretraining_carries_specformer_too():
    """The shipped model's training goes on piece by piece: a continuation takes SpecFormer as well
    (``globals.pretrained_spectra_encoder``); a plain ``globals.pretrained_model`` takes the encoder only."""
    shipped = model_from_weights("molspectra-painn-qm9").output_modules[2].state_dict()
    for carry in (True, False):
        extra = ["+globals.pretrained_spectra_encoder=true"] if carry else []
        model = compose_model("molspectra_pretrain", "globals.pretrained_model=molspectra-painn-qm9", *extra)
        state = model.output_modules[2].state_dict()
        assert all(torch.equal(state[k], v) for k, v in shipped.items()) == carry


def test_update_card_replaces_the_card_and_keeps_weights_and_config(tmp_path):
    from schnetpack_molspectra.pretrained import save_weights, update_card

    path = str(tmp_path / "m.pt")
    module = torch.nn.Linear(3, 2)
    save_weights(path, module, config={"model": {"x": 1}}, card={"name": "m", "measured": {}})
    before = read_weights(path)
    update_card(path, {"name": "m", "measured": {"fine-tuning": "250 labels ..."}})
    after = read_weights(path)
    assert after["card"]["measured"] == {"fine-tuning": "250 labels ..."} and after["config"] == before["config"]
    assert after["state_dict"].keys() == before["state_dict"].keys()
    for key, value in before["state_dict"].items():
        assert torch.equal(after["state_dict"][key], value) and after["state_dict"][key].dtype == torch.float16


def test_predict_with_the_shipped_spectra_model_then_identify_reads_it(tmp_path, capsys):
    """The issue's command from the package alone: spectra-painn-qm9 predicts for SMILES, identify reads the
    file with the shipped embedding model and by predict-then-match, where CCO's spectra find CCO first."""
    from schnetpack_molspectra.identify import identify
    from schnetpack_molspectra.matching import identify_by_prediction

    out = tmp_path / "pred.npz"
    argv = ["predict", "--smiles", "CCO", "c1ccccc1", "--model", "spectra-painn-qm9", "--out", str(out)]
    assert spkspectra([*argv, "--device", "cpu"]) == 0
    capsys.readouterr()
    with np.load(out) as f:
        assert f["ir"].shape == f["raman"].shape == (2, 3501) and list(f["names"]) == ["CCO", "c1ccccc1"]
    library = tmp_path / "candidates.smi"
    library.write_text("CCO\nCC#N\nc1ccncc1\nO=CC(F)(F)F\n")
    embedded = identify("molspectra-painn-qm9", str(out), str(library), top_k=4, cache=False)
    assert [r.query for r in embedded] == ["CCO", "c1ccccc1"] and all(len(r.hits) == 4 for r in embedded)
    matched = identify_by_prediction("spectra-painn-qm9", str(out), str(library), top_k=4)
    assert matched[0].hits[0].smiles == "CCO" and matched[0].hits[0].score > 0.999
