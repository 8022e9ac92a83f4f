"""The one FAISS index factory: exact, IVF or HNSW inner-product search, for graphs and ranking.

Both the kNN item graphs (model/graph.py, on unit-norm features) and the rank stage's index of
the final item vectors (pipeline/rank.py) are built here. "exact" is a flat (brute-force) index;
`[rank] index = "flat"` is read as "exact".
"""

from __future__ import annotations

import numpy as np

INDEX_METHODS = ("exact", "ivf", "hnsw")
POINTS_PER_LIST = 39  # FAISS warns below this many training points per IVF list


def ivf_lists(n_vectors: int, nlist: int = 0) -> int:
    """IVF lists for `n_vectors`: `nlist` (0 = 4 sqrt(n)), at most n / 39 and at least 1."""
    wanted = nlist or int(4 * np.sqrt(n_vectors))
    return max(1, min(wanted, n_vectors // POINTS_PER_LIST))


def build_index(vectors: np.ndarray, method: str = "exact", *, nlist: int = 0, nprobe: int = 16,
                hnsw_m: int = 32, ef_search: int = 128, train_points: int | None = None,
                kmeans_iterations: int | None = None, seed: int = 0):
    """An inner-product index holding `vectors` (N, D) float32, rows numbered 0..N-1.

    IVF trains its coarse quantiser on a seeded sample of `train_points` rows (None: all rows,
    which FAISS itself subsamples), with `kmeans_iterations` (None: FAISS's default).
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n_vectors, dim = vectors.shape
    if method == "exact":
        index = faiss.IndexFlatIP(dim)
    elif method == "ivf":
        n_lists = ivf_lists(n_vectors, nlist)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_lists,
                                   faiss.METRIC_INNER_PRODUCT)
        if kmeans_iterations is not None:
            index.cp.niter = kmeans_iterations
        sample = vectors
        if train_points is not None and train_points < n_vectors:
            rows = np.random.default_rng(seed).choice(n_vectors, size=train_points, replace=False)
            sample = vectors[np.sort(rows)]
        index.train(sample)
        index.nprobe = min(nprobe, n_lists)
    elif method == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    else:
        raise ValueError(f"unknown index method {method!r}; expected one of {list(INDEX_METHODS)}")
    index.add(vectors)
    return index
