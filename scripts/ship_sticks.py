"""Compute stick spectra in chunks of ``CHUNK_SIZE`` molecules (maintainers).

Each chunk is one resumable run of the simulator (``simulate_to_db``: GFN2-xTB relaxation from
the QM9 geometry, IR and Raman sticks, UV sticks at ``--uv-method`` on the relaxed structure) into
``<workdir>/<selection>_<k>.db``; a killed run started again goes on from the molecules that
database (and its ``.failures.jsonl``) already holds. When every molecule of the chunk is done,
its sticks are written as ``vib_<k>.npz`` and ``uv-<method>_<k>.npz`` into ``--folder`` and its
failures appended to ``<folder>/failures.jsonl`` (``data.sticks`` describes the layout).

  python scripts/ship_sticks.py --chunks 0:20 --workers 2             # the shipped chunks (into the package)
  python scripts/ship_sticks.py --selection held-out --chunks 0:2 --workers 2
        # the retrieval benchmark's queries: the first 500 held-out molecules, into benchmarks/data/held_out_sticks
  python scripts/ship_sticks.py --chunks 29:484 --uv-method none --folder data/qm9_sticks --workers 16
        # IR + Raman for the rest of QM9 outside the held-out set (chunk 483 is its last, 81 molecules),
        # into the repository's data folder

With ``--uv-method none`` a chunk is its ``vib_<k>.npz`` alone (no UV pass). A machine without
qm9pack (a lent GPU machine: 16 cores) takes the chunks' geometries from a file written here:

  python scripts/ship_sticks.py --chunks 25:85 --write-inputs .gpu_data/sticks_inputs.npz
  python scripts/ship_sticks.py --chunks 25:85 --uv-method none --inputs .gpu_data/sticks_inputs.npz \
      --folder data/qm9_sticks --workers 16

On a cluster: start a Dask scheduler and workers on its nodes (``dask scheduler``, ``dask worker ADDRESS
--nthreads 1`` in batch jobs, or dask-jobqueue), then ``--scheduler tcp://host:8786`` (or the scheduler file).

Commit each chunk as it lands; the databases in ``--workdir`` are not committed.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FOLDERS = {
    "shipped": None,  # data.sticks.SHIPPED_DIR
    "held-out": os.path.join(HERE, "..", "benchmarks", "data", "held_out_sticks"),
}


def chunk_molecules(gdbs, table):
    """The simulator's inputs of one chunk: QM9 (B3LYP) geometries, indexed by GDB index."""
    from schnetpack_molspectra.data.qm9 import gdb_positions, row_atoms
    from schnetpack_molspectra.data.simulate.runner import MoleculeInput

    rows = table.iloc[gdb_positions(table, gdbs)]
    return [
        MoleculeInput(index=int(g), atoms=row_atoms(r), name=f"gdb_{int(g)}", smiles=r.SMILES)
        for g, r in zip(gdbs, rows.itertuples(index=False))
    ]


def sticks_records(db_path):
    """gdb index -> (vib record, uv record) of every molecule in a simulated chunk database."""
    from ase.db import connect

    import schnetpack_molspectra.properties as msp

    records = {}
    with connect(db_path, use_lock_file=False) as conn:
        for row in conn.select():
            gdb = int(row.key_value_pairs["input_index"])
            vib = {
                "gdb_index": gdb,
                "numbers": row.numbers,
                "positions": row.positions,
                "frequencies": row.data[msp.vib_frequencies],
                "ir_intensities": row.data[msp.ir_intensities],
                "raman_activities": row.data[msp.raman_activities],
            }
            uv = {"gdb_index": gdb, "energies": row.data[msp.uv_energies], "strengths": row.data[msp.uv_strengths]}
            records[gdb] = (vib, uv)
    return records


def write_inputs(path, chunks, table):
    """The QM9 geometries and SMILES of ``chunks`` (chunk -> GDB indices) in one file, for a machine
    without qm9pack (a GPU machine lent for a while): ``--inputs`` reads them back."""
    molecules = {k: chunk_molecules(gdbs, table) for k, gdbs in chunks.items()}
    flat = [m for k in sorted(molecules) for m in molecules[k]]
    np.savez_compressed(
        path,
        chunk=np.repeat(sorted(molecules), [len(molecules[k]) for k in sorted(molecules)]),
        gdb=np.array([m.index for m in flat], dtype=np.int64),
        n_atoms=np.array([len(m.atoms) for m in flat], dtype=np.int32),
        numbers=np.concatenate([m.atoms.numbers for m in flat]).astype(np.uint8),
        positions=np.concatenate([m.atoms.positions for m in flat]),
        smiles=np.array([m.smiles for m in flat]),
    )
    print(
        f"{path}: {len(flat):,} molecules of chunks {min(chunks)}-{max(chunks)}, {os.path.getsize(path) / 1e6:.1f} MB"
    )


def read_inputs(path):
    """chunk -> its molecules (``MoleculeInput``), from a file of :func:`write_inputs`."""
    from ase import Atoms

    from schnetpack_molspectra.data.simulate.runner import MoleculeInput

    with open(path, "rb") as f, np.load(f) as z:
        data = {key: z[key] for key in z.files}
    bounds = np.concatenate([[0], np.cumsum(data["n_atoms"])])
    chunks = {}
    for i, (k, g) in enumerate(zip(data["chunk"], data["gdb"])):
        atoms = Atoms(
            numbers=data["numbers"][bounds[i] : bounds[i + 1]], positions=data["positions"][bounds[i] : bounds[i + 1]]
        )
        chunks.setdefault(int(k), []).append(
            MoleculeInput(index=int(g), atoms=atoms, name=f"gdb_{int(g)}", smiles=str(data["smiles"][i]))
        )
    return chunks


def run_chunk(name, k, molecules, settings, workdir, folder, workers, scheduler=None):
    """Simulate chunk ``k`` (``molecules``, in selection order) and write its sticks files into ``folder``:
    on ``workers`` local processes, or on the Dask cluster whose scheduler is at ``scheduler``."""
    from schnetpack_molspectra.data.simulate.cluster import ClusterSpec
    from schnetpack_molspectra.data.simulate.runner import read_failures, simulate_to_db
    from schnetpack_molspectra.data.simulate.uv import NO_UV
    from schnetpack_molspectra.data.sticks import chunk_path, write_chunk

    with_uv = settings.uv_method != NO_UV
    vib_path, uv_path = chunk_path("vib", k, folder), chunk_path(f"uv-{settings.uv_method}", k, folder)
    if os.path.exists(vib_path) and (os.path.exists(uv_path) or not with_uv):
        return "exists"
    db = os.path.join(workdir, f"{name}_{k:03d}.db")
    t0 = time.time()
    if scheduler:
        counts = simulate_to_db(molecules, db, settings, cluster=ClusterSpec("scheduler", address=scheduler))
    else:
        counts = simulate_to_db(molecules, db, settings, workers=workers)
    records = sticks_records(db)
    order = [m.index for m in molecules if m.index in records]
    write_chunk(
        vib_path,
        [records[g][0] for g in order],
        {"relax": "GFN2-xTB", "fmax": settings.fmax, "imaginary_threshold": settings.imaginary_threshold},
    )
    if with_uv:
        write_chunk(
            uv_path, [records[g][1] for g in order], {"uv_method": settings.uv_method, "uv_states": settings.uv_states}
        )
    failed = read_failures(db)
    with open(os.path.join(folder, "failures.jsonl"), "a") as f:
        for rec in failed:
            f.write(json.dumps({"pass": "simulate", "gdb_index": rec["input_index"], "reason": rec["reason"]}) + "\n")
    return f"{len(order)} written, {len(failed)} failed, {counts['written'] + counts['failed']} computed in {time.time() - t0:.0f} s"


def main(argv=None):
    from schnetpack_molspectra.data.sticks import CHUNK_SIZE, SHIPPED_DIR, SHIPPED_UV_METHOD

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--selection", choices=sorted(FOLDERS), default="shipped")
    parser.add_argument("--chunks", default="0:20", help="chunk range a:b (default 0:20 = 5,000 molecules)")
    parser.add_argument("--folder", default=None, help="where the chunks go (default: the selection's folder)")
    parser.add_argument(
        "--uv-method", default=SHIPPED_UV_METHOD, help="UV level (default: the shipped chunks' level), or none"
    )
    parser.add_argument("--uv-states", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--scheduler",
        default=None,
        help="a running Dask scheduler (tcp://host:8786 or its scheduler file) whose workers simulate, e.g. on "
        "a cluster's nodes (spkspectra simulate --help: the batch systems), instead of --workers local processes",
    )
    parser.add_argument("--workdir", default=os.path.join(os.getcwd(), "ship_sticks_work"))
    parser.add_argument(
        "--write-inputs", default=None, metavar="PATH", help="write the chunks' geometries there and stop"
    )
    parser.add_argument(
        "--inputs", default=None, help="the chunks' geometries from this file (--write-inputs), not qm9pack"
    )
    args = parser.parse_args(argv)

    from schnetpack_molspectra.data.qm9 import load_qm9pack
    from schnetpack_molspectra.data.simulate.runner import SimulationSettings
    from schnetpack_molspectra.data.sticks import HELD_OUT, held_out_selection, shipped_selection

    folder = os.path.abspath(args.folder or FOLDERS[args.selection] or SHIPPED_DIR)
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(folder, exist_ok=True)
    settings = SimulationSettings(uv_method=args.uv_method, uv_states=args.uv_states)
    name = args.selection.replace("-", "_")
    a, b = (int(x) for x in args.chunks.split(":"))
    if args.inputs:
        given = read_inputs(args.inputs)
        missing = [k for k in range(a, b) if k not in given]
        if missing:
            raise SystemExit(f"{args.inputs}: no molecules of chunks {missing} (it has {sorted(given)})")
        molecules = {k: given[k] for k in range(a, b)}
    else:
        table = load_qm9pack()
        if args.selection == "shipped":  # never into the held-out molecules at the end of the order
            selection = shipped_selection(table)[:-HELD_OUT]
        else:
            selection = held_out_selection(table)
        chunks = {k: selection[k * CHUNK_SIZE : (k + 1) * CHUNK_SIZE] for k in range(a, b)}
        empty = [k for k, gdbs in chunks.items() if len(gdbs) == 0]
        if empty:
            last = (len(selection) - 1) // CHUNK_SIZE
            raise SystemExit(f"chunks {empty} are past the {args.selection} selection (its last chunk is {last})")
        if args.write_inputs:
            return write_inputs(args.write_inputs, chunks, table)
        molecules = {k: chunk_molecules(gdbs, table) for k, gdbs in chunks.items()}
    for k in range(a, b):
        status = run_chunk(name, k, molecules[k], settings, args.workdir, folder, args.workers, args.scheduler)
        print(f"{args.selection} chunk {k} -> {folder}: {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
