"""Compute the stick spectra shipped in ``schnetpack_molspectra/data/qm9_sticks`` (maintainers).

Two passes over chunks of ``CHUNK_SIZE`` molecules of :func:`shipped_selection`:
  vib          GFN2-xTB relaxation from the QM9 geometry, then IR and Raman sticks
  uv-<method>  UV sticks (PySCF, ``uv_spectrum_sticks``) on the relaxed structures of vib

    python scripts/ship_sticks.py vib --chunks 0:20 --workers 2
    python scripts/ship_sticks.py uv --chunks 0:20 --workers 2        # sTDA, the level of the shipped chunks

Every finished molecule is appended to ``<workdir>/<kind>_<k>.partial.jsonl`` at once, so a
killed run resumes where it stopped; a chunk is written into the package (and its failures
into ``failures.jsonl``) only when all its molecules are done. Commit each chunk as it lands.
"""

import argparse
import json
import os
import sys
import time

from schnetpack_molspectra.data.sticks import (
    CHUNK_SIZE,
    SHIPPED_DIR,
    SHIPPED_UV_METHOD,
    chunk_path,
    read_chunk,
    shipped_selection,
    write_chunk,
)


def vib_job(item):
    gdb, numbers, positions, settings = item
    from ase import Atoms

    from schnetpack_molspectra.data.simulate.xtb import relax, vibrational_spectra

    try:
        atoms = relax(Atoms(numbers=numbers, positions=positions), fmax=settings["fmax"])
        vib = vibrational_spectra(atoms, imaginary_threshold=settings["imaginary_threshold"])
    except Exception as err:
        return {"gdb_index": gdb, "reason": f"{type(err).__name__}: {err}"}
    return {
        "gdb_index": gdb,
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "frequencies": vib["frequencies"].tolist(),
        "ir_intensities": vib["ir_intensities"].tolist(),
        "raman_activities": vib["raman_activities"].tolist(),
    }


def uv_job(item):
    gdb, numbers, positions, settings = item
    from ase import Atoms

    from schnetpack_molspectra.data.simulate.uv import uv_spectrum_sticks

    try:
        uv = uv_spectrum_sticks(
            Atoms(numbers=numbers, positions=positions), settings["uv_method"], settings["uv_states"]
        )
    except Exception as err:
        return {"gdb_index": gdb, "reason": f"{type(err).__name__}: {err}"}
    return {"gdb_index": gdb, "energies": uv["energies"].tolist(), "strengths": uv["strengths"].tolist()}


def chunk_inputs(kind, k, selection, table, settings):
    """(gdb, numbers, positions, settings) of chunk k: QM9 geometries for vib, relaxed ones for UV."""
    gdbs = selection[k * CHUNK_SIZE : (k + 1) * CHUNK_SIZE]
    if kind == "vib":
        from schnetpack_molspectra.data.qm9 import gdb_positions, row_atoms

        rows = table.iloc[gdb_positions(table, gdbs)]
        return [
            (int(g), row_atoms(r).numbers.tolist(), row_atoms(r).positions.tolist(), settings)
            for g, r in zip(gdbs, rows.itertuples(index=False))
        ]
    vib = read_chunk(chunk_path("vib", k))
    return [
        (int(g), vib[g]["numbers"].tolist(), vib[g]["positions"].tolist(), settings) for g in map(int, gdbs) if g in vib
    ]


def run_chunk(kind, k, selection, table, settings, workdir, workers):
    final = chunk_path(kind, k)
    if os.path.exists(final):
        return "exists"
    if kind.startswith("uv") and not os.path.exists(chunk_path("vib", k)):
        return "no vib chunk"
    partial = os.path.join(workdir, f"{kind}_{k:03d}.partial.jsonl")
    done = {}
    if os.path.exists(partial):
        with open(partial) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                done[rec["gdb_index"]] = rec
    items = [it for it in chunk_inputs(kind, k, selection, table, settings) if it[0] not in done]
    job = vib_job if kind == "vib" else uv_job
    t0 = time.time()
    if items:
        from schnetpack_molspectra.data.simulate.runner import start_pool

        pool = start_pool(workers)
        try:
            with open(partial, "a") as f:
                for rec in pool.imap_unordered(job, items, chunksize=1):
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    done[rec["gdb_index"]] = rec
        finally:
            pool.terminate()
    order = [int(g) for g in selection[k * CHUNK_SIZE : (k + 1) * CHUNK_SIZE] if int(g) in done]
    ok = [done[g] for g in order if "reason" not in done[g]]
    failed = [done[g] for g in order if "reason" in done[g]]
    write_chunk(final, ok, settings)
    with open(os.path.join(SHIPPED_DIR, "failures.jsonl"), "a") as f:
        for rec in failed:
            f.write(json.dumps({"pass": kind, **rec}) + "\n")
    return f"{len(ok)} written, {len(failed)} failed, {len(items)} computed in {time.time() - t0:.0f} s"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pass_", choices=["vib", "uv"], metavar="pass")
    parser.add_argument("--chunks", default="0:20", help="chunk range a:b (default 0:20 = 5,000 molecules)")
    parser.add_argument("--uv-method", default=SHIPPED_UV_METHOD, help="UV level (default: the shipped chunks' level)")
    parser.add_argument("--uv-states", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", default=os.path.join(os.getcwd(), "ship_sticks_work"))
    args = parser.parse_args(argv)

    from schnetpack_molspectra.data.qm9 import load_qm9pack
    from schnetpack_molspectra.data.simulate.runner import SimulationSettings

    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(SHIPPED_DIR, exist_ok=True)
    defaults = SimulationSettings()
    if args.pass_ == "vib":
        kind = "vib"
        settings = {"relax": "GFN2-xTB", "fmax": defaults.fmax, "imaginary_threshold": defaults.imaginary_threshold}
    else:
        kind = f"uv-{args.uv_method}"
        settings = {"uv_method": args.uv_method, "uv_states": args.uv_states}
    table = load_qm9pack()
    selection = shipped_selection(table)
    a, b = (int(x) for x in args.chunks.split(":"))
    for k in range(a, b):
        print(
            f"{kind} chunk {k}: {run_chunk(kind, k, selection, table, settings, args.workdir, args.workers)}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
