"""Training dataloader throughput with spectra (~31 KB per molecule), molecules/s.

Replicates the default dataset's molecules into a database of ``--n`` rows and iterates one
epoch of ``MolSpectraDataModule``'s train loader with the pre-training transforms
(validation, log10 normalisation, patch masking, coordinate noise, neighbour list) for
0, 2 and 4 workers.

    python benchmarks/dataloader_throughput.py [--n 4000] [--batch 128]

Writes benchmarks/results/dataloader_throughput.json.
"""

import argparse
import json
import os
import tempfile
import time

from ase.db import connect

from schnetpack_molspectra.configs import pretraining_transforms
from schnetpack_molspectra.data.datamodule import MolSpectraDataModule
from schnetpack_molspectra.data.default import ensure_default_dataset


def replicate(source: str, target: str, n: int):
    from schnetpack.data import ASEAtomsData

    meta = ASEAtomsData(source)
    ASEAtomsData.create(target, distance_unit="Ang", property_unit_dict=meta.units)
    rows = [(r.toatoms(), r.data) for r in connect(source).select()]
    conn = connect(target, use_lock_file=False)
    with conn:
        for i in range(n):
            atoms, data = rows[i % len(rows)]
            conn.write(atoms, data=data)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    args = parser.parse_args()
    results = {"n_molecules": args.n, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "spectra.db")
        replicate(ensure_default_dataset(), db, args.n)
        results["db_bytes_per_molecule"] = os.path.getsize(db) / args.n
        for workers in args.workers:
            dm = MolSpectraDataModule(
                datapath=db,
                batch_size=args.batch,
                num_train=args.n - 2 * args.batch,
                num_val=args.batch,
                num_workers=workers,
                split_file=None,
                transforms=pretraining_transforms(),
            )
            dm.setup()
            loader = dm.train_dataloader()
            t0, n = time.perf_counter(), 0
            for batch in loader:
                n += len(batch["_n_atoms"])
            results[f"molecules_per_s_{workers}_workers"] = n / (time.perf_counter() - t0)
            print(f"{workers} workers: {results[f'molecules_per_s_{workers}_workers']:.0f} molecules/s")
    out = os.path.join(os.path.dirname(__file__), "results", "dataloader_throughput.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
