"""Loss terms: contrastive against a hand-computed value, MPR on masked patches only."""
import math

import numpy as np
import pytest
import torch

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.task import InfoNCELoss, MaskedPatchReconstructionOutput, RetrievalAccuracy, WarmupCosineLR


def hand_infonce(a, b, tau):
    """-mean_i log softmax_j(cos(a_i, b_j) / tau)[i], written out with numpy."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    total = 0.0
    for i in range(len(a)):
        logits = [a[i] @ b[j] / (np.linalg.norm(a[i]) * np.linalg.norm(b[j])) / tau for j in range(len(b))]
        total += -(logits[i] - math.log(sum(math.exp(l) for l in logits)))
    return total / len(a)


def test_contrastive_loss_matches_hand_computation():
    a = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    b = [[0.5, 0.1], [0.2, 1.0], [-1.0, 0.3]]
    tau = 0.07
    one_way = InfoNCELoss(temperature=tau)(torch.tensor(a), torch.tensor(b))
    assert one_way.item() == pytest.approx(hand_infonce(a, b, tau), rel=1e-5)
    symmetric = InfoNCELoss(temperature=tau, symmetric=True)(torch.tensor(a), torch.tensor(b))
    expected = 0.5 * (hand_infonce(a, b, tau) + hand_infonce(b, a, tau))
    assert symmetric.item() == pytest.approx(expected, rel=1e-5)
    assert one_way.item() != pytest.approx(symmetric.item())


def test_contrastive_loss_is_low_for_aligned_pairs():
    z = torch.randn(16, 8)
    aligned = InfoNCELoss(0.07)(z, 2 * z)
    shuffled = InfoNCELoss(0.07)(z, z[torch.randperm(16)])
    assert aligned < 0.1 < shuffled
    top1 = RetrievalAccuracy()
    top1(z, 2 * z)
    assert top1.compute() == 1.0


def test_mpr_sums_per_modality_mse_over_masked_patches():
    rng = torch.Generator().manual_seed(0)
    pred = {}
    expected = 0.0
    for m, p in (("uv", 20), ("ir", 50)):
        recon, target = torch.rand(7, p, generator=rng), torch.rand(7, p, generator=rng)
        pred[msp.reconstructed_patches(m)], pred[msp.target_patches(m)] = recon, target
        expected += ((recon - target) ** 2).mean().item()
    out = MaskedPatchReconstructionOutput(modalities=["uv", "ir"], loss_weight=2.0)
    assert out.calculate_loss(pred).item() == pytest.approx(2 * expected, rel=1e-6)
    pred[msp.reconstructed_patches("uv")] = torch.zeros(0, 20)  # mask ratio 0: no masked patch
    pred[msp.target_patches("uv")] = torch.zeros(0, 20)
    assert torch.isfinite(out.calculate_loss(pred))
    with pytest.raises(KeyError, match="raman"):
        MaskedPatchReconstructionOutput(modalities=["raman"]).calculate_loss(pred)


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=4e-4)
    sched = WarmupCosineLR(opt, warmup_steps=10, total_steps=110, min_lr=1e-7)
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(4e-5)
    assert lrs[9] == pytest.approx(4e-4)
    assert lrs[60] == pytest.approx(1e-7 + (4e-4 - 1e-7) * 0.5, rel=1e-6)
    assert lrs[115] == pytest.approx(1e-7)
