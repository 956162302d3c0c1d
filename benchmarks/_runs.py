"""Helpers of the benchmark scripts: real ``spktrain`` runs that resume, their logged scalars, timing and
the results file."""

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

from schnetpack_molspectra.train.logs import read_scalars


def logged_results(run):
    """The last value of every ``test_*`` and ``val_*`` scalar a run logged, and each ``val_*`` scalar's
    curve (``<tag>_curve``, every validation in step order)."""
    values = {}
    for tag, points in read_scalars(run).items():
        if tag.startswith(("test_", "val_")):
            values[tag] = points[-1][1]
            if tag.startswith("val_"):
                values[tag + "_curve"] = [value for _, value in points]
    return values


def finished_run(workdir, name):
    """The result of the spktrain run ``workdir/name`` if it finished, else None."""
    done = os.path.join(workdir, name, "result.json")
    if not os.path.exists(done):
        return None
    with open(done) as f:
        return json.load(f)


def qm9_finetune_overrides(db, split, target, n_train, n_val, n_test, batch_size, epochs, seed):
    """``qm9_finetune`` on a QM9 database with a fixed split file: the overrides every benchmark shares."""
    return [
        "experiment=qm9_finetune",
        f"data.datapath={db}",
        f"+data.split_file={split}",
        f"globals.property={target}",
        f"data.num_train={n_train}",
        f"data.num_val={n_val}",
        f"data.num_test={n_test}",
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={epochs}",
        f"+seed={seed}",
    ]


def console_script(name):
    """The console script ``name`` of the Python running this benchmark (beside ``sys.executable``), so
    that the benchmark trains with the same environment, not with whatever comes first on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(beside):
        raise FileNotFoundError(f"{beside} does not exist: install the project into this Python (pip install -e .)")
    return beside


def spktrain(workdir, name, overrides, env=None):
    """One spktrain run in ``workdir/name`` (skipped when it finished before); its test scalars."""
    cwd = os.path.join(workdir, name)
    done = os.path.join(cwd, "result.json")
    previous = finished_run(workdir, name)
    if previous is not None:
        return previous
    if os.path.isdir(cwd):  # an unfinished earlier attempt: kept aside, named, never silently deleted
        aside = f"{cwd}.unfinished-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(cwd, aside)
        print(f"{name}: an unfinished earlier run moved to {aside}; starting it again", flush=True)
    os.makedirs(cwd)
    start = time.time()
    proc = subprocess.run(
        [console_script("spktrain"), *overrides],
        cwd=cwd,
        env=dict(os.environ, PWD=cwd, **(env or {})),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (run,) = glob.glob(os.path.join(cwd, "runs", "*"))
    result = {"wall_s": time.time() - start, **logged_results(run)}
    with open(done, "w") as f:
        json.dump(result, f)
    return result


def model_card(model):
    """The card of a shipped model (by name) or of a weights file; None for any other model file (a ``best_model``)."""
    from schnetpack_molspectra.shipped import resolve_model
    from schnetpack_molspectra.weights import read_weights

    path = resolve_model(model)
    if not path.endswith(".pt"):
        return None
    return read_weights(path)["card"]


def model_pieces(model):
    """The number of training pieces in the card of a shipped model (by name) or of a weights file: which
    state of the model a result measured (``scripts/record_measured.py`` checks it); None for any other
    model file (a ``best_model``)."""
    card = model_card(model)
    return None if card is None else len(card.get("pieces", []))


def model_steps(model):
    """The optimiser steps of all the training pieces in a model's card (:func:`model_card`), or None."""
    card = model_card(model)
    return None if card is None else sum(int(piece["steps"]) for piece in card.get("pieces", []))


def summary(values):
    values = np.asarray(values, dtype=float)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values.tolist(),
    }


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds it took)``."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def write_results(path, results, started):
    """Write ``results`` with their ``wall_s`` (since ``time.perf_counter()`` was ``started``) to ``path``."""
    results["wall_s"] = time.perf_counter() - started
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wall {results['wall_s']:.0f} s -> {path}")
