"""``spkmdgen``: MD17-style data (energies + forces) for ``experiment=md17_finetune``.

  spkmdgen aspirin aspirin_xtb.db [--frames 1000 --temperature 500]   # GFN2-xTB Langevin MD
  spkmdgen my_molecule.xyz my_molecule.db --frames 200                 # any structure file
  spkmdgen --npz md17_aspirin.npz aspirin.db                           # a real MD17 file -> db

The database has ``energy`` (kcal/mol) and ``forces`` (kcal/mol/Ang), the names and units of
``schnetpack.datasets.MD17``; train on it with ``data.datapath=<db>``. Generation writes each
frame as it goes: a killed run started again with the same arguments continues from its last
frame.
"""
import schnetpack_molspectra  # noqa: F401  (loads tblite before torch: see its __init__)

import argparse
import sys

from schnetpack_molspectra.data.md17 import MD17_SMILES, generate_xtb_md, npz_to_db


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spkmdgen", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("molecule", nargs="?", help=f"one of {', '.join(sorted(MD17_SMILES))}, or a structure file (xyz, ...)")
    p.add_argument("out", nargs="?", help="SchNetPack database to write (.db)")
    p.add_argument("--npz", help="convert this real MD17 .npz (R, z, E, F) instead of running MD; then OUT is the only positional")
    p.add_argument("--frames", type=int, default=1000, help="frames to write (default 1000)")
    p.add_argument("--temperature", type=float, default=500.0, help="Langevin temperature, K (default 500)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--interval", type=int, default=10, help="MD steps between frames (default 10)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.npz:
        out = args.out or args.molecule
        if out is None or not out.endswith(".db"):
            parser.error("--npz needs the output database: spkmdgen --npz md17_aspirin.npz aspirin.db")
        print(f"{out}: {npz_to_db(args.npz, out)} frames from {args.npz}")
        return 0
    if args.molecule is None or args.out is None:
        parser.error("give a molecule (name or structure file) and the output database")
    try:
        n = generate_xtb_md(args.molecule, args.out, n_frames=args.frames, temperature=args.temperature,
                            timestep=args.timestep, interval=args.interval, friction=args.friction,
                            seed=args.seed, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        print(f"spkmdgen: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {n} frames of GFN2-xTB MD at {args.temperature:g} K")
    return 0


if __name__ == "__main__":
    sys.exit(main())
