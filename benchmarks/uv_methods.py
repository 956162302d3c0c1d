"""UV levels of the simulator against TDDFT (TDA-B3LYP/def2-SVP) on QM9 molecules: accuracy and cost.

For the first ``--n`` molecules of the shipped selection (QM9 B3LYP geometries), every method in
``--methods`` computes the lowest ``--states`` singlets with ``uv_spectrum_sticks``. Each
(method, molecule) result is appended to ``<workdir>/uv_results.jsonl`` when it is done, so a
killed run resumes. Reported against the reference method, per method:

  time      seconds per molecule on one core (OMP_NUM_THREADS=1), mean
  dE1       |lowest excitation energy - reference|, eV, mean
  dEbright  |energy of the strongest state within the reference's window - reference's|, eV, mean
  cos       cosine similarity of the spectra broadened on the UV grid (0.2 eV FWHM)
  cos_cal   the same after a linear energy calibration E' = a E + b fitted on the other half
            of the molecules (2-fold), which is what `uv_energy_scale`-style corrections can reach

  python benchmarks/uv_methods.py --n 20 --methods tddft,fast,stda --workers 2
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def _one(job):
    """One (method, molecule) result, timed in a single-threaded worker."""
    from schnetpack_molspectra.data.simulate.uv import uv_spectrum_sticks

    method, index, smiles, atoms, states = job
    t0 = time.perf_counter()
    try:
        uv = uv_spectrum_sticks(atoms, method, states)
        rec = {"energies": uv["energies"].tolist(), "strengths": uv["strengths"].tolist()}
    except Exception as err:
        rec = {"error": f"{type(err).__name__}: {err}"}
    rec.update(method=method, gdb_index=index, smiles=smiles, seconds=time.perf_counter() - t0)
    return rec


class _Serial:
    """The in-process stand-in of a pool (``--workers 1``)."""

    imap_unordered = staticmethod(map)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _pool(workers):
    from schnetpack_molspectra.data.simulate.runner import start_pool  # one OpenMP thread per worker

    return _Serial() if workers <= 1 else start_pool(workers)


def compute(args):
    from schnetpack_molspectra.data.inputs import from_qm9
    from schnetpack_molspectra.data.qm9 import load_qm9pack
    from schnetpack_molspectra.data.sticks import shipped_selection

    os.makedirs(args.workdir, exist_ok=True)
    out = os.path.join(args.workdir, "uv_results.jsonl")
    done = set()
    if os.path.exists(out):
        for line in open(out):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            done.add((r["method"], r["gdb_index"]))
    table = load_qm9pack()
    gdbs = shipped_selection(table)[: args.n]
    molecules = from_qm9(gdb_indices=gdbs, table=table)
    todo = [(method, m) for method in args.methods for m in molecules if (method, m.index) not in done]
    with open(out, "a") as f, _pool(args.workers) as pool:
        # this process is the one writer: each result is appended as soon as its worker returns it
        for rec in pool.imap_unordered(_one, [(method, m.index, m.smiles, m.atoms, args.states) for method, m in todo]):
            f.write(json.dumps(rec) + "\n")
            f.flush()
            print(
                f"{rec['method']:8s} gdb_{rec['gdb_index']:<6d} {rec['seconds']:7.1f} s {rec.get('error', '')}",
                flush=True,
            )
    return out


def broadened(e, f, a=1.0, b=0.0):
    from schnetpack_molspectra.spectra.broadening import broaden
    from schnetpack_molspectra.spectra.grids import GRIDS

    return broaden(a * np.asarray(e) + b, f, GRIDS["uv"], 0.2)[0]


def cosine(x, y):
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30))


def report(path, reference, methods):
    results = {}
    for line in open(path):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        results[(r["method"], r["gdb_index"])] = r
    ref = {g: r for (m, g), r in results.items() if m == reference and "error" not in r}
    rows = []
    for method in methods:
        mine = {g: r for (m, g), r in results.items() if m == method and "error" not in r and g in ref}
        gdbs = sorted(mine)
        if not gdbs:
            continue
        secs = [mine[g]["seconds"] for g in gdbs]
        de1, debright, cos = [], [], []
        for g in gdbs:
            e, f = np.array(mine[g]["energies"]), np.array(mine[g]["strengths"])
            er, fr = np.array(ref[g]["energies"]), np.array(ref[g]["strengths"])
            de1.append(abs(e[0] - er[0]))
            debright.append(abs(e[np.argmax(f)] - er[np.argmax(fr)]))
            cos.append(cosine(broadened(e, f), broadened(er, fr)))
        # 2-fold linear calibration of the energies: fit on one half (all states, matched in order), score the other
        halves = [gdbs[0::2], gdbs[1::2]]
        cos_cal = []
        for fit, score in [(halves[0], halves[1]), (halves[1], halves[0])]:
            if len(fit) < 2:
                continue
            x = np.concatenate([np.array(mine[g]["energies"])[:3] for g in fit])
            y = np.concatenate([np.array(ref[g]["energies"])[:3] for g in fit])
            a, b = np.polyfit(x, y, 1)
            for g in score:
                cos_cal.append(
                    cosine(
                        broadened(mine[g]["energies"], mine[g]["strengths"], a, b),
                        broadened(ref[g]["energies"], ref[g]["strengths"]),
                    )
                )
        rows.append(
            (
                method,
                len(gdbs),
                np.mean(secs),
                np.mean(de1),
                np.mean(debright),
                np.mean(cos),
                np.mean(cos_cal) if cos_cal else float("nan"),
            )
        )
    print(f"reference: {reference}; {platform.processor() or platform.machine()}, one core")
    print("| method | molecules | s / molecule | dE1 (eV) | dE bright (eV) | cosine | cosine, calibrated |")
    print("|---|---|---|---|---|---|---|")
    for m, n, s, d1, db, c, cc in rows:
        print(f"| {m} | {n} | {s:.1f} | {d1:.2f} | {db:.2f} | {c:.2f} | {cc:.2f} |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--methods", default="tddft,fast,stda", type=lambda s: s.split(","))
    p.add_argument("--reference", default="tddft")
    p.add_argument("--states", type=int, default=10)
    p.add_argument("--workdir", default="uv_methods_work")
    p.add_argument("--workers", type=int, default=1, help="single-threaded worker processes (one per core)")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    path = os.path.join(args.workdir, "uv_results.jsonl") if args.report_only else compute(args)
    report(path, args.reference, args.methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
