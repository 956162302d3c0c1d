"""SpecFormer: patching, token counts, fused residual attention vs an explicit reference."""

import math

import pytest
import torch

from schnetpack_molspectra.specformer import SpecFormer
from schnetpack_molspectra.spectra.patches import n_patches


def spectra_batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(n, L, generator=g) for m, L in (("uv", 701), ("ir", 3501), ("raman", 3501))}


def test_released_patching_gives_347_tokens():
    model = SpecFormer()
    assert model.n_patches == {"uv": 69, "ir": 139, "raman": 139}
    assert model.n_tokens == 347
    assert n_patches(701, 20, 10) == 69
    # paper text: P=20, D=10 for all modalities -> 767 tokens
    paper = SpecFormer(patch_length={"uv": 20, "ir": 20, "raman": 20}, patch_stride={"uv": 10, "ir": 10, "raman": 10})
    assert paper.n_tokens == 69 + 349 + 349 == 767


def test_output_shapes_and_parameter_budget():
    model = SpecFormer(n_out=64)
    spectra = spectra_batch(3)
    rep, recon, patches = model(spectra)
    assert rep.shape == (3, 64)
    for m, n, p in (("uv", 69, 20), ("ir", 139, 50), ("raman", 139, 50)):
        assert recon[m].shape == patches[m].shape == (3, n, p)
    # patches are the unfolded input: patch i starts at i * stride
    assert torch.equal(patches["ir"][:, 2], spectra["ir"][:, 50:100])
    flatten = sum(p.numel() for p in model.pool.parameters())
    assert flatten == 347 * 128 * 64 + 64 + 2 * 64
    released = SpecFormer(n_out=256)
    n_params = sum(p.numel() for p in released.parameters())
    assert 11.5e6 < n_params < 12.2e6  # ~11.4 M in the flatten layer, ~11.8 M in all (reference)


def explicit_reference(model: SpecFormer, spectra, masks):
    """Released-style computation: explicit scores + previous scores, softmax, BatchNorm on (b, d, n)."""
    tokens = model.embed({m: model.patchify(spectra[m], m) for m in model.modalities}, masks)
    prev = None
    for layer in model.layers:
        b, n, d = tokens.shape
        h, dh = layer.n_heads, layer.head_dim
        qkv = layer.qkv(tokens).reshape(b, n, 3, h, dh)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        scores = q @ k.transpose(-1, -2) / dh**0.5
        if prev is not None:
            scores = scores + prev
        prev = scores
        att = torch.softmax(scores, -1) @ v
        x = tokens + layer.out(att.transpose(1, 2).reshape(b, n, d))
        x = layer.norm_attention(x.transpose(1, 2)).transpose(1, 2)
        x = x + layer.feed_forward(x)
        tokens = layer.norm_feed_forward(x.transpose(1, 2)).transpose(1, 2)
    return tokens


@pytest.mark.parametrize("training", [True, False])
def test_fused_residual_attention_matches_explicit(training, device):
    torch.manual_seed(0)
    model = SpecFormer(d_model=32, n_heads=4, d_ff=64, n_out=16).to(device)
    model.train(training)
    if not training:  # give BatchNorm non-trivial running statistics
        model.train()
        model({m: s.to(device) for m, s in spectra_batch(8, seed=3).items()})
        model.eval()
    spectra = {m: s.to(device) for m, s in spectra_batch(5).items()}
    masks = {m: (torch.rand(5, n) < 0.2).to(device) for m, n in model.n_patches.items()}
    embedded = model.embed({m: model.patchify(spectra[m], m) for m in model.modalities}, masks)
    reference = explicit_reference(model, spectra, masks)
    for explicit in (False, True):
        assert torch.allclose(model.encode(embedded, explicit), reference, atol=2e-5, rtol=1e-4)


def test_residual_attention_changes_the_result():
    torch.manual_seed(0)
    with_res = SpecFormer(d_model=32, n_heads=4, d_ff=64, n_out=16)
    without = SpecFormer(d_model=32, n_heads=4, d_ff=64, n_out=16, residual_attention=False)
    without.load_state_dict(with_res.state_dict())
    spectra = spectra_batch(2)
    assert not torch.allclose(with_res(spectra)[0], without(spectra)[0])


def test_masked_patches_are_zero_filled_before_embedding():
    torch.manual_seed(0)
    model = SpecFormer(d_model=16, n_heads=2, d_ff=16, n_out=8).eval()
    spectra = spectra_batch(1)
    mask = {m: torch.zeros(1, n, dtype=torch.bool) for m, n in model.n_patches.items()}
    mask["uv"][0, 5] = True
    zeroed = {m: s.clone() for m, s in spectra.items()}
    tokens_masked = model.embed({m: model.patchify(spectra[m], m) for m in model.modalities}, mask)
    tokens_plain = model.embed({m: model.patchify(zeroed[m], m) for m in model.modalities})
    assert torch.allclose(tokens_masked[0, 5], model.position["uv"][5] + model.patch_embedding["uv"].bias)
    assert torch.equal(tokens_masked[0, 6], tokens_plain[0, 6])  # overlapping neighbour keeps its data


def test_attention_maps_per_head_are_distributions():
    model = SpecFormer(d_model=32, n_heads=4, d_ff=32, n_out=8).eval()
    maps = model.attention_maps(spectra_batch(2))
    assert len(maps) == 3
    assert maps[0].shape == (2, 4, 347, 347)
    assert torch.allclose(maps[-1].sum(-1), torch.ones(2, 4, 347), atol=1e-5)


def test_mean_pooling_and_modality_subset():
    model = SpecFormer(modalities=["uv", "raman"], pooling="mean", d_model=16, n_heads=2, d_ff=16, n_out=8)
    assert model.n_tokens == 69 + 139
    assert sum(p.numel() for p in model.pool.parameters()) == 16 * 8 + 8 + 16
    rep, recon, _ = model({k: v for k, v in spectra_batch(2).items() if k != "ir"})
    assert rep.shape == (2, 8) and set(recon) == {"uv", "raman"}


def test_bad_configuration_and_wrong_length_are_named():
    with pytest.raises(ValueError, match="unknown modalities"):
        SpecFormer(modalities=["nmr"])
    with pytest.raises(ValueError, match="pooling"):
        SpecFormer(pooling="cls")
    model = SpecFormer(d_model=16, n_heads=2, d_ff=16)
    spectra = spectra_batch(1)
    spectra["ir"] = spectra["ir"][:, :3000]
    with pytest.raises(ValueError, match="ir spectrum has 3000 points"):
        model(spectra)


def test_gradients_reach_every_parameter(device):
    torch.manual_seed(0)
    model = SpecFormer(d_model=16, n_heads=4, d_ff=16, n_out=8).to(device)
    rep, recon, _ = model({m: s.to(device) for m, s in spectra_batch(3).items()})
    # random weights: the plain sum of a LayerNorm output does not depend on its input
    (rep * torch.randn_like(rep)).sum().add(sum(r.sum() for r in recon.values())).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_initialisation_is_the_released_one():
    """Xavier-uniform weights (q, k and v each as its own d_model x d_model matrix) and zero biases
    for q/k/v, feed-forward, flatten head, patch embeddings and reconstruction heads."""
    torch.manual_seed(0)
    spec = SpecFormer(d_model=32, n_heads=4, d_ff=64)

    def check(weight, bias):
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        fan_out, fan_in = weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
        assert float(weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.15)
        assert bias is None or torch.count_nonzero(bias) == 0

    for layer in spec.layers:
        for block, bias in zip(layer.qkv.weight.chunk(3), layer.qkv.bias.chunk(3)):
            check(block, bias)
        for linear in (layer.feed_forward[0], layer.feed_forward[3]):
            check(linear.weight, linear.bias)
    check(spec.pool[0].weight, spec.pool[0].bias)  # flatten head: 347 * 32 -> 128
    for m in spec.modalities:
        check(spec.patch_embedding[m].weight, spec.patch_embedding[m].bias)
        check(spec.reconstruction[m].weight, spec.reconstruction[m].bias)
