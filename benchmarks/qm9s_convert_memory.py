"""Peak memory of ``convert-qm9s``: does it stay bounded as the CSVs grow?

Writes synthetic QM9S files in the real format (torch_geometric ``qm9s.pt`` + three
``*_boraden.csv``) for two sizes, converts each in a fresh process and reads its peak RSS
(``resource.getrusage``). Bounded memory shows as a peak that does not grow with the CSV size.

    python benchmarks/qm9s_convert_memory.py [--sizes 500 2000]

Writes benchmarks/results/qm9s_convert_memory.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from schnetpack_molspectra.data.qm9s import write_synthetic_qm9s

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = """
import resource, sys, time
import schnetpack_molspectra
from schnetpack_molspectra.data.qm9s import convert_qm9s
folder = sys.argv[1]
t0 = time.perf_counter()
s = convert_qm9s(f"{folder}/qm9s.pt", {m: f"{folder}/{m}_boraden.csv" for m in ("uv", "ir", "raman")}, f"{folder}/out.db")
print(s["written"], time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    args = parser.parse_args()
    results = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            write_synthetic_qm9s(folder, n=n)
            csv_bytes = sum(os.path.getsize(os.path.join(folder, f"{m}_boraden.csv")) for m in ("uv", "ir", "raman"))
            out = subprocess.run(
                [sys.executable, "-c", CHILD, folder], capture_output=True, text=True, check=True
            ).stdout.split()
            written, seconds, peak_mb = int(out[0]), float(out[1]), float(out[2])
        results[n] = {"csv_MB": csv_bytes / 1e6, "written": written, "seconds": seconds, "peak_rss_MB": peak_mb}
        print(f"{n} molecules: CSVs {csv_bytes / 1e6:.0f} MB, {seconds:.1f} s, peak RSS {peak_mb:.0f} MB")
    sizes = sorted(results)
    per_mol = (results[sizes[-1]]["seconds"] - results[sizes[0]]["seconds"]) / (sizes[-1] - sizes[0])
    results["extrapolated_seconds_for_129817"] = per_mol * 129817
    print(f"extrapolated time for 129,817 molecules: {per_mol * 129817 / 60:.0f} min")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "qm9s_convert_memory.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
