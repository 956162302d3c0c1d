"""Identify molecules from their spectra with MolSpectra's joint embedding.

A pre-trained MolSpectra model (the ``best_model`` of ``molspectra_pretrain``) maps spectra
(SpecFormer, ``SpectraEncoder``) and 3D structures (the encoder + ``MoleculeRepresentation``)
into one space, trained so that a molecule's spectra are most cosine-similar to its own
structure (the contrastive loss). So a library of candidate *structures* - no reference
spectra needed - can be ranked against a measured or simulated spectrum::

    from schnetpack_molspectra.identify import identify, format_results
    results = identify("runs/<id>/best_model", ["unknown_ir.jdx"], "candidates.smi", top_k=5)
    print(format_results(results))

Spectra: any file :func:`schnetpack_molspectra.spectra.io.read_spectra` reads (database,
``.npy``/``.npz``, CSV, JCAMP-DX; units and resampling are described there). Records with the
same name in several files are one molecule (e.g. an IR and a Raman JCAMP-DX file with the
same ``##TITLE``); ``one_molecule=True`` makes all of them one query.

Modalities: the model uses the modalities it was trained on (``SpecFormer.modalities``). One
the query lacks is given as a fully masked (zero-filled) spectrum - what SpecFormer sees for
a masked patch - so an IR-only query works with a UV+IR+Raman model, but the model was
trained with only 10 % of patches masked: expect lower scores (``benchmarks/retrieval.py``
measures it). Modalities the model does not use are ignored (reported in the result).

Intensities go through the model's normalisation (``log10(1 + scale x)``, read from the
``config.yaml`` spktrain wrote next to ``best_model``; defaults when absent). x,y spectra in
instrument units (CSV x,y, JCAMP-DX) are first scaled to the training data's typical peak
height (``rescale="auto"``; ``"peak"`` for every input, ``"none"`` to keep the values).

Library: a SchNetPack/ASE database, an xyz/extxyz file (every frame; SMILES from the
extxyz ``smiles`` info key, else derived from the geometry by RDKit for the hits shown), or a
SMILES list (``.smi``/``.txt``/``.csv``: ``SMILES [name]`` per line, 3D from RDKit as in
``data/inputs.py``). Its 3D embeddings are computed once and cached next to it
(``.<library>.molspectra-<model hash>.npz``; recomputed when the model file's SHA-256 or the
library's size or mtime changes; in ``$MOLSPECTRA_CACHE`` when the library's folder is not
writable). Search is exact (cosine, one matrix product) up to ``exact_below`` entries and a
FAISS HNSW index (inner product on unit vectors, cached beside the embeddings) above.

Every element of the library must be one the model was trained on: the elements of the
training database named in the run's ``config.yaml`` (``data.datapath``, or the default
dataset), else ``elements=`` / ``--elements``, else QM9's H, C, N, O, F.
"""

import csv
import hashlib
import json
import os
import sqlite3
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.atomistic import missing_modality
from schnetpack_molspectra.spectra.io import QuerySpectrum, read_spectra, rescale_to_reference

__all__ = [
    "IdentifyError",
    "MolSpectraEncoders",
    "Library",
    "Hit",
    "Identification",
    "load_model",
    "find_model_file",
    "run_config",
    "training_db",
    "normalise_spectra",
    "load_library",
    "library_embeddings",
    "VectorIndex",
    "encode_spectra",
    "encode_structures",
    "merge_queries",
    "identify",
    "format_results",
    "write_csv",
    "QM9_ELEMENTS",
]

#: elements assumed when neither the run's training data nor ``elements=`` says otherwise
QM9_ELEMENTS = (1, 6, 7, 8, 9)
#: library sizes from which the FAISS index replaces exact search
EXACT_BELOW = 5000
LIBRARY_EXTENSIONS = (".db", ".xyz", ".extxyz", ".smi", ".txt", ".csv")


class IdentifyError(ValueError):
    """A model, spectrum or library that identification cannot use; the message names it."""


# ---------------------------------------------------------------- the model
@dataclass
class MolSpectraEncoders:
    """The two sides of a pre-trained MolSpectra model, ready for embedding."""

    path: str
    model: torch.nn.Module
    spectra_encoder: torch.nn.Module  # atomistic.SpectraEncoder
    representation_3d: torch.nn.Module  # atomistic.MoleculeRepresentation
    cutoff: float
    normalization: str = "log10"
    spectra_scale: Dict[str, float] = field(default_factory=dict)
    elements: Tuple[int, ...] = QM9_ELEMENTS
    elements_source: str = "default (QM9: H, C, N, O, F)"
    sha256: str = ""
    device: str = "cpu"

    @property
    def specformer(self):
        return self.spectra_encoder.specformer

    @property
    def modalities(self) -> List[str]:
        return list(self.specformer.modalities)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_model_file(path: str) -> str:
    if os.path.isdir(path):  # a run directory
        candidate = os.path.join(path, "best_model")
        if not os.path.isfile(candidate):
            raise FileNotFoundError(f"{path} is a directory without a best_model")
        return candidate
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model {path} does not exist")
    return path


def run_config(model_path: str):
    """The ``config.yaml`` spktrain wrote in the model's run directory, or None when there is none.

    Raises:
        IdentifyError: the file is there but cannot be read: it holds the spectra normalisation the
            model was trained with, so it is not silently replaced by the defaults.
    """
    config = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.yaml")
    if not os.path.isfile(config):
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(config)
    except Exception as err:  # yaml and omegaconf raise several kinds
        raise IdentifyError(
            f"{config}: cannot read the run's config ({type(err).__name__}: {err}); it gives the spectra "
            "normalisation the model was trained with"
        ) from err


def _normalisation_from_config(cfg, source: str) -> Optional[Tuple[str, Dict[str, float]]]:
    """(method, scale per modality) of the run's ``NormalizeSpectra`` transform; None if it has none."""
    from omegaconf import OmegaConf

    import schnetpack_molspectra.configs  # noqa: F401  (the configs' resolvers)

    transforms = OmegaConf.select(cfg, "data.transforms", default=None)
    if transforms is None:
        return None
    nodes = transforms.values() if OmegaConf.is_dict(transforms) else transforms
    for node in nodes:
        if OmegaConf.is_dict(node) and str(node.get("_target_", "")).endswith("NormalizeSpectra"):
            try:
                node = OmegaConf.to_container(node, resolve=True)
                scale = {k: float(v) for k, v in (node.get("scale") or {}).items()}
            except Exception as err:
                raise IdentifyError(
                    f"{source}: cannot resolve the run's spectra normalisation ({type(err).__name__}: {err})"
                ) from err
            return str(node.get("method", "log10")), scale
    return None


def training_db(cfg) -> Optional[str]:
    """The database the run trained on (``data.datapath``; the default dataset when null), or None."""
    from omegaconf import OmegaConf

    if OmegaConf.select(cfg, "data", default=None) is None or "datapath" not in cfg.data:
        return None
    path = cfg.data.datapath
    if path is None:
        from schnetpack_molspectra.data.default import default_dataset_path

        return default_dataset_path()
    return str(path)


def database_elements(path: str) -> Tuple[int, ...]:
    """Atomic numbers present in an ASE sqlite database (its ``species`` table)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return tuple(sorted(int(z) for (z,) in conn.execute("SELECT DISTINCT Z FROM species")))


def load_model(path: str, elements: Optional[Sequence] = None, device: str = "cpu") -> MolSpectraEncoders:
    """Load a MolSpectra ``best_model`` (or a run directory holding one), a weights file or a shipped
    model by name (``molspectra-painn-qm9``) for identification.

    Raises:
        IdentifyError: the file is not a saved model, or has no spectra encoder / 3D representation
            (a ``denoise_pretrain`` or fine-tuned model).
    """
    from omegaconf import OmegaConf

    import schnetpack_molspectra  # noqa: F401  (tblite before torch; old class names of saved models)
    from schnetpack_molspectra.atomistic import MoleculeRepresentation, SpectraEncoder
    from schnetpack_molspectra.pretrained import PretrainedModelError, model_from_weights, read_weights
    from schnetpack_molspectra.shipped import resolve_model

    path = find_model_file(resolve_model(path))  # a shipped model's name -> its weights file
    card = {}
    try:
        if path.endswith(".pt"):  # a weights file (the shipped models): config and card inside
            stored = read_weights(path)
            card = stored["card"]
            model = model_from_weights(path, device=device)
        else:
            model = torch.load(path, map_location=device, weights_only=False)
    except PretrainedModelError as err:
        raise IdentifyError(str(err)) from err
    except Exception as err:
        raise IdentifyError(f"cannot read model {path}: {type(err).__name__}: {err}") from err
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "representation"):
        raise IdentifyError(
            f"{path}: not a saved SchNetPack model ({type(model).__name__}); pass the best_model of a molspectra_pretrain run"
        )
    outputs = list(getattr(model, "output_modules", []))
    spectra = [m for m in outputs if isinstance(m, SpectraEncoder)]
    rep3d = [m for m in outputs if isinstance(m, MoleculeRepresentation)]
    if not spectra or not rep3d:
        have = [type(m).__name__ for m in outputs]
        raise IdentifyError(
            f"{path}: model has no {'spectra encoder (SpectraEncoder)' if not spectra else '3D representation (MoleculeRepresentation)'}"
            f" among its output modules {have}: identification needs the best_model of molspectra_pretrain, "
            "not of denoise_pretrain or a fine-tuning run"
        )
    model.eval()
    representation = model.representation
    cutoff = getattr(representation, "cutoff", None)
    if cutoff is None and hasattr(representation, "cutoff_fn"):
        cutoff = getattr(representation.cutoff_fn, "cutoff", None)
    cfg = run_config(path) if not card else OmegaConf.create(stored["config"])
    if cutoff is None and cfg is not None:
        cutoff = cfg.get("globals", {}).get("cutoff")
    cutoff = float(cutoff if cutoff is not None else 5.0)

    enc = MolSpectraEncoders(path, model, spectra[0], rep3d[0], cutoff, sha256=_sha256(path), device=device)
    found = _normalisation_from_config(cfg, path) if cfg is not None else None
    if found is not None:
        enc.normalization, enc.spectra_scale = found
    if elements is not None:
        enc.elements = tuple(sorted(_atomic_number(e) for e in elements))
        enc.elements_source = "given"
    elif card.get("elements"):
        enc.elements = tuple(sorted(_atomic_number(e) for e in card["elements"]))
        enc.elements_source = f"model card of {os.path.basename(path)}"
    elif cfg is not None:
        db = training_db(cfg)
        if db and os.path.isfile(db):
            try:
                enc.elements = database_elements(db)
                enc.elements_source = f"training data {db}"
            except sqlite3.Error:
                pass
    return enc


def _atomic_number(element) -> int:
    if isinstance(element, (int, np.integer)) or str(element).isdigit():
        return int(element)
    if element not in chemical_symbols:
        raise ValueError(f"unknown element {element!r}")
    return chemical_symbols.index(element)


# ---------------------------------------------------------------- spectra -> embeddings
def normalise_spectra(enc: MolSpectraEncoders, spectra: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    from schnetpack_molspectra.transform import NormalizeSpectra

    present = [m for m in enc.modalities if m in spectra]
    transform = NormalizeSpectra(present, enc.normalization, {m: enc.spectra_scale.get(m, 1.0) for m in present})
    out = transform({msp.spectra[m]: spectra[m] for m in present})
    return {m: out[msp.spectra[m]] for m in present}


@torch.no_grad()
def encode_spectra(
    enc: MolSpectraEncoders, queries: Sequence[QuerySpectrum], rescale: str = "auto", batch_size: int = 64
) -> np.ndarray:
    """Unit-norm spectra embeddings (n_queries, n_features); modalities the model uses but a
    query lacks are fully masked (zero-filled), see the module docstring."""
    if rescale not in ("auto", "peak", "none"):
        raise ValueError(f"rescale must be auto, peak or none, got {rescale!r}")
    sf = enc.specformer
    for q in queries:
        if not any(m in q.spectra for m in sf.modalities):
            raise IdentifyError(
                f"{q.source}: spectrum '{q.name}' has {sorted(q.spectra) or 'no'} spectra, but the model "
                f"{enc.path} uses {sf.modalities}"
            )
    out = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        spectra, absent = {}, {}
        for m in sf.modalities:
            rows, missing = [], []
            for q in chunk:
                if m in q.spectra:
                    values = q.spectra[m]
                    if rescale == "peak" or (rescale == "auto" and q.external_units):
                        values = rescale_to_reference(values, m)
                    rows.append(values)
                    missing.append(False)
                else:
                    rows.append(np.zeros(sf.spectrum_length[m], dtype=np.float32))
                    missing.append(True)
            spectra[m] = torch.from_numpy(np.stack(rows).astype(np.float32)).to(enc.device)
            absent[m] = torch.tensor(missing, device=enc.device)
        spectra = normalise_spectra(enc, spectra)
        masks = {}
        for m, missing in absent.items():  # as modality dropout feeds a withheld modality in training
            if bool(missing.any()):
                spectra[m], masks[m] = missing_modality(spectra[m], None, missing, sf.n_patches[m])
        representation, _, _ = sf(spectra, masks)
        out.append(torch.nn.functional.normalize(representation, dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------- structures -> embeddings
def check_elements(enc: MolSpectraEncoders, atoms_list: Sequence[Atoms], names: Sequence[str], source: str) -> None:
    """Raise :class:`IdentifyError` naming the first molecule with an element the model does not know."""
    known = set(enc.elements)
    n_embed = getattr(getattr(enc.model.representation, "embedding", None), "num_embeddings", None)
    for i, atoms in enumerate(atoms_list):
        zs = set(int(z) for z in atoms.numbers)
        bad = sorted(z for z in zs if z not in known or (n_embed is not None and z >= n_embed))
        if bad:
            symbols = ", ".join(f"{chemical_symbols[z] if z < len(chemical_symbols) else '?'} (Z={z})" for z in bad)
            known_text = ", ".join(chemical_symbols[z] for z in sorted(known))
            raise IdentifyError(
                f"{source}: molecule {i} ({names[i]}): element {symbols} is not among the elements the model was "
                f"trained on ({known_text}; from {enc.elements_source}); remove the molecule or pass elements= / --elements"
            )
        if len(atoms) == 0:
            raise IdentifyError(f"{source}: molecule {i} ({names[i]}) has no atoms")


@torch.no_grad()
def encode_structures(
    enc: MolSpectraEncoders, atoms_list: Sequence[Atoms], batch_size: int = 128, progress: bool = False
) -> np.ndarray:
    """Unit-norm 3D embeddings (n_molecules, n_features): the encoder + ``MoleculeRepresentation``
    on each structure, with the training transforms (centre of mass, neighbour list, float32)."""
    import schnetpack.transform as trn
    from schnetpack.interfaces import AtomsConverter

    converter = AtomsConverter(
        neighbor_list=None,
        transforms=[trn.SubtractCenterOfMass(), trn.MatScipyNeighborList(cutoff=enc.cutoff)],
        device=enc.device,
        dtype=torch.float32,
    )
    model = enc.model
    out = []
    starts = range(0, len(atoms_list), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="library 3D embeddings", unit="batch", file=sys.stderr)
    for start in starts:
        inputs = converter(list(atoms_list[start : start + batch_size]))
        for module in model.input_modules:
            inputs = module(inputs)
        inputs = model.representation(inputs)
        inputs = enc.representation_3d(inputs)
        rep = inputs[enc.representation_3d.output_key]
        out.append(torch.nn.functional.normalize(rep, dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


# ---------------------------------------------------------------- the library
@dataclass
class Library:
    """Candidate structures: names, SMILES ('' where unknown) and 3D structures."""

    path: str
    names: List[str]
    smiles: List[str]
    atoms: List[Atoms]


def smiles_to_3d(smiles: str) -> Atoms:
    """``data.inputs.smiles_to_atoms`` (RDKit ETKDG + MMFF, seed 0); for the strained cages where
    that embedding fails, RDKit again from random coordinates."""
    from schnetpack_molspectra.data.inputs import smiles_to_atoms

    try:
        return smiles_to_atoms(smiles)
    except ValueError as err:
        if "embed" not in str(err):
            raise
        from rdkit import Chem
        from rdkit.Chem import AllChem

        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        if AllChem.EmbedMolecule(mol, randomSeed=0, useRandomCoords=True, maxAttempts=50) != 0:
            raise
        AllChem.MMFFOptimizeMolecule(mol)
        return Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())


def _read_smiles_list(path: str) -> Tuple[List[str], List[str], List[Atoms]]:
    names, smiles, atoms = [], [], []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = [p for p in text.replace(",", " ").replace("\t", " ").split(" ") if p]
            if line_no == 1 and parts[0].lower() in ("smiles", "smi"):
                continue  # header
            smi, name = parts[0], " ".join(parts[1:]) or parts[0]
            try:
                atoms.append(smiles_to_3d(smi))
            except Exception as err:
                raise IdentifyError(f"{path}: line {line_no}: {err}") from err
            names.append(name)
            smiles.append(smi)
    return names, smiles, atoms


def load_library(path: str) -> Library:
    """Candidate structures from a database, an xyz/extxyz file or a SMILES list."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"library {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".db":
        from ase.db import connect

        names, smiles, atoms = [], [], []
        with connect(path, use_lock_file=False) as db:
            for row in db.select():
                atoms.append(row.toatoms())
                names.append(str(row.get("label") or f"row {row.id}"))
                smiles.append(str(row.get("smiles") or ""))
    elif ext in (".xyz", ".extxyz"):
        from schnetpack_molspectra.data.inputs import from_file

        try:
            molecules = from_file(path)
        except (OSError, ValueError):  # named by the reader
            raise
        except Exception as err:
            raise IdentifyError(f"{path}: cannot read structures ({type(err).__name__}: {err})") from err
        atoms = [m.atoms for m in molecules]
        names = [str(m.atoms.info.get("name") or m.name) for m in molecules]
        smiles = [m.smiles for m in molecules]  # from_file reads the extxyz "smiles" info key
    elif ext in (".smi", ".txt", ".csv"):
        names, smiles, atoms = _read_smiles_list(path)
    else:
        raise IdentifyError(f"{path}: unknown library format {ext!r}; use one of {', '.join(LIBRARY_EXTENSIONS)}")
    if not atoms:
        raise IdentifyError(f"{path}: library has no molecules")
    return Library(path, names, smiles, atoms)


def smiles_from_structure(atoms: Atoms) -> str:
    """SMILES of a neutral closed-shell structure, bonds from its geometry (RDKit); '' if that fails."""
    try:
        from rdkit import Chem
        from rdkit.Chem import rdDetermineBonds

        xyz = f"{len(atoms)}\n\n" + "\n".join(
            f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)
        )
        mol = Chem.MolFromXYZBlock(xyz)
        rdDetermineBonds.DetermineBonds(mol, charge=0)
        return Chem.MolToSmiles(Chem.RemoveHs(mol))
    except Exception:
        return ""


def _cache_path(library_path: str, sha256: str, cache_dir: Optional[str]) -> str:
    name = f".{os.path.basename(library_path)}.molspectra-{sha256[:16]}.npz"
    folder = cache_dir or os.path.dirname(os.path.abspath(library_path))
    if cache_dir is None and not os.access(folder, os.W_OK):
        from schnetpack_molspectra.data.default import cache_dir as default_cache

        folder = default_cache()
        tag = hashlib.sha1(os.path.abspath(library_path).encode()).hexdigest()[:8]
        name = f"{os.path.basename(library_path)}-{tag}.molspectra-{sha256[:16]}.npz"
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


@dataclass
class LibraryEmbeddings:
    path: str
    names: List[str]
    smiles: List[str]
    vectors: np.ndarray  # (n, d), unit norm
    cache_path: Optional[str] = None
    from_cache: bool = False
    atoms: Optional[List[Atoms]] = None  # when computed in this call


def library_embeddings(
    enc: MolSpectraEncoders,
    library: Union[str, Library],
    cache: bool = True,
    cache_dir: Optional[str] = None,
    batch_size: int = 128,
    progress: bool = False,
) -> LibraryEmbeddings:
    """3D embeddings of a library, from the cache beside it when the model file (SHA-256) and
    the library file (size, mtime) are unchanged, else computed and cached."""
    path = library.path if isinstance(library, Library) else library
    if not os.path.exists(path):
        raise FileNotFoundError(f"library {path} does not exist")
    stat = os.stat(path)
    meta = {
        "model_sha256": enc.sha256,
        "library": os.path.abspath(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "elements": list(enc.elements),
    }
    cache_file = _cache_path(path, enc.sha256, cache_dir) if cache else None
    if cache_file and os.path.isfile(cache_file):
        try:
            with np.load(cache_file, allow_pickle=False) as f:
                stored = json.loads(str(f["meta"]))
                if all(stored.get(k) == meta[k] for k in ("model_sha256", "size", "mtime_ns", "elements")):
                    return LibraryEmbeddings(
                        path,
                        [str(s) for s in f["names"]],
                        [str(s) for s in f["smiles"]],
                        f["vectors"],
                        cache_file,
                        True,
                    )
        except Exception:
            pass  # unreadable cache: recompute
    lib = library if isinstance(library, Library) else load_library(path)
    check_elements(enc, lib.atoms, lib.names, path)
    vectors = encode_structures(enc, lib.atoms, batch_size, progress)
    if cache_file:
        stale_index = cache_file[: -len(".npz")] + ".faiss"
        if os.path.exists(stale_index):  # built on the old library
            os.remove(stale_index)
        tmp = cache_file[: -len(".npz")] + ".partial.npz"
        np.savez(
            tmp,
            vectors=vectors,
            names=np.array(lib.names, dtype=str),
            smiles=np.array(lib.smiles, dtype=str),
            meta=np.array(json.dumps(meta)),
        )
        os.replace(tmp, cache_file)
    return LibraryEmbeddings(path, lib.names, lib.smiles, vectors, cache_file, False, lib.atoms)


# ---------------------------------------------------------------- search
class VectorIndex:
    """Cosine top-k over unit vectors: exact below ``exact_below`` entries, FAISS HNSW above.

    ``index_path``: where to keep the built FAISS index (loaded if present)."""

    def __init__(
        self,
        vectors: np.ndarray,
        exact_below: int = EXACT_BELOW,
        index_path: Optional[str] = None,
        hnsw_m: int = 32,
        ef_search: int = 256,
    ):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.exact = len(self.vectors) < exact_below
        self.index = None
        self.ef_search = ef_search
        if not self.exact:
            try:
                import faiss
            except ImportError as err:
                raise ImportError(
                    f"libraries of {exact_below} or more entries are searched with FAISS: pip install faiss-cpu "
                    "(or raise exact_below / --exact-below for exact search)"
                ) from err
            if index_path and os.path.isfile(index_path):
                index = faiss.read_index(index_path)
                if index.ntotal == len(self.vectors) and index.d == self.vectors.shape[1]:
                    self.index = index
            if self.index is None:
                self.index = faiss.IndexHNSWFlat(self.vectors.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
                self.index.hnsw.efConstruction = 200
                self.index.add(self.vectors)
                if index_path:
                    faiss.write_index(self.index, index_path + ".partial")
                    os.replace(index_path + ".partial", index_path)

    @property
    def kind(self) -> str:
        return "exact" if self.exact else "faiss-hnsw"

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(scores, indices), each (n_queries, k), best first; cosine similarities."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.vectors))
        if self.exact:
            scores = queries @ self.vectors.T
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
            top = np.take_along_axis(top, order, 1)
            return np.take_along_axis(scores, top, 1), top
        self.index.hnsw.efSearch = max(self.ef_search, 2 * k)
        scores, idx = self.index.search(queries, k)
        return scores, idx


# ---------------------------------------------------------------- identify
@dataclass
class Hit:
    rank: int
    index: int
    name: str
    smiles: str
    score: float


@dataclass
class Identification:
    query: str
    source: str
    used: List[str]  # modalities given and used
    filled: List[str]  # modalities the model uses that the query lacks (fully masked)
    ignored: List[str]  # modalities given that the model does not use
    hits: List[Hit]
    query_smiles: Optional[str] = None
    coverage: Dict[str, float] = field(default_factory=dict)


def merge_queries(records: Iterable[QuerySpectrum], one_molecule: bool = False) -> List[QuerySpectrum]:
    """Records with the same name (all of them with ``one_molecule``) become one query."""
    merged: Dict[str, QuerySpectrum] = {}
    for r in records:
        key = "query" if one_molecule else r.name
        if key not in merged:
            merged[key] = QuerySpectrum(r.name, dict(r.spectra), r.source, r.smiles, r.external_units, dict(r.coverage))
            continue
        q = merged[key]
        twice = set(q.spectra) & set(r.spectra)
        if twice:
            raise IdentifyError(
                f"{r.source}: a second {sorted(twice)} spectrum for '{q.name}' (first from {q.source}); "
                "one spectrum per modality and molecule"
            )
        q.spectra.update(r.spectra)
        q.coverage.update(r.coverage)
        q.source = f"{q.source} + {r.source}"
        q.external_units = q.external_units or r.external_units
        q.smiles = q.smiles or r.smiles
        if one_molecule and r.name not in q.name.split(" + "):
            q.name = f"{q.name} + {r.name}"
    return list(merged.values())


def identify(
    model: Union[str, MolSpectraEncoders],
    spectra: Union[str, Sequence[str], Sequence[QuerySpectrum]],
    library: Union[str, Library],
    top_k: int = 5,
    modality: Optional[str] = None,
    one_molecule: bool = False,
    rescale: str = "auto",
    elements: Optional[Sequence] = None,
    cache: bool = True,
    cache_dir: Optional[str] = None,
    exact_below: int = EXACT_BELOW,
    out_csv: Optional[str] = None,
    progress: bool = False,
    device: str = "cpu",
) -> List[Identification]:
    """Rank the library's structures for each spectrum (module docstring); top ``top_k`` each.

    Args:
        model: a ``best_model`` path (or run directory) or :func:`load_model`'s result.
        spectra: spectra files (any format of ``spectra.io``) or records read already.
        library: candidate structures (database, xyz/extxyz, SMILES list) or a :class:`Library`.
        modality: the modality of files that do not say (``.npy``, CSV, JCAMP-DX without ``##DATA TYPE``).
        one_molecule: all spectra are of one molecule (e.g. ``ir.jdx`` + ``raman.jdx``).
        rescale: ``auto`` (x,y data in instrument units to the training peak height), ``peak``, ``none``.
        elements: elements the model knows (default: those of its training data, see module docstring).
        out_csv: also write the results there (:func:`write_csv`).
        device: where the model runs (``cpu``, ``cuda``, ``cuda:1``; :func:`load_model`).
    """
    enc = model if isinstance(model, MolSpectraEncoders) else load_model(model, elements, device=device)
    if isinstance(spectra, str):
        spectra = [spectra]
    records: List[QuerySpectrum] = []
    for item in spectra:
        records.extend([item] if isinstance(item, QuerySpectrum) else read_spectra(item, modality))
    queries = merge_queries(records, one_molecule)
    emb = library_embeddings(enc, library, cache=cache, cache_dir=cache_dir, progress=progress)
    index_path = emb.cache_path[: -len(".npz")] + ".faiss" if emb.cache_path else None
    index = VectorIndex(emb.vectors, exact_below, index_path)
    scores, idx = index.search(encode_spectra(enc, queries, rescale), top_k)
    atoms = emb.atoms
    results = []
    for q, row_scores, row_idx in zip(queries, scores, idx):
        hits = []
        for rank, (s, i) in enumerate(zip(row_scores, row_idx), 1):
            if i < 0:
                continue
            smiles = emb.smiles[i]
            if not smiles:  # xyz library without SMILES: from the geometry, for the hits only
                if atoms is None:
                    atoms = (library if isinstance(library, Library) else load_library(emb.path)).atoms
                smiles = emb.smiles[i] = smiles_from_structure(atoms[i]) or atoms[i].get_chemical_formula()
            hits.append(Hit(rank, int(i), emb.names[i], smiles, float(s)))
        results.append(
            Identification(
                q.name,
                q.source,
                [m for m in enc.modalities if m in q.spectra],
                [m for m in enc.modalities if m not in q.spectra],
                [m for m in q.spectra if m not in enc.modalities],
                hits,
                q.smiles,
                dict(q.coverage),
            )
        )
    if out_csv:
        write_csv(results, out_csv)
    return results


def _canonical(smiles: Optional[str]) -> Optional[str]:
    if not smiles:
        return None
    try:
        from rdkit import Chem

        mol = Chem.MolFromSmiles(smiles)
        return Chem.MolToSmiles(mol) if mol is not None else None
    except Exception:
        return None


def format_results(results: Sequence[Identification], library_size: Optional[int] = None) -> str:
    """A plain-text table per query."""
    lines = []
    for r in results:
        notes = [f"spectra: {'+'.join(r.used)}"]
        if r.filled:
            notes.append(f"missing {'+'.join(r.filled)} (masked)")
        if r.ignored:
            notes.append(f"ignored {'+'.join(r.ignored)} (not in the model)")
        low = [f"{m} {c:.0%}" for m, c in r.coverage.items() if c < 0.5]
        if low:
            notes.append("grid coverage " + ", ".join(low))
        lines.append(f"{r.query}  ({'; '.join(notes)})  [{r.source}]")
        truth = _canonical(r.query_smiles)
        if r.query_smiles:
            lines.append(f"  known SMILES: {r.query_smiles}")
        lines.append(f"  {'rank':>4}  {'cosine':>7}  {'SMILES':<28} name")
        for h in r.hits:
            mark = "  <- match" if truth and _canonical(h.smiles) == truth else ""
            lines.append(f"  {h.rank:>4}  {h.score:7.4f}  {h.smiles:<28} {h.name}{mark}")
    return "\n".join(lines)


def write_csv(results: Sequence[Identification], path: str) -> str:
    """One row per (query, rank): query, source, modalities, rank, cosine, candidate, SMILES,
    library index, and the query's known SMILES and whether the candidate matches it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "query",
                "source",
                "modalities",
                "missing_modalities",
                "rank",
                "cosine",
                "candidate",
                "smiles",
                "library_index",
                "query_smiles",
                "match",
            ]
        )
        for r in results:
            truth = _canonical(r.query_smiles)
            for h in r.hits:
                match = "" if truth is None else int(_canonical(h.smiles) == truth)
                w.writerow(
                    [
                        r.query,
                        r.source,
                        "+".join(r.used),
                        "+".join(r.filled),
                        h.rank,
                        f"{h.score:.6f}",
                        h.name,
                        h.smiles,
                        h.index,
                        r.query_smiles or "",
                        match,
                    ]
                )
    return path
