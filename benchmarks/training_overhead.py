"""Does denoising pre-training cost more than stock SchNetPack training of the same PaiNN?

Two real ``spktrain`` runs on the same QM9 database (the first ``--n`` molecules of the shipped
selection), the same PaiNN (SchNetPack's ``painn`` config, ``--width`` x ``--interactions``),
batch size, loader workers and number of optimiser steps, each under Lightning's
``SimpleProfiler``:

  stock     SchNetPack's own ``experiment=qm9_atomwise`` (energy_U0, Atomwise head)
  denoise   ``experiment=denoise_pretrain`` (coordinate noise, equivariant denoising head)

and, with ``--workers``, the denoising run again at other loader worker counts. Reported per
optimiser step (ms), from the profiler: waiting for the next batch (data loading not hidden by the
workers), ``training_step`` (forward pass and loss), ``backward``, the whole optimiser step, and
the whole training batch; and the wall time of the run. The runs take a few minutes each on
2 cores.

    python benchmarks/training_overhead.py [--n 4000] [--steps 150] [--batch 70] [--workers 0 1 2]

Writes benchmarks/results/training_overhead.json.
"""

import argparse
import glob
import json
import os
import platform
import re
import sys

from _runs import spktrain

#: SimpleProfiler action -> reported name
ACTIONS = {
    "[_TrainingEpochLoop].train_dataloader_next": "data wait",
    "[Strategy]SingleDeviceStrategy.training_step": "forward + loss",
    "[Strategy]SingleDeviceStrategy.backward": "backward",
    "optimizer_step": "optimiser step (all)",
    "run_training_batch": "training batch (all)",
}


def profile_per_step(run_dir, steps):
    """Total seconds per SimpleProfiler action / number of optimiser steps, in ms."""
    (path,) = glob.glob(os.path.join(run_dir, "**", "fit-profile.txt"), recursive=True)
    totals = {}
    for line in open(path):
        cells = [c.strip() for c in line.split("|") if c.strip()]
        if len(cells) == 5 and re.match(r"^[0-9.eE+-]+$", cells[3]):
            totals[cells[0]] = float(cells[3])
    out = {}
    for action, name in ACTIONS.items():
        matches = [v for k, v in totals.items() if k == action or k.endswith("." + action)]
        if matches:
            out[name] = 1000 * sum(matches) / steps
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="training_overhead_runs")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "training_overhead.json"))
    p.add_argument("--n", type=int, default=4000, help="QM9 molecules in the database")
    p.add_argument("--steps", type=int, default=150, help="optimiser steps per run")
    p.add_argument("--batch", type=int, default=70, help="batch size (denoise_pretrain's default)")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--interactions", type=int, default=3)
    p.add_argument("--workers", nargs="+", type=int, default=[2], help="loader workers; the stock run uses the first")
    args = p.parse_args(argv)

    from schnetpack_molspectra.data.qm9 import build_qm9_db, load_qm9pack
    from schnetpack_molspectra.data.sticks import shipped_selection

    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    db = os.path.join(workdir, f"qm9_{args.n}.db")
    if not os.path.exists(db):
        build_qm9_db(
            db[:-3] + ".part.db", gdb_indices=sorted(int(g) for g in shipped_selection(load_qm9pack())[: args.n])
        )
        os.replace(db[:-3] + ".part.db", db)
    n_val = args.batch  # one validation batch per epoch, the same in every run
    common = [
        f"data.datapath={db}",
        f"data.batch_size={args.batch}",
        f"data.num_train={args.n - n_val}",
        f"data.num_val={n_val}",
        "data.num_test=0",
        f"model.representation.n_atom_basis={args.width}",
        f"model.representation.n_interactions={args.interactions}",
        "trainer.accelerator=cpu",
        f"++trainer.max_steps={args.steps}",
        "++trainer.max_epochs=-1",
        "+seed=0",
        "+trainer.profiler._target_=pytorch_lightning.profilers.SimpleProfiler",
        "+trainer.profiler.dirpath=.",
        "+trainer.profiler.filename=profile",
    ]
    arms = {
        f"stock_w{args.workers[0]}": [
            "experiment=qm9_atomwise",
            "globals.property=energy_U0",
            f"data.num_workers={args.workers[0]}",
        ]
    }
    for w in args.workers:
        arms[f"denoise_w{w}"] = [
            "experiment=denoise_pretrain",
            f"data.num_workers={w}",
            "~callbacks.pretraining_summary",
        ]
    results = {}
    for name, overrides in arms.items():
        run = spktrain(workdir, name, [*overrides, *common])
        per_step = profile_per_step(os.path.join(workdir, name), args.steps)
        results[name] = {"wall_s": run["wall_s"], "ms_per_step": per_step}
        print(
            f"{name}: {run['wall_s']:.0f} s, " + ", ".join(f"{k} {v:.0f} ms" for k, v in per_step.items()), flush=True
        )
    settings = {**vars(args), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"runs": results, "settings": settings}, f, indent=1)
    names = list(ACTIONS.values())
    print(
        f"\nms per optimiser step; {args.n} QM9 molecules, batch {args.batch}, PaiNN {args.width}x{args.interactions}, "
        f"{args.steps} steps, {settings['machine']}"
    )
    print("| run | wall (s) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for name, r in results.items():
        print(
            f"| {name} | {r['wall_s']:.0f} | "
            + " | ".join(f"{r['ms_per_step'].get(k, float('nan')):.0f}" for k in names)
            + " |"
        )
    stock = results[f"stock_w{args.workers[0]}"]["ms_per_step"]["training batch (all)"]
    ours = results[f"denoise_w{args.workers[0]}"]["ms_per_step"]["training batch (all)"]
    print(f"denoising / stock, training batch: {ours / stock:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
