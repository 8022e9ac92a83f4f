"""MMRec's negative sampler: uniform over the items that occur in training, redrawn while positive."""

from __future__ import annotations

import numpy as np

MAX_REDRAWS = 1000


class NegativeSampler:
    """One negative per (user, positive) pair, never one of the user's training items."""

    def __init__(self, train: np.ndarray, n_items: int) -> None:
        self.n_items = n_items
        self.train_items = np.unique(train[:, 1])  # (I_train,) candidate negatives
        self.positive_keys = np.unique(train[:, 0] * n_items + train[:, 1])  # sorted
        users, counts = np.unique(train[:, 0], return_counts=True)
        full = users[counts >= len(self.train_items)]
        if len(full):
            raise ValueError(f"user_index {full[0]} has interacted with every training item: "
                             f"no negative item can be drawn for it")

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B,) int64 negatives for (B,) users, drawn with `rng`."""
        negatives = self.train_items[rng.integers(len(self.train_items), size=len(users))]
        for _ in range(MAX_REDRAWS):
            clash = np.flatnonzero(self._is_positive(users, negatives))
            if len(clash) == 0:
                return negatives
            negatives[clash] = self.train_items[rng.integers(len(self.train_items),
                                                             size=len(clash))]
        raise RuntimeError(f"negative sampling did not converge after {MAX_REDRAWS} redraws")

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        found = np.searchsorted(self.positive_keys, keys).clip(max=len(self.positive_keys) - 1)
        return self.positive_keys[found] == keys
