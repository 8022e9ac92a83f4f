"""ID-only baselines as MMRec runs them: most-popular, BPR-MF and LightGCN.

BPR-MF and LightGCN follow MMRec's models (the published Baby numbers come from them): Xavier
initialisation (normal for BPR, uniform for LightGCN), BPR loss plus reg_weight * EmbLoss, where
EmbLoss = (||u||_F + ||i+||_F + ||i-||_F) / batch on the batch's EGO embeddings (not squared);
LightGCN averages its layers (E_0..E_L MEAN), unlike LIRDRec's sum.
Neither trains data-parallel: a norm of the whole batch's rows (||.||_F, not squared) is no sum
of the processes' slices, so no per-process weighting gives the single-process gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from model.graph import CsrOperator, user_item_adjacency
from model.lirdrec import bpr_loss

if TYPE_CHECKING:
    from model.config import TrainConfig
    from model.data import RecData


def emb_loss(*rows: torch.Tensor) -> torch.Tensor:
    """MMRec's EmbLoss: sum of the Frobenius norms divided by the batch size."""
    return sum(torch.linalg.vector_norm(r) for r in rows) / rows[-1].shape[0]


class BPRMF(nn.Module):
    """Matrix factorisation: one free d-vector per user and per item."""

    uses_features: ClassVar[bool] = False
    scores_new_items: ClassVar[bool] = False
    data_parallel: ClassVar[bool] = False  # EmbLoss: unsquared norms of the batch's rows

    @classmethod
    def from_config(cls, config: TrainConfig, data: RecData, device: torch.device,
                    log: Callable[[str], None] = print) -> BPRMF:
        return cls(data.n_users, data.n_items, embedding_size=config.embedding_size,
                   reg_weight=config.reg_weight).to(device)

    def __init__(self, n_users: int, n_items: int, *, embedding_size: int,
                 reg_weight: float) -> None:
        super().__init__()
        self.user_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, embedding_size)))
        self.item_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_items, embedding_size)))
        self.reg_weight = reg_weight

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding, self.item_embedding  # (U, d), (I, d)

    def start_epoch(self, epoch: int) -> None:
        """No per-epoch schedule."""

    def fitted(self) -> dict:
        """Nothing is chosen while building."""
        return {}

    def batch_loss(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                   users: torch.Tensor, positives: torch.Tensor,
                   negatives: torch.Tensor) -> torch.Tensor:
        user_rows = user_vectors[users]
        positive_rows, negative_rows = item_vectors[positives], item_vectors[negatives]
        return bpr_loss(user_rows, positive_rows, negative_rows) + self.reg_weight * emb_loss(
            user_rows, positive_rows, negative_rows)


class LightGCN(nn.Module):
    """LightGCN (He et al., SIGIR 2020): free embeddings propagated, layers averaged."""

    uses_features: ClassVar[bool] = False
    scores_new_items: ClassVar[bool] = False
    data_parallel: ClassVar[bool] = False  # EmbLoss: unsquared norms of the batch's rows

    @classmethod
    def from_config(cls, config: TrainConfig, data: RecData, device: torch.device,
                    log: Callable[[str], None] = print) -> LightGCN:
        adjacency = user_item_adjacency(data.n_users, data.n_items, data.train)
        return cls(data.n_users, data.n_items, adjacency, embedding_size=config.embedding_size,
                   n_layers=config.n_ui_layers, reg_weight=config.reg_weight).to(device)

    def __init__(self, n_users: int, n_items: int, adjacency: torch.Tensor, *,
                 embedding_size: int, n_layers: int, reg_weight: float) -> None:
        super().__init__()
        self.n_users, self.n_layers, self.reg_weight = n_users, n_layers, reg_weight
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, embedding_size)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, embedding_size)))
        self.adjacency = CsrOperator(adjacency)  # (U+I, U+I), symmetric

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        layer = torch.cat([self.user_embedding, self.item_embedding])  # (U+I, d)
        total = layer
        for _ in range(self.n_layers):
            layer = self.adjacency(layer)
            total = total + layer
        mean = total / (self.n_layers + 1)  # (U+I, d)
        return mean[: self.n_users], mean[self.n_users:]

    def start_epoch(self, epoch: int) -> None:
        """No per-epoch schedule."""

    def fitted(self) -> dict:
        """Nothing is chosen while building."""
        return {}

    def batch_loss(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                   users: torch.Tensor, positives: torch.Tensor,
                   negatives: torch.Tensor) -> torch.Tensor:
        ranking = bpr_loss(user_vectors[users], item_vectors[positives], item_vectors[negatives])
        ego = emb_loss(self.user_embedding[users], self.item_embedding[positives],
                       self.item_embedding[negatives])
        return ranking + self.reg_weight * ego


class Popularity(nn.Module):
    """Most-popular: every user scores an item by its training interaction count."""

    uses_features: ClassVar[bool] = False
    scores_new_items: ClassVar[bool] = False
    data_parallel: ClassVar[bool] = True  # nothing to train: the processes share the evaluation

    @classmethod
    def from_config(cls, config: TrainConfig, data: RecData, device: torch.device,
                    log: Callable[[str], None] = print) -> Popularity:
        return cls(data.n_users, data.n_items, data.train).to(device)

    def __init__(self, n_users: int, n_items: int, train: np.ndarray) -> None:
        super().__init__()
        counts = np.bincount(train[:, 1], minlength=n_items).astype(np.float32)
        self.register_buffer("item_counts", torch.as_tensor(counts).unsqueeze(1))  # (I, 1)
        self.register_buffer("user_ones", torch.ones(n_users, 1))  # (U, 1)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_ones, self.item_counts

    def fitted(self) -> dict:
        """Nothing is chosen while building."""
        return {}
