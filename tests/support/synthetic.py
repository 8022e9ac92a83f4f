"""Seeded synthetic RecData with planted structure, for tests and speed benchmarks."""

from __future__ import annotations

import numpy as np

from model.data import RecData


def split_per_user(pairs: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MMRec's random 8:1:1 split per user (SPEC section 7): n_valid = n_test = max(1, n // 10)."""
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    rng = np.random.RandomState(seed)
    label = np.zeros(len(pairs), dtype=np.int64)
    users, starts, counts = np.unique(pairs[:, 0], return_index=True, return_counts=True)
    for start, n in zip(starts, counts, strict=True):
        held = max(1, n // 10)
        order = rng.permutation(n)
        label[start + order[n - 2 * held: n - held]] = 1
        label[start + order[n - held:]] = 2
    return pairs[label == 0], pairs[label == 1], pairs[label == 2]


def planted_data(n_users: int = 60, n_items: int = 40, *, dims: dict[str, int] | None = None,
                 n_clusters: int = 4, per_user: int = 10, noise: float = 0.3,
                 seed: int = 0) -> RecData:
    """Items fall into clusters that their features reveal; each user mostly picks one cluster."""
    dims = dims if dims is not None else {"image": 16, "text": 8}
    rng = np.random.default_rng(seed)
    cluster_of_item = np.arange(n_items) % n_clusters
    features = {}
    for name, dim in dims.items():
        centres = rng.normal(size=(n_clusters, dim))
        features[name] = (centres[cluster_of_item]
                          + noise * rng.normal(size=(n_items, dim))).astype(np.float32)
    pairs = []
    for user in range(n_users):
        cluster = user % n_clusters
        liked = np.flatnonzero(cluster_of_item == cluster)
        others = np.flatnonzero(cluster_of_item != cluster)
        n_liked = min(len(liked), per_user - 1)
        chosen = np.concatenate([rng.choice(liked, n_liked, replace=False),
                                 rng.choice(others, per_user - n_liked, replace=False)])
        pairs.append(np.stack([np.full(per_user, user), chosen], axis=1))
    train, valid, test = split_per_user(np.concatenate(pairs).astype(np.int64), seed)
    return RecData(n_users, n_items, train, valid, test, features)


def gaussian_features(n_items: int, dims: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """N(0, 1) float32 feature matrices (the speed benchmark's synthetic features)."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((n_items, dim), dtype=np.float32)
            for name, dim in dims.items()}
