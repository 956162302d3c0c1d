"""Loss terms: contrastive against a hand-computed value, MPR on masked patches only."""

import math

import numpy as np
import pytest
import torch

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.task import MaskedPatchReconstructionOutput
from schnetpack_molspectra.train import InfoNCELoss, RetrievalAccuracy, WarmupCosineLR


def hand_infonce(a, b, tau):
    """-mean_i log softmax_j(cos(a_i, b_j) / tau)[i], written out with numpy."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    total = 0.0
    for i in range(len(a)):
        logits = [a[i] @ b[j] / (np.linalg.norm(a[i]) * np.linalg.norm(b[j])) / tau for j in range(len(b))]
        total += -(logits[i] - math.log(sum(math.exp(logit) for logit in logits)))
    return total / len(a)


def test_contrastive_loss_matches_hand_computation(device):
    a = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    b = [[0.5, 0.1], [0.2, 1.0], [-1.0, 0.3]]
    tau = 0.07
    one_way = InfoNCELoss(temperature=tau)(torch.tensor(a, device=device), torch.tensor(b, device=device))
    assert one_way.item() == pytest.approx(hand_infonce(a, b, tau), rel=1e-5)
    symmetric = InfoNCELoss(temperature=tau, symmetric=True)(
        torch.tensor(a, device=device), torch.tensor(b, device=device)
    )
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


def test_mpr_sums_per_modality_mse_over_masked_patches(device):
    rng = torch.Generator().manual_seed(0)
    pred = {}
    expected = 0.0
    for m, p in (("uv", 20), ("ir", 50)):
        recon, target = torch.rand(7, p, generator=rng), torch.rand(7, p, generator=rng)
        pred[msp.reconstructed_patches(m)], pred[msp.target_patches(m)] = recon.to(device), target.to(device)
        expected += ((recon - target) ** 2).mean().item()
    out = MaskedPatchReconstructionOutput(modalities=["uv", "ir"], loss_weight=2.0)
    assert out.calculate_loss(pred).item() == pytest.approx(2 * expected, rel=1e-6)
    pred[msp.reconstructed_patches("uv")] = torch.zeros(0, 20, device=device)  # mask ratio 0: no masked patch
    pred[msp.target_patches("uv")] = torch.zeros(0, 20, device=device)
    assert torch.isfinite(out.calculate_loss(pred))
    with pytest.raises(KeyError, match="raman"):
        MaskedPatchReconstructionOutput(modalities=["raman"]).calculate_loss(pred)


def lr_trace(optimizer, scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(lrs)


def sgd(lr=4e-4):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_cosine_schedule_is_the_released_one():
    """Released: torch's cosine schedule counted from step 0, overridden by a linear warm-up."""
    for restart_mult, reference in (
        (None, lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=110, eta_min=1e-7)),
        (2, lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=110, T_mult=2, eta_min=1e-7)),
    ):
        opt = sgd()
        lrs = lr_trace(
            opt, WarmupCosineLR(opt, warmup_steps=10, total_steps=110, min_lr=1e-7, restart_mult=restart_mult), 800
        )
        ref_opt = sgd()
        ref = lr_trace(ref_opt, reference(ref_opt), 800)
        assert lrs[:10] == pytest.approx(4e-4 * np.arange(1, 11) / 10)
        if restart_mult is None:  # CosineAnnealingLR goes back up after T_max; the released runs end there
            assert lrs[10:111] == pytest.approx(ref[10:111], rel=1e-6, abs=1e-12)
            assert lrs[111:] == pytest.approx(1e-7)
        else:
            assert lrs[10:] == pytest.approx(ref[10:], rel=1e-6, abs=1e-12)
            assert lrs[110] == pytest.approx(4e-4) and lrs[330] == pytest.approx(4e-4)  # restarts at 110, 110 + 220


def test_schedule_lengths_as_fractions_of_the_run():
    released = dict(warmup_steps=1 / 70, total_steps=1 / 7, restart_mult=2)  # qm9_finetune's
    sched = WarmupCosineLR(sgd(), run_steps=700_000, **released)
    assert sched.warmup_steps == 10_000 and sched.period == pytest.approx(100_000)  # the released absolute steps
    # three cosine periods that end with the run: 5,000 molecules for 50 epochs at batch 128 (2,000 steps),
    # and 1,000 labels for 30 epochs at batch 32 (960 steps, where whole 137-step periods restarted on the last step)
    for run_steps, warmup in ((2000, 29), (960, 14)):
        opt = sgd()
        lrs = lr_trace(opt, WarmupCosineLR(opt, run_steps=run_steps, **released), run_steps)
        assert lrs[warmup - 1] == pytest.approx(4e-4) and lrs[warmup - 2] < 4e-4
        third = int(np.ceil(3 * run_steps / 7))
        assert np.all(np.diff(lrs[third:]) < 0) and lrs[-1] < 4e-4 * 1e-3  # no restart at the end
    with pytest.raises(ValueError, match="fraction of the run.*give warmup_steps in steps"):
        WarmupCosineLR(sgd(), warmup_steps=0.1, total_steps=100)


def test_task_sizes_the_schedule_from_the_trainer():
    from types import SimpleNamespace

    from schnetpack_molspectra.task import MolSpectraTask

    model = torch.nn.Linear(1, 1)
    model.required_derivatives = []
    task = MolSpectraTask(
        model,
        [],
        optimizer_args={"lr": 4e-4},
        scheduler_cls=WarmupCosineLR,
        scheduler_interval="step",
        scheduler_args=dict(warmup_steps=1 / 70, total_steps=1 / 7, restart_mult=2),
    )
    task._trainer = SimpleNamespace(estimated_stepping_batches=7000, val_check_interval=1.0)
    _, (conf,) = task.configure_optimizers()
    assert (conf["scheduler"].warmup_steps, conf["interval"]) == (100, "step") and conf[
        "scheduler"
    ].period == pytest.approx(1000)


def test_smoothed_loss_trains_with_alpha_times_the_gradient():
    """TorchMD-Net's ema_alpha_y: the value is smoothed, the gradient scaled by alpha (MD17 energy: 0.05)."""
    from schnetpack_molspectra.train import SmoothedLoss

    smoothed = SmoothedLoss(torch.nn.MSELoss(), alpha=0.05)
    values = []
    for target in (1.0, 3.0):
        x = torch.zeros(4, requires_grad=True)
        loss = smoothed(x, torch.full((4,), target))
        (grad,) = torch.autograd.grad(loss, x)
        (plain,) = torch.autograd.grad(torch.nn.functional.mse_loss(x, torch.full((4,), target)), x)
        assert torch.allclose(grad, 0.05 * plain)
        values.append(float(loss.detach()))
    assert values == pytest.approx([1.0, 0.05 * 9.0 + 0.95 * 1.0])
    smoothed.eval()  # validation keeps its own average
    assert float(smoothed(torch.zeros(4), torch.full((4,), 2.0))) == pytest.approx(4.0)
    assert float(SmoothedLoss(torch.nn.MSELoss(), alpha=1.0)(torch.zeros(1), torch.ones(1))) == 1.0
