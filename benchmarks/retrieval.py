"""Retrieval benchmark: identify held-out molecules from their spectra among growing QM9 libraries.

For each pre-trained MolSpectra run (``--run``, a run directory with ``best_model``, ``split.npz``
and ``config.yaml``), the queries are the molecules of its validation and test splits, which
stage-2 training never took a gradient step on (the validation split chose the best epoch).
Their spectra come from the database the run trained on (``config.yaml`` ``data.datapath``; the
default dataset: the shipped xTB/sTDA sticks, broadened). Each query's spectra are embedded by
SpecFormer and ranked against the 3D embeddings of a library of QM9 structures (qm9pack,
B3LYP geometries) that holds the query molecules plus random other QM9 molecules: 100
(the queries only), 1,000, 10,000 and all 130,831. Reported: recall@1/5/10 (the query's own
QM9 entry among the top k, cosine), the median rank, and chance (k / library size), for the
modality subsets UV+IR+Raman, IR+Raman, IR, Raman and UV (missing modalities fully masked,
as ``identify`` does).

Baselines and controls, on the libraries for which candidate spectra exist (the shipped
molecules: the queries, and the queries + the run's training molecules):

- raw-spectra nearest neighbour without learning: cosine between the concatenated
  per-modality unit-normalised ``log10(1 + x)`` spectra. With the same simulator on both sides
  the query's spectrum *is* in the library, so it scores 1.0 by construction; the informative
  comparison is with ``perturbed`` queries: sticks re-broadened with frequencies x 0.97, IR/Raman
  widths 20/16 cm^-1 (15/12 in training), UV energies x 1.03 and width 0.25 eV (a different
  level of theory or an instrument, roughly), scored by both methods;
- the library's geometries: xTB-relaxed (those paired with the spectra in training), QM9 B3LYP,
  RDKit MMFF from SMILES (what ``identify`` does with a SMILES list).

With ``--model`` (a shipped model's name or a weights file) the queries are instead the held-out
molecules (``data.sticks.held_out_selection``, which no shipped model saw) whose sticks
``scripts/ship_sticks.py --selection held-out`` computed into ``benchmarks/data/held_out_sticks``
with the simulator of the training data; the candidates with spectra are those and the shipped
spectra molecules. A library smaller than the query set is searched group by group: the queries in
groups of that size, each group its own library (queries left over after the last whole group are left out).

The library search is exact; for libraries of 5,000 or more, the FAISS HNSW index ``identify``
uses there is checked against it (fraction of exact top-10 lists it returns).

    python benchmarks/retrieval.py --run <stage-2 run directory> --tag stage2
    python benchmarks/retrieval.py --run /tmp/mainjob/runs/<id> --tag mainjob
    python benchmarks/retrieval.py --run <run directory> --sizes 100,1000 --quick   # minutes
    python benchmarks/retrieval.py --model molspectra-painn-qm9 --tag molspectra-painn-qm9   # a shipped model
    python benchmarks/retrieval.py --model molspectra-painn-qm9 --tag molspectra-painn-qm9 --sizes 100,1000,10000 \
        --match-model spectra-painn-qm9 --match-only   # + predict-then-match (matching.py) beside the embedding

With ``--match-model`` the same queries are also ranked by predict-then-match: the mean cosine of the
query's IR + Raman (or IR) spectra and those the spectra model predicts for each library structure (the same
QM9 libraries), compared as they are and tolerant of another level of theory (``matching.TOLERANT``:
frequency scales 0.95-1.05 and smoothing, chosen on other molecules by ``benchmarks/matching_tolerance.py``;
from IR alone up to 10,000 candidates); ``--match-only`` adds just that to an existing ``--tag`` entry.

Writes ``benchmarks/results/retrieval.json`` (one entry per ``--tag``) and prints markdown tables.
QM9 3D embeddings are cached per model (``--workdir``), so a rerun costs minutes.
"""

import argparse
import glob
import json
import os
import platform
import sys
import time

import numpy as np
from _runs import model_pieces

HERE = os.path.dirname(os.path.abspath(__file__))
HELD_OUT_STICKS = os.path.join(HERE, "data", "held_out_sticks")
SUBSETS = {
    "uv+ir+raman": ("uv", "ir", "raman"),
    "ir+raman": ("ir", "raman"),
    "ir": ("ir",),
    "raman": ("raman",),
    "uv": ("uv",),
}
PERTURBATION = dict(frequency_scale=0.97, ir_width=20.0, raman_width=16.0, uv_energy_scale=1.03, uv_width=0.25)
#: QM9's B3LYP/6-31G(2df,p) harmonic frequencies scaled as QM9S scales its B3LYP ones
B3LYP_SCALE = 0.965
#: instrument-like spectra (spectra.perturb): lines scaled by U(0.96, 1.0) and a smooth anharmonic
#: scale of up to 2 %, shifted by N(0, 5 cm^-1), FWHM U(8, 30) cm^-1 of any Lorentzian/Gaussian mix,
#: intensities x exp(N(0, 0.2)), a baseline of up to 20 % of the peak and noise of up to 1 %;
#: UV x U(0.97, 1.03), FWHM U(0.1, 0.4) eV. Queried through identify's ALS baseline correction.
INSTRUMENT = dict(vib_scale=(0.96, 1.0), anharmonic=0.02, vib_shift=5.0, vib_width=(8.0, 30.0), uv_scale=(0.97, 1.03))
INSTRUMENT.update(uv_shift=0.05, uv_width=(0.1, 0.4), intensity_noise=0.2, baseline=0.2, noise=0.01)
#: the query spectra besides the clean ones, and the modality subsets measured with them
VARIANTS = {
    "perturbed": "sticks re-broadened: frequencies x0.97, IR/Raman widths 20/16 cm^-1, UV x1.03, width 0.25 eV",
    "b3lyp": f"IR/Raman lines at QM9's B3LYP/6-31G(2df,p) harmonic frequencies x{B3LYP_SCALE} (sorted, paired mode by "
    "mode with the xTB intensities), UV as simulated",
    "instrument": "instrument-like: scaled, anharmonic and shifted lines, other widths and line shapes, intensity "
    "noise, a baseline of up to 20 % of the peak (ALS-corrected as identify corrects x,y data) and 1 % noise",
}
VARIANT_SUBSETS = ("uv+ir+raman", "ir+raman", "ir")
#: the largest library predict-then-match is measured on with matching.TOLERANT from IR alone as well as
#: from IR + Raman (larger ones: IR + Raman only; 21 scales a query)
TOLERANT_UP_TO = 10_000


def find_run(path):
    if os.path.isfile(os.path.join(path, "best_model")):
        return path
    runs = sorted(glob.glob(os.path.join(path, "*", "best_model")))
    if len(runs) != 1:
        raise SystemExit(f"{path}: expected one run with a best_model below it, found {runs}")
    return os.path.dirname(runs[0])


def read_run_db(path):
    """Per row of the spectra database (dataset order): gdb index, SMILES, spectra, xTB structure."""
    from ase.db import connect

    import schnetpack_molspectra.properties as msp

    rows = []
    with connect(path, use_lock_file=False) as db:
        for row in db.select():
            rows.append(
                {
                    "gdb": int(np.asarray(row.data[msp.gdb_index]).reshape(-1)[0]),
                    "smiles": row.get("smiles", ""),
                    "spectra": {
                        m: np.asarray(row.data[msp.spectrum_keys[m]], np.float32).reshape(-1) for m in msp.modalities
                    },
                    "atoms": row.toatoms(),
                }
            )
    return rows


def ranks(scores, truth):
    """1-based rank of each query's true library entry (ties counted against it)."""
    true_scores = scores[np.arange(len(truth)), truth]
    return 1 + (scores > true_scores[:, None]).sum(1)


def recall(r, n):
    return {
        "recall@1": float(np.mean(r <= 1)),
        "recall@5": float(np.mean(r <= 5)),
        "recall@10": float(np.mean(r <= 10)),
        "median_rank": float(np.median(r)),
        "library": int(n),
        "chance@1": 1.0 / n,
        "chance@5": min(5, n) / n,
        "chance@10": min(10, n) / n,
    }


def shuffled_others(n_qm9, q_pos, seed):
    """Every QM9 position but the queries', in the seeded random order the libraries take them in: a
    library of n is the queries, then the first n - len(queries) of these."""
    others = np.setdiff1d(np.arange(n_qm9), q_pos)
    return others[np.random.default_rng(seed).permutation(len(others))]


def library_ranks(score, n_queries, n):
    """1-based rank of each query's own entry in a library of ``n`` whose first ``n_queries`` rows are the
    queries, in order; ``score(query_rows, library_rows)`` (two slices) gives their score matrix. A
    library smaller than the query set: the queries in groups of ``n``, each group the library of its own
    queries (queries left over after the last whole group are left out)."""
    if n < n_queries:
        groups = [slice(i, i + n) for i in range(0, n_queries - n + 1, n)]
        return np.concatenate([ranks(score(rows, rows), np.arange(n)) for rows in groups])
    return ranks(score(slice(0, n_queries), slice(0, n)), np.arange(n_queries))


def raw_vectors(spectra_list, modalities):
    """Concatenated per-modality unit-normalised log10(1 + x) spectra, unit-normalised."""
    parts = []
    for m in modalities:
        x = np.log10(1.0 + np.stack([s[m] for s in spectra_list]).astype(np.float64))
        parts.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
    v = np.concatenate(parts, 1)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def sticks_rows(sticks_list, settings=None):
    """Rows like :func:`read_run_db`'s from stick spectra (``data.sticks.MoleculeSticks``), broadened
    with ``settings`` (a ``SimulationSettings``; the simulator's defaults if None)."""
    import schnetpack_molspectra.properties as msp
    from schnetpack_molspectra.data.sticks import sticks_to_spectra

    rows = []
    for s in sticks_list:
        spectra = sticks_to_spectra(s, settings)
        rows.append(
            {
                "gdb": int(s.gdb_index),
                "smiles": "",
                "spectra": {m: spectra[msp.spectrum_keys[m]].reshape(-1) for m in msp.modalities},
                "atoms": s.atoms,
            }
        )
    return rows


def perturbed_spectra(gdbs):
    """The shipped sticks of these molecules re-broadened with PERTURBATION."""
    from schnetpack_molspectra.data.simulate.runner import SimulationSettings
    from schnetpack_molspectra.data.sticks import load_sticks

    wanted = set(gdbs)
    found = {s.gdb_index: s for s in load_sticks() if s.gdb_index in wanted}
    missing = wanted - set(found)
    if missing:
        raise SystemExit(f"no sticks for GDB {sorted(missing)[:5]}: the run's database is not the default dataset")
    rows = sticks_rows([found[g] for g in gdbs], SimulationSettings(**PERTURBATION))
    return [r["spectra"] for r in rows]


def b3lyp_spectra(sticks_list):
    """Spectra with IR and Raman lines at QM9's B3LYP harmonic frequencies x ``B3LYP_SCALE``: both
    frequency lists sorted and paired mode by mode from the highest (where the counts differ, the
    lowest modes of the longer list are left out), with the xTB intensities; UV as simulated."""
    import schnetpack_molspectra.properties as msp
    from schnetpack_molspectra.data.qm9 import gdb_positions, load_qm9pack, parse_numbers
    from schnetpack_molspectra.data.simulate.runner import SimulationSettings, stick_properties

    table = load_qm9pack()
    rows = table.iloc[gdb_positions(table, [s.gdb_index for s in sticks_list])]
    out, differ = [], 0
    for s, row in zip(sticks_list, rows.itertuples(index=False)):
        dft = np.sort(parse_numbers(row.Harmonic_Freq_cmi))
        order = np.argsort(s.frequencies)
        k = min(len(dft), len(order))
        differ += len(dft) != len(order)
        keep = order[len(order) - k :]
        spectra = stick_properties(
            B3LYP_SCALE * dft[len(dft) - k :],
            s.ir_intensities[keep],
            s.raman_activities[keep],
            s.uv_energies,
            s.uv_strengths,
            SimulationSettings(),
        )
        out.append({m: spectra[msp.spectrum_keys[m]].reshape(-1) for m in msp.modalities})
    return out, differ


def instrument_spectra(sticks_list, seed=0):
    """Instrument-like spectra of the molecules (``INSTRUMENT``), one fixed draw (``seed``), made for all
    of them at once by the training augmentation itself (``transform.SpectraAugmentation`` with p = 1,
    unnormalised); UV only where every molecule has UV sticks."""
    import torch

    import schnetpack_molspectra.properties as msp
    from schnetpack_molspectra.spectra.grids import SPECTRUM_LENGTHS
    from schnetpack_molspectra.transform import STICKS, SpectraAugmentation

    modalities = ["ir", "raman"]
    if all(s.uv_energies is not None for s in sticks_list):  # sticks computed with --uv-method none have no UV
        modalities.insert(0, "uv")
    attributes = {  # modality -> the MoleculeSticks fields of its line positions and intensities
        "uv": ("uv_energies", "uv_strengths"),
        "ir": ("frequencies", "ir_intensities"),
        "raman": ("frequencies", "raman_activities"),
    }
    batch = {}
    for m in modalities:
        (positions, intensities), (pos_key, int_key, count_key) = attributes[m], STICKS[m]
        for key, attr in ((pos_key, positions), (int_key, intensities)):
            batch[key] = torch.tensor(np.concatenate([getattr(s, attr) for s in sticks_list]), dtype=torch.float64)
        batch[count_key] = torch.tensor([len(getattr(s, positions)) for s in sticks_list])
        batch[msp.spectrum_keys[m]] = torch.zeros(len(sticks_list), SPECTRUM_LENGTHS[m], dtype=torch.float64)
    augment = SpectraAugmentation(p=1.0, modalities=modalities, normalization="none", **INSTRUMENT)
    out = augment(batch, torch.Generator().manual_seed(seed))
    spectra = {m: out[msp.spectrum_keys[m]].numpy().astype(np.float32) for m in modalities}
    return [{m: spectra[m][i] for m in modalities} for i in range(len(sticks_list))]


def run_queries(run):
    """The queries of a pre-training run: its validation and test molecules, spectra from its database;
    the candidates with spectra: those and its training molecules."""
    from schnetpack_molspectra.identify import load_model, run_config, training_db

    enc = load_model(os.path.join(run, "best_model"))
    db = training_db(run_config(os.path.join(run, "best_model")))
    split = np.load(os.path.join(run, "split.npz"))
    rows = read_run_db(db)
    val, test, train = (np.asarray(split[k], dtype=int) for k in ("val_idx", "test_idx", "train_idx"))
    queries = [rows[i] for i in np.concatenate([val, test])]
    return enc, {
        "source": f"run {run} (database {db})",
        "queries": queries,
        "variants": {"perturbed": perturbed_spectra([r["gdb"] for r in queries])},
        "train": [rows[i] for i in train],
        "counts": {"val": len(val), "test": len(test), "train_molecules": len(train)},
        "describe": f"{len(val)} validation + {len(test)} test molecules of the run",
        "parts": {"val_only": slice(0, len(val)), "test_only": slice(len(val), len(val) + len(test))},
    }


def held_out_queries(model, folder, n_queries):
    """The queries of a shipped (or any weights-file) model: the first ``n_queries`` held-out molecules
    with sticks in ``folder`` (``scripts/ship_sticks.py --selection held-out``), which no shipped model
    saw; the candidates with spectra: those and the shipped spectra molecules (stage 2's data)."""
    from schnetpack_molspectra.data.simulate.runner import SimulationSettings
    from schnetpack_molspectra.data.sticks import held_out_selection, load_sticks
    from schnetpack_molspectra.identify import load_model

    sticks = list(load_sticks(folder=folder, n_molecules=n_queries))
    if not sticks:
        raise SystemExit(
            f"{folder}: no held-out sticks; compute them: python scripts/ship_sticks.py --selection held-out"
        )
    outside = sorted({s.gdb_index for s in sticks} - set(held_out_selection().tolist()))
    if outside:
        raise SystemExit(f"{folder}: GDB {outside[:5]} are not held-out molecules")
    train = list(load_sticks())
    b3lyp, differ = b3lyp_spectra(sticks)
    return load_model(model), {
        "source": f"model {model}, held-out sticks {folder}",
        "queries": sticks_rows(sticks),
        "variants": {
            "perturbed": [r["spectra"] for r in sticks_rows(sticks, SimulationSettings(**PERTURBATION))],
            "b3lyp": b3lyp,
            "instrument": instrument_spectra(sticks),
        },
        "train": sticks_rows(train),
        "counts": {"held_out": len(sticks), "train_molecules": len(train), "b3lyp_mode_count_differs": differ},
        "describe": f"{len(sticks)} held-out QM9 molecules (spectra simulated like the training data, by scripts/ship_sticks.py)",
        "parts": {},
    }


def queries_from(spectra_list, names, subset):
    from schnetpack_molspectra.data.spectrum_files import QuerySpectrum

    return [QuerySpectrum(n, {m: s[m] for m in subset}, n) for n, s in zip(names, spectra_list)]


def qm9_embeddings(enc, table, workdir, log, needed=None):
    """3D embeddings of QM9 (qm9pack geometries) for this model: all of it, cached in ``workdir``,
    or only the rows ``needed`` (not cached; the other rows NaN)."""
    from schnetpack_molspectra.data.qm9 import row_atoms
    from schnetpack_molspectra.identify import check_elements, encode_structures

    path = os.path.join(workdir, f"qm9_embeddings_{enc.sha256[:16]}.npy")
    if os.path.isfile(path):
        log(f"QM9 embeddings from {path}")
        return np.load(path), 0.0
    start = time.time()
    rows = np.arange(len(table)) if needed is None else np.unique(needed)
    atoms = [row_atoms(r) for r in table.iloc[rows].itertuples(index=False)]
    check_elements(enc, atoms, [f"gdb_{i}" for i in table["Index"].to_numpy()[rows]], "qm9pack")
    log(f"embedding {len(atoms)} QM9 structures ...")
    vectors = encode_structures(enc, atoms, progress=True)
    if needed is not None:
        full = np.full((len(table), vectors.shape[1]), np.nan, dtype=np.float32)
        full[rows] = vectors
        return full, time.time() - start
    os.makedirs(workdir, exist_ok=True)
    np.save(path + ".partial.npy", vectors)
    os.replace(path + ".partial.npy", path)
    return vectors, time.time() - start


def rdkit_atoms(smiles_list, fallback):
    """RDKit 3D structures as ``identify`` builds them from a SMILES list; where RDKit fails,
    the ``fallback`` structure (counted)."""
    from schnetpack_molspectra.identify import smiles_to_3d

    atoms, failed = [], 0
    for s, other in zip(smiles_list, fallback):
        try:
            atoms.append(smiles_to_3d(s))
        except ValueError:
            atoms.append(other)
            failed += 1
    return atoms, failed


def benchmark(enc, qset, sizes, workdir, seed, quick, log):
    import torch

    from schnetpack_molspectra.data.qm9 import gdb_positions, load_qm9pack
    from schnetpack_molspectra.identify import VectorIndex, encode_spectra, encode_structures

    timings = {}
    t = time.time()
    queries, train = qset["queries"], qset["train"]
    names = [f"gdb_{r['gdb']}" for r in queries]
    table = load_qm9pack()
    smiles = dict(zip(table["Index"].astype(int), table["SMILES"]))
    for r in queries + train:  # sticks carry no SMILES: QM9's (RDKit geometries of the library)
        r["smiles"] = r["smiles"] or smiles[r["gdb"]]
    q_pos = np.array(gdb_positions(table, [r["gdb"] for r in queries]))
    inchi = table["InChi"].to_numpy()
    inchi_counts = {}
    for x in inchi:
        inchi_counts[x] = inchi_counts.get(x, 0) + 1
    n_dup = int(sum(inchi_counts[inchi[p]] > 1 for p in q_pos))
    timings["load"] = time.time() - t
    log(f"{qset['source']}: {len(queries)} queries, model {enc.sha256[:12]}")

    # spectra embeddings per modality subset, clean and the variants (VARIANTS)
    t = time.time()
    clean = [r["spectra"] for r in queries]
    kinds = {"clean": clean, **qset["variants"]}
    spec = {}
    for kind, spectra_list in kinds.items():
        for name, subset in SUBSETS.items():
            if kind != "clean" and name not in VARIANT_SUBSETS:
                continue
            if not set(subset) & set(enc.modalities):
                continue
            # instrument-like spectra go through identify's path for x,y data: ALS baseline, peak rescaled
            treat = {"baseline": "als", "rescale": "peak"} if kind == "instrument" else {"baseline": "none"}
            spec[kind, name] = encode_spectra(enc, queries_from(spectra_list, names, subset), **treat)
    timings["spectra_embeddings"] = time.time() - t

    # QM9 library embeddings (all of QM9, cached, when a library is all of it)
    n_qm9 = len(table)
    others = shuffled_others(n_qm9, q_pos, seed)
    largest = max(n_qm9 if s == "all" else int(s) for s in sizes)
    shipped_pos = np.array(gdb_positions(table, [r["gdb"] for r in queries + train]))
    needed = None if largest >= n_qm9 else np.concatenate([q_pos, others[: largest - len(q_pos)], shipped_pos])
    qm9_vectors, timings["qm9_embeddings"] = qm9_embeddings(enc, table, workdir, log, needed)

    results = {"library_qm9": {}, "shipped": {}, "hnsw": {}}
    t = time.time()
    for size in sizes:
        n = n_qm9 if size == "all" else int(size)
        library = np.concatenate([q_pos, others[: max(n - len(q_pos), 0)]])
        lib_vectors = qm9_vectors[library]
        entry = {}
        for (kind, name), vectors in spec.items():
            r = library_ranks(lambda q, lib, v=vectors: v[q] @ lib_vectors[lib].T, len(q_pos), n)
            entry[f"{kind}:{name}"] = recall(r, n)
            if kind == "clean" and name == "uv+ir+raman":
                if n >= len(q_pos):  # every query once, in order: per part of the query set
                    for part, rows in qset["parts"].items():
                        entry[f"clean:uv+ir+raman:{part}"] = recall(r[rows], n)
                truth = np.arange(len(q_pos))
                if n >= 5000 and faiss_installed():  # a FAISS index (identify's option) vs exact search
                    t_index = time.time()
                    index = VectorIndex(lib_vectors, exact_below=5000)
                    built = time.time() - t_index
                    exact = VectorIndex(lib_vectors)
                    _, approx_top = index.search(vectors, 10)
                    _, exact_top = exact.search(vectors, 10)
                    agree = float(np.mean([set(a) == set(b) for a, b in zip(approx_top, exact_top)]))
                    approx_rank1 = float(np.mean(approx_top[:, 0] == truth))
                    results["hnsw"][str(n)] = {
                        "top10_lists_identical": agree,
                        "recall@1_hnsw": approx_rank1,
                        "recall@1_exact": entry[f"{kind}:{name}"]["recall@1"],
                        "build_s": built,
                    }
        results["library_qm9"][str(n)] = entry
        log(f"  QM9 library {n}: recall@1 (uv+ir+raman) {entry['clean:uv+ir+raman']['recall@1']:.3f}")
    timings["qm9_search"] = time.time() - t

    # libraries with candidate spectra: the shipped molecules (queries, + the training molecules)
    t = time.time()
    for set_name, lib_rows in {"queries": queries, "queries+train": queries + train}.items():
        n = len(lib_rows)
        truth = np.arange(len(queries))
        entry = {}
        for kind, spectra_list in kinds.items():
            for name, subset in SUBSETS.items():
                if kind != "clean" and name not in VARIANT_SUBSETS:
                    continue
                raw_lib = raw_vectors([r["spectra"] for r in lib_rows], subset)
                raw_q = raw_vectors(spectra_list, subset)
                entry[f"raw:{kind}:{name}"] = recall(ranks(raw_q @ raw_lib.T, truth), n)
        # MolSpectra against the same molecules with three kinds of geometry
        geoms = {"xtb": [r["atoms"] for r in lib_rows], "qm9": None}
        if not quick:
            log(f"  RDKit 3D for {n} SMILES ...")
            geoms["rdkit"], entry["rdkit_failed"] = rdkit_atoms([r["smiles"] for r in lib_rows], geoms["xtb"])
        positions = np.array(gdb_positions(table, [r["gdb"] for r in lib_rows]))
        for geo, atoms in geoms.items():
            lib_vectors = qm9_vectors[positions] if atoms is None else encode_structures(enc, atoms)
            for (kind, name), vectors in spec.items():
                if name in VARIANT_SUBSETS or geo == "qm9":
                    entry[f"molspectra[{geo}]:{kind}:{name}"] = recall(ranks(vectors @ lib_vectors.T, truth), n)
        results["shipped"][set_name] = entry
        log(
            f"  shipped library {set_name} ({n}): MolSpectra[qm9] {entry['molspectra[qm9]:clean:uv+ir+raman']['recall@1']:.3f}, "
            f"raw perturbed {entry['raw:perturbed:uv+ir+raman']['recall@1']:.3f}, MolSpectra perturbed "
            f"{entry['molspectra[qm9]:perturbed:uv+ir+raman']['recall@1']:.3f}"
        )
    timings["shipped"] = time.time() - t
    return {
        "source": qset["source"],
        "model_sha256": enc.sha256,
        "queries": {**qset["counts"], "queries_with_qm9_inchi_duplicates": n_dup, "describe": qset["describe"]},
        "model": {
            "encoder": type(enc.model.representation).__name__,
            "n_features": int(qm9_vectors.shape[1]),
            "modalities": enc.modalities,
            "torch_threads": torch.get_num_threads(),
        },
        "perturbation": PERTURBATION,
        "variants": {k: VARIANTS[k] for k in qset["variants"]},
        "instrument": INSTRUMENT,
        "results": results,
        "timings_s": timings,
    }


def predict_then_match(match_model, qset, sizes, seed, log):
    """Recall of predict-then-match (``matching.match_scores``: mean cosine of the query's spectra and
    those ``match_model`` predicts for each candidate) on the same QM9 libraries (B3LYP geometries,
    the same random others as :func:`benchmark` draws with ``seed``) and the same queries, clean and
    varied, for IR + Raman and IR."""
    import torch

    from schnetpack_molspectra.data.qm9 import gdb_positions, load_qm9pack, row_atoms
    from schnetpack_molspectra.data.spectrum_files import QuerySpectrum
    from schnetpack_molspectra.identify.encode import query_values
    from schnetpack_molspectra.matching import EXACT, TOLERANT, match_scores
    from schnetpack_molspectra.predict import load_predictor, predict_spectra

    t = time.time()
    table = load_qm9pack()
    queries = qset["queries"]
    q_pos = np.array(gdb_positions(table, [r["gdb"] for r in queries]))
    n_qm9 = len(table)
    others = shuffled_others(n_qm9, q_pos, seed)
    largest = max(n_qm9 if s == "all" else int(s) for s in sizes)
    library = np.concatenate([q_pos, others[: max(largest - len(q_pos), 0)]])
    atoms = [row_atoms(r) for r in table.iloc[library].itertuples(index=False)]
    predictor = load_predictor(match_model)
    t_predict = time.time()
    predicted = predict_spectra(predictor, atoms)
    predict_s = time.time() - t_predict
    log(f"predict-then-match: {len(atoms)} library spectra predicted in {predict_s:.0f} s")
    kinds = {"clean": [r["spectra"] for r in queries], **qset["variants"]}
    out = {}
    for size in sizes:
        n = n_qm9 if size == "all" else int(size)
        entry = {}
        for kind, spectra_list in kinds.items():
            treat = (
                {"baseline": "als", "rescale": "none"}
                if kind == "instrument"
                else {"baseline": "none", "rescale": "none"}
            )
            for name in ("ir+raman", "ir"):
                used = [m for m in SUBSETS[name] if m in predictor.modalities]
                values = {
                    m: np.stack([query_values(QuerySpectrum("q", {m: s[m]}, "q"), m, **treat) for s in spectra_list])
                    for m in used
                }
                # exact, and tolerant of another level of theory (matching.TOLERANT: 21 scales a query)
                for prefix, tolerance in (("", EXACT), ("tolerant:", TOLERANT)):
                    if prefix and n > TOLERANT_UP_TO and name != "ir+raman":
                        continue
                    r = library_ranks(
                        lambda q, lib, v=values, u=used, t=tolerance: match_scores(
                            {m: x[q] for m, x in v.items()}, {m: predicted[m][lib] for m in u}, u, **t
                        ),
                        len(q_pos),
                        n,
                    )
                    entry[f"{prefix}{kind}:{name}"] = recall(r, n)
        out[str(n)] = entry
        log(f"  predict-then-match, library {n}: recall@1 ir+raman clean {entry['clean:ir+raman']['recall@1']:.3f}")
    return {
        "match_model": match_model,
        "model_pieces": model_pieces(match_model),
        "library_qm9": out,
        "predict_s": predict_s,
        "library_molecules": len(atoms),
        "torch_threads": torch.get_num_threads(),
        "wall_s": time.time() - t,
    }


def faiss_installed():
    try:
        import faiss  # noqa: F401  (optional: the identify extra)
    except ImportError:
        return False
    return True


def fmt(x):
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def recall_rows(by_size, queries, subsets, chance):
    """Markdown rows, one per (modality subset, library size) measured with ``queries`` spectra."""
    rows = []
    for name in subsets:
        for n, results in by_size.items():
            r = results.get(f"{queries}:{name}")
            if r:
                cells = [
                    name if queries == "clean" else f"{name} ({queries})",
                    f"{int(n):,}",
                    *(fmt(r[f"recall@{k}"]) for k in (1, 5, 10)),
                    f"{r['median_rank']:g}",
                ]
                cells += [fmt(r["chance@1"]), fmt(r["chance@10"])] if chance else []
                rows.append("| " + " | ".join(cells) + " |")
    return rows


def markdown(entry):
    lines = []
    res = entry["results"]
    queries = entry["queries"]
    describe = queries.get("describe") or f"{queries['val']} validation + {queries['test']} test molecules"
    lines.append(
        f"Queries: {describe}; library = the queries + random QM9 molecules (qm9pack B3LYP geometries; "
        "a library smaller than the queries: the queries in whole groups of that size, each its own library)."
    )
    lines.append("")
    lines.append("| spectra given | library | recall@1 | recall@5 | recall@10 | median rank | chance@1 | chance@10 |")
    lines.append("|---|---|---|---|---|---|---|---|")
    lines += recall_rows(res["library_qm9"], "clean", SUBSETS, chance=True)
    for kind, text in entry.get("variants", {"perturbed": VARIANTS["perturbed"]}).items():
        lines.append("")
        lines.append(f"Query spectra {kind} ({text}), same libraries:")
        lines.append("")
        lines.append("| spectra given | library | recall@1 | recall@5 | recall@10 | median rank |")
        lines.append("|---|---|---|---|---|---|")
        lines += recall_rows(res["library_qm9"], kind, VARIANT_SUBSETS, chance=False)
    lines.append("")
    lines.append(
        "Libraries with candidate spectra (shipped molecules): raw-spectra nearest neighbour vs MolSpectra, recall@1 (recall@10):"
    )
    lines.append("")
    keys = [k for k, v in res["shipped"]["queries"].items() if isinstance(v, dict)]
    lines.append(
        "| method : query spectra : modalities | "
        + " | ".join(
            f"{s} ({len(entry['results']['shipped'][s]) and int(res['shipped'][s][keys[0]]['library'])})"
            for s in res["shipped"]
        )
        + " |"
    )
    lines.append("|---|" + "---|" * len(res["shipped"]))
    for k in keys:
        if k.startswith("molspectra[qm9]") and k.split(":")[2] not in VARIANT_SUBSETS:
            continue
        cells = [
            f"{fmt(res['shipped'][s][k]['recall@1'])} ({fmt(res['shipped'][s][k]['recall@10'])})"
            for s in res["shipped"]
        ]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    failed = {s: v.get("rdkit_failed") for s, v in res["shipped"].items() if v.get("rdkit_failed") is not None}
    if failed:
        lines.append("")
        lines.append(
            "RDKit could not embed "
            + ", ".join(f"{n} of the {s} library" for s, n in failed.items())
            + " (their xTB geometry stands in)."
        )
    if res["hnsw"]:
        lines.append("")
        for n, h in res["hnsw"].items():
            lines.append(
                f"FAISS HNSW at {int(n):,}: top-10 lists identical to exact search for {h['top10_lists_identical']:.0%} of queries, "
                f"recall@1 {h['recall@1_hnsw']:.3f} vs exact {h['recall@1_exact']:.3f}, built in {h['build_s']:.1f} s."
            )
    return "\n".join(lines)


def match_markdown(entry):
    """Recall@1 of the joint embedding beside predict-then-match, per library size and query kind."""
    match = entry.get("predict_then_match")
    if not match:
        return ""
    lines = [
        f"recall@1, joint embedding ({entry['source']}) vs predict-then-match ({match['match_model']})\n",
        "| library | queries | embedding IR+Raman | predict-then-match IR+Raman | tolerant IR+Raman "
        "| embedding IR | predict-then-match IR | tolerant IR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, by_kind in match["library_qm9"].items():
        emb = entry["results"]["library_qm9"].get(n, {})
        for kind in ("clean", *VARIANTS):
            cells = []
            for name in ("ir+raman", "ir"):
                for found in (
                    emb.get(f"{kind}:{name}"),
                    by_kind.get(f"{kind}:{name}"),
                    by_kind.get(f"tolerant:{kind}:{name}"),
                ):
                    cells.append(fmt(found["recall@1"]) if found else "-")
            lines.append(f"| {int(n):,} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(results, tags, subsets=("uv+ir+raman", "ir+raman", "ir")):
    """Markdown: recall@1 of the entries ``tags`` side by side, per query kind, modality subset and library
    size, with chance and the raw-spectra nearest neighbour (among the queries) beside them."""
    entries = [results[t] for t in tags]
    sizes = sorted({n for e in entries for n in e["results"]["library_qm9"]}, key=int)
    measured = {key.split(":")[0] for e in entries for cells in e["results"]["library_qm9"].values() for key in cells}
    kinds = ["clean"] + [k for k in VARIANTS if k in measured]
    head = "| query spectra | given | library | " + " | ".join(f"`{t}`" for t in tags) + " | chance |"
    lines = [head, "|---|---|---|" + "---|" * len(tags) + "---|"]
    for kind in kinds:
        for name in subsets:
            for n in sizes:
                cells = []
                for e in entries:
                    r = e["results"]["library_qm9"].get(n, {}).get(f"{kind}:{name}")
                    cells.append(fmt(r["recall@1"]) if r else "–")
                if any(c != "–" for c in cells):
                    lines.append(f"| {kind} | {name} | {int(n):,} | " + " | ".join(cells) + f" | {fmt(1 / int(n))} |")
    raw = []
    for kind in kinds:
        for name in subsets:
            r = entries[-1]["results"]["shipped"].get("queries", {}).get(f"raw:{kind}:{name}")
            if r:
                raw.append(f"{kind} {name} {fmt(r['recall@1'])}")
    if raw:
        n = int(entries[-1]["results"]["shipped"]["queries"][f"raw:clean:{subsets[0]}"]["library"])
        lines += [
            "",
            f"Raw-spectra nearest neighbour among the {n:,} queries' own clean spectra, recall@1: " + "; ".join(raw),
        ]
    return "\n".join(lines)


def plot_compare(results, tags, path, subset="ir+raman"):
    """recall@1 against library size (log) from ``subset``: one colour per query kind, one line style per
    entry ``tags``, chance dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = ["--", "-", ":", "-."]
    for tag, style in zip(tags, styles):
        by_size = results[tag]["results"]["library_qm9"]
        sizes = sorted(by_size, key=int)
        for color, kind in enumerate(["clean", *VARIANTS]):
            points = [
                (int(n), by_size[n][f"{kind}:{subset}"]["recall@1"]) for n in sizes if f"{kind}:{subset}" in by_size[n]
            ]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, style, marker="o", color=f"C{color}", label=f"{kind}, {tag}")
    sizes = sorted({int(n) for t in tags for n in results[t]["results"]["library_qm9"]})
    ax.plot(sizes, [1 / n for n in sizes], ":", color="grey", label="chance")
    ax.set(xscale="log", yscale="log", xlabel="library size (QM9 structures)", ylabel=f"recall@1 from {subset}")
    ax.set_title("Identification of held-out molecules", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=None, help="run directory (or a folder with exactly one run below it)")
    p.add_argument(
        "--model",
        default=None,
        help="a shipped model's name or a weights file: queries from the held-out molecules (--held-out) instead of --run",
    )
    p.add_argument("--held-out", default=HELD_OUT_STICKS, help="folder of the held-out molecules' sticks")
    p.add_argument("--n-queries", type=int, default=None, help="the first N held-out molecules (default: all)")
    p.add_argument("--tag", default="stage2", help="name of this entry in the results file")
    p.add_argument("--sizes", default="100,1000,10000,all", help="library sizes (all = 130,831)")
    p.add_argument(
        "--workdir", default=None, help="cache of QM9 embeddings (default: $MOLSPECTRA_CACHE/retrieval_benchmark)"
    )
    p.add_argument("--out", default=os.path.join(HERE, "results", "retrieval.json"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="leave out the RDKit geometries")
    p.add_argument("--compare", nargs="+", metavar="TAG", help="print the results file's entries TAG ... side by side")
    p.add_argument("--plot", default=None, help="with --compare: also draw recall@1 against library size there")
    p.add_argument(
        "--match-model",
        default=None,
        help="with --model: also rank by predict-then-match with this spectra model (e.g. spectra-painn-qm9)",
    )
    p.add_argument(
        "--match-only",
        action="store_true",
        help="with --match-model: only predict-then-match, added to the --tag entry",
    )
    args = p.parse_args(argv)
    if args.compare:
        with open(args.out) as f:
            results = json.load(f)
        print(compare(results, args.compare))
        if args.plot:
            print(plot_compare(results, args.compare, args.plot))
        return
    if not args.run and not args.model:
        p.error(
            "give --run RUN_DIR (a molspectra_pretrain run) or --model NAME (a shipped model, e.g. molspectra-painn-qm9)"
        )

    import schnetpack_molspectra  # noqa: F401  (tblite before torch)
    from schnetpack_molspectra.data.default import cache_dir

    start = time.time()
    workdir = args.workdir or os.path.join(cache_dir(), "retrieval_benchmark")
    log = lambda text: print(f"[{time.time() - start:7.1f} s] {text}", file=sys.stderr, flush=True)  # noqa: E731
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.model:
        enc, qset = held_out_queries(args.model, args.held_out, args.n_queries)
    else:
        enc, qset = run_queries(find_run(args.run))
    results = {}
    if os.path.isfile(args.out):
        with open(args.out) as f:
            results = json.load(f)
    if args.match_model and args.match_only:
        if args.tag not in results:
            raise SystemExit(f"{args.out} has no entry {args.tag!r} to add predict-then-match to")
        results[args.tag]["predict_then_match"] = predict_then_match(args.match_model, qset, sizes, args.seed, log)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        print(match_markdown(results[args.tag]))
        return
    entry = benchmark(enc, qset, sizes, workdir, args.seed, args.quick, log)
    if args.match_model:
        entry["predict_then_match"] = predict_then_match(args.match_model, qset, sizes, args.seed, log)
    entry["wall_s"] = time.time() - start
    entry["command"] = "python benchmarks/retrieval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    entry["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    if args.model:  # which training state of the model was measured (scripts/record_measured.py checks it)
        entry["model_pieces"] = model_pieces(args.model)
    results[args.tag] = entry
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"## retrieval, {args.tag} ({qset['source']})\n")
    print(markdown(entry))
    print(match_markdown(entry))
    print(
        f"\nwall {entry['wall_s']:.0f} s on {entry['machine']}; "
        f"timings {json.dumps({k: round(v, 1) for k, v in entry['timings_s'].items()})}"
    )


if __name__ == "__main__":
    main()
