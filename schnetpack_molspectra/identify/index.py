"""Top-k cosine search over unit vectors: exact (one matrix product) below ``EXACT_BELOW`` library
entries, a FAISS HNSW index (inner product on unit vectors, kept beside the cached embeddings)
from there on.
"""

import os
from typing import Optional, Tuple

import numpy as np

__all__ = ["VectorIndex", "EXACT_BELOW"]

#: library sizes from which the FAISS index replaces exact search
EXACT_BELOW = 5000


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
