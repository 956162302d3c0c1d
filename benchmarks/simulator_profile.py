"""Where does the simulator's vibrational pass spend its time, and what does a faster setting cost?

On ``--n`` molecules of the shipped selection (the next chunks' molecules, from their QM9 geometry):
milliseconds per stage (GFN2-xTB relaxation with its BFGS steps, Hessian, dipole and polarizability
derivatives, normal modes) for the shipped settings and for each variant (Hessian by forward instead of
central differences, looser tblite accuracy), and each variant's deviation from the shipped settings
on the same relaxed structure: frequencies (max and mean |delta|, cm^-1), IR intensities and Raman
activities (relative L1 per molecule: sum |delta| / sum), and the cosine of the broadened spectra.

    python benchmarks/simulator_profile.py [--n 20] [--threads 1]

Writes benchmarks/results/simulator_profile.json and prints one table.
"""

import argparse
import os
import time

import numpy as np
from _runs import timed, write_results
from ase.units import Bohr

from schnetpack_molspectra.data.qm9 import gdb_positions, load_qm9pack, qm9_molecules
from schnetpack_molspectra.data.simulate.xtb import (
    XTB,
    SimulationError,
    field_derivatives,
    hessian,
    normal_mode_spectra,
    relax,
)
from schnetpack_molspectra.data.sticks import shipped_selection
from schnetpack_molspectra.spectra.broadening import DEFAULT_WIDTH, broaden
from schnetpack_molspectra.spectra.grids import GRIDS

RESULTS = os.path.join(os.path.dirname(__file__), "results")
#: (name, Hessian scheme, tblite accuracy); the first is the simulator's setting, the reference
VARIANTS = [
    ("central, accuracy 0.01 (simulator)", "central", 0.01),
    ("central, accuracy 0.1", "central", 0.1),
    ("central, accuracy 1.0", "central", 1.0),
    ("forward, accuracy 0.01", "forward", 0.01),
    ("forward, accuracy 0.1", "forward", 0.1),
]


def vib_pass(structure, scheme, accuracy):
    """The vibrational pass in stages: (spectra, {stage: ms})."""
    xtb = XTB(structure.numbers, accuracy=accuracy)
    positions = structure.positions / Bohr
    h, t_h = timed(hessian, xtb, positions, scheme=scheme)
    (dmu, dalpha), t_f = timed(field_derivatives, xtb, positions)
    spectra, t_m = timed(normal_mode_spectra, structure, h, dmu, dalpha)
    return spectra, {"hessian_ms": 1000 * t_h, "field_derivatives_ms": 1000 * t_f, "normal_modes_ms": 1000 * t_m}


def cosine(a, b):
    return float((a * b).sum() / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def deviation(ref, new):
    """How far ``new``'s sticks are from ``ref``'s (same molecule)."""
    if len(ref["frequencies"]) != len(new["frequencies"]):
        return {"mode_count_differs": 1.0}
    out = {"max_abs_dfreq_cm1": float(np.abs(ref["frequencies"] - new["frequencies"]).max())}
    out["mean_abs_dfreq_cm1"] = float(np.abs(ref["frequencies"] - new["frequencies"]).mean())
    for key, modality in (("ir_intensities", "ir"), ("raman_activities", "raman")):
        out[f"{modality}_rel_l1"] = float(np.abs(ref[key] - new[key]).sum() / max(ref[key].sum(), 1e-30))
        grid = GRIDS[modality]
        a = broaden(ref["frequencies"], ref[key], grid, DEFAULT_WIDTH[modality])[0]
        b = broaden(new["frequencies"], new[key], grid, DEFAULT_WIDTH[modality])[0]
        out[f"{modality}_cosine"] = cosine(a, b)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="molecules (default 20)")
    parser.add_argument("--start", type=int, default=5250, help="first position in the shipped selection")
    parser.add_argument("--out", default=os.path.join(RESULTS, "simulator_profile.json"))
    args = parser.parse_args(argv)

    table = load_qm9pack()
    gdbs = shipped_selection(table)[args.start : args.start + args.n]
    wall = time.perf_counter()
    per_variant = {name: {"times": [], "dev": []} for name, *_ in VARIANTS}
    relax_ms, relax_steps, n_atoms, failed = [], [], [], []
    for atoms, labels, _, _ in qm9_molecules(table, gdb_positions(table, gdbs)):
        try:
            structure, t_r = timed(relax, atoms)
        except SimulationError as err:
            failed.append((labels["gdb_index"], str(err)))
            continue
        relax_ms.append(1000 * t_r)
        relax_steps.append(structure.info["relax_steps"])
        n_atoms.append(len(atoms))
        ref = None
        for name, scheme, accuracy in VARIANTS:
            try:
                spectra, times = vib_pass(structure, scheme, accuracy)
            except SimulationError as err:
                failed.append((labels["gdb_index"], f"{name}: {err}"))
                spectra, times = None, None
            if ref is None:
                ref = spectra
                if ref is None:
                    break
            if spectra is not None:
                per_variant[name]["times"].append(times)
                per_variant[name]["dev"].append(deviation(ref, spectra))

    results = {
        "molecules": len(relax_ms),
        "mean_atoms": float(np.mean(n_atoms)),
        "failed": failed,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "relax_ms": float(np.mean(relax_ms)),
        "relax_bfgs_steps": float(np.mean(relax_steps)),
        "variants": {},
        "wall_s": None,
    }
    print(f"{len(relax_ms)} molecules, {results['mean_atoms']:.1f} atoms on average; failed: {failed}")
    print(f"relaxation: {results['relax_ms']:.0f} ms, {results['relax_bfgs_steps']:.1f} BFGS steps a molecule")
    header = f"{'variant':38s} {'hessian':>8s} {'fields':>7s} {'modes':>6s} {'total':>7s} {'x':>5s}"
    header += f" {'max|dv|':>8s} {'IR L1':>7s} {'Ra L1':>7s} {'IR cos':>7s} {'Ra cos':>7s}"
    print(header + "\n" + "-" * len(header))
    base_total = None
    for name, *_ in VARIANTS:
        times, devs = per_variant[name]["times"], per_variant[name]["dev"]
        if not times:
            continue
        mean_t = {k: float(np.mean([t[k] for t in times])) for k in times[0]}
        total = sum(mean_t.values())
        base_total = base_total or total
        keys = sorted({k for d in devs for k in d})
        worst = {}
        for k in keys:
            values = [d[k] for d in devs if k in d]
            worst[k] = float(min(values) if k.endswith("cosine") else max(values))
        results["variants"][name] = {
            "mean_ms": mean_t,
            "total_ms": total,
            "speedup": base_total / total,
            "worst": worst,
        }
        print(
            f"{name:38s} {mean_t['hessian_ms']:8.0f} {mean_t['field_derivatives_ms']:7.0f} {mean_t['normal_modes_ms']:6.1f}"
            f" {total:7.0f} {base_total / total:5.2f} {worst.get('max_abs_dfreq_cm1', np.nan):8.3f}"
            f" {worst.get('ir_rel_l1', np.nan):7.4f} {worst.get('raman_rel_l1', np.nan):7.4f}"
            f" {worst.get('ir_cosine', np.nan):7.5f} {worst.get('raman_cosine', np.nan):7.5f}"
        )
    print("(ms a molecule; deviations: worst molecule against the first row on the same structure)")
    write_results(args.out, results, wall)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
