"""Spectra from the structure: does pre-training pay off, and how fast is prediction against the simulator?

Fine-tunes ``spktrain experiment=spectra_finetune`` (SpectraHead, SID loss) from each encoder of
``--arms`` (``scratch``, or a shipped model: ``denoise-painn-qm9``, ``molspectra-painn-qm9``, named in the
results with the number of pieces it had trained) on ``--n-train`` molecules of the training database (the
package's default dataset, or ``--data``; ``all``: every molecule outside the validation and test splits) for
``--steps`` steps, for each seed of ``--seeds``, and tests every best model on the held-out molecules
(``data.sticks.held_out_selection``, which no shipped model saw) whose sticks are committed in
``benchmarks/data/held_out_sticks``: per modality the mean SIS (1 / (1 + SID)), cosine and Spearman
of predicted against simulated spectra (:mod:`schnetpack_molspectra.spectra.similarity`), and the SIS
of both spectra after a Gaussian smoothing of sigma = 10 cm^-1 (``sis_smoothed``: Chemprop-IR's
convention for comparing to experiment; the spectra here are 1 cm^-1 grids of Lorentzian lines). The
validation split (500 training-set molecules) picks each run's best epoch; the held-out molecules
are only tested.

With ``--model NAME|PATH`` (e.g. the shipped ``spectra-painn-qm9``) that model is tested on the
held-out molecules as well, and its ``predict`` speed measured against the simulator's (GFN2-xTB
relaxation + IR + Raman of ``--simulate`` held-out molecules, in this process and on one process a core,
the faster counting) on the same cores, in the same run;
``--plot`` draws predicted against simulated spectra of its best, median and worst molecules.

    python benchmarks/spectra_prediction.py --arms scratch,denoise-painn-qm9,molspectra-painn-qm9 \\
        --n-train 1000 --seeds 0,1,2 --steps 600 --workdir /tmp/spectra_bench
    python benchmarks/spectra_prediction.py --arms scratch,denoise-painn-qm9,molspectra-painn-qm9 \\
        --n-train all --data grown.db --seeds 0,1,2 --steps 500   # grown.db: spkspectra default --sticks ...
    python benchmarks/spectra_prediction.py --model spectra-painn-qm9 --simulate 20 \\
        --plot benchmarks/results/spectra_prediction.png

Runs resume: a finished run (``result.json``) is not run again. Results go to
``benchmarks/results/spectra_prediction.json`` (``--out``), keyed by arm, training size, steps and seed.
"""

import argparse
import functools
import json
import os
import platform
import sys
import time

import numpy as np

import schnetpack_molspectra  # noqa: F401  (tblite before torch: the simulator's timing runs in this process)

# isort: split
import torch
from _runs import model_pieces, model_steps, spktrain, summary, timed
from ase.db import connect

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.default import ensure_default_dataset
from schnetpack_molspectra.data.sticks import build_db_from_sticks
from schnetpack_molspectra.predict import load_predictor, predict_spectra
from schnetpack_molspectra.spectra.alignment import FWHM_PER_SIGMA, VIBRATIONAL, smooth
from schnetpack_molspectra.spectra.grids import GRIDS
from schnetpack_molspectra.spectra.similarity import SIMILARITY_MEASURES, area_normalize, has_spectrum, similarity

HERE = os.path.dirname(os.path.abspath(__file__))
HELD_OUT_STICKS = os.path.join(HERE, "data", "held_out_sticks")
RESULTS = os.path.join(HERE, "results", "spectra_prediction.json")
N_VAL = 500
N_TEST = 32
#: FWHM (cm^-1) of the Gaussian that smooths both spectra for ``sis_smoothed``: Chemprop-IR's sigma of 10 cm^-1
SMOOTHING_FWHM = 10.0 * FWHM_PER_SIGMA


def held_out_set(workdir):
    """(structures, {modality: (n, L) simulated spectra}, names) of the held-out molecules."""
    db = os.path.join(workdir, "held_out.db")
    if not os.path.exists(db):
        build_db_from_sticks(db, folder=HELD_OUT_STICKS, require_uv=False)
    atoms, spectra, names = [], {m: [] for m in msp.modalities}, []
    with connect(db) as conn:
        for row in conn.select(sort="id"):
            atoms.append(row.toatoms())
            names.append(row.get("smiles") or row.get("label"))
            for m in msp.modalities:
                spectra[m].append(row.data[msp.spectrum_keys[m]][0])
    return atoms, {m: np.stack(v) for m, v in spectra.items()}, names


def scores(predicted, simulated):
    """Per modality and measure: the per-molecule values (molecules with that spectrum only); for the
    vibrational spectra also ``sis_smoothed``, the SIS after both are smoothed (:data:`SMOOTHING_FWHM`)."""
    out = {}
    for m, pred in predicted.items():
        present = has_spectrum(torch.as_tensor(simulated[m])).numpy()
        pred, target = np.asarray(pred)[present], np.asarray(simulated[m])[present]
        p, t = (torch.as_tensor(x, dtype=torch.float64) for x in (pred, target))
        out[m] = {s: similarity(s, p, t).numpy() for s in SIMILARITY_MEASURES}
        if m in VIBRATIONAL:
            p, t = (torch.as_tensor(smooth(x, m, SMOOTHING_FWHM), dtype=torch.float64) for x in (pred, target))
            out[m]["sis_smoothed"] = similarity("sis", p, t).numpy()
    return out


def mean_scores(per_molecule):
    return {m: {s: float(v.mean()) for s, v in d.items()} for m, d in per_molecule.items()}


def mean_spectrum_baseline(datapath, simulated, modalities=("ir", "raman")):
    """Every held-out molecule predicted as the mean area-normalised spectrum of the training
    database: what a model that ignores the structure scores."""
    sums = {m: 0.0 for m in modalities}
    with connect(datapath) as conn:
        for row in conn.select():
            for m in modalities:
                sums[m] = sums[m] + area_normalize(torch.tensor(row.data[msp.spectrum_keys[m]][0], dtype=torch.float64))
    predicted = {m: np.tile(area_normalize(v).numpy(), (len(simulated[m]), 1)) for m, v in sums.items()}
    return mean_scores(scores(predicted, simulated))


def arm_label(arm, pieces):
    """How results name an encoder: ``scratch``, or a shipped model with its number of training pieces (the
    shipped models grow piece by piece: a run measures the state it started from)."""
    return arm if pieces is None else f"{arm} ({pieces} pieces)"


def training_size(n_train, datapath):
    """``--n-train``'s value as a number of molecules: ``all`` is every molecule of the database not in the
    validation (``N_VAL``) or test (``N_TEST``) split."""
    if n_train != "all":
        return int(n_train)
    with connect(datapath) as conn:
        return conn.count() - N_VAL - N_TEST


def run_arm(args, arm, n_train, seed, datapath, pieces=None):
    name = f"{arm if pieces is None else f'{arm}-{pieces}p'}_n{n_train}_{args.steps}steps_s{seed}"
    overrides = [
        "experiment=spectra_finetune",
        f"data.datapath={datapath}",
        f"data.num_train={n_train}",
        f"data.num_val={N_VAL}",
        f"data.num_test={N_TEST}",
        f"data.num_workers={args.workers}",
        f"trainer.max_steps={args.steps}",
        f"+seed={seed}",
        *args.overrides,
    ]
    if arm != "scratch":
        overrides.append(f"globals.pretrained_model={arm}")
    result = spktrain(args.workdir, name, overrides, env={"OMP_NUM_THREADS": str(args.threads)})
    return name, result


def evaluate(model, atoms, simulated, device="cpu"):
    predictor = load_predictor(model, device=device)
    predicted = predict_spectra(predictor, atoms)
    per_molecule = scores(predicted, simulated)
    return predictor, predicted, per_molecule


def predict_rate(predictor, atoms, repeats=5):
    """Molecules per second of ``predict_spectra`` on ``atoms`` once warm (after a call on 32 of them): the
    median of ``repeats`` timed calls."""
    predict_spectra(predictor, atoms[:32])
    return float(np.median([len(atoms) / timed(predict_spectra, predictor, atoms)[1] for _ in range(repeats)]))


def simulator_rate(atoms, n, workers=1):
    """Molecules per second of the simulator (GFN2-xTB relaxation + IR + Raman, no UV) on ``n`` of them: in this
    process (``workers=1``, tblite's OpenMP threads on the cores), or on ``workers`` processes of one thread each as
    ``spkspectra simulate --workers`` and ``scripts/ship_sticks.py`` run it (``start_pool``; timed once each
    worker has had a molecule, so that process start-up is not counted)."""
    from schnetpack_molspectra.data.simulate.runner import SimulationSettings, simulate_molecule, start_pool
    from schnetpack_molspectra.data.simulate.uv import NO_UV

    settings = SimulationSettings(uv_method=NO_UV)
    if workers == 1:
        start = time.perf_counter()
        for a in atoms[:n]:
            simulate_molecule(a, settings)
        return n / (time.perf_counter() - start)
    work = functools.partial(simulate_molecule, settings=settings)
    with start_pool(workers) as pool:
        pool.map(work, atoms[n : n + workers], chunksize=1)  # untimed: the workers' imports and tblite loaded
        start = time.perf_counter()
        pool.map(work, atoms[:n], chunksize=1)
        return n / (time.perf_counter() - start)


def plot_examples(path, predicted, simulated, per_molecule, names, modality="ir"):
    """Predicted against simulated spectra of the best, median and worst molecule by SIS of ``modality``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = np.flatnonzero(has_spectrum(torch.as_tensor(simulated[modality])).numpy())
    sis = per_molecule[modality]["sis"]
    order = np.argsort(sis)
    picks = {"best": order[-1], "median": order[len(order) // 2], "worst": order[0]}
    modalities = list(predicted)
    fig, axes = plt.subplots(
        len(picks), len(modalities), figsize=(5 * len(modalities), 2.6 * len(picks)), squeeze=False
    )
    for row, (label, k) in enumerate(picks.items()):
        i = present[k]
        for col, m in enumerate(modalities):
            ax = axes[row][col]
            x = GRIDS[m].values()
            target = area_normalize(torch.as_tensor(simulated[m][i], dtype=torch.float64)).numpy()
            ax.plot(x, target, color="k", lw=1, label="simulated (GFN2-xTB)")
            ax.plot(x, predicted[m][i], color="tab:red", lw=1, label="predicted")
            value = float(similarity("sis", torch.as_tensor(predicted[m][i : i + 1]), torch.as_tensor(target[None])))
            ax.set_title(f"{label} ({modality} SIS): {names[i]}  {m} SIS {value:.2f}", fontsize=8)
            ax.set_xlabel(GRIDS[m].unit)
            ax.set_yticks([])
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot -> {path}")


COLUMNS = [(m, s) for m in ("ir", "raman") for s in ("sis", "cosine", "spearman", "sis_smoothed")]
LABELS = {"sis": "SIS", "cosine": "cosine", "spearman": "Spearman", "sis_smoothed": "SIS (σ 10 cm⁻¹)"}


def _cell(values, key):
    """One table cell: the value (or mean ± std over seeds) of ``key``, or "-" for a result written before the measure."""
    value = values.get(key)
    if value is None:
        return "-"
    if isinstance(value, dict):  # over seeds: the spread only where there are several
        return f"{value['mean']:.3f} ± {value['std']:.3f}" if value.get("n", 2) > 1 else f"{value['mean']:.3f}"
    return f"{value:.3f}"


def _count(value):
    """A count for a table cell, "-" when not recorded."""
    return "-" if value is None else f"{int(value):,}"


def markdown(results):
    """The results file as a Markdown table: per encoder and training size the mean ± std over seeds
    of each measure on the held-out molecules, the mean-spectrum baseline and the ``--model`` row."""
    head = (
        "| encoder | training molecules | steps | seeds | "
        + " | ".join(f"{m.upper() if m == 'ir' else 'Raman'} {LABELS[s]}" for m, s in COLUMNS)
        + " |"
    )
    lines = [head, "|" + "---|" * (4 + len(COLUMNS))]
    for key, cols in results.get("summary", {}).items():
        arm, rest = key.split(" n=")
        n, steps = rest.split(" steps=")
        n_seeds = next(iter(cols.values()))["n"]
        cells = [_cell(cols, f"{m}_{s}") for m, s in COLUMNS]
        lines.append(f"| {arm} | {int(n):,} | {int(steps):,} | {n_seeds} | " + " | ".join(cells) + " |")
    base = results.get("baseline_mean_spectrum")
    if base:
        lines.append(
            "| (mean training spectrum) | - | - | - | " + " | ".join(_cell(base[m], s) for m, s in COLUMNS) + " |"
        )
    model = results.get("model")
    if model:
        lines.append(
            f"| `{model['model']}` ({model['model_pieces']} pieces) | all | {_count(model.get('steps'))} | 1 | "
            + " | ".join(_cell(model["held_out"][m], s) for m, s in COLUMNS)
            + " |"
        )
        if model.get("speedup"):
            by = model.get("simulator_molecules_per_s_by_processes") or {}
            ways = ", ".join(f"{float(r):.3f} on {w} process{'es' if int(w) > 1 else ''}" for w, r in by.items())
            lines.append(
                f"\npredict {model['predict_molecules_per_s']:.1f} molecules/s, simulator (GFN2-xTB relaxation + IR + "
                f"Raman, {model['simulated_for_timing']} molecules{'; ' + ways if ways else ''}) "
                f"{model['simulator_molecules_per_s']:.3f} molecules/s: {model['speedup']:,.0f}x"
            )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default="", help="comma-separated: scratch and/or shipped encoders")
    p.add_argument(
        "--n-train", default="1000", help="comma-separated training sizes; all: the database less validation and test"
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=600, help="optimiser steps of each fine-tuning run")
    p.add_argument("--data", default=None, help="training database (default: the package's default dataset)")
    p.add_argument("--model", default=None, help="also test this spectra model (shipped name or path)")
    p.add_argument(
        "--simulate",
        type=int,
        default=10,
        help="held-out molecules the simulator's speed is timed on (at least 4 a core)",
    )
    p.add_argument("--plot", default=None, help="PNG of the --model's best, median and worst held-out molecules")
    p.add_argument("--workdir", default="spectra_bench")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--report", action="store_true", help="print the results file as a Markdown table and stop")
    p.add_argument("overrides", nargs="*", help="further spktrain overrides of every run")
    args = p.parse_args(argv)
    if args.report:
        with open(args.out) as f:
            print(markdown(json.load(f)))
        return 0
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    atoms, simulated, names = held_out_set(args.workdir)
    datapath = os.path.abspath(args.data) if args.data else ensure_default_dataset()
    results = json.load(open(args.out)) if os.path.exists(args.out) else {}
    results.setdefault("runs", {})
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}"
    results["held_out_molecules"] = len(atoms)
    if "baseline_mean_spectrum" not in results:
        results["baseline_mean_spectrum"] = mean_spectrum_baseline(datapath, simulated)
        print("mean training spectrum:", json.dumps(results["baseline_mean_spectrum"]), flush=True)

    arms = [a for a in args.arms.split(",") if a]
    for n_train in [training_size(n, datapath) for n in args.n_train.split(",")]:
        for arm in arms:
            pieces = None if arm == "scratch" else model_pieces(arm)
            for seed in [int(s) for s in args.seeds.split(",")]:
                name, result = run_arm(args, arm, n_train, seed, datapath, pieces)
                best = os.path.join(args.workdir, name, "runs")
                (run_id,) = os.listdir(best)
                _, _, per_molecule = evaluate(os.path.join(best, run_id, "best_model"), atoms, simulated)
                results["runs"][name] = {
                    "arm": arm,
                    "encoder_pieces": pieces,
                    "n_train": n_train,
                    "seed": seed,
                    "steps": args.steps,
                    "train_wall_s": result["wall_s"],
                    "data": os.path.basename(datapath),
                    "held_out": mean_scores(per_molecule),
                }
                print(name, json.dumps(results["runs"][name]["held_out"]), flush=True)
    table = {}
    for run in results["runs"].values():
        key = f"{arm_label(run['arm'], run.get('encoder_pieces'))} n={run['n_train']} steps={run['steps']}"
        for m, d in run["held_out"].items():
            for s, v in d.items():
                table.setdefault(key, {}).setdefault(f"{m}_{s}", []).append(v)
    results["summary"] = {k: {c: summary(v) for c, v in cols.items()} for k, cols in table.items()}

    if args.model:
        predictor, predicted, per_molecule = evaluate(args.model, atoms, simulated)
        rate_predict = predict_rate(predictor, atoms)
        # the simulator as it runs fastest on these cores: in-process or on one process a core, on the same molecules,
        # at least 4 a process (so that one slow molecule does not set the pooled rate)
        cores = os.cpu_count() or 1
        n_simulate = max(args.simulate, 4 * cores) if args.simulate else 0
        rates_simulate = {w: simulator_rate(atoms, n_simulate, w) for w in sorted({1, cores})} if n_simulate else {}
        rate_simulate = max(rates_simulate.values()) if rates_simulate else None
        results["model"] = {
            "model": args.model,
            "model_pieces": model_pieces(args.model),
            "steps": model_steps(args.model),
            "held_out": mean_scores(per_molecule),
            "median": {m: {s: float(np.median(v)) for s, v in d.items()} for m, d in per_molecule.items()},
            "predict_molecules_per_s": rate_predict,
            "simulator_molecules_per_s": rate_simulate,
            "simulator_molecules_per_s_by_processes": rates_simulate,
            "speedup": rate_predict / rate_simulate if rate_simulate else None,
            "simulated_for_timing": n_simulate,
        }
        print(json.dumps(results["model"], indent=1))
        if args.plot:
            plot_examples(args.plot, predicted, simulated, per_molecule, names)
    results["wall_s"] = time.perf_counter() - started
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(markdown(results))
    print(f"wall {results['wall_s']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
