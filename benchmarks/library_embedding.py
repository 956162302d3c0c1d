"""How fast does a library of structures become embeddings, and how fast is it searched?

Side by side in one run, on the same QM9 structures and threads:

* 3D embeddings: ``identify.encode_structures`` (the batch built at once in torch:
  ``structures_batch``) with batches chosen by the device (on a CPU ~16 QM9 molecules:
  ``CPU_PAIR_BUDGET`` atom pairs) and with batches of 512 molecules (the earlier default), against the
  per-molecule input path (SchNetPack's ``AtomsConverter`` with ``SubtractCenterOfMass`` and
  ``MatScipyNeighborList``, batches of 128): ms a molecule and the largest difference between the
  embeddings; with ``--all``, the time for all 130,831 QM9 structures with the default batches.
* Search: exact cosine top-10 (one matrix product, ``VectorIndex``) against FAISS HNSW where
  ``faiss`` is installed, over the library's embeddings, for ``--queries`` queries: build and
  query time, and how often FAISS returns the exact top-1.

    python benchmarks/library_embedding.py [--model molspectra-painn-qm9] [--n 4096] [--all]

Writes benchmarks/results/library_embedding.json.
"""

import argparse
import os
import platform
import time

import numpy as np
import schnetpack.transform as trn
import torch
from _runs import timed, write_results
from schnetpack.interfaces import AtomsConverter

from schnetpack_molspectra.data.qm9 import load_qm9pack, row_atoms
from schnetpack_molspectra.identify import VectorIndex, encode_structures, load_model

RESULTS = os.path.join(os.path.dirname(__file__), "results")


@torch.no_grad()
def per_molecule_path(enc, atoms, batch_size=128):
    """The embeddings as ``encode_structures`` computed them before: ASE -> SchNetPack inputs one
    molecule at a time (centre of mass, matscipy neighbour list), then the model."""
    converter = AtomsConverter(
        neighbor_list=None,
        transforms=[trn.SubtractCenterOfMass(), trn.MatScipyNeighborList(cutoff=enc.cutoff)],
        device=enc.device,
        dtype=torch.float32,
    )
    out = []
    for start in range(0, len(atoms), batch_size):
        inputs = converter(list(atoms[start : start + batch_size]))
        for module in enc.model.input_modules:
            inputs = module(inputs)
        inputs = enc.representation_3d(enc.model.representation(inputs))
        out.append(torch.nn.functional.normalize(inputs[enc.representation_3d.output_key], dim=-1).numpy())
    return np.concatenate(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="molspectra-painn-qm9", help="shipped model name or weights file")
    parser.add_argument("--n", type=int, default=4096, help="structures timed with both paths")
    parser.add_argument("--all", action="store_true", help="also embed all of QM9 with the new path")
    parser.add_argument("--queries", type=int, default=494)
    parser.add_argument("--out", default=os.path.join(RESULTS, "library_embedding.json"))
    args = parser.parse_args(argv)

    wall = time.perf_counter()
    table = load_qm9pack()
    rows = np.random.default_rng(0).choice(len(table), args.n, replace=False)
    atoms = [row_atoms(r) for r in table.iloc[np.sort(rows)].itertuples(index=False)]
    enc = load_model(args.model)
    results = {
        "model": args.model,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "n": args.n,
    }
    old, t_old = timed(per_molecule_path, enc, atoms)
    big, t_big = timed(encode_structures, enc, atoms, 512)
    new, t_new = timed(encode_structures, enc, atoms)
    results["per_molecule_ms"] = 1000 * t_old / args.n
    results["batched_512_ms"] = 1000 * t_big / args.n
    results["batched_ms"] = 1000 * t_new / args.n
    results["speedup"] = t_old / t_new
    results["speedup_over_512"] = t_big / t_new
    results["max_abs_difference"] = float(max(np.abs(old - new).max(), np.abs(big - new).max()))
    results["qm9_minutes_projected"] = {
        "per_molecule": t_old / args.n * len(table) / 60,
        "batched_512": t_big / args.n * len(table) / 60,
        "batched": t_new / args.n * len(table) / 60,
    }
    print(
        f"3D embeddings of {args.n} QM9 structures, {results['torch_threads']} torch threads, ms a molecule: "
        f"per molecule {results['per_molecule_ms']:.2f}, batches of 512 {results['batched_512_ms']:.2f}, "
        f"default batches {results['batched_ms']:.2f} ({results['speedup']:.1f}x and "
        f"{results['speedup_over_512']:.1f}x; largest difference {results['max_abs_difference']:.1e}); all of QM9 "
        f"projected {results['qm9_minutes_projected']['per_molecule']:.1f} / "
        f"{results['qm9_minutes_projected']['batched_512']:.1f} / {results['qm9_minutes_projected']['batched']:.1f} min"
    )
    library = new
    if args.all:
        all_atoms = [row_atoms(r) for r in table.itertuples(index=False)]
        library, t_all = timed(encode_structures, enc, all_atoms)
        results["qm9_all_minutes"] = t_all / 60
        print(f"all {len(all_atoms):,} QM9 structures: {t_all / 60:.1f} min")

    queries = library[np.random.default_rng(1).choice(len(library), args.queries)]
    queries = queries + 0.05 * np.random.default_rng(2).normal(size=queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index, t_build = timed(VectorIndex, library)
    (_, exact_top), t_query = timed(index.search, queries, 10)
    results["search"] = {
        "library": len(library),
        "exact": {"build_s": t_build, "query_ms": 1000 * t_query / args.queries},
    }
    try:
        import faiss  # noqa: F401  (optional: the identify extra)
    except ImportError:
        print("faiss not installed: FAISS not timed")
    else:
        faiss_index, t_build = timed(VectorIndex, library, exact_below=0)
        (_, faiss_top), t_query = timed(faiss_index.search, queries, 10)
        agree = float((faiss_top[:, 0] == exact_top[:, 0]).mean())
        results["search"]["faiss_hnsw"] = {
            "build_s": t_build,
            "query_ms": 1000 * t_query / args.queries,
            "top1_as_exact": agree,
        }
    for kind, r in results["search"].items():
        if isinstance(r, dict):
            extra = f", top-1 as exact {r['top1_as_exact']:.3f}" if "top1_as_exact" in r else ""
            print(
                f"search {kind} over {len(library):,}: build {r['build_s']:.2f} s, {r['query_ms']:.3f} ms a query{extra}"
            )
    write_results(args.out, results, wall)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
