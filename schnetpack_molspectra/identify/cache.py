"""The library's 3D embeddings, computed once and cached next to it
(``.<library>.molspectra-<model hash>.npz``; in ``$MOLSPECTRA_CACHE`` when the library's folder is
not writable) and recomputed when the model file's SHA-256, the library's size or mtime, or the
model's elements change; a FAISS index built on the old embeddings is removed with them.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np
from ase import Atoms

from schnetpack_molspectra.data.default import cache_dir as default_cache
from schnetpack_molspectra.data.files import write_whole_file
from schnetpack_molspectra.identify.encode import check_elements, encode_structures
from schnetpack_molspectra.identify.library import Library, load_library
from schnetpack_molspectra.identify.model import EmbeddingModel

__all__ = ["LibraryEmbeddings", "library_embeddings"]


def _cache_path(library_path: str, sha256: str, cache_dir: Optional[str]) -> str:
    name = f".{os.path.basename(library_path)}.molspectra-{sha256[:16]}.npz"
    folder = cache_dir or os.path.dirname(os.path.abspath(library_path))
    if cache_dir is None and not os.access(folder, os.W_OK):
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
    enc: EmbeddingModel,
    library: Union[str, Library],
    cache: bool = True,
    cache_dir: Optional[str] = None,
    batch_size: Optional[int] = None,
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
        arrays = dict(
            vectors=vectors,
            names=np.array(lib.names, dtype=str),
            smiles=np.array(lib.smiles, dtype=str),
            meta=np.array(json.dumps(meta)),
        )
        write_whole_file(cache_file, lambda f: np.savez(f, **arrays))
    return LibraryEmbeddings(path, lib.names, lib.smiles, vectors, cache_file, False, lib.atoms)
