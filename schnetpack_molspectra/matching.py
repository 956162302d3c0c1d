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
compares the spectra as they are.
"""

from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from schnetpack_molspectra.data.spectrum_files import QuerySpectrum
from schnetpack_molspectra.identify.encode import query_values
from schnetpack_molspectra.identify.index import exact_top_k
from schnetpack_molspectra.identify.library import Library, load_library
from schnetpack_molspectra.identify.model import IdentifyError
from schnetpack_molspectra.identify.output import write_csv
from schnetpack_molspectra.identify.results import Identification
from schnetpack_molspectra.identify.search import ranked_hits, read_queries
from schnetpack_molspectra.predict import PredictError, SpectraPredictor, load_predictor, predict_spectra
from schnetpack_molspectra.predict import structure_problem as predict_problem
from schnetpack_molspectra.spectra.alignment import scale_axis, scale_grid, smooth, smoothed_stride

__all__ = ["EXACT", "TOLERANT", "spectra_matrix", "match_scores", "identify_by_prediction"]

#: compare the spectra as they are: one frequency scale (1.0), no smoothing
EXACT = {"scales": (1.0,), "smoothing": 0.0}
#: tolerant of another level of theory: query frequencies scaled by 0.95-1.05 in steps of 0.005 (the best
#: kept), both sides smoothed by a Gaussian of FWHM 50 cm^-1 (chosen by benchmarks/matching_tolerance.py)
TOLERANT = {"scales": tuple(scale_grid(0.95, 1.05, 0.005)), "smoothing": 50.0}


def spectra_matrix(spectra: Dict[str, np.ndarray], modalities: Sequence[str]) -> np.ndarray:
    """(n, sum of the modalities' grid lengths): each modality's rows unit-normalised and scaled by
    1 / sqrt(len(modalities)), side by side, so that the dot product of two rows is the mean cosine
    of their spectra over ``modalities``. ``spectra``: modality -> (n, L)."""
    parts = []
    for m in modalities:
        x = np.asarray(spectra[m], dtype=np.float32)
        parts.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30))
    return np.concatenate(parts, axis=1) / np.float32(np.sqrt(len(modalities)))


def _smoothed(spectra: Dict[str, np.ndarray], modalities: Sequence[str], smoothing: float) -> np.ndarray:
    """:func:`spectra_matrix` of the spectra smoothed, on every ``smoothed_stride``-th grid point."""
    return spectra_matrix(
        {m: smooth(spectra[m], m, smoothing)[:, :: smoothed_stride(m, smoothing)] for m in modalities}, modalities
    )


def _aligned(query: Dict[str, np.ndarray], modalities: Sequence[str], scale: float, smoothing: float) -> np.ndarray:
    return _smoothed({m: scale_axis(query[m], m, scale) for m in modalities}, modalities, smoothing)


def _best_over_scales(
    query: Dict[str, np.ndarray], library: np.ndarray, modalities: Sequence[str], scales, smoothing: float
) -> np.ndarray:
    """(n_queries, n_library): each query against ``library`` (:func:`_smoothed` rows), the best over ``scales``."""
    best = None
    for scale in scales:
        scores = _aligned(query, modalities, scale, smoothing) @ library.T
        best = scores if best is None else np.maximum(best, scores)
    return best


def match_scores(
    query: Dict[str, np.ndarray],
    library: Dict[str, np.ndarray],
    modalities: Sequence[str],
    scales: Sequence[float] = (1.0,),
    smoothing: float = 0.0,
) -> np.ndarray:
    """Mean cosine over ``modalities`` of every query (rows of ``query[m]``) against every library
    entry (rows of ``library[m]``): (n_queries, n_library); with the query's frequency axis scaled by
    each of ``scales`` (the best score kept) and both sides smoothed by a Gaussian of FWHM
    ``smoothing`` (module docstring)."""
    return _best_over_scales(query, _smoothed(library, modalities, smoothing), modalities, scales, smoothing)


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
) -> List[Identification]:
    """Rank the library's structures for each spectrum by predict-then-match (module docstring); the
    arguments and the result as :func:`schnetpack_molspectra.identify.identify`'s, ``model`` a spectra
    model (shipped name, weights file, ``best_model``) or :func:`~schnetpack_molspectra.predict.load_predictor`'s result;
    ``scales`` and ``smoothing`` as :func:`match_scores` (default :data:`TOLERANT`; ``**EXACT`` compares as they are).

    Raises:
        IdentifyError: a model that predicts no spectra, a library structure it cannot take (named),
            or a query without any modality the model predicts.
    """
    try:
        predictor = model if isinstance(model, SpectraPredictor) else load_predictor(model, device=device, trust=trust)
    except PredictError as err:
        raise IdentifyError(str(err)) from err
    queries = read_queries(spectra, modality, one_molecule)
    lib = library if isinstance(library, Library) else load_library(library)
    for i, atoms in enumerate(lib.atoms):
        problem = predict_problem(predictor, atoms)
        if problem is not None:
            raise IdentifyError(f"{lib.path}: molecule {i} ({lib.names[i]}): {problem}")
    predicted = predict_spectra(predictor, lib.atoms, batch_size=batch_size, progress=progress)

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
        library = _smoothed(predicted, used, smoothing)
        scores, indices = exact_top_k(
            lambda rows: _best_over_scales({m: v[rows] for m, v in values.items()}, library, used, scales, smoothing),
            len(members),
            len(library),
            top_k,
        )
        for row, i in enumerate(members):
            ranked[i] = (used, indices[row], scores[row])

    smiles = list(lib.smiles)  # filled in from the geometry where a hit needs it, for every later query
    results = []
    for i, q in enumerate(queries):
        used, indices, scores = ranked[i]
        hits = ranked_hits(scores, indices, lib.names, smiles, lib.atoms)
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
