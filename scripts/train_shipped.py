"""Train the shipped pre-trained models in pieces, each a real ``spktrain`` run that finishes within
about an hour here, and write each finished piece's weights into the package (half precision,
with the run's config and a model card), so a new machine goes on from the last committed piece.

  denoise-painn-qm9      stage 1 (Coord-style denoising) on every QM9 structure outside the held-out
                         set (``data.sticks.held_out_selection``: the last 10,000 of the seeded order)
  molspectra-painn-qm9   stage 2 (denoising + MPR + contrastive, modality dropout on) on the shipped
                         spectra molecules, from the newest ``denoise-painn-qm9`` piece
  spectra-painn-qm9      spectra_finetune (IR and Raman spectra from the structure) on the same molecules,
                         from the newest ``molspectra-painn-qm9`` piece

Every piece starts from the weights of the previous piece's file (``globals.pretrained_model``), with
a fresh optimiser and its own warm-up + cosine schedule (warm restarts between pieces); nothing but
the weights is carried, so pieces committed on one machine continue on another. A killed piece
started again resumes from its ``last.ckpt`` (same ``run.id``) on the same machine.

  python scripts/train_shipped.py denoise-painn-qm9 --steps 3000           # the next stage-1 piece
  python scripts/train_shipped.py molspectra-painn-qm9 --steps 1500        # the next stage-2 piece
  python scripts/train_shipped.py molspectra-painn-qm9 --steps 800 --sticks data/qm9_sticks --threads 2
        # a stage-2 piece on the shipped and the grown sticks (molecules without UV: UV withheld),
        # spectra augmentation 0.8 (--augmentation; 0 = the released training)
  python scripts/train_shipped.py denoise-painn-qm9 --steps 40000 --accelerator gpu --batch-size 128 --workers 8
                                                                           # a GPU: one long piece
The run directories go to ``--workdir`` (``shipped_runs/``, not committed).

A machine without ``qm9pack`` (a GPU node given only what it needs) trains from one file of inputs,
written here (~25 MB: the stage-1 structures, float32, and the spectra molecules' QM9 labels):

  python scripts/train_shipped.py --write-inputs .gpu_data/train_inputs.npz
  python scripts/train_shipped.py denoise-painn-qm9 --steps 20000 --inputs .gpu_data/train_inputs.npz \
      --accelerator gpu --batch-size 128 --workers 8          # what benchmarks/gpu_train.sh runs
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version as package_version_of

import numpy as np
from ase.db import connect

from schnetpack_molspectra.shipped import MODELS_DIR


def package_version():
    return package_version_of("schnetpack-molspectra")


MODELS = {
    "denoise-painn-qm9": {
        "experiment": "denoise_pretrain",
        "source": None,
        "data": "qm9",
        "description": "PaiNN 128 x 3 pre-trained by denoising (Coord-style, stage 1): encoder and denoising head",
        "trained_on": "120,831 QM9 structures (all but the 10,000 held out), 1,000 of them for validation",
    },
    "molspectra-painn-qm9": {
        "experiment": "molspectra_pretrain",
        "source": "denoise-painn-qm9",
        "data": "spectra",
        "description": "PaiNN 128 x 3 + SpecFormer, MolSpectra stage 2 (denoising + MPR + contrastive) from "
        "denoise-painn-qm9, modality dropout 0.5: fine-tuning and identification from any spectra, computed or measured",
        "trained_on": "the 5,197 shipped spectra molecules (xTB IR/Raman, sTDA UV; 80/10/10 split), none held out",
    },
    "spectra-painn-qm9": {
        "experiment": "spectra_finetune",
        "source": "molspectra-painn-qm9",
        "data": "spectra_targets",
        "description": "PaiNN 128 x 3 from molspectra-painn-qm9 + SpectraHead: broadened IR and Raman spectra "
        "(GFN2-xTB, Lorentzian 15 / 12 cm^-1, area-normalised) from the 3D structure",
        "trained_on": "the 5,197 shipped spectra molecules (xTB IR/Raman; 80/10/10 split), none held out",
    },
}
VALIDATION = 1000  # stage 1: validation molecules drawn from the pre-training structures
TEST = 200
SPECTRA_HELD = 1000  # stage 2 / spectra: validation and test molecules each 10 % of the set, at most this many


def spectra_split(n: int):
    """``(num_train, num_val, num_test)`` of a spectra database of ``n`` molecules: 80/10/10 (SchNetPack's
    fractions) up to 10,000 molecules; above, 1,000 each for validation and test and the rest for training, so a
    grown set's validation (run at every epoch end and twice by the pre-training summary) stays minutes."""
    if n * 0.1 <= SPECTRA_HELD:
        return 0.8, 0.1, None
    return n - 2 * SPECTRA_HELD, SPECTRA_HELD, SPECTRA_HELD


def augmentation_text(pieces) -> str:
    """', spectra augmentation from piece 3 on (0.8, then 0.5)': the pieces' ``spectra_augmentation``, or ''."""
    values = [piece.get("spectra_augmentation") or 0.0 for piece in pieces]
    first = next((i for i, v in enumerate(values) if v), None)
    if first is None:
        return ""
    changes = [v for i, v in enumerate(values[first:], first) if i == first or v != values[i - 1]]
    return f", spectra augmentation from piece {first + 1} on ({', then '.join(f'{v:g}' for v in changes)})"


def pieces_text(pieces) -> str:
    """'; pieces 1-2 on 5,197, 3-4 on 6,439 of them': the molecules each run of pieces trained on, where they differ."""
    runs = []  # [first piece, last piece, molecules]
    for piece in pieces:
        n = piece.get("molecules")
        if runs and runs[-1][2] == n:
            runs[-1][1] = piece["piece"]
        else:
            runs.append([piece["piece"], piece["piece"], n])
    if len(runs) < 2 or any(n is None for _, _, n in runs):
        return ""
    span = [f"{a}" if a == b else f"{a}-{b}" for a, b, _ in runs]
    return "; pieces " + ", ".join(f"{s} on {n:,}" for s, (_, _, n) in zip(span, runs))


def database_size(db: str) -> int:
    with connect(db) as conn:
        return conn.count()


def split_text(n: int) -> str:
    train, val, test = spectra_split(n)
    return "80/10/10 split" if test is None else f"{train:,}/{val:,}/{test:,} split"


def pretraining_gdbs(table):
    """GDB indices of the stage-1 structures, sorted: every QM9 molecule outside the held-out set."""
    from schnetpack_molspectra.data.sticks import HELD_OUT, shipped_selection

    return sorted(int(g) for g in shipped_selection(table)[:-HELD_OUT])


def spectra_folders(sticks):
    """The sticks folders of stage 2: the shipped one, then ``sticks`` (the grown set)."""
    from schnetpack_molspectra.data.sticks import SHIPPED_DIR

    return [SHIPPED_DIR, *[os.path.abspath(f) for f in sticks or []]]


def write_inputs(path, sticks=()):
    """Everything training needs from qm9pack, in one file: the stage-1 structures (GDB order) and the
    QM9 labels and SMILES of the spectra molecules (shipped, and those of the ``sticks`` folders)."""
    from schnetpack_molspectra.data.qm9 import gdb_positions, load_qm9pack, row_atoms, row_labels
    from schnetpack_molspectra.data.qm9_targets import QM9_UNITS
    from schnetpack_molspectra.data.sticks import load_sticks

    table = load_qm9pack()
    gdbs = pretraining_gdbs(table)
    atoms = [row_atoms(r) for r in table.iloc[gdb_positions(table, gdbs)].itertuples(index=False)]
    spectra_gdbs = [m.gdb_index for m in load_sticks(folder=spectra_folders(sticks), require_uv=not sticks)]
    rows = list(table.iloc[gdb_positions(table, spectra_gdbs)].itertuples(index=False))
    labels = [row_labels(r) for r in rows]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(
        path,
        gdb=np.array(gdbs, dtype=np.int64),
        n_atoms=np.array([len(a) for a in atoms], dtype=np.int32),
        numbers=np.concatenate([a.numbers for a in atoms]).astype(np.uint8),
        positions=np.concatenate([a.positions for a in atoms]).astype(np.float32),
        label_gdb=np.array(spectra_gdbs, dtype=np.int64),
        smiles=np.array([r.SMILES for r in rows]),
        **{f"label_{key}": np.array([lab[key] for lab in labels]) for key in QM9_UNITS},
    )
    print(
        f"{path}: {len(gdbs):,} structures, labels of {len(spectra_gdbs):,} spectra molecules, "
        f"{os.path.getsize(path) / 1e6:.1f} MB"
    )


def structures_db_from_inputs(db, inputs):
    """The stage-1 database from :func:`write_inputs`' file (structures only, in the same order)."""
    from ase import Atoms
    from schnetpack.data import ASEAtomsData

    from schnetpack_molspectra.data.files import new_database

    with np.load(inputs) as z:
        bounds = np.concatenate([[0], np.cumsum(z["n_atoms"])])
        numbers, positions = z["numbers"], z["positions"].astype(np.float64)
    atoms = [Atoms(numbers=numbers[a:b], positions=positions[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with new_database(db, leftover="remove") as partial:
        ASEAtomsData.create(partial, distance_unit="Ang", property_unit_dict={}).add_systems([{}] * len(atoms), atoms)


def spectra_db(workdir, inputs=None, sticks=()):
    """The stage-2 database: the shipped sticks and those of the ``sticks`` folders (molecules without
    UV withheld from it) broadened, labels from :func:`write_inputs`' file or qm9pack. Named by its
    number of chunks, so a grown set builds a new one. From an inputs file, only the molecules it has labels
    for (the folders may have grown since it was written: the newer chunks' molecules are left out, and said)."""
    from schnetpack_molspectra.data.qm9_targets import QM9_UNITS
    from schnetpack_molspectra.data.sticks import build_db_from_sticks, shipped_chunks

    folders = spectra_folders(sticks)
    name = f"spectra_{sum(len(shipped_chunks('vib', f)) for f in folders)}chunks"
    labels = None
    if inputs:
        with np.load(inputs) as z:  # each z[...] reads its array anew: once each
            gdbs, smiles = z["label_gdb"], z["smiles"]
            values = {key: z[f"label_{key}"] for key in QM9_UNITS}
        labels = {
            int(g): ({key: float(values[key][i]) for key in QM9_UNITS}, str(smiles[i])) for i, g in enumerate(gdbs)
        }
        name = f"spectra_{len(labels)}labelled"
    db = os.path.join(workdir, f"{name}.db")
    if not os.path.exists(db):
        if labels is not None:  # only the chunks' index arrays are read (np.load is lazy per array)
            labelled, unlabelled = np.fromiter(labels, dtype=np.int64), 0
            for chunk in (c for folder in folders for c in shipped_chunks("vib", folder)):
                with np.load(chunk) as z:
                    unlabelled += int(np.count_nonzero(~np.isin(z["gdb_index"], labelled)))
            if unlabelled:
                print(
                    f"{inputs}: no labels for {unlabelled} molecules of {', '.join(folders)} (newer chunks): left out"
                )
        build_db_from_sticks(db, labels=labels, folder=folders, require_uv=not sticks, gdb_indices=labels)
    return db


def training_spectra_db(args):
    """The stage-2 / spectra database of this piece: ``--spectra-db`` (an earlier piece's, so that its
    split, and so its validation molecules, stay the same), else :func:`spectra_db`'s."""
    return os.path.abspath(args.spectra_db) if args.spectra_db else spectra_db(args.workdir, args.inputs, args.sticks)


def pretraining_structures(workdir, inputs=None):
    """The QM9 database of every structure outside the held-out set, and its split file (from
    qm9pack, or from ``inputs``, a file of :func:`write_inputs`)."""
    db = os.path.join(workdir, "qm9_pretrain.db")
    if not os.path.exists(db) and inputs:
        structures_db_from_inputs(db, inputs)
    elif not os.path.exists(db):
        from schnetpack_molspectra.data.qm9 import build_qm9_db, load_qm9pack

        build_qm9_db(db, gdb_indices=pretraining_gdbs(load_qm9pack()))
    split = os.path.join(workdir, "qm9_pretrain_split.npz")
    if not os.path.exists(split):
        order = np.random.default_rng(0).permutation(database_size(db))
        np.savez(
            split,
            val_idx=order[:VALIDATION],
            test_idx=order[VALIDATION : VALIDATION + TEST],
            train_idx=order[VALIDATION + TEST :],
        )
    return db, split


def piece_overrides(name, args, previous):
    spec = MODELS[name]
    overrides = [
        f"experiment={spec['experiment']}",
        f"trainer.max_steps={args.steps}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        f"trainer.accelerator={args.accelerator}",
        f"+seed={args.seed}",
    ]
    if spec["data"] == "qm9":
        db, split = pretraining_structures(args.workdir, args.inputs)
        overrides += [
            f"data.datapath={db}",
            f"data.split_file={split}",
            f"data.num_train={len(np.load(split)['train_idx'])}",
            f"data.num_val={VALIDATION}",
        ]
    else:
        if spec["data"] == "spectra":
            overrides += ["globals.modality_dropout=0.5", f"globals.spectra_augmentation={args.augmentation}"]
        if args.spectra_db or args.inputs or args.sticks:
            db = training_spectra_db(args)
            train, val, test = spectra_split(database_size(db))
            overrides.append(f"data.datapath={db}")
            if test is not None:
                overrides += [f"data.num_train={train}", f"data.num_val={val}", f"data.num_test={test}"]
    if previous is not None:
        overrides.append(f"globals.pretrained_model={previous}")
        if os.path.basename(previous) == f"{name}.pt":  # a continuation: SpecFormer / the spectra head too
            key = "pretrained_spectra_encoder" if spec["data"] == "spectra" else "pretrained_spectra_head"
            if spec["data"] != "qm9":
                overrides.append(f"+globals.{key}=true")
    return overrides + list(args.overrides)


def validation_summary(piece_dir):
    """``{"end": {metric: value}}``: the last validation values a piece logged (its SIS, cosine, Spearman
    per modality for a spectra model, which has no pre-training summary)."""
    from schnetpack_molspectra.train.logs import read_scalars

    scalars = read_scalars(piece_dir)
    return {
        "end": {tag[len("val_") :]: float(points[-1][1]) for tag, points in scalars.items() if tag.startswith("val_")}
    }


def run_piece(name, args):
    from schnetpack_molspectra.pretrained import read_weights, save_weights
    from schnetpack_molspectra.shipped import model_file

    out = os.path.join(args.models_dir, os.path.basename(model_file(name, must_exist=False)))
    if os.path.exists(out):
        card = read_weights(out)["card"]
    else:
        spec = MODELS[name]
        card = {
            "name": name,
            "description": spec["description"],
            "trained_on": spec["trained_on"],
            "elements": ["H", "C", "N", "O", "F"],
            "pieces": [],
            "measured": {},
        }
    source = MODELS[name]["source"]
    if card["pieces"]:
        previous = out
    elif source is not None:
        previous = os.path.join(args.models_dir, os.path.basename(model_file(source)))  # the newest stage-1 piece
    else:
        previous = None
    piece = len(card["pieces"]) + 1
    run_dir = os.path.abspath(os.path.join(args.workdir, name))
    overrides = piece_overrides(name, args, previous) + [f"run.path={run_dir}", f"run.id=piece{piece}"]
    spktrain = os.path.join(os.path.dirname(sys.executable), "spktrain")
    print(f"{name} piece {piece}: spktrain {' '.join(overrides)}", flush=True)
    start = time.time()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with open(os.path.join(args.workdir, f"{name}_piece{piece}.log"), "a") as log:
        proc = subprocess.run([spktrain, *overrides], cwd=args.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} piece {piece} failed (exit {proc.returncode}); see {log.name}")
    wall = time.time() - start

    import torch
    from omegaconf import OmegaConf

    import schnetpack_molspectra.configs  # noqa: F401  (resolvers of the run's config)

    piece_dir = os.path.join(run_dir, f"piece{piece}")
    model = torch.load(os.path.join(piece_dir, "best_model"), map_location="cpu", weights_only=False)
    config = OmegaConf.to_container(OmegaConf.load(os.path.join(piece_dir, "config.yaml")), resolve=False)
    summary_file = os.path.join(piece_dir, "pretraining_summary.json")
    summary = json.load(open(summary_file)) if os.path.exists(summary_file) else validation_summary(piece_dir)
    if MODELS[name]["data"] == "spectra":
        spectra = {"sticks_folders": ["package"] + list(args.sticks), "spectra_augmentation": args.augmentation}
    elif MODELS[name]["data"] == "spectra_targets":
        spectra = {"sticks_folders": ["package"] + list(args.sticks)}
    else:
        spectra = {}
    card["pieces"].append(
        {
            "piece": piece,
            "steps": int(summary.get("steps") or args.steps),  # fewer when trainer.max_time stopped it
            "batch_size": args.batch_size,
            "wall_s": round(wall, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"
            if args.accelerator == "cpu"
            else args.accelerator,
            "threads": args.threads,
            "started_from": os.path.basename(previous) if previous else None,
            "package_version": package_version(),
            "summary": summary,
            **spectra,
        }
    )
    if spectra and args.sticks:
        with connect(training_spectra_db(args)) as conn:
            n_all, n_no_uv = conn.count(), sum(1 for r in conn.select(include_data=True) if r.data["uv_missing"][0])
        card["pieces"][-1]["molecules"] = n_all
        if MODELS[name]["data"] == "spectra":
            card["trained_on"] = (
                f"{n_all:,} QM9 spectra molecules ({split_text(n_all)}), none held out: {n_all - n_no_uv:,} with xTB IR/Raman "
                f"and sTDA UV (the package's sticks), {n_no_uv:,} with xTB IR/Raman only (UV withheld; {', '.join(args.sticks)})"
                + pieces_text(card["pieces"])
            )
            head, tail = MODELS[name]["description"].split(":", 1)
            card["description"] = f"{head}{augmentation_text(card['pieces'])}:{tail}"
        else:
            card["trained_on"] = (
                f"{n_all:,} QM9 spectra molecules ({split_text(n_all)}), none held out: xTB IR/Raman of the package's "
                f"sticks ({n_all - n_no_uv:,}) and of {', '.join(args.sticks)} ({n_no_uv:,})"
            )
    save_weights(out, model, config=config, card=card)
    print(f"{name} piece {piece}: {wall:.0f} s, weights in {out} ({os.path.getsize(out) / 1e6:.1f} MB)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", choices=sorted(MODELS))
    p.add_argument("--steps", type=int, help="optimiser steps of this piece")
    p.add_argument(
        "--models-dir", default=MODELS_DIR, help="where the weights files are continued (default: the package's)"
    )
    p.add_argument("--inputs", default=None, help="train from this file of --write-inputs instead of qm9pack")
    p.add_argument("--write-inputs", default=None, metavar="PATH", help="write the inputs file and stop")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="dataloader worker processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS)")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sticks",
        nargs="+",
        default=[],
        metavar="DIR",
        help="stage 2: further sticks folders beside the shipped ones (the grown set, e.g. data/qm9_sticks)",
    )
    p.add_argument(
        "--augmentation", type=float, default=0.8, help="stage 2: globals.spectra_augmentation (0: the released)"
    )
    p.add_argument("--workdir", default="shipped_runs")
    p.add_argument(
        "--spectra-db",
        default=None,
        help="train on this spectra database (an earlier piece's, in --workdir: the same split and validation "
        "molecules) instead of one built from the sticks folders as they are now",
    )
    p.add_argument("overrides", nargs="*", help="further spktrain overrides")
    args = p.parse_intermixed_args(argv)  # overrides may follow the options
    if args.write_inputs:
        return write_inputs(args.write_inputs, args.sticks)
    if args.name is None or args.steps is None:
        p.error("give a model name and --steps (or --write-inputs PATH)")
    if args.inputs:
        args.inputs = os.path.abspath(args.inputs)
    os.makedirs(args.workdir, exist_ok=True)
    args.workdir = os.path.abspath(args.workdir)
    if MODELS[args.name]["data"] != "qm9" and (args.inputs or args.sticks) and not args.spectra_db:
        # built once: the card then describes the database the piece trained on, even when chunks land meanwhile
        args.spectra_db = spectra_db(args.workdir, args.inputs, args.sticks)
    run_piece(args.name, args)


if __name__ == "__main__":
    main()
