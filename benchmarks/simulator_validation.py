"""How good and how costly is the spectra simulator?

* Vibrational frequencies: GFN2-xTB (ours) vs QM9's DFT harmonic frequencies
  (B3LYP/6-31G(2df,p), shipped in qm9pack) on a random QM9 sample, mode by mode after
  sorting: best uniform scale factor, MAE after scaling, Pearson correlation.
* Cost per molecule: relaxation + IR + Raman; UV sTDA (the shipped level) and fast (TDA/HF/STO-3G);
  UV TDDFT (TDA/B3LYP/def2-SVP).
* A figure of simulated spectra for a few molecules.

    python benchmarks/simulator_validation.py [--n 100] [--tddft 2]

Writes benchmarks/results/simulator_validation.{json,png}.
"""

import argparse
import json
import os
import time

import numpy as np

from schnetpack_molspectra.data.qm9 import load_qm9pack, qm9_molecules
from schnetpack_molspectra.data.simulate.runner import SimulationSettings, simulate_molecule
from schnetpack_molspectra.data.simulate.uv import uv_spectrum_sticks
from schnetpack_molspectra.data.simulate.xtb import SimulationError, relax, vibrational_spectra
from schnetpack_molspectra.spectra.grids import GRIDS

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100, help="QM9 molecules for the frequency comparison")
    parser.add_argument("--uv", type=int, default=10, help="molecules timed with each UV method")
    parser.add_argument("--uv-methods", default="stda,fast", help="UV methods timed (stda: the shipped sticks' level)")
    parser.add_argument("--tddft", type=int, default=2, help="molecules timed with TDDFT")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    table = load_qm9pack()
    positions = np.random.default_rng(args.seed).choice(len(table), args.n, replace=False)
    xtb_all, dft_all, vib_times, skipped = [], [], [], []
    relaxed = []
    for atoms, labels, smiles, dft in qm9_molecules(table, positions):
        t0 = time.perf_counter()
        try:
            structure = relax(atoms)
            freq = vibrational_spectra(structure)["frequencies"]
        except SimulationError as err:
            skipped.append((labels["gdb_index"], str(err)))
            continue
        vib_times.append(time.perf_counter() - t0)
        relaxed.append((smiles, structure))
        if len(freq) != len(dft):
            skipped.append((labels["gdb_index"], f"{len(freq)} xTB modes vs {len(dft)} QM9 frequencies"))
            continue
        xtb_all.append(np.sort(freq))
        dft_all.append(np.sort(dft))
    x, d = np.concatenate(xtb_all), np.concatenate(dft_all)
    scale = float((x * d).sum() / (x * x).sum())
    results = {
        "molecules_compared": len(xtb_all),
        "modes_compared": int(len(x)),
        "skipped": skipped,
        "mae_unscaled_cm1": float(np.abs(x - d).mean()),
        "best_scale": scale,
        "mae_scaled_cm1": float(np.abs(scale * x - d).mean()),
        "mae_scaled_above_1000_cm1": float(np.abs(scale * x - d)[d > 1000].mean()),
        "pearson_r": float(np.corrcoef(x, d)[0, 1]),
        "seconds_relax_ir_raman": float(np.mean(vib_times)),
        "mean_atoms": float(np.mean([len(s) for _, s in relaxed])),
    }
    for method in args.uv_methods.split(","):  # sTDA: the level of the shipped sticks and the default
        t = []
        for _, structure in relaxed[: args.uv]:
            t0 = time.perf_counter()
            uv_spectrum_sticks(structure, method)
            t.append(time.perf_counter() - t0)
        results[f"seconds_uv_{method}"] = float(np.mean(t))
    t, shift = [], []
    for _, structure in relaxed[: args.tddft]:
        t0 = time.perf_counter()
        accurate = uv_spectrum_sticks(structure, "tddft", n_states=5)
        t.append(time.perf_counter() - t0)
        fast = uv_spectrum_sticks(structure, "fast", n_states=5)
        shift.append(float(np.mean(fast["energies"] - accurate["energies"])))
    results["seconds_uv_tddft"] = float(np.mean(t))
    results["uv_fast_minus_tddft_eV"] = shift

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "simulator_validation.json"), "w") as f:
        json.dump(results, f, indent=2)
    for k, v in results.items():
        if k != "skipped":
            print(f"{k:32s} {v}")
    print(f"skipped {len(skipped)}: {skipped[:5]}")
    plot(relaxed[:3], scale)


def plot(molecules, scale):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(molecules), 3, figsize=(13, 2.6 * len(molecules)))
    settings = SimulationSettings(relax=False, frequency_scale=scale)
    for row, (smiles, structure) in zip(np.atleast_2d(axes), molecules):
        _, props = simulate_molecule(structure, settings)
        for ax, (m, grid) in zip(row, GRIDS.items()):
            ax.plot(grid.values(), props[f"{m}_spectrum"][0], lw=0.8)
            ax.set_title(f"{smiles}  {m}", fontsize=9)
            ax.set_xlabel(grid.unit)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "simulator_validation.png"), dpi=90)


if __name__ == "__main__":
    main()
