"""Arrays computed once per library and model and cached next to the library: the library's 3D embeddings
(``.<library>.molspectra-<model hash>.npz``) and, for predict-then-match, the spectra a spectra model predicts
for it (``.<library>.spectra-<smoothing>-<model hash>.npz``); in ``$MOLSPECTRA_CACHE`` when the library's folder
is not writable. Recomputed when the model file's SHA-256, the library's size or mtime, or what else the arrays
depend on (the model's elements, the smoothing) change; a FAISS index built on old embeddings is removed with them.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import numpy as np
from ase import Atoms

from schnetpack_molspectra.data.default import cache_dir as default_cache
from schnetpack_molspectra.data.files import write_whole_file
from schnetpack_molspectra.identify.encode import check_elements, encode_structures
from schnetpack_molspectra.identify.library import Library, load_library
from schnetpack_molspectra.identify.model import EmbeddingModel

__all__ = ["LibraryEmbeddings", "library_embeddings", "CachedLibrary", "cached_library_arrays"]


def _cache_path(library_path: str, sha256: str, cache_dir: Optional[str], kind: str = "molspectra") -> str:
    name = f".{os.path.basename(library_path)}.{kind}-{sha256[:16]}.npz"
    folder = cache_dir or os.path.dirname(os.path.abspath(library_path))
    if cache_dir is None and not os.access(folder, os.W_OK):
        folder = default_cache()
        tag = hashlib.sha1(os.path.abspath(library_path).encode()).hexdigest()[:8]
        name = f"{os.path.basename(library_path)}-{tag}.{kind}-{sha256[:16]}.npz"
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


@dataclass
class CachedLibrary:
    """What :func:`cached_library_arrays` returns: the arrays, the library's names and SMILES, where they are
    cached (None: not cached) and whether they came from there (else ``atoms``, the structures, were read)."""

    path: str
    names: List[str]
    smiles: List[str]
    arrays: Dict[str, np.ndarray]
    cache_path: Optional[str] = None
    from_cache: bool = False
    atoms: Optional[List[Atoms]] = None


def cached_library_arrays(
    library: Union[str, Library],
    model_sha256: str,
    kind: str,
    compute: Callable[[Library], Dict[str, np.ndarray]],
    depends_on: Optional[Dict] = None,
    cache: bool = True,
    cache_dir: Optional[str] = None,
) -> CachedLibrary:
    """Arrays a model computes for every structure of a library (``compute(library) -> {name: (n, ...)}``),
    from the cache file of this ``kind`` beside the library when it was written for the same model file
    (``model_sha256``), the same library file (size, mtime) and the same ``depends_on`` (JSON-able), else
    computed, and written there unless ``cache`` is False. An unreadable cache file is recomputed."""
    path = library.path if isinstance(library, Library) else library
    if not os.path.exists(path):
        raise FileNotFoundError(f"library {path} does not exist")
    stat = os.stat(path)
    meta = {"model_sha256": model_sha256, "library": os.path.abspath(path), "size": stat.st_size}
    meta.update(mtime_ns=stat.st_mtime_ns, depends_on=depends_on or {})
    cache_file = _cache_path(path, model_sha256, cache_dir, kind) if cache else None
    if cache_file and os.path.isfile(cache_file):
        try:
            with np.load(cache_file, allow_pickle=False) as f:
                stored = json.loads(str(f["meta"]))
                if all(stored.get(k) == meta[k] for k in ("model_sha256", "size", "mtime_ns", "depends_on")):
                    arrays = {k[len("array_") :]: f[k] for k in f.files if k.startswith("array_")}
                    names, smiles = [str(s) for s in f["names"]], [str(s) for s in f["smiles"]]
                    return CachedLibrary(path, names, smiles, arrays, cache_file, True)
        except Exception:
            pass  # unreadable cache: recompute
    lib = library if isinstance(library, Library) else load_library(path)
    arrays = compute(lib)
    if cache_file:
        stored = {f"array_{k}": v for k, v in arrays.items()}
        stored.update(names=np.array(lib.names, dtype=str), smiles=np.array(lib.smiles, dtype=str))
        stored.update(meta=np.array(json.dumps(meta)))
        write_whole_file(cache_file, lambda f: np.savez(f, **stored))
    return CachedLibrary(path, lib.names, lib.smiles, arrays, cache_file, False, lib.atoms)


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
    enc: EmbeddingModel,
    library: Union[str, Library],
    cache: bool = True,
    cache_dir: Optional[str] = None,
    batch_size: Optional[int] = None,
    progress: bool = False,
) -> LibraryEmbeddings:
    """3D embeddings of a library, from the cache beside it when the model file (SHA-256) and
    the library file (size, mtime) are unchanged, else computed and cached."""

    def compute(lib: Library) -> Dict[str, np.ndarray]:
        check_elements(enc, lib.atoms, lib.names, lib.path)
        return {"vectors": encode_structures(enc, lib.atoms, batch_size, progress)}

    depends_on = {"elements": list(enc.elements)}
    got = cached_library_arrays(library, enc.sha256, "molspectra", compute, depends_on, cache, cache_dir)
    if got.cache_path and not got.from_cache:
        stale_index = got.cache_path[: -len(".npz")] + ".faiss"
        if os.path.exists(stale_index):  # built on the old library
            os.remove(stale_index)
    vectors = got.arrays["vectors"]
    return LibraryEmbeddings(got.path, got.names, got.smiles, vectors, got.cache_path, got.from_cache, got.atoms)
