"""Predict-then-match identification: rank a library of candidate structures by how alike the query's
spectra are to the spectra a spectra model (``spktrain experiment=spectra_finetune``, e.g. the shipped
``spectra-painn-qm9``) predicts for each candidate - the second way to identify, beside the joint
embedding of :func:`schnetpack_molspectra.identify.identify` (``spkspectra identify --method predict``).

The score of a candidate is the mean, over the modalities both the query and the model have, of the
cosine between the query's spectrum (read, baseline-subtracted and rescaled as ``identify`` does:
:func:`~schnetpack_molspectra.identify.encode.query_values`) and the predicted one: per group of queries
with the same modalities, an exact search (``identify.VectorIndex``) over the library's predicted spectra
as unit vectors (:func:`spectra_matrix`). The library's
spectra are predicted on each call (milliseconds a molecule; ``benchmarks/spectra_prediction.py``).
"""

from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from schnetpack_molspectra.data.spectrum_files import QuerySpectrum
from schnetpack_molspectra.identify.encode import query_values
from schnetpack_molspectra.identify.index import VectorIndex
from schnetpack_molspectra.identify.library import Library, load_library
from schnetpack_molspectra.identify.model import IdentifyError
from schnetpack_molspectra.identify.output import write_csv
from schnetpack_molspectra.identify.results import Identification
from schnetpack_molspectra.identify.search import ranked_hits, read_queries
from schnetpack_molspectra.predict import PredictError, SpectraPredictor, load_predictor, predict_spectra
from schnetpack_molspectra.predict import structure_problem as predict_problem

__all__ = ["spectra_matrix", "match_scores", "identify_by_prediction"]


def spectra_matrix(spectra: Dict[str, np.ndarray], modalities: Sequence[str]) -> np.ndarray:
    """(n, sum of the modalities' grid lengths): each modality's rows unit-normalised and scaled by
    1 / sqrt(len(modalities)), side by side, so that the dot product of two rows is the mean cosine
    of their spectra over ``modalities``. ``spectra``: modality -> (n, L)."""
    parts = []
    for m in modalities:
        x = np.asarray(spectra[m], dtype=np.float32)
        parts.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30))
    return np.concatenate(parts, axis=1) / np.float32(np.sqrt(len(modalities)))


def match_scores(query: Dict[str, np.ndarray], library: Dict[str, np.ndarray], modalities: Sequence[str]) -> np.ndarray:
    """Mean cosine over ``modalities`` of every query (rows of ``query[m]``) against every library
    entry (rows of ``library[m]``): (n_queries, n_library)."""
    return spectra_matrix(query, modalities) @ spectra_matrix(library, modalities).T


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
) -> List[Identification]:
    """Rank the library's structures for each spectrum by predict-then-match (module docstring); the
    arguments and the result as :func:`schnetpack_molspectra.identify.identify`'s, ``model`` a spectra
    model (shipped name, weights file, ``best_model``) or :func:`~schnetpack_molspectra.predict.load_predictor`'s result.

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
        scores, indices = VectorIndex(spectra_matrix(predicted, used)).search(spectra_matrix(values, used), top_k)
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
