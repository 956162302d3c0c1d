"""Does pre-training pay off? Scratch vs denoising (Coord) vs a denoising control vs MolSpectra,
fine-tuned on QM9 homo / lumo / gap with few labels, every run a real ``spktrain``.

Molecules come from one seeded order of all of QM9 (``shipped_selection``), split so that no
pre-training molecule is a fine-tuning validation or test molecule:

  selection[: n_stage1]           stage 1 structures (denoising, no labels); they include
                                  the shipped spectra set (the first shipped molecules)
  shipped molecules with spectra  stage 2 (MolSpectra) and the control (denoising), the
                                  default dataset broadened from the shipped sticks (all of
                                  them, or the first ``--n-spectra``)
  selection[-n_val-n_test:]       fine-tuning validation and test (never pre-trained on)
  selection[-n_val-n_test-n_train: -n_val-n_test]   fine-tuning labels

Arms (each fine-tuned with ``qm9_finetune``'s released recipe, same encoder, same split):
  scratch     no pre-training
  coord       stage 1: ``denoise_pretrain`` on the stage 1 structures
  control     stage 1, then denoising continued on the spectra set for as many epochs as stage 2
              (the same number of steps: same molecules, same batch): extra training without spectra
  molspectra  stage 1, then ``molspectra_pretrain`` (denoising + MPR + contrastive) on the spectra set
  Ablations (``--arms``): molspectra_no_mpr (beta_mpr 0, mask ratio 0), molspectra_no_mpr_no_cl
  (only denoising through the MolSpectra model), molspectra_no_<uv|ir|raman> (one modality dropped).
  Knobs (``--arms``): molspectra_beta<b> (beta_mpr = beta_contrastive = b: 0.1, 0.01),
  molspectra_mask<r> (mask ratio r: 0.3), molspectra_sigma<s> (denoising sigma s: 0.1),
  molspectra_uv10 (UV intensities x10 before log10(1 + x): UV patches as strong as IR/Raman ones).
  Any control or MolSpectra arm with the suffix ``_x<k>`` pre-trains stage 2 (or the control)
  k times as long: ``control_x3 molspectra_x3`` compare a three times longer stage 2 with its control.
  A shipped pre-trained model's name (``spkspectra models``) is an arm too: fine-tuned from that model,
  no pre-training run (the shipped models never saw the fine-tuning molecules: they are held out).
  ``--pretrain-seed`` seeds every pre-training run (one workdir per pre-training seed).

Every run lives in ``--workdir/<name>`` and is skipped when it finished before, so a killed study
resumes. A workdir belongs to one spectra set (the molecules are recorded in ``spectra_set.json``) and
to one set of the options that shape its runs (sizes, epochs, labels: ``study_settings.json``);
a study on another one (more shipped sticks, another ``--n-spectra``, another ``--n-train``) needs a new
``--workdir``, which can share the runs that the change does not touch by links (for a new spectra set:
stage 1 and the scratch and Coord fine-tunes; for new fine-tuning options: stage1, control, stage2):
``for r in stage1 ft_*_scratch_* ft_*_coord_*; do ln -s $PWD/runs_a/$r runs_b/; done``; fine-tuning goes seed by
seed (every arm's seed 0 first), and ``--report-only`` makes the
table and PNG from the runs finished so far; results (test MAE, validation curves, wall time per run) go to ``--out`` and a table
and a PNG of the validation curves are written. Scale it up by the options (more structures,
labels, epochs, a GPU with ``--accelerator gpu``).

  python benchmarks/pretraining_study.py --workdir runs5k --targets gap --seeds 0 1 2 --stage2-epochs 6 \
      --out benchmarks/results/pretraining_study_5k.json      # the README's study (5,197 spectra molecules)
  python benchmarks/pretraining_study.py --workdir runs5k --targets homo lumo --seeds 0 1 2 --stage2-epochs 6 \
      --out benchmarks/results/pretraining_study_5k_homo_lumo.json   # homo and lumo, same runs
  python benchmarks/pretraining_study.py --workdir runs5k --arms control molspectra molspectra_no_mpr molspectra_no_uv \
      molspectra_no_ir --targets gap --seeds 0 --stage2-epochs 6 --out benchmarks/results/pretraining_ablations_5k.json
  python benchmarks/pretraining_study.py --workdir runs5k_250 --n-train 250 --arms scratch coord control molspectra \
      --targets gap --seeds 0 1 2 --stage2-epochs 6 --out benchmarks/results/pretraining_study_5k_250labels.json
      # 250 labels; runs5k_250 holds links to runs5k's stage1, control and stage2
  python benchmarks/pretraining_study.py --workdir runs5k_250_p1 --pretrain-seed 1 --n-train 250 --arms control \
      molspectra --targets gap --seeds 0 --stage2-epochs 6 --out benchmarks/results/pretraining_seed1_250labels.json
      # another pre-training seed (and --pretrain-seed 2)
  python benchmarks/pretraining_study.py --workdir shipped_250 --n-train 250 --width 128 --arms scratch \
      denoise-painn-qm9 molspectra-painn-qm9 --targets gap --seeds 0 1 2 --out benchmarks/results/shipped_finetune_250.json
      # the shipped models against scratch (their encoder: PaiNN 128 x 3)
  python benchmarks/pretraining_study.py --targets gap --seeds 0 1 2 --n-spectra 499   # its first study (499)
  python benchmarks/pretraining_study.py                       # everything: homo, lumo, gap, 3 seeds, 20 stage-2 epochs
  python benchmarks/pretraining_study.py --targets gap --seeds 0 --ft-epochs 2 --stage1-epochs 1 --stage2-epochs 1   # a quick look
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
from _runs import finished_run, model_pieces, qm9_finetune_overrides, spktrain, summary

#: arm -> the pre-training run its encoder comes from (ablation arms: "stage2_<arm>")
ARMS = {
    "scratch": None,
    "coord": "stage1",
    "control": "control",
    "molspectra": "stage2",
}
ABLATIONS = {
    "molspectra_no_mpr": ["globals.beta_mpr=0", "globals.mask_ratio=0"],
    "molspectra_no_mpr_no_cl": ["globals.beta_mpr=0", "globals.mask_ratio=0", "globals.beta_contrastive=0"],
    "molspectra_no_uv": ["globals.modalities=[ir,raman]"],
    "molspectra_no_ir": ["globals.modalities=[uv,raman]"],
    "molspectra_no_raman": ["globals.modalities=[uv,ir]"],
}
KNOBS = {
    "molspectra_beta0.1": ["globals.beta_mpr=0.1", "globals.beta_contrastive=0.1"],
    "molspectra_beta0.01": ["globals.beta_mpr=0.01", "globals.beta_contrastive=0.01"],
    "molspectra_mask0.3": ["globals.mask_ratio=0.3"],
    "molspectra_sigma0.1": ["globals.sigma=0.1"],
    # beyond the paper: our UV sticks broaden to ~10x weaker bands than IR/Raman after log10(1 + x)
    "molspectra_uv10": ["globals.spectra_scale.uv=10.0"],
}
VARIANTS = {**ABLATIONS, **KNOBS}
PAPER = {"molspectra_over_coord_gap": 26.8 / 31.8, "coord_over_scratch_gap": 31.8 / 36.1}


def stage2_length(arm):
    """(arm without its ``_x<k>`` suffix, k): ``molspectra_x3`` -> ("molspectra", 3); k = 1 without one."""
    import re

    longer = re.fullmatch(r"(.+)_x(\d+)", arm)
    return (longer.group(1), int(longer.group(2))) if longer else (arm, 1)


def shipped_arm(arm):
    """Whether ``arm`` is the name of a shipped pre-trained model."""
    from schnetpack_molspectra.shipped import available_models

    return arm in available_models()


def pretraining_source(arm, stage2_epochs):
    """(run name, experiment, epochs, overrides) of the pre-training run after stage 1 that ``arm``'s
    encoder comes from; ("stage1", ...) for coord and None for scratch and the shipped models."""
    if shipped_arm(arm):
        return None
    base, factor = stage2_length(arm)
    suffix = arm[len(base) :]
    if base in ("scratch", "coord"):
        if suffix:
            raise SystemExit(f"{arm}: only the control and MolSpectra arms take _x<k> (stage 2 length)")
        return None if base == "scratch" else ("stage1", "denoise_pretrain", None, [])
    if base == "control":
        return f"control{suffix}", "denoise_pretrain", stage2_epochs * factor, []
    if base == "molspectra":
        return f"stage2{suffix}", "molspectra_pretrain", stage2_epochs * factor, []
    if base in VARIANTS:
        return f"stage2_{base}{suffix}", "molspectra_pretrain", stage2_epochs * factor, VARIANTS[base]
    raise SystemExit(
        f"unknown arm {arm}; choose from {list(ARMS) + list(VARIANTS)}, optionally with _x<k> (control, MolSpectra), "
        "or a shipped model (spkspectra models)"
    )


def matched_control(arm):
    """The control arm with the same stage 2 length as the MolSpectra-type ``arm``."""
    base, _ = stage2_length(arm)
    return "control" + arm[len(base) :]


def best_model(workdir, name):
    import glob

    (path,) = glob.glob(os.path.join(workdir, name, "runs", "*", "best_model"))
    return path


def recorded(path, value):
    """What the JSON file ``path`` records; ``value``, written there, when it records nothing yet."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    with open(path, "w") as f:
        json.dump(value, f, indent=1)
    return value


def check_spectra_set(workdir, n_spectra):
    """The GDB indices of the spectra set (the first ``n_spectra`` shipped molecules with every
    spectrum, all if None), recorded in ``<workdir>/spectra_set.json`` on first use; a workdir whose
    stage 2 and control runs were trained on another set is refused, since its finished runs would be
    reused as if they had been trained on this one."""
    from schnetpack_molspectra.data.sticks import load_sticks

    gdbs = [int(m.gdb_index) for m in load_sticks(n_molecules=n_spectra)]
    if n_spectra is not None and len(gdbs) < n_spectra:
        raise SystemExit(f"--n-spectra {n_spectra}: only {len(gdbs)} shipped molecules have every spectrum")
    record = os.path.join(workdir, "spectra_set.json")
    before = recorded(record, {"molecules": len(gdbs), "gdb_indices": gdbs})["gdb_indices"]
    if before != gdbs:
        asked = "all shipped" if n_spectra is None else f"--n-spectra {n_spectra}"
        raise SystemExit(
            f"{record}: this workdir's runs were pre-trained on {len(before)} spectra molecules, this study asks "
            f"for {len(gdbs)} ({asked}); pass --n-spectra {len(before)} to go on with it, or a new --workdir "
            "(its stage 1, scratch and Coord runs can be links to this one's)"
        )
    return gdbs


#: the options that shape a run's result: a workdir's finished runs are reused only under the same ones
RUN_SETTINGS = (
    "n_stage1",
    "stage1_epochs",
    "stage2_epochs",
    "pretrain_batch",
    "n_train",
    "n_val",
    "n_test",
    "ft_epochs",
    "ft_batch",
    "width",
    "interactions",
    "finetune_overrides",
    "pretrain_seed",
)


def check_run_settings(workdir, args):
    """The options of ``RUN_SETTINGS``, recorded in ``<workdir>/study_settings.json`` on first use; a
    workdir whose runs were made under other ones is refused, since a finished run is skipped by its
    name alone (``ft_gap_control_seed0`` with 1,000 labels would stand for one with 250)."""
    settings = {key: getattr(args, key) for key in RUN_SETTINGS}
    record = os.path.join(workdir, "study_settings.json")
    before = recorded(record, settings)
    differ = [
        f"--{key.replace('_', '-')} {before.get(key)} (asked: {settings[key]})"
        for key in RUN_SETTINGS
        if key in before and before[key] != settings[key]
    ]
    if differ:
        raise SystemExit(
            f"{record}: this workdir's runs were made with {', '.join(differ)}; pass those to go on with it, or a new "
            "--workdir (it can link the runs that the changed options do not touch, e.g. stage1, control and stage2 "
            "when only fine-tuning options change)"
        )
    return settings


def build_data(workdir, args):
    """The stage 1 structures, the spectra set and the fine-tuning database with its split file."""
    from schnetpack_molspectra.data.default import ensure_default_dataset
    from schnetpack_molspectra.data.qm9 import build_qm9_db, load_qm9pack
    from schnetpack_molspectra.data.sticks import shipped_selection

    table = load_qm9pack()
    selection = shipped_selection(table)
    spectra_db = ensure_default_dataset(n_molecules=args.n_spectra)

    def qm9_db(name, gdbs):
        path = os.path.join(workdir, name)
        if not os.path.exists(path):
            partial = path[:-3] + ".part.db"
            if os.path.exists(partial):
                os.remove(partial)
            build_qm9_db(partial, gdb_indices=[int(g) for g in gdbs])
            os.replace(partial, path)
        return path

    stage1_db = qm9_db(f"stage1_{args.n_stage1}.db", sorted(selection[: args.n_stage1]))
    n_hold = args.n_val + args.n_test
    ft_gdbs = selection[-(n_hold + args.n_train) :]
    ft_db = qm9_db(f"finetune_{args.n_train}_{args.n_val}_{args.n_test}.db", ft_gdbs)  # written in this order
    split = os.path.join(workdir, f"finetune_split_{args.n_train}_{args.n_val}_{args.n_test}.npz")
    if not os.path.exists(split):
        np.savez(
            split,
            train_idx=np.arange(args.n_train),
            val_idx=np.arange(args.n_train, args.n_train + args.n_val),
            test_idx=np.arange(args.n_train + args.n_val, args.n_train + n_hold),
        )
    overlap = set(selection[: args.n_stage1].tolist()) & set(selection[-n_hold:].tolist())
    if overlap:
        raise ValueError(
            f"{len(overlap)} stage 1 molecules are fine-tuning validation/test molecules: lower --n-stage1"
        )
    return stage1_db, spectra_db, ft_db, split


def reused_arms(args, results):
    """Take over into ``results`` the arms of ``args.reuse`` (an earlier results file) that this study did not run:
    only from a study of the same run settings, seeds and targets, and a shipped arm only as many pieces as it has
    now. Returns {arm: the file}."""
    with open(args.reuse) as f:
        earlier = json.load(f)
    keys = [*RUN_SETTINGS, "seeds"]
    differ = [k for k in keys if earlier["settings"].get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(
            f"{args.reuse}: made with other settings ({', '.join(differ)}); its arms cannot stand beside these"
        )
    reused = {}
    for target in args.targets:
        for arm, values in earlier["finetune"].get(target, {}).items():
            if arm in args.arms:
                continue
            if shipped_arm(arm) and earlier.get("model_pieces", {}).get(arm) != model_pieces(arm):
                raise SystemExit(
                    f"{args.reuse}: {arm} was measured with {earlier['model_pieces'].get(arm)} pieces, has "
                    f"{model_pieces(arm)} now: run it again"
                )
            results["finetune"].setdefault(target, {})[arm] = values
            reused[arm] = os.path.relpath(args.reuse)
    return reused


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="pretraining_study_runs")
    # default: inside the workdir, so a new study never overwrites a committed result; the README's
    # tables name their --out in benchmarks/results/ explicitly (benchmarks/README.md)
    p.add_argument("--out", default=None, help="results JSON (default: <workdir>/pretraining_study.json)")
    p.add_argument(
        "--arms",
        nargs="+",
        default=list(ARMS),
        help=f"of {list(ARMS) + list(VARIANTS)}; control and MolSpectra arms also with _x<k>",
    )
    p.add_argument("--targets", nargs="+", default=["homo", "lumo", "gap"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n-stage1", type=int, default=20000, help="stage 1 structures")
    p.add_argument("--stage1-epochs", type=int, default=5)
    p.add_argument(
        "--n-spectra",
        type=int,
        default=None,
        help="stage 2 and control on the first N shipped molecules with every spectrum (default: all)",
    )
    p.add_argument("--stage2-epochs", type=int, default=20, help="stage 2 and control epochs on the spectra set")
    p.add_argument("--pretrain-batch", type=int, default=32)
    p.add_argument("--pretrain-seed", type=int, default=0, help="seed of every pre-training run")
    p.add_argument("--n-train", type=int, default=1000, help="fine-tuning labels")
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--ft-epochs", type=int, default=30)
    p.add_argument("--ft-batch", type=int, default=32)
    p.add_argument(
        "--width", type=int, default=64, help="PaiNN n_atom_basis (the paper's QM9 encoder: 256 channels, 8 layers)"
    )
    p.add_argument("--interactions", type=int, default=3, help="PaiNN n_interactions")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument(
        "--report-only", action="store_true", help="tables and PNG from the runs finished so far; runs nothing"
    )
    p.add_argument("--finetune-overrides", nargs="*", default=[], help="extra qm9_finetune overrides (all arms)")
    p.add_argument(
        "--reuse",
        default=None,
        metavar="JSON",
        help="an earlier results file of the same settings: its arms not in --arms are taken over (e.g. scratch and "
        "denoise-painn-qm9 beside a new piece of molspectra-painn-qm9; a shipped arm only if its pieces are unchanged)",
    )
    args = p.parse_args(argv)

    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    args.out = args.out or os.path.join(workdir, "pretraining_study.json")
    start = time.time()
    walls = {}
    t = time.time()
    n_spectra = len(check_spectra_set(workdir, args.n_spectra))
    check_run_settings(workdir, args)
    stage1_db, spectra_db, ft_db, split = build_data(workdir, args)
    walls["data"] = time.time() - t
    common = [
        f"model.representation.n_atom_basis={args.width}",
        f"model.representation.n_interactions={args.interactions}",
        f"trainer.accelerator={args.accelerator}",
        "data.num_workers=2",
    ]
    pretrain = [
        *common,
        f"data.batch_size={args.pretrain_batch}",
        "trainer.max_steps=-1",
        f"+seed={args.pretrain_seed}",
    ]

    def run(name, overrides):
        result = spktrain(workdir, name, overrides)
        walls[name] = result["wall_s"]
        print(f"{name}: {result['wall_s']:.0f} s", flush=True)
        return result

    sources = {arm: pretraining_source(arm, args.stage2_epochs) for arm in args.arms}
    runs_after_stage1 = {src[0]: src for src in sources.values() if src and src[0] != "stage1"}
    if args.report_only:
        for name in ["stage1", *runs_after_stage1]:
            result = finished_run(workdir, name)
            if result is not None:
                walls[name] = result["wall_s"]
    elif any(sources.values()):
        run(
            "stage1",
            [
                "experiment=denoise_pretrain",
                f"data.datapath={stage1_db}",
                f"trainer.max_epochs={args.stage1_epochs}",
                *pretrain,
            ],
        )
        init = f"globals.pretrained_model={best_model(workdir, 'stage1')}"
        for name, experiment, epochs, extra in runs_after_stage1.values():  # in the order of --arms
            run(
                name,
                [
                    f"experiment={experiment}",
                    f"data.datapath={spectra_db}",
                    f"trainer.max_epochs={epochs}",
                    init,
                    *pretrain,
                    *extra,
                ],
            )

    # seed-major: every arm's seed 0 first, so an interrupted study already compares all arms
    finished = {}
    for seed in args.seeds:
        for target in args.targets:
            for arm in args.arms:
                name = f"ft_{target}_{arm}_seed{seed}"
                if args.report_only:
                    result = finished_run(workdir, name)
                    if result is not None:
                        finished[(target, arm, seed)] = result
                        walls[name] = result["wall_s"]
                    continue
                overrides = [
                    *qm9_finetune_overrides(
                        ft_db, split, target, args.n_train, args.n_val, args.n_test, args.ft_batch, args.ft_epochs, seed
                    ),
                    *common,
                    *args.finetune_overrides,
                ]
                if shipped_arm(arm):
                    overrides.append(f"globals.pretrained_model={arm}")
                elif sources[arm]:
                    overrides.append(f"globals.pretrained_model={best_model(workdir, sources[arm][0])}")
                r = finished[(target, arm, seed)] = run(name, overrides)
                print(f"  {target} {arm} seed {seed}: test MAE {r[f'test_{target}_mae_meV']:.1f} meV", flush=True)
    results = {"finetune": {}}
    for target in args.targets:
        for arm in args.arms:
            runs = [finished[(target, arm, seed)] for seed in args.seeds if (target, arm, seed) in finished]
            if not runs:
                continue
            results["finetune"].setdefault(target, {})[arm] = {
                "test_mae_meV": summary([r[f"test_{target}_mae_meV"] for r in runs]),
                "val_mae_meV_curves": [r[f"val_{target}_mae_meV_curve"] for r in runs],
                "wall_s": [r["wall_s"] for r in runs],
            }
    reused = reused_arms(args, results) if args.reuse else {}
    pretraining = {}
    for name in sorted({src[0] for src in sources.values() if src}):
        summary_file = [
            os.path.join(d, f)
            for d, _, fs in os.walk(os.path.join(workdir, name))
            for f in fs
            if f == "pretraining_summary.json"
        ]
        if summary_file:
            pretraining[name] = json.load(open(summary_file[0]))
    results["pretraining"] = pretraining
    # which training state of each shipped model was measured (scripts/record_measured.py checks it)
    results["model_pieces"] = {arm: model_pieces(arm) for arm in [*args.arms, *reused] if shipped_arm(arm)}
    if reused:
        results["reused"] = reused
    results["wall_s"] = walls
    results["settings"] = {
        **vars(args),
        "spectra_molecules": n_spectra,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "total_wall_s": time.time() - start,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    shown = argparse.Namespace(**{**vars(args), "arms": [*reused, *args.arms]})  # the reused arms beside
    report(results, shown)
    plot(results, shown, os.path.splitext(args.out)[0] + ".png")
    return 0


def report(results, args):
    trained_here = [a for a in args.arms if a != "scratch" and not shipped_arm(a)]
    stage2 = f"; stage 2 on {results['settings']['spectra_molecules']} spectra molecules" if trained_here else ""
    print(
        f"\nTest MAE (meV), mean ± std over seeds {args.seeds}; {args.n_train} labels, PaiNN {args.width}x{args.interactions}, "
        f"{args.ft_epochs} fine-tuning epochs{stage2}"
    )
    print("| target | " + " | ".join(args.arms) + " | coord / scratch | molspectra / control | molspectra / coord |")
    print("|---" * (len(args.arms) + 4) + "|")
    for target, arms in results["finetune"].items():
        mean = {a: arms[a]["test_mae_meV"]["mean"] for a in arms}
        cells = [
            f"{mean[a]:.1f} ± {arms[a]['test_mae_meV']['std']:.1f} (n={arms[a]['test_mae_meV']['n']})"
            if a in arms
            else "–"
            for a in args.arms
        ]

        def ratio(a, b):
            return f"{mean[a] / mean[b]:.3f}" if a in mean and b in mean else "–"

        print(
            f"| {target} | "
            + " | ".join(cells)
            + f" | {ratio('coord', 'scratch')} | {ratio('molspectra', 'control')} | {ratio('molspectra', 'coord')} |"
        )
    for target, arms in results["finetune"].items():
        for arm in [a for a in args.arms if shipped_arm(a) and a in arms and "scratch" in arms]:
            a, c = arms[arm]["test_mae_meV"], arms["scratch"]["test_mae_meV"]
            print(f"  {target} {arm} / scratch: {a['mean'] / c['mean']:.3f}")
        if {"molspectra-painn-qm9", "denoise-painn-qm9"} <= set(arms):  # stage 2 over its own stage 1
            a, c = arms["molspectra-painn-qm9"]["test_mae_meV"], arms["denoise-painn-qm9"]["test_mae_meV"]
            print(f"  {target} molspectra-painn-qm9 / denoise-painn-qm9: {a['mean'] / c['mean']:.3f}")
    others = [a for a in args.arms if a not in ARMS and not a.startswith("control") and not shipped_arm(a)]
    for target, arms in results["finetune"].items():
        for arm in others:
            control = matched_control(arm)
            if arm in arms and control in arms:
                a, c = arms[arm]["test_mae_meV"], arms[control]["test_mae_meV"]
                print(
                    f"  {target} {arm}: {a['mean']:.1f} ± {a['std']:.1f} (n={a['n']}); / {control} "
                    f"{a['mean'] / c['mean']:.3f}"
                )
    print(
        f"paper (gap, full QM9): MolSpectra / Coord = {PAPER['molspectra_over_coord_gap']:.2f}, "
        f"Coord / scratch = {PAPER['coord_over_scratch_gap']:.2f}"
    )
    for name, wall in results["wall_s"].items():
        print(f"  wall {name}: {wall:.0f} s")


def plot(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(results["finetune"])
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for arm, r in results["finetune"][target].items():
            curves = [c for c in r["val_mae_meV_curves"] if c]
            n = min(len(c) for c in curves)
            data = np.array([c[:n] for c in curves])
            epochs = np.arange(1, n + 1)
            ax.plot(epochs, data.mean(0), label=f"{arm} (test {r['test_mae_meV']['mean']:.0f} meV)")
            ax.fill_between(epochs, data.min(0), data.max(0), alpha=0.2)
        ax.set_xlabel("fine-tuning epoch")
        ax.set_ylabel(f"validation MAE {target} (meV)")
        ax.set_yscale("log")
        n_runs = sorted({len(r["val_mae_meV_curves"]) for r in results["finetune"][target].values()})
        ax.set_title(f"{target}: {args.n_train} labels, seeds per arm: {'/'.join(map(str, n_runs))}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"learning curves: {path}")


if __name__ == "__main__":
    sys.exit(main())
