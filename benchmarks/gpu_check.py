"""The GPU check in one call: every part of the project that must run on a GPU, run there, with a table.

  1. the device-parametrised tests (model, losses, SpecFormer fused and explicit, DDP helpers, identify)
     on ``--device``;
  2. pre-training throughput (molecules/s) at the released sizes (PaiNN 128 x 3 + SpecFormer), fp32 and
     bf16 autocast, one optimiser step after another on batches already on the device, and peak memory;
  3. SpecFormer forward + backward, fused (ours) vs explicit (as released) attention, on the same device;
  4. the training dataloader (pre-training transforms) with 0 .. N workers against the step rate:
     the workers needed to keep the device busy;
  5. real ``spktrain`` runs on the device: ``molspectra_pretrain`` (bf16-mixed), ``qm9_finetune`` and
     ``md17_finetune`` from it, each a few hundred steps; then ``spkmd`` and ``identify`` on the device.
  6. ``spkspectra predict``'s rate with the shipped ``spectra-painn-qm9`` on the device and on all the machine's CPU
     cores, beside the simulator's (GFN2-xTB relaxation + IR + Raman, one process), on the held-out molecules of
     ``benchmarks/spectra_prediction.py``.

Each part runs on its own and a failure is reported in the table, not raised, so one call on a lent
GPU gives every answer. Dry-run it on the CPU with tiny sizes first:

    python benchmarks/gpu_check.py --device cpu --quick            # ~5 min on 2 cores
    python benchmarks/gpu_check.py --device cuda                   # < 8 min on one H200

Writes ``--out`` (default ``gpu_check.json``) with every figure.
"""

import schnetpack_molspectra  # noqa: F401  (tblite before torch: the check runs xTB MD in this process)

# isort: split
import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEST_FILES = [
    "tests/pretrain/test_model.py",
    "tests/pretrain/test_losses.py",
    "tests/pretrain/test_specformer.py",
    "tests/pretrain/test_ddp.py",
    "tests/identify/test_identify.py",
]


def script(name):
    """A console script of this Python (spktrain, spkmd, spkspectra)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.path.exists(beside) else name


def run(cmd, cwd, timeout):
    os.makedirs(cwd, exist_ok=True)
    start = time.time()
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PWD=str(cwd))
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[:3])} ... exit {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    return proc, time.time() - start


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- 1. tests
def device_tests(args, work):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            args.device.split(":")[0],
            "-W",
            "ignore",
            *TEST_FILES,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=args.timeout,
    )
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    if proc.returncode != 0:
        raise RuntimeError(f"device tests: {tail}\n{proc.stdout[-2000:]}")
    return {"tests": counts, "line": tail}


# ---------------------------------------------------------------- 2-4. in-process measurements
def released_task(device, batch_size, spectra_db=None):
    """The molspectra_pretrain model and losses at the released sizes, built from the experiment config,
    and the default dataset's training loader with the config's transforms."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module(config_module="schnetpack.configs", version_base=None):
        cfg = compose(
            "train",
            overrides=[
                "experiment=molspectra_pretrain",
                *([f"data.datapath={os.path.abspath(spectra_db)}"] if spectra_db else []),
                f"data.batch_size={batch_size}",
                "data.num_workers=0",
                "data.split_file=null",
            ],
        )
    task = instantiate(cfg.task, model=instantiate(cfg.model))
    return cfg, task.to(device)


def loader(cfg, workers, batch_size):
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, num_workers=workers, batch_size=batch_size, split_file=None)
    dm.prepare_data()
    dm.setup("fit")
    return dm.train_dataloader()


def throughput(args, work):
    import torch

    device = torch.device(args.device)
    cfg, task = released_task(device, args.batch, args.spectra_db)
    batches = []
    for batch in loader(cfg, 0, args.batch):
        batches.append({k: v.to(device) for k, v in batch.items()})
        if len(batches) == args.steps:
            break
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    out = {"batch_size": args.batch, "parameters": sum(p.numel() for p in task.parameters())}
    for precision in ("fp32", "bf16"):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for i, batch in enumerate(batches):
            sync(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                pred = task.predict_without_postprocessing({k: v.clone() for k, v in batch.items()})
                loss = task.loss_fn(pred, {})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sync(device)
            if i >= 2:  # warm-up
                times.append(time.perf_counter() - start)
        if not np.isfinite(float(loss)):
            raise RuntimeError(f"{precision}: loss {float(loss)}")
        out[precision] = {
            "molecules_per_s": args.batch / float(np.median(times)),
            "step_s": float(np.median(times)),
            "final_loss": float(loss),
        }
        if device.type == "cuda":
            out[precision]["peak_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def specformer_attention(args, work):
    import torch

    from schnetpack_molspectra.specformer import SpecFormer

    device = torch.device(args.device)
    model = SpecFormer().to(device)
    g = torch.Generator().manual_seed(0)
    spectra = {m: torch.rand(args.batch, n, generator=g).to(device) for m, n in model.spectrum_length.items()}
    out = {}
    for explicit in (False, True):
        name = "explicit (released)" if explicit else "fused (ours)"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(args.steps):
            sync(device)
            start = time.perf_counter()
            rep, recon, _ = model(spectra, explicit=explicit)
            (rep.sum() + sum(r.sum() for r in recon.values())).backward()
            sync(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
        out[name] = {"fwd_bwd_ms": 1e3 * float(np.median(times))}
        if device.type == "cuda":
            out[name]["peak_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    out["speed-up"] = out["explicit (released)"]["fwd_bwd_ms"] / out["fused (ours)"]["fwd_bwd_ms"]
    return out


def dataloader_workers(args, work, step_rate):
    cfg, _ = released_task(__import__("torch").device("cpu"), args.batch, args.spectra_db)
    out = {}
    for workers in args.workers:
        it = iter(loader(cfg, workers, args.batch))
        next(it)  # start-up
        start, n = time.perf_counter(), 0
        for _ in range(args.steps):
            n += len(next(it)["_n_atoms"])
        out[workers] = n / (time.perf_counter() - start)
    enough = [w for w in args.workers if out[w] >= step_rate]
    return {"molecules_per_s": out, "train_molecules_per_s": step_rate, "workers_needed": enough[0] if enough else None}


# ---------------------------------------------------------------- 5. the user's flow on the device
def user_flow(args, work):
    from ase.db import connect
    from ase.io import write

    from schnetpack_molspectra.data.md17 import generate_xtb_md
    from schnetpack_molspectra.data.qm9 import build_qm9_db

    accel = "gpu" if args.device.startswith("cuda") else "cpu"
    sizes = args.flow_sizes
    common = ["data.num_workers=4", f"trainer.accelerator={accel}", "trainer.devices=1"]
    out = {}
    pre, out["molspectra_pretrain_s"] = run(
        [
            script("spktrain"),
            "experiment=molspectra_pretrain",
            f"trainer.max_steps={sizes['pretrain_steps']}",
            "trainer.precision=bf16-mixed",
            f"data.batch_size={sizes['batch']}",
            *sizes["pretrain_data"],  # at least one epoch: spktrain tests the best checkpoint of a validation
            *([f"data.datapath={os.path.abspath(args.spectra_db)}"] if args.spectra_db else []),
            *common,
            *sizes["encoder"],
            *sizes["specformer"],
        ],
        work / "pre",
        args.timeout,
    )
    best = re.search(r"best model: (\S+)", pre.stdout).group(1)
    qm9 = os.path.abspath(args.qm9_db) if args.qm9_db else str(work / "qm9.db")
    if not os.path.exists(qm9):
        build_qm9_db(qm9, limit=sizes["qm9_molecules"])
    from ase.db import connect as ase_connect

    with ase_connect(qm9) as conn:
        n_qm9 = conn.count()
    _, out["qm9_finetune_s"] = run(
        [
            script("spktrain"),
            "experiment=qm9_finetune",
            f"data.datapath={qm9}",
            "globals.property=gap",
            f"globals.pretrained_model={best}",
            f"data.num_train={n_qm9 - 1000}",
            "data.num_val=500",
            "data.num_test=500",
            f"trainer.max_steps={sizes['finetune_steps']}",
            *common,
            *sizes["encoder"],
        ],
        work / "qm9",
        args.timeout,
    )
    md = str(work / "ethanol.db")
    if not os.path.exists(md):
        generate_xtb_md("ethanol", md, n_frames=sizes["md_frames"], progress=False)
    ft, out["md17_finetune_s"] = run(
        [
            script("spktrain"),
            "experiment=md17_finetune",
            f"data.datapath={md}",
            "data.molecule=ethanol",
            f"globals.pretrained_model={best}",
            f"data.num_train={sizes['md_frames'] - 40}",
            "data.num_val=20",
            "data.num_test=20",
            f"trainer.max_steps={sizes['finetune_steps']}",
            *common,
            *sizes["encoder"],
        ],
        work / "md17",
        args.timeout,
    )
    md_model = re.findall(r"Best model stored at (\S+)", ft.stdout + ft.stderr)[-1]
    start = str(work / "ethanol.xyz")
    with connect(md) as conn:
        write(start, conn.get(1).toatoms())
    _, out["spkmd_s"] = run(
        [
            script("spkmd"),
            "simulation_dir=md_run",
            f"system.molecule_file={start}",
            f"calculator.model_file={md_model}",
            "dynamics=nvt",
            f"dynamics.n_steps={sizes['md_steps']}",
            "dynamics.progress=false",
            f"device={args.device}",
        ],
        work,
        args.timeout,
    )
    library = qm9 if args.qm9_db else str(work / "library.db")
    if not os.path.exists(library):
        build_qm9_db(library, limit=sizes["library"])
    from schnetpack_molspectra.data.default import ensure_default_dataset
    from schnetpack_molspectra.identify import identify

    start_t = time.time()
    queries = args.spectra_db or ensure_default_dataset()
    results = identify(best, queries, library, top_k=5, device=args.device, cache=False)
    out["identify_s"] = time.time() - start_t
    out["identify_queries"] = len(results)
    return out


# ---------------------------------------------------------------- 6. predict
def predict_throughput(args, work):
    """Molecules per second of ``predict_spectra`` (``spectra-painn-qm9``; the median of warm calls,
    ``benchmarks/spectra_prediction.py``'s timing) on the device and on the CPU cores, and of the simulator, on
    the held-out molecules of that benchmark (their xTB geometries, ``benchmarks/data/held_out_sticks``)."""
    import torch
    from spectra_prediction import HELD_OUT_STICKS, predict_rate, simulator_rate

    from schnetpack_molspectra.data.sticks import load_sticks
    from schnetpack_molspectra.predict import load_predictor

    atoms = [m.atoms for m in load_sticks(folder=HELD_OUT_STICKS, require_uv=False)][: args.predict_molecules]
    out = {"molecules": len(atoms), "mean_atoms": float(np.mean([len(a) for a in atoms]))}
    out["cpu_threads"] = torch.get_num_threads()
    for where in dict.fromkeys([args.device, "cpu"]):
        predictor = load_predictor("spectra-painn-qm9", device=where)
        out[f"predict_{where}_molecules_per_s"] = predict_rate(predictor, atoms, repeats=3)
    n_sim = 2 if args.quick else 10
    out["simulator_molecules_per_s"] = simulator_rate(atoms, n_sim)
    out["simulated_for_timing"] = n_sim
    for where in dict.fromkeys([args.device, "cpu"]):
        out[f"{where}_vs_simulator"] = out[f"predict_{where}_molecules_per_s"] / out["simulator_molecules_per_s"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a dry run on the CPU")
    p.add_argument(
        "--skip", nargs="*", default=[], help="parts to leave out: tests throughput attention workers flow predict"
    )
    p.add_argument("--timeout", type=int, default=420, help="seconds per subprocess")
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument(
        "--spectra-db", default=None, help="spectra database to train and query on (default: the default dataset)"
    )
    p.add_argument(
        "--qm9-db", default=None, help="QM9 database to fine-tune on and search (default: built from qm9pack)"
    )
    args = p.parse_args(argv)
    args.batch, args.steps = (8, 4) if args.quick else (128, 20)
    args.workers = [0, 2] if args.quick else [0, 2, 4, 8, 12]
    args.predict_molecules = 64 if args.quick else 494
    tiny = [
        "model.representation.n_atom_basis=16",
        "model.representation.n_interactions=1",
    ]
    tiny_specformer = [
        "model.output_modules.spectra.specformer.d_model=16",
        "model.output_modules.spectra.specformer.n_heads=4",
    ]
    args.flow_sizes = (
        {
            "pretrain_steps": 20,
            "batch": 8,
            "pretrain_data": ["data.num_train=160"],
            "finetune_steps": 20,
            "qm9_molecules": 1600,
            "md_frames": 80,
            "md_steps": 20,
            "library": 200,
            "encoder": tiny,
            "specformer": tiny_specformer,
        }
        if args.quick
        else {
            "pretrain_steps": 300,
            "batch": 128,
            "pretrain_data": [],
            "finetune_steps": 300,
            "qm9_molecules": 20000,
            "md_frames": 200,
            "md_steps": 200,
            "library": 5000,
            "encoder": [],
            "specformer": [],
        }
    )
    import pathlib

    import torch

    work = pathlib.Path(tempfile.mkdtemp(prefix="gpu_check_"))
    report = {"device": args.device, "torch": torch.__version__, "machine": platform.machine(), "quick": args.quick}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(0)
    parts = [
        ("tests", device_tests),
        ("throughput", throughput),
        ("attention", specformer_attention),
        ("workers", None),
        ("flow", user_flow),
        ("predict", predict_throughput),
    ]
    for name, fn in parts:
        if name in args.skip:
            continue
        start = time.time()
        try:
            if name == "workers":
                rate = report.get("throughput", {}).get("bf16", {}).get("molecules_per_s", 0.0)
                report[name] = dataloader_workers(args, work, rate)
            else:
                report[name] = fn(args, work)
        except Exception as err:  # reported, so that one call answers every part
            report[name] = {"error": f"{type(err).__name__}: {str(err)[-800:]}"}
        report[name]["wall_s"] = round(time.time() - start, 1)
        print(f"[{name}] {json.dumps(report[name])[:600]}", flush=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1, default=str)
    print_table(report)
    return 1 if any("error" in v for v in report.values() if isinstance(v, dict)) else 0


def print_table(r):
    print(f"\nGPU check on {r.get('gpu', r['device'])} (torch {r['torch']}{', quick sizes' if r['quick'] else ''})")
    print("| check | result |\n|---|---|")
    for name, v in r.items():
        if not isinstance(v, dict):
            continue
        if "error" in v:
            print(f"| {name} | FAILED: {v['error'][:200]} |")
        elif name == "tests":
            print(f"| device-parametrised tests | {v['line']} |")
        elif name == "throughput":
            for prec in ("fp32", "bf16"):
                mem = f", peak {v[prec]['peak_memory_GiB']:.1f} GiB" if "peak_memory_GiB" in v[prec] else ""
                print(
                    f"| pre-training, {prec}, batch {v['batch_size']} | {v[prec]['molecules_per_s']:.0f} molecules/s{mem} |"
                )
        elif name == "attention":
            print(
                f"| SpecFormer fwd+bwd fused / explicit | {v['fused (ours)']['fwd_bwd_ms']:.1f} / "
                f"{v['explicit (released)']['fwd_bwd_ms']:.1f} ms ({v['speed-up']:.2f}x) |"
            )
        elif name == "workers":
            rates = ", ".join(f"{w}: {m:.0f}" for w, m in v["molecules_per_s"].items())
            print(
                f"| dataloader molecules/s by workers | {rates}; needed for the bf16 step rate: {v['workers_needed']} |"
            )
        elif name == "flow":
            print(
                "| spktrain pretrain / qm9 / md17, spkmd, identify (s) | "
                f"{v['molspectra_pretrain_s']:.0f} / {v['qm9_finetune_s']:.0f} / {v['md17_finetune_s']:.0f}, "
                f"{v['spkmd_s']:.0f}, {v['identify_s']:.0f} ({v['identify_queries']} queries) |"
            )
        elif name == "predict":
            rates = ", ".join(
                f"{k[len('predict_') : -len('_molecules_per_s')]} {m:.0f}"
                for k, m in v.items()
                if k.startswith("predict_")
            )
            ratios = ", ".join(
                f"{k[: -len('_vs_simulator')]} {m:.0f}x" for k, m in v.items() if k.endswith("_vs_simulator")
            )
            print(
                f"| spkspectra predict, molecules/s ({v['molecules']} held-out molecules) | {rates}; the simulator "
                f"{v['simulator_molecules_per_s']:.2f} (one process): {ratios} |"
            )


if __name__ == "__main__":
    sys.exit(main())
