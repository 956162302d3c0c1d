"""Write the benchmarks' measured figures into the shipped models' cards (maintainers).

The model card is the one source of the README's model table (``spkspectra models --markdown``);
its ``measured`` entry is filled from committed benchmark results, never by hand, and only from those that
measured the model as it is now (their ``model_pieces``: the pieces its card lists):

  benchmarks/results/retrieval.json                 entry tagged with the model's name
                                                    (``benchmarks/retrieval.py --model <name> --tag <name>``)
  benchmarks/results/shipped_finetune_<n>.json      ``benchmarks/pretraining_study.py`` with the shipped
                                                    models as arms (``--n-train <n>``)
  benchmarks/results/spectra_prediction.json        ``benchmarks/spectra_prediction.py --model <name>``
                                                    (a spectra model: SIS and cosine on held-out molecules)
  benchmarks/results/retrieval.json                 an entry's ``predict_then_match`` with the spectra model
                                                    (``benchmarks/retrieval.py --match-model <name>``)

    python scripts/record_measured.py            # every shipped model
    spkspectra models --markdown                 # the README's table

Only the card changes; the weights and the config are rewritten as stored.
"""

import argparse
import glob
import json
import os
import re
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "results")


def retrieval_figures(name, path, pieces):
    """'recall@1 ... among 1,000' from the retrieval benchmark's entry for ``name``, or None (also when
    the entry measured another training state: ``model_pieces`` is not ``pieces``)."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        entry = json.load(f).get(name)
    if entry is None or entry.get("model_pieces") != pieces:
        return None
    by_size = entry["results"]["library_qm9"]
    n = "1000" if "1000" in by_size else sorted(by_size, key=int)[0]
    cells = by_size[n]
    parts = [
        f"{label} {cells[f'clean:{subset}']['recall@1']:.2f}"
        for subset, label in (("uv+ir+raman", "all three"), ("ir+raman", "IR+Raman"), ("ir", "IR alone"))
        if f"clean:{subset}" in cells
    ]
    others = [
        f"{label} {cells[f'{kind}:ir+raman']['recall@1']:.2f}"
        for kind, label in (("perturbed", "perturbed"), ("b3lyp", "B3LYP lines"), ("instrument", "instrument-like"))
        if f"{kind}:ir+raman" in cells
    ]
    queries = entry["queries"].get("held_out", "?")
    text = f"recall@1 among {int(n):,} ({queries} held-out molecules): " + ", ".join(parts)
    return text + (f"; IR+Raman from other spectra: {', '.join(others)}" if others else "")


def finetune_figures(name, paths, pieces):
    """'gap test MAE ... vs scratch' per label count from the fine-tuning studies that measured the model's
    ``pieces`` (their ``model_pieces``), or None."""
    parts = []
    for path in paths:
        with open(path) as f:
            study = json.load(f)
        arms = study["finetune"].get("gap", {})
        if name not in arms or "scratch" not in arms or study.get("model_pieces", {}).get(name) != pieces:
            continue
        if name in study.get("reused", {}):  # taken over from another study, which says it itself
            continue
        model, scratch = arms[name]["test_mae_meV"], arms["scratch"]["test_mae_meV"]
        labels = study["settings"]["n_train"]
        parts.append(
            f"{labels:,} labels {model['mean']:.0f} ± {model['std']:.0f} meV vs scratch {scratch['mean']:.0f} "
            f"({model['mean'] / scratch['mean']:.2f}x, {model['n']} seeds)"
        )
    return "gap test MAE, " + "; ".join(parts) if parts else None


def prediction_figures(name, path, pieces):
    """'mean SIS ... on held-out molecules' from the spectra-prediction benchmark's ``model`` entry for
    ``name`` at ``pieces``, or None."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        entry = json.load(f).get("model")
    if not entry or entry.get("model") != name or entry.get("model_pieces") != pieces:
        return None
    held_out = entry["held_out"]
    parts = [
        f"{m.upper() if m != 'raman' else 'Raman'} SIS {held_out[m]['sis']:.2f}, cosine {held_out[m]['cosine']:.2f}"
        for m in ("ir", "raman", "uv")
        if m in held_out
    ]
    speed = f"; {entry['speedup']:,.0f}x the simulator's molecules per second" if entry.get("speedup") else ""
    return f"{', '.join(parts)} against GFN2-xTB spectra of held-out molecules{speed}"


def matching_figures(name, path, pieces):
    """'predict-then-match recall@1 ...' from any retrieval entry whose ``predict_then_match`` used ``name``
    at ``pieces`` (``benchmarks/retrieval.py --match-model <name>``): identify's default, tolerant matching
    where it was measured (libraries up to 10,000), else exact; or None."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        entries = json.load(f)
    for entry in entries.values():
        match = entry.get("predict_then_match") or {}
        if match.get("match_model") != name or match.get("model_pieces") != pieces:
            continue
        by_size = match["library_qm9"]
        tolerant = "tolerant:clean:ir+raman" in by_size.get("1000", {})
        prefix = "tolerant:" if tolerant else ""
        parts = [
            f"{by_size[n][prefix + 'clean:ir+raman']['recall@1']:.2f} among {int(n):,}"
            for n in ("1000", "10000")
            if prefix + "clean:ir+raman" in by_size.get(n, {})
        ]
        largest = max(by_size, key=int)
        if int(largest) > 10000:
            exact_only = prefix + "clean:ir+raman" not in by_size[largest]  # tolerant not measured at that size
            key = "clean:ir+raman" if exact_only else prefix + "clean:ir+raman"
            how_all = " (exact)" if exact_only and tolerant else ""
            parts.append(f"{by_size[largest][key]['recall@1']:.2f} among all {int(largest):,}{how_all}")
        queries = entry["queries"].get("held_out", "?")
        others = [
            f"{label} {by_size['1000'][prefix + kind + ':ir+raman']['recall@1']:.2f}"
            for kind, label in (("perturbed", "perturbed"), ("b3lyp", "B3LYP lines"), ("instrument", "instrument-like"))
            if prefix + kind + ":ir+raman" in by_size.get("1000", {})
        ]
        how = "tolerant " if tolerant else ""
        text = f"{how}predict-then-match recall@1 from IR+Raman ({queries} held-out molecules): " + ", ".join(parts)
        return text + (f"; from other spectra among 1,000: {', '.join(others)}" if others else "")
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="shipped models (default: all)")
    p.add_argument("--results", default=RESULTS)
    args = p.parse_args(argv)

    from schnetpack_molspectra.pretrained import read_weights, update_card
    from schnetpack_molspectra.shipped import UnknownModelError, available_models, model_file

    studies = sorted(
        glob.glob(os.path.join(args.results, "shipped_finetune_*.json")),
        key=lambda f: int(re.findall(r"\d+", os.path.basename(f))[0]),
    )
    for name in args.names or available_models():
        try:
            path = model_file(name)
        except UnknownModelError as err:
            raise SystemExit(str(err)) from None
        card = read_weights(path)["card"]
        measured = {}
        pieces = len(card.get("pieces", []))
        retrieval = retrieval_figures(name, os.path.join(args.results, "retrieval.json"), pieces)
        if retrieval:
            measured["identification"] = retrieval
        finetune = finetune_figures(name, studies, pieces)
        if finetune:
            measured["fine-tuning"] = finetune
        prediction = prediction_figures(name, os.path.join(args.results, "spectra_prediction.json"), pieces)
        if prediction:
            measured["spectra"] = prediction
        matching = matching_figures(name, os.path.join(args.results, "retrieval.json"), pieces)
        if matching:
            measured["identification"] = matching
        card["measured"] = measured
        update_card(path, card)
        print(f"{name}: {json.dumps(measured, indent=1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
