"""Fine-tuning recipes side by side, from scratch, on one fixed QM9 split and one MD17-style molecule.

QM9 (homo, lumo, gap; test MAE in meV):
  old       the recipe before the fix, intensive-offset bug included: run from a git worktree of
            ``--old-ref`` (for the record)
  fixed     SchNetPack-style recipe with the bug fixed: no label scaling, no auxiliary denoising,
            ReduceLROnPlateau, EMA weights
  released  the released MolSpectra recipe (qm9_finetune's default): standardised labels, warm-up +
            cosine with warm restarts scaled to the run, auxiliary denoising (0.005 A, 0.1), no EMA
MD17 (``--md17-molecule``, GFN2-xTB MD data generated offline; test energy / force MAE):
  released  0.2 E + 0.8 F with the energy loss smoothed by TorchMD-Net's EMA (alpha 0.05), i.e.
            trained with weight 0.01; training positions with 0.005 A noise
  plain     the same with the plain 0.2 / 0.8 weighting (globals.energy_loss_smoothing=1.0)

Every run is a real ``spktrain`` in its own directory under ``--workdir``; finished runs are kept
and skipped when the script is started again, so a killed benchmark resumes. Results go to
``--out`` (JSON, every run) and a table is printed.

  python benchmarks/finetune_recipes.py                         # the README's figures (hours on 2 cores)
  python benchmarks/finetune_recipes.py --targets gap --seeds 0 --epochs 2   # a quick look
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from _runs import qm9_finetune_overrides, spktrain, summary

QM9_RECIPES = {
    "old": [],  # the old code's own defaults
    "fixed": [
        "globals.standardize=false",
        "globals.aux_denoising=false",
        "task/scheduler=reduce_on_plateau",
        "callbacks=[checkpoint,earlystopping,lrmonitor,last_checkpoint,ema]",
    ],
    "released": [],
}
MD17_RECIPES = {"released": [], "plain": ["globals.energy_loss_smoothing=1.0"]}
QM9_KEYS = {"homo": "homo", "lumo": "lumo", "gap": "gap"}


def old_worktree(ref, workdir):
    """A git worktree of ``ref`` (the code before the fix) to run the old recipe with."""
    path = os.path.join(workdir, f"old-{ref}")
    if not os.path.isdir(path):
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        subprocess.run(
            ["git", "-C", repo, "worktree", "add", "--detach", "-f", path, ref], check=True, capture_output=True
        )
    return path


def qm9_split(workdir, n_molecules, n_train, n_val, n_test, seed):
    """A QM9 subset database and one fixed split file for every run."""
    from schnetpack_molspectra.data.qm9 import build_qm9_db, load_qm9pack

    db = os.path.join(workdir, f"qm9_{n_molecules}_seed{seed}.db")
    split = os.path.join(workdir, f"split_{n_train}_{n_val}_{n_test}_seed{seed}.npz")
    rng = np.random.default_rng(seed)
    if not os.path.exists(db):
        indices = rng.choice(np.asarray(load_qm9pack()["Index"]), n_molecules, replace=False)
        partial = db[:-3] + ".part.db"  # complete or absent, whenever the script is killed
        if os.path.exists(partial):
            os.remove(partial)
        build_qm9_db(partial, gdb_indices=sorted(int(i) for i in indices))
        os.replace(partial, db)
    if not os.path.exists(split):
        order = np.random.default_rng(seed + 1).permutation(n_molecules)
        np.savez(
            split,
            train_idx=order[:n_train],
            val_idx=order[n_train : n_train + n_val],
            test_idx=order[n_train + n_val : n_train + n_val + n_test],
        )
    return db, split


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="finetune_recipes_runs")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "finetune_recipes.json"))
    parser.add_argument("--old-ref", default="1b4afbc", help="git commit of the recipe before the fix")
    parser.add_argument("--targets", nargs="+", default=["homo", "lumo", "gap"])
    parser.add_argument("--recipes", nargs="+", default=list(QM9_RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=128, help="PaiNN n_atom_basis")
    parser.add_argument("--interactions", type=int, default=3, help="PaiNN n_interactions")
    parser.add_argument("--md17-molecule", default="ethanol", help="'' skips the MD17 part")
    parser.add_argument("--md17-frames", type=int, default=1200)
    parser.add_argument("--md17-train", type=int, default=950)
    parser.add_argument("--md17-val", type=int, default=50)
    parser.add_argument("--md17-epochs", type=int, default=30)
    parser.add_argument("--md17-seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()

    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    start = time.time()
    encoder = [
        f"model.representation.n_atom_basis={args.width}",
        f"model.representation.n_interactions={args.interactions}",
    ]
    common = [*encoder, "trainer.accelerator=cpu", "data.num_workers=2"]
    results = {"qm9": {}, "md17": {}}

    n_molecules = args.n_train + args.n_val + args.n_test
    db, split = qm9_split(workdir, n_molecules, args.n_train, args.n_val, args.n_test, seed=0)
    for target in args.targets:
        for recipe in args.recipes:
            runs = []
            for seed in args.seeds:
                overrides = [
                    *qm9_finetune_overrides(
                        db, split, target, args.n_train, args.n_val, args.n_test, args.batch_size, args.epochs, seed
                    ),
                    *common,
                    *QM9_RECIPES[recipe],
                ]
                env = {"PYTHONPATH": old_worktree(args.old_ref, workdir)} if recipe == "old" else None
                result = spktrain(workdir, f"qm9_{target}_{recipe}_seed{seed}", overrides, env)
                runs.append(result)
                print(
                    f"qm9 {target:5s} {recipe:9s} seed {seed}: test MAE {result[f'test_{QM9_KEYS[target]}_mae_meV']:.1f} meV "
                    f"({result['wall_s']:.0f} s)",
                    flush=True,
                )
            results["qm9"].setdefault(target, {})[recipe] = {
                "test_mae_meV": summary([r[f"test_{QM9_KEYS[target]}_mae_meV"] for r in runs]),
                "val_mae_meV_curves": [r[f"val_{QM9_KEYS[target]}_mae_meV_curve"] for r in runs],
                "wall_s": [r["wall_s"] for r in runs],
            }

    if args.md17_molecule:
        for recipe, extra in MD17_RECIPES.items():
            runs = []
            for seed in args.md17_seeds:
                overrides = [
                    "experiment=md17_finetune",
                    f"data.molecule={args.md17_molecule}",
                    f"data.n_frames={args.md17_frames}",
                    f"data.num_train={args.md17_train}",
                    f"data.num_val={args.md17_val}",
                    f"trainer.max_epochs={args.md17_epochs}",
                    f"+seed={seed}",
                    *common,
                    *extra,
                ]
                result = spktrain(workdir, f"md17_{args.md17_molecule}_{recipe}_seed{seed}", overrides)
                runs.append(result)
                print(
                    f"md17 {args.md17_molecule} {recipe:8s} seed {seed}: energy {result['test_energy_mae_kcal_mol']:.3f} kcal/mol, "
                    f"forces {result['test_forces_mae_kcal_mol_Ang']:.3f} kcal/mol/A ({result['wall_s']:.0f} s)",
                    flush=True,
                )
            results["md17"][recipe] = {
                "energy_mae_kcal_mol": summary([r["test_energy_mae_kcal_mol"] for r in runs]),
                "forces_mae_kcal_mol_Ang": summary([r["test_forces_mae_kcal_mol_Ang"] for r in runs]),
                "wall_s": [r["wall_s"] for r in runs],
            }

    results["settings"] = {
        **vars(args),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "wall_s": time.time() - start,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)

    print(
        f"\nQM9 test MAE (meV), mean ± std over seeds {args.seeds}; {args.n_train}/{args.n_val}/{args.n_test}, "
        f"PaiNN {args.width}x{args.interactions}, {args.epochs} epochs"
    )
    print("| target | " + " | ".join(args.recipes) + " |")
    for target, by_recipe in results["qm9"].items():
        cells = [
            f"{by_recipe[r]['test_mae_meV']['mean']:.1f} ± {by_recipe[r]['test_mae_meV']['std']:.1f}"
            for r in args.recipes
        ]
        print(f"| {target} | " + " | ".join(cells) + " |")
    for recipe, r in results["md17"].items():
        print(
            f"MD17 {args.md17_molecule} {recipe}: energy {r['energy_mae_kcal_mol']['mean']:.3f} ± {r['energy_mae_kcal_mol']['std']:.3f} "
            f"kcal/mol, forces {r['forces_mae_kcal_mol_Ang']['mean']:.3f} ± {r['forces_mae_kcal_mol_Ang']['std']:.3f} kcal/mol/A"
        )
    print(f"wall time {time.time() - start:.0f} s; {results['settings']['machine']}")


if __name__ == "__main__":
    sys.exit(main())
