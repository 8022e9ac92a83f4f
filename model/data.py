"""RecData: the interaction splits and per-modality item features as index arrays, validated once.

The pipeline maps string ids to dense indices; the model sees only `user_index` / `item_index`.

Handling of awkward inputs (each checked in tests/test_model_data.py):
- NaN/inf in a feature matrix, a feature matrix whose row count differs from `n_items`, index
  out of range, duplicate (user, item) pairs inside one split, an empty train or valid split:
  `ValueError` naming the split or modality (and the first bad row). Valid must be non-empty
  because early stopping selects on valid Recall@20.
- Zero-norm feature rows are kept. Their cosine similarity to every item is 0, so in the kNN
  item graph they rank themselves first (ties go to the item itself) and then the lowest
  indices; `zero_norm_rows` counts them so the trainer can report them.
- Users with no training interaction are kept: they have no graph edges and no BPR samples, so
  their vectors stay near initialisation; they are still evaluated (nothing to mask) and
  counted in `users_without_train`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

SPLITS = ("train", "valid", "test")
_CHECK_ROWS = 65536


@dataclass(frozen=True)
class RecData:
    """Interactions as (N, 2) int64 [user_index, item_index] arrays and item features by modality."""

    n_users: int
    n_items: int
    train: np.ndarray  # (N_train, 2) int64
    valid: np.ndarray  # (N_valid, 2) int64
    test: np.ndarray  # (N_test, 2) int64
    features: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (n_items, D_m) f32

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 1:
            raise ValueError(f"RecData: n_users and n_items must be >= 1, "
                             f"got {self.n_users} and {self.n_items}")
        for split in SPLITS:
            pairs = np.asarray(getattr(self, split))
            if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu":
                raise ValueError(f"RecData.{split}: expected an (N, 2) integer array "
                                 f"[user_index, item_index], got shape {pairs.shape} {pairs.dtype}")
            pairs = np.ascontiguousarray(pairs, dtype=np.int64)
            _check_range(split, "user", pairs[:, 0], self.n_users)
            _check_range(split, "item", pairs[:, 1], self.n_items)
            keys = pairs[:, 0] * self.n_items + pairs[:, 1]
            n_duplicates = len(keys) - len(np.unique(keys))
            if n_duplicates:
                raise ValueError(f"RecData.{split}: {n_duplicates} duplicate (user, item) pairs; "
                                 f"deduplicate interactions before training")
            object.__setattr__(self, split, pairs)
        if len(self.train) == 0:
            raise ValueError("RecData.train: no training interactions")
        if len(self.valid) == 0:
            raise ValueError("RecData.valid: empty valid split; early stopping and model "
                             "selection need valid interactions (SPEC section 6)")
        features = {}
        for name, matrix in self.features.items():
            features[name] = _checked_features(name, matrix, self.n_items)
        object.__setattr__(self, "features", features)

    @property
    def modalities(self) -> list[str]:
        """Modality names in a fixed (sorted) order: the order of the model's streams."""
        return sorted(self.features)

    @cached_property
    def cold_items(self) -> np.ndarray:
        """Items with no train and no valid interaction that occur in test (sorted item indices)."""
        seen = np.zeros(self.n_items, dtype=bool)
        seen[self.train[:, 1]] = True
        seen[self.valid[:, 1]] = True
        in_test = np.zeros(self.n_items, dtype=bool)
        in_test[self.test[:, 1]] = True
        return np.flatnonzero(in_test & ~seen)

    @cached_property
    def users_without_train(self) -> int:
        """How many users occur only in valid/test (no graph edges, no BPR samples)."""
        has_train = np.zeros(self.n_users, dtype=bool)
        has_train[self.train[:, 0]] = True
        users = np.union1d(self.valid[:, 0], self.test[:, 0])
        return int((~has_train[users]).sum())

    @cached_property
    def zero_norm_rows(self) -> dict[str, int]:
        """Per modality, how many item rows are all zeros (kept; see the module docstring)."""
        return {name: int((~matrix.any(axis=1)).sum()) for name, matrix in self.features.items()}

    def fingerprint(self) -> str:
        """A hash of the sizes, the three splits and every feature matrix (name, shape, bytes)."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{self.n_users},{self.n_items}".encode())
        for split in SPLITS:
            digest.update(split.encode())
            digest.update(getattr(self, split).tobytes())
        for name in self.modalities:
            matrix = self.features[name]
            digest.update(f"{name}:{matrix.shape}".encode())
            digest.update(memoryview(matrix).cast("B"))
        return digest.hexdigest()


def hold_out_items(data: RecData, share: float, seed: int) -> RecData:
    """Move every interaction of a random `share` of the items into test (a cold-start split)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"hold_out_items: share must be in [0, 1), got {share}")
    rng = np.random.RandomState(seed)
    cold = rng.permutation(data.n_items)[: int(round(share * data.n_items))]
    is_cold = np.zeros(data.n_items, dtype=bool)
    is_cold[cold] = True
    moved = [pairs[is_cold[pairs[:, 1]]] for pairs in (data.train, data.valid)]
    test = np.concatenate([data.test, *moved])
    test = test[np.lexsort((test[:, 1], test[:, 0]))]
    return replace(data, train=data.train[~is_cold[data.train[:, 1]]],
                   valid=data.valid[~is_cold[data.valid[:, 1]]], test=test)


def _check_range(split: str, what: str, index: np.ndarray, size: int) -> None:
    bad = np.flatnonzero((index < 0) | (index >= size))
    if len(bad):
        raise ValueError(f"RecData.{split}: row {bad[0]} has {what}_index {index[bad[0]]} outside "
                         f"[0, {size}) ({len(bad)} such rows)")


def _checked_features(name: str, matrix: np.ndarray, n_items: int) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] < 1:
        raise ValueError(f"RecData.features[{name!r}]: expected an (n_items, D) matrix, "
                         f"got shape {matrix.shape}")
    if matrix.shape[0] != n_items:
        raise ValueError(f"RecData.features[{name!r}]: {matrix.shape[0]} rows but the catalog "
                         f"has n_items={n_items} (row i must be item index i)")
    if matrix.dtype != np.float32:
        if matrix.dtype.kind != "f":
            raise ValueError(f"RecData.features[{name!r}]: expected floats, got {matrix.dtype}")
        matrix = matrix.astype(np.float32)
    for start in range(0, n_items, _CHECK_ROWS):  # in blocks: a full bool mask can be GBs
        finite_rows = np.isfinite(matrix[start:start + _CHECK_ROWS]).all(axis=1)
        if not finite_rows.all():
            bad = np.flatnonzero(~finite_rows)
            raise ValueError(f"RecData.features[{name!r}]: NaN or inf in item row "
                             f"{start + bad[0]}")
    return np.ascontiguousarray(matrix)
