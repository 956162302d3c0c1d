"""``spkspectra``: build MolSpectra datasets (SchNetPack ASE databases with spectra).

spkspectra simulate OUT.db --smiles CCO c1ccccc1 | --file mols.xyz | --qm9 100 [--workers 2]
spkspectra qm9 OUT.db [--limit N]       # QM9 offline from qm9pack, SchNetPack names/units
spkspectra convert-qm9s OUT.db --pt qm9s.pt --uv uv_boraden.csv --ir ir_boraden.csv --raman raman_boraden.csv [--qm9 qm9.db]
spkspectra md aspirin OUT.db [--frames 1000 --temperature 500]   # MD17-style data from GFN2-xTB MD
spkspectra md17-npz md17_aspirin.npz OUT.db                      # real MD17 file -> SchNetPack db
spkspectra default [--out PATH]          # (re)build the embedded default dataset
spkspectra identify SPECTRA... --model best_model --library candidates.smi [--top-k 5 --csv out.csv]
spkspectra identify SPECTRA... --method predict --model spectra-painn-qm9 --library candidates.smi   # predict-then-match
spkspectra plot attention|tsne|mpr|curves RUN_DIR [--out x.png]
spkspectra predict --smiles CCO c1ccccc1 | --file mols.xyz --out pred.npz|pred.csv|pred.jdx [--model spectra-painn-qm9 --plot pred.png]
"""

import argparse
import os
import sys
from dataclasses import fields

import torch

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra import plots
from schnetpack_molspectra.atomistic import SpectraHead
from schnetpack_molspectra.data import inputs
from schnetpack_molspectra.data.default import build_default_dataset
from schnetpack_molspectra.data.md17 import generate_xtb_md, npz_to_db
from schnetpack_molspectra.data.qm9 import build_qm9_db
from schnetpack_molspectra.data.qm9_targets import QM9_UNITS
from schnetpack_molspectra.data.qm9s import convert_qm9s
from schnetpack_molspectra.data.simulate.cluster import JOBQUEUE_CLUSTERS, ClusterError, ClusterSpec
from schnetpack_molspectra.data.simulate.runner import SimulationSettings, read_failures, simulate_to_db
from schnetpack_molspectra.data.simulate.uv import UV_METHODS
from schnetpack_molspectra.data.spectrum_files import REFERENCE_PEAK, WRITE_EXTENSIONS, write_spectra
from schnetpack_molspectra.identify import format_results, identify
from schnetpack_molspectra.identify.model import load_model, read_saved_model
from schnetpack_molspectra.matching import EXACT, TOLERANT, identify_by_prediction
from schnetpack_molspectra.predict import (
    DEFAULT_MODEL,
    PredictError,
    collect_inputs,
    load_predictor,
    predict_spectra,
    reference_scaled,
)
from schnetpack_molspectra.shipped import available_models, cards_table, format_card, model_card
from schnetpack_molspectra.spectra.alignment import scale_grid

TRUST_HELP = (
    "unpickle a best_model that no run of yours wrote (unpickling runs the code the file holds; "
    "weights files and shipped models never need it)"
)


def _cluster_spec(args):
    """The Dask cluster that ``simulate``'s options ask for, or None (serially, in this process);
    options that do not go together raise ValueError naming them."""
    batch = {
        "--jobs": args.jobs,
        "--cores": args.cores,
        "--memory": args.memory,
        "--walltime": args.walltime,
        "--queue": args.queue,
        "--account": args.account,
        "--job-extra": args.job_extra,
        "--job-prologue": args.job_prologue,
        "--interface": args.interface,
    }
    given = [flag for flag, value in batch.items() if value not in (None, [])]
    if given and not args.jobqueue:
        raise ValueError(f"{', '.join(given)} only apply to batch jobs (--jobqueue slurm|pbs|...)")
    if args.workers is not None and (args.scheduler or args.jobqueue):
        raise ValueError(
            "--workers sets worker processes on this machine: with --scheduler the cluster's "
            "workers run the molecules, with --jobqueue give --jobs and --cores (per job)"
        )
    if args.scheduler:
        return ClusterSpec("scheduler", address=args.scheduler)
    if args.jobqueue:
        return ClusterSpec(
            args.jobqueue,
            jobs=1 if args.jobs is None else args.jobs,
            cores=args.cores,
            memory=args.memory,
            walltime=args.walltime,
            queue=args.queue,
            account=args.account,
            job_extra=args.job_extra,
            job_prologue=args.job_prologue,
            interface=args.interface,
        )
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1) if args.dask else 1
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    return ClusterSpec("local", workers=workers) if args.dask or workers > 1 else None


def _simulate(args):
    cluster = _cluster_spec(args)  # before the molecules: a wrong option fails at once
    label_units = {}
    if args.smiles:
        molecules = inputs.from_smiles(args.smiles)
    elif args.file:
        molecules = inputs.from_file(args.file)
    else:
        molecules = inputs.from_qm9(n=args.qm9, seed=args.seed)
        label_units = QM9_UNITS
    settings = SimulationSettings(**{f.name: getattr(args, f.name) for f in fields(SimulationSettings)})
    try:
        counts = simulate_to_db(molecules, args.out, settings, 1, label_units, args.retry_failed, cluster=cluster)
    except ClusterError as err:  # Dask or dask-jobqueue missing, scheduler unreachable
        print(f"spkspectra simulate: error: {err}", file=sys.stderr)
        return 2
    failures = read_failures(args.out)
    print(
        f"{args.out}: {counts['written']} written, {counts['failed']} failed, {counts['skipped']} already done/failed before"
    )
    for record in failures:
        print(f"  failed: input {record['input_index']} {record['name']}: {record['reason']}")
    return 0


def _qm9(args):
    n = build_qm9_db(args.out, limit=args.limit, gdb_indices=args.indices, xyz_archive=args.from_xyz_archive)
    print(f"{args.out}: {n} QM9 molecules")
    return 0


def _convert_qm9s(args):
    summary = convert_qm9s(args.pt, {m: getattr(args, m) for m in msp.modalities}, args.out, qm9_db=args.qm9)
    print(
        f"{args.out}: {summary['written']} of {summary['molecules_in_pt']} molecules written "
        f"(CSV rows: {summary['rows']}); summary in {args.out}.summary.json"
    )
    for modality, missing in summary["missing_rows"].items():
        if missing:
            print(f"  {modality}: {len(missing)} molecules without a row, e.g. {missing[:5]}")
    for modality, orphans in summary["orphan_rows"].items():
        if orphans:
            print(f"  {modality}: {len(orphans)} rows without a molecule, e.g. {orphans[:5]}")
    for bad in summary["bad_rows"][:10]:  # index None: unparsable, the problem names the line
        row = "" if bad["index"] is None else f"row {bad['index']} "
        print(f"  {bad['file']}: {row}{bad['problem']}")
    if len(summary["bad_rows"]) > 10:
        print(f"  ... {len(summary['bad_rows']) - 10} more bad rows")
    for dup in summary["duplicate_rows"][:5]:
        print(f"  {dup['file']}: duplicate row index {dup['index']} (first kept)")
    if summary["molecules_without_qm9_labels"]:
        print(f"  {len(summary['molecules_without_qm9_labels'])} molecules not in the QM9 database (not written)")
    return 0


def _md(args):
    n = generate_xtb_md(
        args.molecule, args.out, args.frames, args.temperature, args.timestep, args.interval, seed=args.seed
    )
    print(f"{args.out}: {n} frames")
    return 0


def _md17_npz(args):
    print(f"{args.out}: {npz_to_db(args.npz, args.out)} frames")
    return 0


def _default(args):
    print(build_default_dataset(args.out, n_molecules=args.n_molecules, sticks=args.sticks))
    return 0


def _models(args):
    names = args.names or available_models()
    if args.markdown:
        print(cards_table(names))
        return 0
    if not names:
        print("no pre-trained models are shipped with this installation")
    for name in names:
        print(format_card(model_card(name)) + "\n")
    return 0


def _device(name: str) -> str:
    """``auto``: the first GPU if torch sees one, else the CPU; anything else as given."""
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _scales(text: str):
    """``LO:HI:STEP`` (or one number) -> the frequency scales of tolerant matching."""
    try:
        parts = [float(x) for x in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [parts[0], parts[0], 1.0]
    if len(parts) != 3:
        raise ValueError(f"--scales {text}: expected LO:HI:STEP (e.g. 0.95:1.05:0.005) or one scale")
    return scale_grid(*parts)


def _identify(args):
    elements = args.elements.replace(",", " ").split() if args.elements else None
    shared = dict(
        top_k=args.top_k,
        modality=args.modality,
        one_molecule=args.one_molecule,
        rescale=args.rescale,
        baseline=args.baseline,
        out_csv=args.csv,
        progress=True,
        device=_device(args.device),
        trust=args.trust_model,
    )
    alignment = args.exact or args.scales is not None or args.smoothing is not None
    model, method = args.model, args.method
    if method == "auto":  # by the model: a spectra model predicts, a molspectra_pretrain model embeds
        expected, device = "the best_model of a spectra_finetune or a molspectra_pretrain run", shared["device"]
        saved = read_saved_model(args.model, device, args.trust_model, expected=expected)
        method = "predict" if any(isinstance(m, SpectraHead) for m in saved.model.output_modules) else "embedding"
        model = load_predictor(saved, device) if method == "predict" else load_model(saved, elements, device)
    if method == "predict":
        if elements or args.exact_below is not None:
            raise ValueError(
                f"--elements and --exact-below apply to the joint embedding only (a molspectra_pretrain model or "
                f"--method embedding); {args.model} ranks by predict-then-match"
            )
        tolerance = dict(EXACT if args.exact else TOLERANT)
        if args.scales is not None:
            tolerance["scales"] = _scales(args.scales)
        if args.smoothing is not None:
            if args.smoothing < 0:
                raise ValueError(f"--smoothing must be 0 or more (cm^-1), not {args.smoothing}")
            tolerance["smoothing"] = args.smoothing
        results = identify_by_prediction(
            model, args.spectra, args.library, cache=not args.no_cache, **shared, **tolerance
        )
    elif alignment:
        raise ValueError(
            f"--exact, --scales and --smoothing apply to predict-then-match only (a spectra model such as "
            f"spectra-painn-qm9, or --method predict); {args.model} ranks by the joint embedding"
        )
    else:
        embedding = dict(elements=elements, cache=not args.no_cache, exact_below=args.exact_below)
        results = identify(model, args.spectra, args.library, **embedding, **shared)
    print(format_results(results))
    if args.csv:
        print(f"{args.csv}: {sum(len(r.hits) for r in results)} rows")
    return 0


def _plot(args):
    out = args.out or f"{args.kind}.png"
    device = _device(args.device)
    if args.kind == "curves":
        result = plots.plot_curves(args.model_run, out)
    elif args.kind == "attention":
        result = plots.plot_attention(
            args.model_run,
            out,
            data=args.data,
            index=args.index,
            layer=args.layer,
            device=device,
            trust=args.trust_model,
        )
        for head, key in result["top_key"].items():
            print(f"  head {head}: most attended key patch {key}")
    elif args.kind == "tsne":
        result = plots.plot_tsne(
            args.model_run, out, data=args.data, color_by=args.color_by, device=device, trust=args.trust_model
        )
    else:
        result = plots.plot_mpr(
            args.model_run, out, data=args.data, index=args.index, device=device, trust=args.trust_model
        )
        for m, e in result["errors"].items():
            print(f"  {m}: MSE on masked patches {e['mse']:.4f} (predicting zero {e['mse_zero']:.4f})")
    print(result["out"])
    return 0


def _predict(args):
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in WRITE_EXTENSIONS:  # before the model and the structures: a wrong --out fails at once
        raise ValueError(f"--out {args.out}: unknown format {ext or '(no suffix)'}; use {', '.join(WRITE_EXTENSIONS)}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, not {args.batch_size}")
    predictor = load_predictor(args.model, device=_device(args.device), trust=args.trust_model)
    many = len(args.smiles or []) > 100
    molecules = collect_inputs(predictor, smiles=args.smiles, file=args.file, progress=many)
    for skipped in molecules.skipped:
        print(f"skipped: {skipped}")
    if not molecules.atoms:
        reasons = "; ".join(str(s) for s in molecules.skipped[:3])
        more = f"; ... {len(molecules.skipped) - 3} more" if len(molecules.skipped) > 3 else ""
        raise PredictError(
            f"nothing written: none of the {molecules.n_inputs} inputs can be predicted by {predictor.path} "
            f"({reasons}{more})"
        )
    spectra = predict_spectra(
        predictor, molecules.atoms, batch_size=args.batch_size, progress=len(molecules.atoms) > 512
    )
    scaled = reference_scaled(spectra)
    written = write_spectra(args.out, scaled, molecules.names, molecules.smiles)
    modalities = ", ".join(predictor.modalities)
    for path in written:
        print(f"{path}: written")
    print(
        f"{len(molecules.atoms)} of {molecules.n_inputs} inputs predicted ({modalities}; peaks scaled to "
        f"{', '.join(f'{m} {REFERENCE_PEAK[m]:g}' for m in predictor.modalities)}), {len(molecules.skipped)} skipped"
    )
    if args.plot:
        result = plots.plot_predicted_spectra(scaled, molecules.names, args.plot, ylabel="intensity (peak scaled)")
        print(f"{result['out']}: {len(result['molecules'])} molecules plotted")
    return 0


def _add_cluster_options(sim) -> None:
    """``simulate``: where the molecules run (Dask distributed: this machine, a cluster, batch jobs)."""
    cluster = sim.add_argument_group("Dask distributed (one machine or many)")
    where = cluster.add_mutually_exclusive_group()
    where.add_argument(
        "--dask",
        choices=["local"],
        default=None,
        help="a Dask LocalCluster of --workers processes (the default for --workers > 1)",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="a running Dask cluster: its address (tcp://host:8786) or scheduler file (JSON)",
    )
    where.add_argument(
        "--jobqueue",
        choices=sorted(JOBQUEUE_CLUSTERS),
        default=None,
        help="Dask workers as batch jobs (needs dask-jobqueue); the scheduler runs here, the nodes must reach it",
    )
    cluster.add_argument("--jobs", type=int, default=None, help="--jobqueue: batch jobs to submit (default 1)")
    cluster.add_argument(
        "--cores",
        type=int,
        default=None,
        help="--jobqueue: cores per job, one single-threaded worker each (default: Dask jobqueue config, else 1)",
    )
    cluster.add_argument(
        "--memory",
        default=None,
        help="--jobqueue: memory per job, e.g. 16GB (default: Dask jobqueue config, else 2GB per core)",
    )
    cluster.add_argument("--walltime", default=None, help="--jobqueue: wall time per job, e.g. 02:00:00")
    cluster.add_argument("--queue", default=None, help="--jobqueue: queue / partition")
    cluster.add_argument("--account", default=None, help="--jobqueue: account to charge (project on SGE, LSF, OAR)")
    cluster.add_argument(
        "--job-extra",
        action="append",
        default=[],
        metavar="DIRECTIVE",
        help="--jobqueue: an extra batch directive, e.g. --job-extra=--constraint=cpu (repeatable)",
    )
    cluster.add_argument(
        "--job-prologue",
        action="append",
        default=[],
        metavar="LINE",
        help="--jobqueue: a shell line run before the worker, e.g. 'source ~/venv/bin/activate' (repeatable)",
    )
    cluster.add_argument(
        "--interface", default=None, help="--jobqueue: network interface of scheduler and workers, e.g. ib0"
    )


def _add_settings_options(sim) -> None:
    """``simulate``: one option per field of SimulationSettings, with its default."""
    defaults = SimulationSettings()
    for f in fields(SimulationSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or isinstance(getattr(defaults, f.name), bool):
            sim.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=getattr(defaults, f.name)
            )
        else:
            kind = type(getattr(defaults, f.name))
            choices = sorted(UV_METHODS) if f.name == "uv_method" else None
            sim.add_argument(flag, dest=f.name, type=kind, default=getattr(defaults, f.name), choices=choices)


def _add_simulate(sub) -> None:
    """``spkspectra simulate``."""
    sim = sub.add_parser(
        "simulate",
        help="compute UV-Vis/IR/Raman spectra (GFN2-xTB + PySCF) into a SchNetPack db",
        description="Compute UV-Vis/IR/Raman spectra into a SchNetPack db, serially (--workers 1) or on Dask "
        "distributed: this machine (--workers N), a running cluster (--scheduler) or batch jobs "
        "(--jobqueue). This process writes every result; a killed run started again resumes.",
    )
    sim.add_argument("out", help="output database (.db); an existing one is resumed")
    src = sim.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles", nargs="+", help="SMILES strings (3D structures from RDKit)")
    src.add_argument("--file", "--xyz", "--db", dest="file", help="xyz / extxyz / ASE db with the structures")
    src.add_argument("--qm9", type=int, metavar="N", help="N random QM9 molecules (with their QM9 labels)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the QM9 subset")
    sim.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes on this machine (default 1: serially, in this process; N > 1: a Dask "
        "LocalCluster of N single-threaded workers; with --dask local: all cores)",
    )
    _add_cluster_options(sim)
    sim.add_argument("--retry-failed", action="store_true", help="retry molecules recorded as failed")
    _add_settings_options(sim)
    sim.set_defaults(run=_simulate)


def _add_qm9(sub) -> None:
    """``spkspectra qm9``."""
    qm9 = sub.add_parser("qm9", help="QM9 offline (qm9pack) as a SchNetPack database")
    qm9.add_argument("out")
    limit = qm9.add_mutually_exclusive_group()
    limit.add_argument("--limit", type=int, default=None, help="only the first N molecules")
    limit.add_argument(
        "--indices", type=int, nargs="+", default=None, metavar="GDB", help="only these GDB indices (the n of gdb_n)"
    )
    qm9.add_argument(
        "--from-xyz-archive",
        default=None,
        help="the standard dsgdb9nsd.xyz.tar.bz2 (or a folder of its xyz files) instead of qm9pack",
    )
    qm9.set_defaults(run=_qm9)


def _add_convert_qm9s(sub) -> None:
    """``spkspectra convert-qm9s``."""
    conv = sub.add_parser("convert-qm9s", help="the real QM9S files (qm9s.pt + *_boraden.csv) as a SchNetPack db")
    conv.add_argument("out")
    conv.add_argument("--pt", required=True, help="qm9s.pt")
    for modality in msp.modalities:
        conv.add_argument(f"--{modality}", required=True, help=f"{modality}_boraden.csv")
    conv.add_argument("--qm9", default=None, help="QM9 db (spkspectra qm9) to attach labels by GDB index")
    conv.set_defaults(run=_convert_qm9s)


def _add_md(sub) -> None:
    """``spkspectra md``."""
    md = sub.add_parser("md", help="MD17-style data: GFN2-xTB Langevin MD (energies + forces), resumable")
    md.add_argument(
        "molecule",
        help="aspirin, benzene, ethanol, malonaldehyde, naphthalene, salicylic_acid, toluene, uracil, or a structure file",
    )
    md.add_argument("out")
    md.add_argument("--frames", type=int, default=1000)
    md.add_argument("--temperature", type=float, default=500.0, help="K")
    md.add_argument("--timestep", type=float, default=0.5, help="fs")
    md.add_argument("--interval", type=int, default=10, help="MD steps between frames")
    md.add_argument("--seed", type=int, default=0)
    md.set_defaults(run=_md)


def _add_md17_npz(sub) -> None:
    """``spkspectra md17-npz``."""
    npz = sub.add_parser("md17-npz", help="a real MD17 .npz (R, z, E, F) as a SchNetPack db")
    npz.add_argument("npz")
    npz.add_argument("out")
    npz.set_defaults(run=_md17_npz)


def _add_default(sub) -> None:
    """``spkspectra default``."""
    default = sub.add_parser("default", help="build the default spectra dataset from the shipped QM9 sticks (seconds)")
    default.add_argument("--out", default=None, help="database to write (default: the cache, where spktrain looks)")
    default.add_argument("--n-molecules", type=int, default=None, help="the first N shipped molecules (default: all)")
    default.add_argument(
        "--sticks",
        nargs="+",
        default=[],
        metavar="DIR",
        help="further sticks folders (e.g. data/qm9_sticks of the repository) whose molecules are added, those "
        "without UV with their UV withheld in pre-training; needs --out",
    )
    default.set_defaults(run=_default)


def _add_identify(sub) -> None:
    """``spkspectra identify``."""
    ident = sub.add_parser("identify", help="rank candidate structures for spectra with a pre-trained MolSpectra model")
    ident.add_argument(
        "spectra",
        nargs="+",
        help="spectra: .db, .npy/.npz, .csv (rows on the grid or two columns x,y), JCAMP-DX .jdx/.dx",
    )
    ident.add_argument(
        "--model",
        required=True,
        help="a shipped model's name (spkspectra models), a weights file, or a run's best_model (or its run "
        "directory): a molspectra_pretrain model (molspectra-painn-qm9) ranks by the joint embedding, a "
        "spectra_finetune model (spectra-painn-qm9) by predict-then-match",
    )
    ident.add_argument(
        "--method",
        choices=["auto", "embedding", "predict"],
        default="auto",
        help="embedding: the joint spectra/3D embedding of a molspectra_pretrain model; predict: the cosine "
        "between the query's spectra and those a spectra model predicts for each candidate; auto (default): "
        "predict with a spectra model (spectra-painn-qm9), embedding with a molspectra_pretrain model",
    )
    ident.add_argument(
        "--library", required=True, help="candidate structures: .db, .xyz/.extxyz, or a SMILES list (.smi/.txt/.csv)"
    )
    ident.add_argument("--top-k", type=int, default=5)
    ident.add_argument(
        "--modality",
        choices=list(msp.modalities),
        default=None,
        help="modality of files that do not say (.npy, CSV, JCAMP-DX)",
    )
    ident.add_argument(
        "--one-molecule", action="store_true", help="all spectra files are of one molecule (e.g. ir.jdx raman.jdx)"
    )
    ident.add_argument(
        "--rescale",
        choices=["auto", "peak", "none"],
        default="auto",
        help="auto: x,y data (CSV x,y, JCAMP-DX) to the training peak height",
    )
    ident.add_argument(
        "--baseline",
        choices=["auto", "als", "none"],
        default="auto",
        help="auto: subtract the asymmetric-least-squares baseline from x,y data (CSV x,y, JCAMP-DX); als: from "
        "every spectrum",
    )
    ident.add_argument(
        "--elements", default=None, help="elements the model knows, e.g. H,C,N,O,F (default: its training data)"
    )
    ident.add_argument("--csv", default=None, help="also write the results to this CSV")
    ident.add_argument(
        "--no-cache",
        action="store_true",
        help="do not read or write the library's cache (its embeddings; with --method predict its predicted spectra)",
    )
    ident.add_argument(
        "--device", default="auto", help="where the model runs: auto (a GPU if there is one), cpu, cuda, cuda:1, ..."
    )
    ident.add_argument(
        "--exact-below",
        type=int,
        default=None,
        help="FAISS HNSW (pip install faiss-cpu) for libraries of this size or more (default: exact search at any size)",
    )
    ident.add_argument(
        "--exact",
        action="store_true",
        help="--method predict: compare the spectra as they are (default: tolerant of another level of theory - "
        "the query's frequencies scaled by 0.95-1.05, the best scale kept per candidate, both sides smoothed by "
        "a Gaussian of FWHM 50 cm^-1; matching.TOLERANT)",
    )
    ident.add_argument(
        "--scales",
        default=None,
        help="--method predict: frequency scales LO:HI:STEP tried on the query (e.g. 0.95:1.05:0.005)",
    )
    ident.add_argument(
        "--smoothing", type=float, default=None, help="--method predict: Gaussian FWHM in cm^-1 applied to both sides"
    )
    ident.add_argument("--trust-model", action="store_true", help=TRUST_HELP)
    ident.set_defaults(run=_identify)


def _add_plot(sub) -> None:
    """``spkspectra plot``."""
    plot = sub.add_parser("plot", help="pictures of a pre-trained model: attention | tsne | mpr | curves")
    plot.add_argument("kind", choices=["attention", "tsne", "mpr", "curves"])
    plot.add_argument("model_run", metavar="RUN", help="run directory (or its best_model)")
    plot.add_argument("--out", default=None, help="PNG to write (default: <kind>.png)")
    plot.add_argument("--data", default=None, help="spectra database (default: the one the run trained on)")
    plot.add_argument("--index", type=int, default=0, help="attention, mpr: molecule (row) of the database")
    plot.add_argument("--layer", type=int, default=-1, help="attention: SpecFormer layer (default: the last)")
    plot.add_argument(
        "--device", default="auto", help="where the model runs: auto (a GPU if there is one), cpu, cuda, ..."
    )
    plot.add_argument("--color-by", default="gap", help="tsne: property to colour by (a QM9 label, n_atoms, n_O, ...)")
    plot.add_argument("--trust-model", action="store_true", help=TRUST_HELP)
    plot.set_defaults(run=_plot)


def _add_predict(sub) -> None:
    """``spkspectra predict``."""
    pred = sub.add_parser(
        "predict",
        help="predict IR/Raman/UV spectra of structures with a spectra model (spktrain experiment=spectra_finetune)",
        description="Predict the spectra of molecules with a spectra model. One row (or file) per usable input, "
        "in input order, with its name and SMILES; inputs the model cannot take (an unknown element, no atoms, a "
        "SMILES RDKit cannot embed) are named and skipped. The written intensities are the area-normalised "
        "predictions scaled to the training data's typical peak height, the scale spkspectra identify expects.",
    )
    src = pred.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles", nargs="+", help="SMILES strings (3D structures from RDKit)")
    src.add_argument("--file", "--xyz", "--db", dest="file", help="xyz / extxyz / ASE db with the structures")
    pred.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a shipped model's name (default {DEFAULT_MODEL}), a weights file, or the best_model of "
        "spktrain experiment=spectra_finetune (or its run directory)",
    )
    pred.add_argument(
        "--out",
        required=True,
        help="spectra to write: .npz (arrays ir/raman/uv, names, smiles), .csv (one file per modality: "
        "OUT_ir.csv, ...) or .jdx (JCAMP-DX, one compound file per molecule: OUT_<i>.jdx for several)",
    )
    pred.add_argument("--plot", default=None, metavar="PNG", help="also plot the spectra of the first 6 molecules")
    pred.add_argument(
        "--device", default="auto", help="where the model runs: auto (a GPU if there is one), cpu, cuda, cuda:1, ..."
    )
    pred.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="structures per model call (default: chosen by the device, ~16 small molecules on a CPU, 512 on a GPU)",
    )
    pred.add_argument("--trust-model", action="store_true", help=TRUST_HELP)
    pred.set_defaults(run=_predict)


def _add_models(sub) -> None:
    """``spkspectra models``."""
    models = sub.add_parser("models", help="the pre-trained models shipped with the package, with their model cards")
    models.add_argument("names", nargs="*", help="only these (default: all)")
    models.add_argument("--markdown", action="store_true", help="one Markdown table (the README's)")
    models.set_defaults(run=_models)


def parser() -> argparse.ArgumentParser:
    """The ``spkspectra`` parser: one subcommand per builder above."""
    p = argparse.ArgumentParser(prog="spkspectra", description="Build MolSpectra spectra datasets.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _add_simulate,
        _add_qm9,
        _add_convert_qm9s,
        _add_md,
        _add_md17_npz,
        _add_default,
        _add_identify,
        _add_plot,
        _add_predict,
        _add_models,
    ):
        add(sub)
    return p


def _error_line(err: BaseException) -> str:
    """One line for an error: its message with line breaks folded."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def main(argv=None) -> int:
    """Run ``spkspectra``; a bad input ends it with exit code 2 and one line ``spkspectra <cmd>: error: ...``.

    The readers raise ValueError subclasses (QM9SFormatError, MD17FormatError, QM9FormatError,
    StructureInputError, SpectrumError) or FileNotFoundError, naming the file and row or molecule.
    """
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (
        OSError,
        ValueError,
    ) as err:  # FileNotFoundError, FileExistsError and the readers' errors; a bug is a traceback
        print(f"spkspectra {args.command}: error: {_error_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
