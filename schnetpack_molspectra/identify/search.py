"""The orchestration: :func:`identify` reads the spectra, merges the records of one molecule into
one query (:func:`merge_queries`), embeds the queries and the library (cached) and ranks the
library's structures for each query (:class:`~schnetpack_molspectra.identify.results.Identification`
of :class:`~schnetpack_molspectra.identify.results.Hit`); the package
docstring (:mod:`schnetpack_molspectra.identify`) describes inputs, modalities and scaling.
"""

import functools
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

from ase import Atoms

from schnetpack_molspectra.data.spectrum_files import QuerySpectrum, read_spectra
from schnetpack_molspectra.identify.cache import library_embeddings
from schnetpack_molspectra.identify.encode import encode_spectra
from schnetpack_molspectra.identify.index import EXACT_BELOW, VectorIndex
from schnetpack_molspectra.identify.library import Library, load_library, smiles_from_structure
from schnetpack_molspectra.identify.model import EmbeddingModel, IdentifyError, load_model
from schnetpack_molspectra.identify.output import write_csv
from schnetpack_molspectra.identify.results import Hit, Identification

__all__ = ["merge_queries", "read_queries", "ranked_hits", "identify"]


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


def read_queries(
    spectra: Union[str, Sequence[str], Sequence[QuerySpectrum]],
    modality: Optional[str] = None,
    one_molecule: bool = False,
) -> List[QuerySpectrum]:
    """The queries of spectra files (any format of ``data.spectrum_files``; ``modality`` for files that do
    not say) or of records read already, the records of one molecule merged (:func:`merge_queries`)."""
    if isinstance(spectra, str):
        spectra = [spectra]
    records: List[QuerySpectrum] = []
    for item in spectra:
        records.extend([item] if isinstance(item, QuerySpectrum) else read_spectra(item, modality))
    return merge_queries(records, one_molecule)


def ranked_hits(
    scores: Sequence[float],
    indices: Sequence[int],
    names: List[str],
    smiles: List[str],
    atoms: Union[List[Atoms], Callable[[], List[Atoms]]],
) -> List[Hit]:
    """The :class:`Hit` list of one query from its library indices and scores, best first (an index
    below 0, FAISS's "none", is left out). A candidate without SMILES (an xyz library) gets one from
    its geometry, stored into ``smiles`` for later queries; ``atoms``: the library's structures, or a
    function that reads them (called only then)."""
    hits = []
    for rank, (score, i) in enumerate(zip(scores, indices), 1):
        if i < 0:
            continue
        if not smiles[i]:
            if callable(atoms):
                atoms = atoms()
            smiles[i] = smiles_from_structure(atoms[i]) or atoms[i].get_chemical_formula()
        hits.append(Hit(rank, int(i), names[i], smiles[i], float(score)))
    return hits


def identify(
    model: Union[str, EmbeddingModel],
    spectra: Union[str, Sequence[str], Sequence[QuerySpectrum]],
    library: Union[str, Library],
    top_k: int = 5,
    modality: Optional[str] = None,
    one_molecule: bool = False,
    rescale: str = "auto",
    baseline: str = "auto",
    elements: Optional[Sequence] = None,
    cache: bool = True,
    cache_dir: Optional[str] = None,
    exact_below: Optional[int] = EXACT_BELOW,
    out_csv: Optional[str] = None,
    progress: bool = False,
    device: str = "cpu",
    trust: bool = False,
) -> List[Identification]:
    """Rank the library's structures for each spectrum (module docstring); top ``top_k`` each.

    Args:
        model: a ``best_model`` path (or run directory) or :func:`load_model`'s result.
        spectra: spectra files (any format of ``data.spectrum_files``) or records read already.
        library: candidate structures (database, xyz/extxyz, SMILES list) or a :class:`Library`.
        modality: the modality of files that do not say (``.npy``, CSV, JCAMP-DX without ``##DATA TYPE``).
        one_molecule: all spectra are of one molecule (e.g. ``ir.jdx`` + ``raman.jdx``).
        rescale: ``auto`` (x,y data in instrument units to the training peak height), ``peak``, ``none``.
        baseline: ``auto`` (the ALS baseline subtracted from x,y data in instrument units), ``als``, ``none``.
        elements: elements the model knows (default: those of its training data, see module docstring).
        out_csv: also write the results there (:func:`write_csv`).
        device: where the model runs (``cpu``, ``cuda``, ``cuda:1``; :func:`load_model`).
        trust: unpickle a ``best_model`` that no run of yours wrote (:func:`load_model`; ``--trust-model``).
    """
    enc = model if isinstance(model, EmbeddingModel) else load_model(model, elements, device=device, trust=trust)
    queries = read_queries(spectra, modality, one_molecule)
    emb = library_embeddings(enc, library, cache=cache, cache_dir=cache_dir, progress=progress)
    index_path = emb.cache_path[: -len(".npz")] + ".faiss" if emb.cache_path else None
    index = VectorIndex(emb.vectors, exact_below, index_path)
    scores, idx = index.search(encode_spectra(enc, queries, rescale, baseline=baseline), top_k)
    # embeddings from the cache come without structures: read (once) only if a hit needs its SMILES
    atoms = emb.atoms or functools.cache(
        lambda: (library if isinstance(library, Library) else load_library(emb.path)).atoms
    )
    results = []
    for q, row_scores, row_idx in zip(queries, scores, idx):
        hits = ranked_hits(row_scores, row_idx, emb.names, emb.smiles, atoms)
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
