"""How fast is a MolSpectra pre-training step, and how close does SpecFormer get to matmul peak?

Measures, side by side in one run, at batch 32 with the default (released) sizes:
  * one full pre-training step (PaiNN + SpecFormer, denoising + MPR + contrastive, fwd+bwd+AdamW),
  * one denoising-only step (PaiNN + denoising head),
  * SpecFormer alone, forward+backward: ours (fused residual attention) and an explicit
    released-style reference, with FLOP/s as a fraction of this machine's dense float32
    matmul throughput. FLOPs are the *nominal* model FLOPs (counted on the explicit
    reference with torch's FlopCounterMode), so the fused path's zero-padding is not counted.
  * the attainable bound on that fraction: every nominal FLOP at matmul peak plus the softmax's
    exponentials (one per attention score in the forward pass, one more in the backward pass,
    which recomputes them or reads the same number of stored values), timed on cache-resident
    data. With head width 8 an exponential costs as much as ~80 matmul FLOPs on a CPU while a
    score carries 32 nominal FLOPs, so this bound, not the kernel, limits the CPU figure.
  * the same bound for fused residual attention on PyTorch's kernel, which executes more than the
    nominal FLOPs: concatenated q/k of width 8, 16, 24 (layer 1 padded to 16), v padded to match,
    and q.k recomputed in the backward pass.

  * PyTorch's fused attention kernel alone (fwd+bwd) at head widths 8, 16, 24 and 32 on SpecFormer's shapes,
    and with ``--compile`` SpecFormer under ``torch.compile`` (adds about a minute of compilation).

    python benchmarks/pretrain_step.py [--batch 32] [--repeats 5] [--device cpu|cuda] [--compile] [--heads 16]

Writes benchmarks/results/pretrain_step.json.
"""

import argparse
import json
import os
import time
from unittest import mock

import numpy as np
import schnetpack as spk
import torch
from ase.collections import g2
from schnetpack import properties as structure
from torch.utils.flop_counter import FlopCounterMode

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.atomistic import DenoisingHead, MoleculeRepresentation, SpectraEncoder
from schnetpack_molspectra.configs import pretraining_transforms
from schnetpack_molspectra.model import MolSpectraModel
from schnetpack_molspectra.specformer import SpecFormer
from schnetpack_molspectra.task import MaskedPatchReconstructionOutput, SelfSupervisedOutput
from schnetpack_molspectra.train import InfoNCELoss


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats, warmup=2):
    """Median seconds of one callable."""
    return timed_side_by_side({"fn": fn}, device, repeats, warmup)["fn"]


def timed_side_by_side(fns, device, repeats, warmup=2):
    """Median seconds of each callable, timed in interleaved rounds (A B C, A B C, ...).

    Interleaving spreads drifts of the machine's speed (other tenants, thermal state) evenly
    over the variants, so their ratios stay meaningful."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def exp_seconds_per_element(device, n=1 << 17, repeats=200):
    """Time of one float32 exp on cache-resident data with all threads (the softmax's floor)."""
    x = torch.randn(n, device=device)
    out = torch.empty_like(x)
    return timed(lambda: torch.exp(x, out=out), device, repeats) / n


def fused_kernel_widths(run) -> list:
    """Head width of q, k and v that each fused attention call in one call of ``run`` receives."""
    widths, kernel = [], torch.nn.functional.scaled_dot_product_attention

    def recording(q, k, v, **options):
        widths.append(q.shape[-1])
        return kernel(q, k, v, **options)

    with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", recording):
        run()
    return widths


def molecule_batch(batch_size, seed=0):
    """A collated SchNetPack batch of g2 molecules with random spectra, noise and masks."""
    rng = np.random.default_rng(seed)
    names = [n for n in g2.names if len(g2[n]) >= 6]
    transforms = pretraining_transforms("data.transforms.neighbors._target_=schnetpack.transform.ASENeighborList")
    samples = []
    for i in range(batch_size):
        atoms = g2[names[rng.integers(len(names))]]
        inputs = {
            structure.idx: torch.tensor([i]),
            structure.Z: torch.tensor(atoms.numbers),
            structure.R: torch.tensor(atoms.positions),
            structure.cell: torch.zeros(1, 3, 3, dtype=torch.float64),
            structure.pbc: torch.zeros(1, 3, dtype=torch.bool),
            structure.n_atoms: torch.tensor([len(atoms)]),
            msp.uv_spectrum: torch.rand(1, 701) * 1e-2,
            msp.ir_spectrum: torch.rand(1, 3501) * 100,
            msp.raman_spectrum: torch.rand(1, 3501) * 10,
        }
        for t in transforms:
            inputs = t(inputs)
        samples.append(inputs)
    return spk.data.loader._atoms_collate_fn(samples)


def build(specformer: bool, width=128, n_heads=16):
    radial = spk.nn.GaussianRBF(n_rbf=20, cutoff=5.0)
    return MolSpectraModel(
        representation=spk.representation.PaiNN(width, 3, radial, spk.nn.CosineCutoff(5.0)),
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[DenoisingHead(width, mode="vector"), MoleculeRepresentation()]
        + ([SpectraEncoder(SpecFormer(n_out=width, n_heads=n_heads))] if specformer else []),
    )


def outputs(specformer: bool):
    terms = [SelfSupervisedOutput("denoising", msp.predicted_noise, msp.noise_target, torch.nn.MSELoss())]
    if specformer:
        terms += [
            MaskedPatchReconstructionOutput(),
            SelfSupervisedOutput("contrastive", msp.representation_3d, msp.representation_spectra, InfoNCELoss()),
        ]
    return terms


def training_step(model, terms, batch, optimizer):
    def step():
        pred = model({k: v.clone() for k, v in batch.items()})
        loss = sum(t.calculate_loss(pred) for t in terms)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--heads", type=int, default=16, help="SpecFormer heads (released: 16, head width 8)")
    parser.add_argument("--compile", action="store_true", help="also time SpecFormer under torch.compile")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pretrain_step.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    batch = {k: v.to(device) for k, v in molecule_batch(args.batch).items()}
    results = {"device": str(device), "threads": torch.get_num_threads(), "batch": args.batch, "heads": args.heads}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name()

    steps = {}
    for name, with_spec in (("full_step_s", True), ("denoising_step_s", False)):
        model = build(with_spec, n_heads=args.heads).to(device).train()
        terms = torch.nn.ModuleList(outputs(with_spec)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        steps[name] = training_step(model, terms, batch, opt)
    results.update(timed_side_by_side(steps, device, args.repeats))

    spec = SpecFormer(n_out=128, n_heads=args.heads).to(device).train()
    spectra = {m: batch[msp.spectrum_keys[m]] for m in spec.modalities}
    masks = {m: batch[msp.patch_mask(m)] for m in spec.modalities}

    def fwd_bwd(module, **options):
        def run():
            spec.zero_grad(set_to_none=True)
            rep, recon, _ = module(spectra, masks, **options)
            (rep.sum() + sum(r.sum() for r in recon.values())).backward()

        return run

    fused, explicit = fwd_bwd(spec), fwd_bwd(spec, explicit=True)

    with FlopCounterMode(display=False) as counter:
        explicit()
    flops = counter.get_total_flops()
    attention_flops = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "bmm" in str(op))
    results["specformer_fwd_bwd_gflop"] = flops / 1e9
    results["specformer_attention_gflop"] = attention_flops / 1e9
    n = 4096
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def without_attention():
        # The fused step with the attention kernel replaced by "return v": what is not attention.
        with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", lambda q, k, v, **_: v):
            fused()

    variants = {"fused": fused, "explicit": explicit, "without_attention": without_attention, "matmul": lambda: a @ b}
    if args.compile:
        variants["compiled"] = fwd_bwd(torch.compile(spec))
    seconds = timed_side_by_side(variants, device, args.repeats)
    for name in variants:
        if name != "matmul":
            results[f"specformer_{name}_s"] = seconds[name]
    results["specformer_attention_s"] = results["specformer_fused_s"] - results["specformer_without_attention_s"]
    peak = 2 * n**3 / seconds["matmul"]
    results["matmul_peak_gflops"] = peak / 1e9
    results["specformer_fused_gflops"] = flops / results["specformer_fused_s"] / 1e9
    results["specformer_explicit_gflops"] = flops / results["specformer_explicit_s"] / 1e9
    results["specformer_fused_fraction_of_peak"] = flops / results["specformer_fused_s"] / peak
    results["specformer_explicit_fraction_of_peak"] = flops / results["specformer_explicit_s"] / peak
    n_heads = spec.layers[0].n_heads
    sdpa = {}
    for width in (8, 16, 24, 32):
        q, k, v = (
            torch.randn(args.batch, n_heads, spec.n_tokens, width, device=device, requires_grad=True) for _ in range(3)
        )
        sdpa[width] = lambda q=q, k=k, v=v: torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    for width, seconds_ in timed_side_by_side(sdpa, device, args.repeats).items():
        results[f"sdpa_width{width}_fwd_bwd_s"] = seconds_
    results["attention_fraction_of_peak"] = attention_flops / results["specformer_attention_s"] / peak
    results["rest_fraction_of_peak"] = (flops - attention_flops) / results["specformer_without_attention_s"] / peak
    scores_per_layer = args.batch * n_heads * spec.n_tokens**2
    n_scores = scores_per_layer * len(spec.layers)
    results["exp_ns_per_element"] = exp_seconds_per_element(device) * 1e9
    results["specformer_exp_floor_s"] = 2 * n_scores * results["exp_ns_per_element"] * 1e-9
    floor = flops / peak + results["specformer_exp_floor_s"]
    results["specformer_floor_s"] = floor
    results["specformer_attainable_fraction_bound"] = flops / floor / peak
    # The same floor for fused residual attention on PyTorch's kernel: layer l attends with the
    # concatenated q/k of layers 1..l, zero-padded to at least ``fused_head_width``, and v padded
    # to the same width (the kernel needs equal widths). Per score and unit of width the kernel
    # executes 4 FLOPs forward and 10 backward (q.k recomputed, dP, dV, dQ, dK).
    widths = fused_kernel_widths(fused)
    executed = 14 * scores_per_layer * sum(widths)
    results["fused_attention_widths"] = widths
    results["fused_attention_executed_gflop"] = executed / 1e9
    fused_floor = (flops - attention_flops + executed) / peak + results["specformer_exp_floor_s"]
    results["specformer_fused_floor_s"] = fused_floor
    results["specformer_fused_attainable_fraction_bound"] = flops / fused_floor / peak
    results["full_over_denoising"] = results["full_step_s"] / results["denoising_step_s"]

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    for k, v in results.items():
        print(f"{k:44s} {v:.4g}" if isinstance(v, float) else f"{k:44s} {v}")


if __name__ == "__main__":
    main()
