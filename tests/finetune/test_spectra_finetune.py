"""Spectrum prediction: the similarity measures, the losses and metrics built on them, SpectraHead, and
``spktrain experiment=spectra_finetune`` from a shipped encoder on the default data."""

import numpy as np
import pytest
import schnetpack as spk
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from schnetpack.data import ASEAtomsData
from scipy.stats import spearmanr
from spktrain import run_dir, scalar_values, spktrain

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.atomistic import SpectraHead
from schnetpack_molspectra.data.inputs import smiles_to_atoms
from schnetpack_molspectra.pretrained import representation_state, stored_state
from schnetpack_molspectra.shipped import model_file
from schnetpack_molspectra.spectra.broadening import broaden
from schnetpack_molspectra.spectra.grids import IR_GRID
from schnetpack_molspectra.spectra.perturb import normalize_spectrum
from schnetpack_molspectra.spectra.similarity import (
    cosine_similarity,
    spearman_correlation,
    spectral_information_divergence,
    spectral_information_similarity,
)
from schnetpack_molspectra.train.losses import SpectralInformationDivergenceLoss, SpectrumMSELoss, spectrum_loss
from schnetpack_molspectra.train.metrics import SpectralSimilarity


def _spectra(rng, n):
    """n broadened IR spectra of 3-12 random lines, (n, 3501) float64."""
    rows = []
    for _ in range(n):
        k = rng.integers(3, 12)
        rows.append(broaden(rng.uniform(600, 3900, k), rng.uniform(0.1, 50, k), IR_GRID, 15.0)[0])
    return torch.as_tensor(np.stack(rows), dtype=torch.float64)


def test_measures_of_equal_and_different_spectra():
    rng = np.random.default_rng(0)
    a, b = _spectra(rng, 4), _spectra(rng, 4)
    assert torch.allclose(
        spectral_information_divergence(a, 7.0 * a), torch.zeros(4, dtype=torch.float64), atol=1e-9
    )  # scale-free
    assert torch.allclose(spectral_information_similarity(a, a), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(cosine_similarity(a, a), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(spearman_correlation(a, a), torch.ones(4, dtype=torch.float64))
    sid = spectral_information_divergence(a, b)
    assert (sid > 0.05).all() and torch.allclose(sid, spectral_information_divergence(b, a))  # symmetric
    sis = spectral_information_similarity(a, b)
    assert ((sis > 0) & (sis < 1)).all() and torch.allclose(sis, 1 / (1 + sid))
    # a spectrum with its lines 40 cm^-1 away is less alike than one with them 5 cm^-1 away
    lines, heights = rng.uniform(800, 3500, 6), rng.uniform(1, 10, 6)
    near, far = (torch.as_tensor(broaden(lines + d, heights, IR_GRID, 15.0)) for d in (5.0, 40.0))
    ref = torch.as_tensor(broaden(lines, heights, IR_GRID, 15.0))
    for measure in (spectral_information_similarity, cosine_similarity, spearman_correlation):
        assert measure(near, ref) > measure(far, ref)


def test_spearman_is_scipys():
    x, y = torch.rand(3, 200, dtype=torch.float64), torch.rand(3, 200, dtype=torch.float64)
    expected = [spearmanr(x[i], y[i]).statistic for i in range(3)]
    assert np.allclose(spearman_correlation(x, y).numpy(), expected)


def test_losses_and_metrics_leave_out_molecules_without_the_spectrum():
    rng = np.random.default_rng(1)
    target = _spectra(rng, 3)
    target[1] = 0.0  # no spectrum of this modality (e.g. UV not computed)
    pred = normalize_spectrum(_spectra(rng, 3), "area").requires_grad_(True)
    for loss_fn in (SpectralInformationDivergenceLoss(), SpectrumMSELoss(), spectrum_loss("mse")):
        loss = loss_fn(pred, target)
        loss.backward()
        assert torch.isfinite(loss) and loss > 0
        assert pred.grad[1].abs().sum() == 0 and pred.grad[0].abs().sum() > 0
        pred.grad = None
    kept = [0, 2]
    expected = spectral_information_divergence(pred[kept], target[kept]).mean()
    assert torch.allclose(SpectralInformationDivergenceLoss()(pred, target), expected)
    # no molecule with the spectrum: zero, with a graph (every DDP rank runs the same backward)
    empty = SpectralInformationDivergenceLoss()(pred, torch.zeros_like(target))
    assert empty == 0 and empty.requires_grad

    metric = SpectralSimilarity("sis")
    metric.update(pred[:2], target[:2])
    metric.update(pred[2:], target[2:])
    per_molecule = spectral_information_similarity(pred[kept].detach(), target[kept])
    assert torch.allclose(metric.compute().double(), per_molecule.mean(), atol=1e-6)  # molecule-weighted
    with pytest.raises(ValueError, match="unknown spectral similarity 'sid'"):
        SpectralSimilarity("sid")
    with pytest.raises(ValueError, match="unknown spectrum loss 'l1'"):
        spectrum_loss("l1")


@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_spectra_head_predicts_area_normalised_spectra_that_ignore_atom_order(aggregation):
    torch.manual_seed(0)
    head = SpectraHead(n_in=8, modalities=("uv", "ir", "raman"), n_hidden=16, aggregation_mode=aggregation)
    features = torch.randn(7, 8)
    inputs = {
        msp.scalar_representation: features,
        spk.properties.idx_m: torch.tensor([0, 0, 0, 1, 1, 1, 1]),
        spk.properties.n_atoms: torch.tensor([3, 4]),
    }
    out = head(dict(inputs))
    for m, length in (("uv", 701), ("ir", 3501), ("raman", 3501)):
        spectrum = out[msp.spectrum_keys[m]]
        assert spectrum.shape == (2, length) and (spectrum > 0).all()
        assert torch.allclose(spectrum.sum(-1), torch.ones(2))
    shuffled = dict(inputs, **{msp.scalar_representation: features[[2, 0, 1, 6, 3, 5, 4]]})
    again = head(shuffled)
    assert torch.allclose(again[msp.ir_spectrum], out[msp.ir_spectrum], atol=1e-6)
    assert not torch.allclose(out[msp.ir_spectrum][0], out[msp.ir_spectrum][1])  # each molecule its own
    with pytest.raises(ValueError, match="downsample 3 does not divide the ir grid's 3500 steps"):
        SpectraHead(n_in=8, modalities=("ir",), downsample=3)
    with pytest.raises(ValueError, match="modalities must be a non-empty subset"):
        SpectraHead(n_in=8, modalities=("nmr",))


def _compose(*overrides):
    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        return compose("train", overrides=["experiment=spectra_finetune", *overrides])


def test_experiment_builds_one_output_per_modality_from_the_shipped_encoder():
    cfg = _compose("globals.pretrained_model=molspectra-painn-qm9", "globals.modalities=[uv,ir]")
    model = instantiate(cfg.model)
    stored = representation_state(model_file("molspectra-painn-qm9"), stored_state(model_file("molspectra-painn-qm9")))
    for key, value in model.representation.state_dict().items():
        assert torch.equal(value, stored[key].to(value.dtype)), key
    (head,) = [m for m in model.output_modules if isinstance(m, SpectraHead)]
    assert head.modalities == ["uv", "ir"]
    task = instantiate(cfg.task, model=model)
    assert [o.name for o in task.outputs] == [msp.uv_spectrum, msp.ir_spectrum]
    assert sorted(task.outputs[0].metrics["val"]) == ["cosine", "sis", "spearman"]
    assert instantiate(cfg.data.transforms)[1].method == "area"  # targets as SpectraHead predicts them


@pytest.mark.slow
def test_spectra_finetune_from_a_shipped_encoder_learns_on_the_default_data(tmp_path):
    """The issue's command, offline, from an empty directory: it learns (validation SID falls), logs
    SIS/cosine/Spearman per modality, and its best_model predicts area-normalised spectra."""
    spktrain(
        tmp_path,
        "experiment=spectra_finetune",
        "globals.pretrained_model=molspectra-painn-qm9",
        "data.num_train=160",
        "data.num_val=48",
        "data.num_test=16",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.max_steps=40",
        "trainer.val_check_interval=10",
        "+trainer.log_every_n_steps=5",
        timeout=600,
    )
    run = run_dir(tmp_path)
    scalars = scalar_values(run)
    losses = scalars["val_loss"]
    assert len(losses) >= 3 and losses[-1] < 0.8 * losses[0], losses
    for m in ("ir", "raman"):
        for measure in ("sis", "cosine", "spearman"):
            values = scalars[f"val_{m}_spectrum_{measure}"]
            assert 0 < values[-1] <= 1 and values[-1] > values[0], (m, measure, values)
    model = torch.load(f"{run}/best_model", weights_only=False)
    (head,) = [m for m in model.output_modules if isinstance(m, SpectraHead)]
    assert head.modalities == ["ir", "raman"]
    # SchNetPack's spkpredict returns the spectra of the fine-tuned model
    db = str(tmp_path / "molecules.db")
    ASEAtomsData.create(db, distance_unit="Ang", property_unit_dict={}).add_systems(
        [{}, {}], [smiles_to_atoms("CCO"), smiles_to_atoms("c1ccccc1")]
    )
    predict = [f"modeldir={run}", f"datapath={db}", f"outputdir={tmp_path / 'pred'}", "cutoff=5.0"]
    spktrain(tmp_path, *predict, "trainer.accelerator=cpu", command="spkpredict", timeout=300)
    predictions = torch.load(tmp_path / "pred" / "predictions.pt", weights_only=False)
    for key in (msp.ir_spectrum, msp.raman_spectrum):
        assert predictions[key].shape == (2, 3501) and torch.allclose(
            predictions[key].sum(-1), torch.ones(2, dtype=predictions[key].dtype)
        )
        assert not torch.allclose(predictions[key][0], predictions[key][1])
