"""Top-k cosine search over unit vectors: exact (matrix products, milliseconds a query over all of
QM9 on a CPU) at any size with the base install, or, where asked for (``exact_below``), a FAISS HNSW
index (inner product on unit vectors, kept beside the cached embeddings) from that size on.
``benchmarks/library_embedding.py`` times both.
"""

import os
from typing import Callable, Optional, Tuple

import numpy as np

from schnetpack_molspectra.data.files import write_whole

__all__ = ["VectorIndex", "EXACT_BELOW", "exact_top_k"]

#: the library size from which a FAISS index replaces exact search by default: None, exact at every size
EXACT_BELOW = None
#: scores computed at once in exact search (queries x library entries): bounds its memory (256 MB)
EXACT_BLOCK = 1 << 26


def exact_top_k(
    score: Callable[[slice], np.ndarray], n_queries: int, n_library: int, k: int
) -> Tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each (n_queries, k), best first: the top ``k`` of every row of the score matrix,
    computed ``score(rows)`` (a slice of the queries -> (rows, n_library)) a block of queries at a time, so
    that at most :data:`EXACT_BLOCK` scores are held at once."""
    k = min(k, n_library)
    step = max(1, EXACT_BLOCK // max(n_library, 1))
    parts = [_top_k(score(slice(i, min(i + step, n_queries))), k) for i in range(0, n_queries, step)]
    if not parts:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _top_k(scores: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, 1)
    return np.take_along_axis(scores, top, 1), top


class VectorIndex:
    """Cosine top-k over unit vectors: exact, or FAISS HNSW for libraries of ``exact_below`` entries
    or more (None: exact at every size; FAISS needs ``pip install faiss-cpu``).

    ``index_path``: where to keep the built FAISS index (loaded if present)."""

    def __init__(
        self,
        vectors: np.ndarray,
        exact_below: Optional[int] = EXACT_BELOW,
        index_path: Optional[str] = None,
        hnsw_m: int = 32,
        ef_search: int = 256,
    ):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.exact = exact_below is None or len(self.vectors) < exact_below
        self.index = None
        self.ef_search = ef_search
        if not self.exact:
            try:
                import faiss
            except ImportError as err:
                raise ImportError(
                    f"FAISS was asked for libraries of {exact_below} or more entries: pip install faiss-cpu "
                    "(or leave exact_below / --exact-below unset for exact search, at any size)"
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
                    write_whole(index_path, lambda partial: faiss.write_index(self.index, partial))

    @property
    def kind(self) -> str:
        return "exact" if self.exact else "faiss-hnsw"

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(scores, indices), each (n_queries, k), best first; cosine similarities."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.vectors))
        if self.exact:
            return exact_top_k(lambda rows: queries[rows] @ self.vectors.T, len(queries), len(self.vectors), k)
        self.index.hnsw.efSearch = max(self.ef_search, 2 * k)
        scores, idx = self.index.search(queries, k)
        return scores, idx
