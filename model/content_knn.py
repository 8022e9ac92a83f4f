"""Content kNN: what the item features carry before any training (SPEC-lirdrec.md section 10).

Shapes: U users, I items, modalities m with D_m features, f_{i,m} the L2-normalised features of
item i (an all-zero row stays zero: cosine 0 with every item). For a user u with training items
J_u and the resolved `mm_weights` w_m (equal by default):
  score(u, i) = sum_m w_m * mean_{j in J_u} cos(f_{i,m}, f_{j,m})
As dot-product vectors (sum_m D_m wide):
  item i = concat_m f_{i,m},   user u = concat_m w_m * mean_{j in J_u} f_{j,m}
A user with no training item gets the zero vector (scores 0 everywhere). Items with no
interactions are scored from their features like any other. Nothing is learnt (evaluated once,
as epoch 0). New items from `recommend --item-features` are not scored: a run keeps no item
encoder (`scores_new_items` is False; the vector would be the item's concatenated unit features,
but recommend.py's new-item path is LIRDRec's encoder).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from model.config import resolve_mm_weights
from model.graph import unit_rows

if TYPE_CHECKING:
    from model.config import TrainConfig
    from model.data import RecData


def user_means(n_users: int, n_items: int, pairs: np.ndarray) -> sp.csr_matrix:
    """(U, I) rows that average a user's training items: 1 / |J_u| on each of them."""
    counts = np.bincount(pairs[:, 0], minlength=n_users).astype(np.float64)
    values = 1.0 / counts[pairs[:, 0]]
    return sp.csr_matrix((values, (pairs[:, 0], pairs[:, 1])), shape=(n_users, n_items))


def content_vectors(features: dict[str, np.ndarray], weights: dict[str, float],
                    means: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(U, sum D_m) user and (I, sum D_m) item vectors, modalities in `weights`' order."""
    users, items = [], []
    for name, weight in weights.items():
        unit = unit_rows(features[name])  # (I, D_m)
        items.append(unit)
        users.append((weight * (means @ unit)).astype(np.float32))  # (U, D_m)
    return np.concatenate(users, axis=1), np.concatenate(items, axis=1)


class ContentKNN(nn.Module):
    """Mean feature cosine to the user's training items, fused over modalities by mm_weights."""

    uses_features: ClassVar[bool] = True
    scores_new_items: ClassVar[bool] = False
    data_parallel: ClassVar[bool] = True  # nothing to train: the processes share the evaluation

    @classmethod
    def from_config(cls, config: TrainConfig, data: RecData, device: torch.device,
                    log: Callable[[str], None] = print) -> ContentKNN:
        weights = resolve_mm_weights(config, data.modalities)
        means = user_means(data.n_users, data.n_items, data.train)
        users, items = content_vectors(data.features, weights, means)
        log("content_knn: modality weights " + ", ".join(f"{n} {w:g}" for n, w in weights.items()))
        return cls(torch.from_numpy(users), torch.from_numpy(items)).to(device)

    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("users", users, persistent=False)  # (U, sum D_m)
        self.register_buffer("items", items, persistent=False)  # (I, sum D_m)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users, self.items

    def fitted(self) -> dict:
        """Nothing is chosen from the data."""
        return {}
