"""Predict-then-match identification: rank a library of candidate structures by how alike the query's
spectra are to the spectra a spectra model (``spktrain experiment=spectra_finetune``, e.g. the shipped
``spectra-painn-qm9``) predicts for each candidate - the second way to identify, beside the joint
embedding of :func:`schnetpack_molspectra.identify.identify` (``spkspectra identify --method predict``).

The score of a candidate is the mean, over the modalities both the query and the model have, of the
cosine between the query's spectrum (read, baseline-subtracted and rescaled as ``identify`` does:
:func:`~schnetpack_molspectra.identify.encode.query_values`) and the predicted one: per group of queries
with the same modalities, an exact top-k search (``identify.index.exact_top_k``) over the library's
predicted spectra as unit vectors (:func:`spectra_matrix`). The library's
spectra are predicted on each call (milliseconds a molecule; ``benchmarks/spectra_prediction.py``).

The comparison forgives what differs most between levels of theory (a measured spectrum, another
functional, against the model's training data; ``spectra.alignment``): the query's frequency axis is
scaled by each of ``scales`` (the scale factors applied to computed harmonic frequencies) and both sides
are smoothed with a Gaussian of FWHM ``smoothing`` cm^-1; a candidate's score is its best over the scales.
The default, :data:`TOLERANT`, is the setting ``benchmarks/matching_tolerance.py`` chose on molecules
outside the held-out set (no model trained on them): recall@1 among 1,000 from IR + Raman of perturbed
spectra 0.006 -> 0.91, instrument-like 0.11 -> 0.65, the simulator's own 0.91 either way; :data:`EXACT`
compares the spectra as they are. ``splits`` lets frequency regions take scales of their own; measured the same way
it lost on clean spectra and IR alone and gained nothing beyond noise elsewhere, so :data:`TOLERANT` has one region.
"""

import functools
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from schnetpack_molspectra.data.spectrum_files import QuerySpectrum
from schnetpack_molspectra.identify.cache import CachedLibrary, cached_library_arrays
from schnetpack_molspectra.identify.encode import query_values
from schnetpack_molspectra.identify.index import exact_top_k
from schnetpack_molspectra.identify.library import Library, load_library
from schnetpack_molspectra.identify.model import IdentifyError
from schnetpack_molspectra.identify.output import write_csv
from schnetpack_molspectra.identify.results import Identification
from schnetpack_molspectra.identify.search import ranked_hits, read_queries
from schnetpack_molspectra.predict import PredictError, SpectraPredictor, load_predictor, predicted_batches
from schnetpack_molspectra.spectra.alignment import VIBRATIONAL, scale_axis, scale_grid, smooth, smoothed_stride
from schnetpack_molspectra.spectra.grids import GRIDS

__all__ = ["EXACT", "TOLERANT", "spectra_matrix", "match_scores", "library_spectra", "identify_by_prediction"]

#: compare the spectra as they are: one frequency scale (1.0), no smoothing
EXACT = {"scales": (1.0,), "smoothing": 0.0, "splits": ()}
#: tolerant of another level of theory: query frequencies scaled by 0.95-1.05 in steps of 0.005 (the best
#: kept), both sides smoothed by a Gaussian of FWHM 50 cm^-1 (chosen by benchmarks/matching_tolerance.py)
TOLERANT = {"scales": tuple(scale_grid(0.95, 1.05, 0.005)), "smoothing": 50.0, "splits": ()}


def spectra_matrix(spectra: Dict[str, np.ndarray], modalities: Sequence[str]) -> np.ndarray:
    """(n, sum of the modalities' grid lengths): each modality's rows unit-normalised and scaled by
    1 / sqrt(len(modalities)), side by side, so that the dot product of two rows is the mean cosine
    of their spectra over ``modalities``. ``spectra``: modality -> (n, L) on the modality's grid."""
    return _smoothed(spectra, modalities, 0.0)


def _fwhm(modality: str, smoothing: float) -> float:
    """The Gaussian FWHM a modality is smoothed by: ``smoothing`` (cm^-1) on the vibrational grids; none on UV's
    eV axis, which neither the frequency scales nor a width in cm^-1 apply to."""
    return smoothing if modality in VIBRATIONAL else 0.0


def _layout(modalities: Sequence[str], smoothing: float, splits: Sequence[float]) -> List[List[tuple]]:
    """How :func:`_smoothed` lays out its columns: per frequency region (the vibrational grids cut at
    ``splits``, cm^-1; UV, whose axis no scale moves, all in the first region), the (modality, slice of the
    modality's smoothed, strided axis) of its blocks. Regions follow one another, so that each is a
    contiguous run of columns; without ``splits`` the layout is :func:`spectra_matrix`'s."""
    edges = np.concatenate([[-np.inf], np.sort(np.asarray(splits, dtype=np.float64)), [np.inf]])
    regions: List[List[tuple]] = [[] for _ in range(len(edges) - 1)]
    for m in modalities:
        axis = GRIDS[m].values()[:: smoothed_stride(m, _fwhm(m, smoothing))]
        if m not in VIBRATIONAL:
            regions[0].append((m, slice(0, len(axis))))
            continue
        for region, low, high in zip(regions, edges[:-1], edges[1:]):
            inside = np.flatnonzero((axis >= low) & (axis < high))
            if len(inside):
                region.append((m, slice(inside[0], inside[-1] + 1)))
    return [r for r in regions if r]


def _reduced(values: np.ndarray, modality: str, smoothing: float) -> np.ndarray:
    """(n, L) spectra of ``modality`` smoothed (Gaussian FWHM ``smoothing`` cm^-1, vibrational modalities only:
    :func:`_fwhm`), on every ``smoothed_stride``-th grid point, each row of unit norm: what predict-then-match
    compares (and caches for a library)."""
    fwhm = _fwhm(modality, smoothing)
    x = smooth(values, modality, fwhm)[:, :: smoothed_stride(modality, fwhm)]
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30), dtype=np.float32)


def _assembled(reduced: Dict[str, np.ndarray], modalities: Sequence[str], smoothing: float, splits=()) -> np.ndarray:
    """The :func:`_reduced` spectra of ``modalities`` side by side in :func:`_layout`'s column order, scaled by
    1 / sqrt(len(modalities)): the dot product of two rows is the mean cosine over the modalities."""
    unit = np.float32(1.0 / np.sqrt(len(modalities)))
    parts = [reduced[m][:, part] * unit for region in _layout(modalities, smoothing, splits) for m, part in region]
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def _smoothed(
    spectra: Dict[str, np.ndarray], modalities: Sequence[str], smoothing: float, splits: Sequence[float] = ()
) -> np.ndarray:
    """The spectra as :func:`_assembled` lays them side by side, each :func:`_reduced` (smoothed, on every
    ``smoothed_stride``-th grid point, unit rows), the columns in :func:`_layout`'s order."""
    return _assembled({m: _reduced(spectra[m], m, smoothing) for m in modalities}, modalities, smoothing, splits)


def _block_slices(modalities: Sequence[str], smoothing: float, splits: Sequence[float]) -> List[List[slice]]:
    """Per region of :func:`_layout`, the column slices of its blocks in :func:`_smoothed`'s matrix."""
    out, start = [], 0
    for region in _layout(modalities, smoothing, splits):
        out.append([])
        for _, part in region:
            out[-1].append(slice(start, start + part.stop - part.start))
            start += part.stop - part.start
    return out


def _best_over_scales(
    query: Dict[str, np.ndarray],
    library: np.ndarray,
    modalities: Sequence[str],
    scales,
    smoothing: float,
    splits: Sequence[float] = (),
) -> np.ndarray:
    """(n_queries, n_library): each query against ``library`` (:func:`_smoothed` rows, same ``splits``), the best
    over ``scales`` in each frequency region, summed over the regions. Within a region each block (a modality's
    part of it) of the scaled query is unit-normalised and weighted by the block's share of the modality's norm
    at scale 1, so that one region (no ``splits``) gives the mean cosine, and several regions that take the same
    scale give it too."""
    regions = _block_slices(modalities, smoothing, splits)
    plain = _smoothed(query, modalities, smoothing, splits)
    weights = [np.linalg.norm(plain[:, b], axis=1, keepdims=True) for region in regions for b in region]
    spans = [slice(region[0].start, region[-1].stop) for region in regions]
    best = [None] * len(regions)
    for scale in scales:
        rows = _smoothed({m: scale_axis(query[m], m, scale) for m in modalities}, modalities, smoothing, splits)
        for b, weight in zip((b for region in regions for b in region), weights):
            rows[:, b] *= weight / np.maximum(np.linalg.norm(rows[:, b], axis=1, keepdims=True), 1e-30)
        for r, span in enumerate(spans):
            scores = rows[:, span] @ library[:, span].T
            best[r] = scores if best[r] is None else np.maximum(best[r], scores)
    return best[0] if len(best) == 1 else np.sum(best, axis=0)


def match_scores(
    query: Dict[str, np.ndarray],
    library: Dict[str, np.ndarray],
    modalities: Sequence[str],
    scales: Sequence[float] = (1.0,),
    smoothing: float = 0.0,
    splits: Sequence[float] = (),
) -> np.ndarray:
    """Mean cosine over ``modalities`` of every query (rows of ``query[m]``) against every library
    entry (rows of ``library[m]``): (n_queries, n_library); with the query's frequency axis scaled by
    each of ``scales`` (the best score kept) and both sides smoothed by a Gaussian of FWHM
    ``smoothing`` (module docstring). ``splits`` (cm^-1) cut the vibrational axis into regions that each
    take their own best scale (anharmonicity scales X-H stretches otherwise than the fingerprint region);
    the regions' shares of the cosine are summed."""
    return _best_over_scales(
        query, _smoothed(library, modalities, smoothing, splits), modalities, scales, smoothing, splits
    )


def library_spectra(
    predictor: SpectraPredictor,
    library: Union[str, Library],
    smoothing: float,
    cache: bool = True,
    cache_dir: Optional[str] = None,
    batch_size: Optional[int] = None,
    progress: bool = False,
) -> CachedLibrary:
    """The spectra ``predictor`` predicts for every structure of the library, as predict-then-match compares them
    (``arrays``: modality -> (n, L') unit rows, smoothed by a Gaussian of FWHM ``smoothing`` on every
    ``smoothed_stride``-th grid point), from the cache beside the library (``identify.cache``; same model file,
    library file and smoothing) or predicted a batch at a time - so that the full-resolution spectra of a large
    library are never held at once - and cached (~7 KB a molecule for IR + Raman at 50 cm^-1).

    Raises:
        IdentifyError: a library structure the model cannot take (the library file and the molecule named).
    """

    def compute(lib: Library) -> Dict[str, np.ndarray]:
        parts: Dict[str, List[np.ndarray]] = {m: [] for m in predictor.modalities}
        try:
            for batch in predicted_batches(predictor, lib.atoms, batch_size, progress, names=lib.names):
                for m, values in batch.items():
                    parts[m].append(_reduced(values, m, smoothing))
        except PredictError as e:  # raised before the first batch: nothing predicted, nothing cached
            raise IdentifyError(f"{lib.path}: {e}") from e
        width = {m: len(GRIDS[m].values()[:: smoothed_stride(m, _fwhm(m, smoothing))]) for m in parts}
        return {m: np.concatenate(v) if v else np.zeros((0, width[m]), np.float32) for m, v in parts.items()}

    in_memory = isinstance(library, Library) and not os.path.exists(library.path)
    if in_memory:  # a Library built in memory: nothing to cache against
        return CachedLibrary(library.path, library.names, library.smiles, compute(library), atoms=library.atoms)
    depends_on = {"smoothing": float(smoothing), "modalities": list(predictor.modalities)}
    return cached_library_arrays(
        library,
        predictor.sha256,
        f"spectra-{smoothing:g}cm",
        compute,
        depends_on,
        cache and bool(predictor.sha256),
        cache_dir,
    )


def identify_by_prediction(
    model: Union[str, SpectraPredictor],
    spectra: Union[str, Sequence[str], Sequence[QuerySpectrum]],
    library: Union[str, Library],
    top_k: int = 5,
    modality: Optional[str] = None,
    one_molecule: bool = False,
    rescale: str = "auto",
    baseline: str = "auto",
    out_csv: Optional[str] = None,
    progress: bool = False,
    device: str = "cpu",
    trust: bool = False,
    batch_size: Optional[int] = None,
    scales: Sequence[float] = TOLERANT["scales"],
    smoothing: float = TOLERANT["smoothing"],
    splits: Sequence[float] = TOLERANT["splits"],
    cache: bool = True,
    cache_dir: Optional[str] = None,
) -> List[Identification]:
    """Rank the library's structures for each spectrum by predict-then-match (module docstring); the
    arguments and the result as :func:`schnetpack_molspectra.identify.identify`'s, ``model`` a spectra
    model (shipped name, weights file, ``best_model``) or :func:`~schnetpack_molspectra.predict.load_predictor`'s result;
    ``scales``, ``smoothing`` and ``splits`` as :func:`match_scores` (default :data:`TOLERANT`; ``**EXACT`` compares
    as they are); the library's predicted spectra are cached beside it unless ``cache`` is False
    (:func:`library_spectra`).

    Raises:
        IdentifyError: a model that predicts no spectra, a library structure it cannot take (named),
            or a query without any modality the model predicts.
    """
    try:
        predictor = model if isinstance(model, SpectraPredictor) else load_predictor(model, device=device, trust=trust)
    except PredictError as err:
        raise IdentifyError(str(err)) from err
    queries = read_queries(spectra, modality, one_molecule)
    lib = library_spectra(predictor, library, smoothing, cache, cache_dir, batch_size, progress)

    groups: Dict[tuple, List[int]] = {}
    for i, q in enumerate(queries):
        used = tuple(m for m in predictor.modalities if m in q.spectra)
        if not used:
            raise IdentifyError(
                f"{q.source}: '{q.name}' has none of the spectra the model predicts ({', '.join(predictor.modalities)})"
            )
        groups.setdefault(used, []).append(i)
    ranked: Dict[int, tuple] = {}
    for used, members in groups.items():
        values = {m: np.stack([query_values(queries[i], m, rescale, baseline) for i in members]) for m in used}
        candidates = _assembled(lib.arrays, used, smoothing, splits)
        scores, indices = exact_top_k(
            lambda rows: _best_over_scales(
                {m: v[rows] for m, v in values.items()}, candidates, used, scales, smoothing, splits
            ),
            len(members),
            len(candidates),
            top_k,
        )
        for row, i in enumerate(members):
            ranked[i] = (used, indices[row], scores[row])

    smiles = list(lib.smiles)  # filled in from the geometry where a hit needs it, for every later query
    atoms = lib.atoms or functools.cache(lambda: load_library(lib.path).atoms)  # read only if a hit needs them
    results = []
    for i, q in enumerate(queries):
        used, indices, scores = ranked[i]
        hits = ranked_hits(scores, indices, lib.names, smiles, atoms)
        results.append(
            Identification(
                q.name,
                q.source,
                list(used),
                [],  # nothing is filled in: the score uses only the modalities the query has
                [m for m in q.spectra if m not in predictor.modalities],
                hits,
                q.smiles,
                dict(q.coverage),
            )
        )
    if out_csv:
        write_csv(results, out_csv)
    return results
