"""Spectra augmentation: the batched re-broadening (spectra.perturb), SpectraAugmentation on a collated
batch, molecules without a modality, and a pre-training run that logs clean and perturbed top-1."""

import json
import os

import numpy as np
import pytest
import torch
from schnetpack import properties as structure
from schnetpack.data import ASEAtomsData
from schnetpack.data.loader import _atoms_collate_fn
from spktrain import TINY_PRETRAIN, TINY_SPECFORMER, run_dir, scalar_values, spktrain

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.default import ensure_default_dataset
from schnetpack_molspectra.data.sticks import load_sticks, sticks_to_spectra
from schnetpack_molspectra.spectra.grids import GRIDS
from schnetpack_molspectra.spectra.perturb import broaden_lines, instrument, move_lines
from schnetpack_molspectra.transform import CountSticks, MaskSpectraPatches, NormalizeSpectra, SpectraAugmentation


@pytest.fixture(scope="module")
def molecules():
    return list(load_sticks(n_molecules=6))


def flat_lines(molecules, key):
    positions = torch.tensor(np.concatenate([m.frequencies for m in molecules]), dtype=torch.float64)
    intensities = torch.tensor(np.concatenate([getattr(m, key) for m in molecules]), dtype=torch.float64)
    counts = torch.tensor([len(m.frequencies) for m in molecules])
    return positions, intensities, torch.repeat_interleave(torch.arange(len(molecules)), counts)


def test_lorentzian_lines_reproduce_the_database_broadening(molecules):
    positions, intensities, mol = flat_lines(molecules, "raman_activities")
    n, grid = len(molecules), torch.tensor(GRIDS["raman"].values())
    ones = torch.ones(n, dtype=torch.float64)
    out = broaden_lines(positions, intensities, mol, n, grid, 12.0 * ones, ones, chunk=17)  # chunks split molecules
    reference = np.stack([sticks_to_spectra(m)[msp.raman_spectrum][0] for m in molecules])
    np.testing.assert_allclose(out.numpy(), reference, rtol=1e-4, atol=1e-6 * reference.max())
    gauss = broaden_lines(positions, intensities, mol, n, grid, 12.0 * ones, 0 * ones)
    # a Gaussian line of the same FWHM has the same area but a higher, narrower peak
    assert torch.allclose(gauss.sum(-1), out.sum(-1), rtol=0.02)
    assert (gauss.amax(-1) > out.amax(-1)).all()


def test_moved_lines_scale_per_molecule_and_shift_per_line(molecules):
    positions, _, mol = flat_lines(molecules, "ir_intensities")
    g = torch.Generator().manual_seed(0)
    scaled = move_lines(positions, mol, len(molecules), scale=(0.95, 1.05), generator=g)
    ratio = scaled / positions
    for i in range(len(molecules)):  # one factor per molecule, different between molecules
        assert torch.allclose(ratio[mol == i], ratio[mol == i][0])
    assert ratio.min() >= 0.95 and ratio.max() <= 1.05 and len(set(ratio.round(decimals=6).tolist())) == len(molecules)
    anharmonic = move_lines(positions, mol, len(molecules), anharmonic=0.03, generator=g) / positions
    assert not torch.allclose(anharmonic[mol == 0], anharmonic[mol == 0][0])  # frequency-dependent
    shifted = move_lines(positions, mol, len(molecules), shift=5.0, generator=g) - positions
    assert 2.0 < float(shifted.std()) < 8.0


def test_instrument_adds_a_baseline_and_noise_and_stays_non_negative():
    spectra = torch.zeros(4, 500)
    spectra[:, 250] = 1.0
    g = torch.Generator().manual_seed(1)
    out = instrument(spectra, baseline=0.2, noise=0.0, generator=g)
    assert (out[:, :240] > 0).all() and (out <= 1.0 + 0.2 + 1e-6).all()  # a smooth positive baseline
    noisy = instrument(spectra, baseline=0.0, noise=0.05, generator=g)
    assert (noisy >= 0).all() and float((noisy[:, :240] > 0).float().mean()) > 0.3


def collated(molecules):
    """A batch as the datamodule gives it: the database's properties, CountSticks, normalised."""
    items = []
    for i, m in enumerate(molecules):
        props = {k: torch.as_tensor(v) for k, v in sticks_to_spectra(m).items()}
        props.pop(msp.modality_missing("uv"))
        props[structure.n_atoms] = torch.tensor([len(m.atoms)])
        props[structure.R] = torch.as_tensor(m.atoms.positions)
        props[structure.idx] = torch.tensor([i])
        items.append(NormalizeSpectra()(CountSticks()(props)))
    return _atoms_collate_fn(items)


def test_augmentation_off_changes_nothing_and_on_changes_the_chosen(molecules):
    batch = collated(molecules)
    assert batch[msp.n_vib_sticks].tolist() == [len(m.frequencies) for m in molecules]
    assert SpectraAugmentation(p=0.0)(batch) is batch
    out = SpectraAugmentation(p=1.0)(batch, generator=torch.Generator().manual_seed(0))
    for m in msp.modalities:
        key = msp.spectrum_keys[m]
        assert out[key].shape == batch[key].shape and torch.isfinite(out[key]).all()
        assert (out[key] - batch[key]).abs().amax(-1).min() > 1e-3  # every molecule's spectrum differs
    assert torch.equal(batch[msp.ir_spectrum], collated(molecules)[msp.ir_spectrum])  # input not changed
    generator, fractions = torch.Generator().manual_seed(3), []
    for _ in range(20):
        half = SpectraAugmentation(p=0.5)(batch, generator=generator)
        changed = (half[msp.ir_spectrum] - batch[msp.ir_spectrum]).abs().amax(-1) > 1e-3
        # what is changed for a molecule, is changed in every modality
        assert torch.equal(changed, (half[msp.raman_spectrum] - batch[msp.raman_spectrum]).abs().amax(-1) > 1e-3)
        fractions.append(float(changed.float().mean()))
    assert 0.3 < np.mean(fractions) < 0.7


def test_clean_settings_reproduce_the_batch_and_ir_raman_move_together(molecules):
    batch = collated(molecules)
    clean = SpectraAugmentation(
        p=1.0,
        vib_scale=(1.0, 1.0),
        anharmonic=0.0,
        vib_shift=0.0,
        vib_width=(15.0, 15.0),
        lorentzian_fraction=(1.0, 1.0),
        intensity_noise=0.0,
        baseline=0.0,
        noise=0.0,
    )
    out = clean(batch)
    assert torch.allclose(out[msp.ir_spectrum], batch[msp.ir_spectrum], atol=1e-4)
    scaled = SpectraAugmentation(
        p=1.0, vib_scale=(1.03, 1.03), anharmonic=0.0, vib_shift=0.0, intensity_noise=0.0, baseline=0.0, noise=0.0
    )(batch)
    grid = torch.tensor(GRIDS["ir"].values())
    for key in (msp.ir_spectrum, msp.raman_spectrum):  # peaks 3 % higher in both
        before, after = grid[batch[key].argmax(-1)], grid[scaled[key].argmax(-1)]
        assert torch.allclose(after / before, torch.full_like(before, 1.03), atol=0.006)


def test_augmentation_without_sticks_is_a_clear_error(molecules):
    batch = collated(molecules)
    del batch[msp.n_uv_sticks]
    with pytest.raises(KeyError, match="n_uv_sticks.*CountSticks"):
        SpectraAugmentation(p=0.5)(batch)


def test_a_missing_modality_is_withheld_in_every_draw():
    inputs = {structure.idx: torch.tensor([3])}
    inputs[msp.modality_missing("uv")] = torch.tensor([True])
    inputs[msp.modality_missing("ir")] = torch.tensor([False])
    inputs[msp.modality_missing("raman")] = torch.tensor([False])
    transform = MaskSpectraPatches(modality_dropout=0.0)
    seen = set()
    for _ in range(50):
        out = transform(dict(inputs))
        assert bool(out[msp.modality_dropped("uv")])
        seen.add((bool(out[msp.modality_dropped("ir")]), bool(out[msp.modality_dropped("raman")])))
    assert seen == {(False, False)}  # p = 0: only the missing one
    transform = MaskSpectraPatches(modality_dropout=0.9)
    for _ in range(50):  # never all: one of the two it has is kept
        out = transform(dict(inputs))
        assert bool(out[msp.modality_dropped("uv")])
        assert not (bool(out[msp.modality_dropped("ir")]) and bool(out[msp.modality_dropped("raman")]))
    inputs[msp.modality_missing("ir")] = inputs[msp.modality_missing("raman")] = torch.tensor([True])
    with pytest.raises(ValueError, match="molecule 3 has none of the spectra"):
        transform(dict(inputs))


@pytest.mark.slow
def test_pretraining_with_augmentation_logs_clean_and_perturbed_top1(tmp_path):
    db = ensure_default_dataset(n_molecules=40)
    assert {msp.vib_frequencies, msp.uv_strengths} <= set(ASEAtomsData(db).available_properties)
    spktrain(
        tmp_path,
        "experiment=molspectra_pretrain",
        f"data.datapath={db}",
        "globals.spectra_augmentation=0.8",
        *TINY_PRETRAIN,
        *TINY_SPECFORMER,
    )
    run = run_dir(tmp_path)
    values = scalar_values(run)
    assert len(values["val_perturbed_top1"]) >= 1 and len(values["val_contrastive_top1"]) >= 1
    assert np.isfinite(values["train_loss"]).all()
    with open(os.path.join(run, "pretraining_summary.json")) as f:
        summary = json.load(f)
    end = summary["end"]
    assert 0.0 <= end["retrieval_top1_perturbed"] <= 1.0 and "retrieval_top1" in end
    with open(os.path.join(run, "pretraining_summary.txt")) as f:
        assert "perturbed spectra" in f.read()
