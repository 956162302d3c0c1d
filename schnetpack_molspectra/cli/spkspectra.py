"""``spkspectra``: build MolSpectra datasets (SchNetPack ASE databases with spectra).

  spkspectra simulate OUT.db --smiles CCO c1ccccc1 | --file mols.xyz | --qm9 100 [--workers 2]
  spkspectra qm9 OUT.db [--limit N]       # QM9 offline from qm9pack, SchNetPack names/units
  spkspectra convert-qm9s OUT.db --pt qm9s.pt --uv uv_boraden.csv --ir ir_boraden.csv --raman raman_boraden.csv [--qm9 qm9.db]
  spkspectra md aspirin OUT.db [--frames 1000 --temperature 500]   # MD17-style data from GFN2-xTB MD
  spkspectra md17-npz md17_aspirin.npz OUT.db                      # real MD17 file -> SchNetPack db
  spkspectra default [--out PATH]          # (re)build the embedded default dataset
"""
import argparse
import sys
from dataclasses import fields

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.simulate.runner import SimulationSettings, read_failures, simulate_to_db
from schnetpack_molspectra.data.simulate.uv import UV_METHODS


def _simulate(args):
    from schnetpack_molspectra.data import inputs
    from schnetpack_molspectra.data.qm9 import QM9_UNITS

    label_units = {}
    if args.smiles:
        molecules = inputs.from_smiles(args.smiles)
    elif args.file:
        molecules = inputs.from_file(args.file)
    else:
        molecules = inputs.from_qm9(n=args.qm9, seed=args.seed)
        label_units = QM9_UNITS
    settings = SimulationSettings(**{f.name: getattr(args, f.name) for f in fields(SimulationSettings)})
    counts = simulate_to_db(molecules, args.out, settings, args.workers, label_units, args.retry_failed)
    failures = read_failures(args.out)
    print(f"{args.out}: {counts['written']} written, {counts['failed']} failed, {counts['skipped']} already done/failed before")
    for record in failures:
        print(f"  failed: input {record['input_index']} {record['name']}: {record['reason']}")
    return 0


def _qm9(args):
    from schnetpack_molspectra.data.qm9 import build_qm9_db

    n = build_qm9_db(args.out, limit=args.limit, gdb_indices=args.indices, xyz_archive=args.from_xyz_archive)
    print(f"{args.out}: {n} QM9 molecules")
    return 0


def _convert_qm9s(args):
    from schnetpack_molspectra.data.qm9s import convert_qm9s

    summary = convert_qm9s(args.pt, {m: getattr(args, m) for m in msp.modalities}, args.out, qm9_db=args.qm9)
    print(f"{args.out}: {summary['written']} of {summary['molecules_in_pt']} molecules written "
          f"(CSV rows: {summary['rows']}); summary in {args.out}.summary.json")
    for modality, missing in summary["missing_rows"].items():
        if missing:
            print(f"  {modality}: {len(missing)} molecules without a row, e.g. {missing[:5]}")
    for modality, orphans in summary["orphan_rows"].items():
        if orphans:
            print(f"  {modality}: {len(orphans)} rows without a molecule, e.g. {orphans[:5]}")
    for bad in summary["bad_rows"][:10]:
        print(f"  {bad['file']}: row {bad['index']} {bad['problem']}")
    if len(summary["bad_rows"]) > 10:
        print(f"  ... {len(summary['bad_rows']) - 10} more bad rows")
    for dup in summary["duplicate_rows"][:5]:
        print(f"  {dup['file']}: duplicate row index {dup['index']} (first kept)")
    if summary["molecules_without_qm9_labels"]:
        print(f"  {len(summary['molecules_without_qm9_labels'])} molecules not in the QM9 database (not written)")
    return 0


def _md(args):
    from schnetpack_molspectra.data.md17 import generate_xtb_md

    n = generate_xtb_md(args.molecule, args.out, args.frames, args.temperature, args.timestep, args.interval, seed=args.seed)
    print(f"{args.out}: {n} frames")
    return 0


def _md17_npz(args):
    from schnetpack_molspectra.data.md17 import npz_to_db

    print(f"{args.out}: {npz_to_db(args.npz, args.out)} frames")
    return 0


def _default(args):
    from schnetpack_molspectra.data.default import build_default_dataset

    print(build_default_dataset(args.out, n_molecules=args.n_molecules))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spkspectra", description="Build MolSpectra spectra datasets.")
    sub = p.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="compute UV-Vis/IR/Raman spectra (GFN2-xTB + PySCF) into a SchNetPack db")
    sim.add_argument("out", help="output database (.db); an existing one is resumed")
    src = sim.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles", nargs="+", help="SMILES strings (3D structures from RDKit)")
    src.add_argument("--file", "--xyz", "--db", dest="file", help="xyz / extxyz / ASE db with the structures")
    src.add_argument("--qm9", type=int, metavar="N", help="N random QM9 molecules (with their QM9 labels)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the QM9 subset")
    sim.add_argument("--workers", type=int, default=1)
    sim.add_argument("--retry-failed", action="store_true", help="retry molecules recorded as failed")
    defaults = SimulationSettings()
    for f in fields(SimulationSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or isinstance(getattr(defaults, f.name), bool):
            sim.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=getattr(defaults, f.name))
        else:
            kind = type(getattr(defaults, f.name))
            choices = sorted(UV_METHODS) if f.name == "uv_method" else None
            sim.add_argument(flag, dest=f.name, type=kind, default=getattr(defaults, f.name), choices=choices)
    sim.set_defaults(run=_simulate)

    qm9 = sub.add_parser("qm9", help="QM9 offline (qm9pack) as a SchNetPack database")
    qm9.add_argument("out")
    limit = qm9.add_mutually_exclusive_group()
    limit.add_argument("--limit", type=int, default=None, help="only the first N molecules")
    limit.add_argument("--indices", type=int, nargs="+", default=None, metavar="GDB", help="only these GDB indices (the n of gdb_n)")
    qm9.add_argument("--from-xyz-archive", default=None, help="the standard dsgdb9nsd.xyz.tar.bz2 (or a folder of its xyz files) instead of qm9pack")
    qm9.set_defaults(run=_qm9)

    conv = sub.add_parser("convert-qm9s", help="the real QM9S files (qm9s.pt + *_boraden.csv) as a SchNetPack db")
    conv.add_argument("out")
    conv.add_argument("--pt", required=True, help="qm9s.pt")
    for modality in msp.modalities:
        conv.add_argument(f"--{modality}", required=True, help=f"{modality}_boraden.csv")
    conv.add_argument("--qm9", default=None, help="QM9 db (spkspectra qm9) to attach labels by GDB index")
    conv.set_defaults(run=_convert_qm9s)

    md = sub.add_parser("md", help="MD17-style data: GFN2-xTB Langevin MD (energies + forces), resumable")
    md.add_argument("molecule", help="aspirin, benzene, ethanol, malonaldehyde, naphthalene, salicylic_acid, toluene, uracil, or a structure file")
    md.add_argument("out")
    md.add_argument("--frames", type=int, default=1000)
    md.add_argument("--temperature", type=float, default=500.0, help="K")
    md.add_argument("--timestep", type=float, default=0.5, help="fs")
    md.add_argument("--interval", type=int, default=10, help="MD steps between frames")
    md.add_argument("--seed", type=int, default=0)
    md.set_defaults(run=_md)

    npz = sub.add_parser("md17-npz", help="a real MD17 .npz (R, z, E, F) as a SchNetPack db")
    npz.add_argument("npz")
    npz.add_argument("out")
    npz.set_defaults(run=_md17_npz)

    default = sub.add_parser("default", help="build the default spectra dataset from the shipped QM9 sticks (seconds)")
    default.add_argument("--out", default=None, help="database to write (default: the cache, where spktrain looks)")
    default.add_argument("--n-molecules", type=int, default=None, help="the first N shipped molecules (default: all)")
    default.set_defaults(run=_default)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as err:  # QM9SFormatError, SpectrumError too
        print(f"spkspectra {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
