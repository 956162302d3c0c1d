"""Transforms: normalisation, patch masking ratio, coordinate noise, spectra validation."""

import pytest
import torch
from schnetpack import properties as structure

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.spectra.checks import SpectrumError
from schnetpack_molspectra.transform import (
    GaussianCoordinateNoise,
    MaskSpectraPatches,
    NormalizeSpectra,
    ValidateSpectra,
)


def molecule_inputs(idx=7):
    g = torch.Generator().manual_seed(idx)
    return {
        structure.idx: torch.tensor([idx]),
        structure.R: torch.randn(5, 3, generator=g, dtype=torch.float64),
        msp.uv_spectrum: torch.rand(1, 701, generator=g),
        msp.ir_spectrum: 100 * torch.rand(1, 3501, generator=g),
        msp.raman_spectrum: 10 * torch.rand(1, 3501, generator=g),
    }


def test_log10_normalisation_with_per_modality_scale():
    inputs = molecule_inputs()
    raw = {k: inputs[k].clone() for k in msp.spectrum_keys.values()}
    out = NormalizeSpectra(scale={"uv": 1e4})(inputs)
    assert torch.allclose(out[msp.ir_spectrum], torch.log10(1 + raw[msp.ir_spectrum]))
    assert torch.allclose(out[msp.uv_spectrum], torch.log10(1 + 1e4 * raw[msp.uv_spectrum]))


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.3])
def test_mask_ratio_is_exact_per_modality(ratio):
    transform = MaskSpectraPatches(ratio=ratio)
    seen = torch.zeros(139)
    for _ in range(200):
        out = transform(molecule_inputs())
        for m, n in (("uv", 69), ("ir", 139), ("raman", 139)):
            mask = out[msp.patch_mask(m)]
            assert mask.shape == (1, n) and mask.dtype == torch.bool
            assert int(mask.sum()) == n - int(n * (1 - ratio))
        seen += out[msp.patch_mask("ir")][0].float()
    assert (seen > 0).all()  # positions vary between molecules: every patch gets masked sometimes


def test_mask_geometry_follows_patch_config():
    transform = MaskSpectraPatches(
        patch_length={"uv": 20, "ir": 20, "raman": 20}, patch_stride={"uv": 10, "ir": 10, "raman": 10}
    )
    out = transform(molecule_inputs())
    assert out[msp.patch_mask("ir")].shape == (1, 349)
    with pytest.raises(ValueError, match="mask ratio"):
        MaskSpectraPatches(ratio=1.0)


def test_coordinate_noise_is_the_denoising_target():
    torch.manual_seed(0)
    noise_tf = GaussianCoordinateNoise(sigma=0.04)
    samples = []
    for _ in range(300):
        inputs = molecule_inputs()
        clean = inputs[structure.R].clone()
        out = noise_tf(inputs)
        assert torch.allclose(out[structure.R] - clean, out[msp.position_noise])
        samples.append(out[msp.position_noise])
    noise = torch.cat(samples)
    assert abs(noise.std().item() - 0.04) < 0.003
    assert abs(noise.mean().item()) < 0.003


def test_validation_accepts_good_spectra():
    inputs = molecule_inputs()
    assert ValidateSpectra(source="x.db")(inputs) is inputs


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d.__setitem__(msp.ir_spectrum, torch.rand(1, 3500)), "ir spectrum has 3500 points, expected 3501"),
        (lambda d: d[msp.uv_spectrum].__setitem__((0, 10), float("nan")), "uv spectrum has 1 non-finite"),
        (lambda d: d[msp.raman_spectrum].__setitem__((0, 3), float("inf")), "raman spectrum has 1 non-finite"),
        (
            lambda d: d[msp.ir_spectrum].__setitem__((0, 42), -1.0),
            "ir spectrum has 1 negative intensities, first at point 42",
        ),
        (lambda d: d.pop(msp.raman_spectrum), "raman spectrum 'raman_spectrum' is missing"),
    ],
)
def test_validation_names_file_molecule_and_problem(corrupt, message):
    inputs = molecule_inputs(idx=13)
    corrupt(inputs)
    with pytest.raises(SpectrumError) as err:
        ValidateSpectra(source="/data/qm9s.db")(inputs)
    assert str(err.value).startswith("/data/qm9s.db: molecule 13:")
    assert message in str(err.value)


def test_modality_dropout_withholds_whole_modalities_never_all():
    torch.manual_seed(0)
    transform = MaskSpectraPatches(0.1, modality_dropout=0.5)
    outputs = [transform({}) for _ in range(3000)]
    draws = torch.stack([torch.cat([out[msp.modality_dropped(m)] for m in transform.modalities]) for out in outputs])
    assert draws.dtype == torch.bool and not draws.all(1).any()  # never all three
    # each withheld with p = 0.5, less the all-withheld draws (1/8) that keep one of the three
    torch.testing.assert_close(draws.float().mean(0), torch.full((3,), 0.5 - 0.125 / 3), atol=0.03, rtol=0)
    assert len({tuple(row.tolist()) for row in draws}) == 7  # every non-empty subset of spectra is given
    assert not any(k.endswith("_dropped") for k in MaskSpectraPatches(0.1)({}))  # off: the released behaviour
    with pytest.raises(ValueError, match="modality dropout"):
        MaskSpectraPatches(0.1, modality_dropout=1.0)
