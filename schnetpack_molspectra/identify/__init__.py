"""Identify molecules from their spectra with MolSpectra's joint embedding.

A pre-trained MolSpectra model (the ``best_model`` of ``molspectra_pretrain``) maps spectra
(SpecFormer, ``SpectraEncoder``) and 3D structures (the encoder + ``MoleculeRepresentation``)
into one space, trained so that a molecule's spectra are most cosine-similar to its own
structure (the contrastive loss). So a library of candidate *structures* - no reference
spectra needed - can be ranked against a measured or simulated spectrum::

    from schnetpack_molspectra.identify import identify, format_results
    results = identify("runs/<id>/best_model", ["unknown_ir.jdx"], "candidates.smi", top_k=5)
    print(format_results(results))

Spectra: any file :func:`schnetpack_molspectra.data.spectrum_files.read_spectra` reads (database,
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

One role per module: :mod:`~schnetpack_molspectra.identify.model` (loading the model, reading its
run's config), :mod:`~schnetpack_molspectra.identify.encode` (spectra and structures ->
embeddings), :mod:`~schnetpack_molspectra.identify.library` (candidate structures from files),
:mod:`~schnetpack_molspectra.identify.cache` (the cached library embeddings),
:mod:`~schnetpack_molspectra.identify.index` (exact cosine / FAISS search),
:mod:`~schnetpack_molspectra.identify.search` (:func:`identify`, the orchestration),
:mod:`~schnetpack_molspectra.identify.results` (:class:`Identification`, :class:`Hit`: what it returns) and
:mod:`~schnetpack_molspectra.identify.output` (text table, CSV). Their public names are all
importable from here.
"""

from schnetpack_molspectra.identify.cache import LibraryEmbeddings, library_embeddings
from schnetpack_molspectra.identify.encode import check_elements, encode_spectra, encode_structures, normalise_spectra
from schnetpack_molspectra.identify.index import EXACT_BELOW, VectorIndex
from schnetpack_molspectra.identify.library import (
    LIBRARY_EXTENSIONS,
    Library,
    load_library,
    smiles_from_structure,
    smiles_to_3d,
)
from schnetpack_molspectra.identify.model import (
    QM9_ELEMENTS,
    EmbeddingModel,
    IdentifyError,
    database_elements,
    find_model_file,
    load_model,
    run_config,
    training_db,
)
from schnetpack_molspectra.identify.output import format_results, write_csv
from schnetpack_molspectra.identify.results import Hit, Identification
from schnetpack_molspectra.identify.search import identify, merge_queries

__all__ = [
    "IdentifyError",
    "EmbeddingModel",
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
    "database_elements",
    "smiles_to_3d",
    "smiles_from_structure",
    "LibraryEmbeddings",
    "EXACT_BELOW",
    "LIBRARY_EXTENSIONS",
    "check_elements",
]
