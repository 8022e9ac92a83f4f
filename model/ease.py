"""EASE (Steck, WWW 2019): a closed-form item-item model, its l2 chosen on VALID Recall@20.

SPEC-lirdrec.md section 10. Shapes: U users, I items. X (U, I) is the binary matrix of TRAINING
interactions, G = X^T X (I, I);
  P = (G + l2 I)^-1,   B = -P / diag(P) column-wise (B_ij = -P_ij / P_jj),   diag(B) = 0,
  scores = X B.
Column j of B is the ridge regression of item j's column of X on the other items' columns (the
zero diagonal forbids an item to explain itself). The inverse is computed in float64, once per
l2 of `ease_l2_grid`; the l2 with the best valid Recall@20 is kept (the first of equal ones), and
B is stored in float32. Test is never looked at here.

In the trainer's terms: no trainable parameters (evaluated once, as epoch 0); user vectors are
the rows of X (U, I), item vectors the rows of B^T (I, I), so a dot product is X B's entry.
Dense I x I matrices: catalogs past `ease_max_items` are refused before anything is computed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from model.config import SELECTION_METRIC
from model.metrics import evaluate

if TYPE_CHECKING:
    from model.config import TrainConfig
    from model.data import RecData

def interaction_matrix(n_users: int, n_items: int, pairs: np.ndarray) -> sp.csr_matrix:
    """The binary (U, I) matrix of (user, item) pairs."""
    ones = np.ones(len(pairs), dtype=np.float64)
    return sp.csr_matrix((ones, (pairs[:, 0], pairs[:, 1])), shape=(n_users, n_items))


def ease_weights(gram: torch.Tensor, l2: float) -> torch.Tensor:
    """B (I, I) from G = X^T X (I, I) and l2 > 0, in the dtype of `gram` (float64 wanted)."""
    regularised = gram.clone()
    regularised.diagonal().add_(l2)  # G + l2 I: symmetric positive definite
    precision = torch.cholesky_inverse(torch.linalg.cholesky(regularised))  # (I, I) P
    del regularised
    weights = precision.div_(-torch.diagonal(precision).clone())  # column j over -P_jj
    weights.fill_diagonal_(0.0)
    return weights


def check_item_limit(n_items: int, limit: int) -> None:
    """Refuse a catalog whose dense I x I matrices would not be "a few 10^4 items" small."""
    if n_items > limit:
        gigabytes = 32 * n_items**2 / 1e9  # G, G + l2 I, its factor; B in float32
        raise ValueError(
            f"train.ease_max_items: ease builds dense item x item matrices; this catalog has "
            f"{n_items} items, over the limit of {limit} (it would need about {gigabytes:.0f} GB "
            f"at peak); raise train.ease_max_items or choose another model")


class EASE(nn.Module):
    """EASE's scores X B as user rows X and item rows B^T, for the l2 chosen on valid."""

    uses_features: ClassVar[bool] = False
    scores_new_items: ClassVar[bool] = False
    data_parallel: ClassVar[bool] = True  # nothing to train: the processes share the evaluation

    @classmethod
    def check_fits(cls, config: TrainConfig, data: RecData) -> None:
        """Refuse a catalog past `ease_max_items` (a study calls this before any run)."""
        check_item_limit(data.n_items, config.ease_max_items)

    @classmethod
    def from_config(cls, config: TrainConfig, data: RecData, device: torch.device,
                    log: Callable[[str], None] = print) -> EASE:
        cls.check_fits(config, data)
        matrix = interaction_matrix(data.n_users, data.n_items, data.train)
        users = torch.as_tensor(matrix.toarray(), dtype=torch.float32, device=device)  # (U, I)
        gram = torch.as_tensor((matrix.T @ matrix).toarray(), device=device)  # (I, I) float64
        scores: list[dict[str, float]] = []
        best_weights, best_score, best_l2 = None, -1.0, None
        for l2 in config.ease_l2_grid:
            tick = time.perf_counter()
            weights = ease_weights(gram, l2).float()  # (I, I) B
            metrics, _ = evaluate(users, weights.T.contiguous(), data.valid, data.train,
                                  config.topk, user_chunk=config.eval_user_chunk,
                                  scoring=config.eval_scoring)
            score = metrics[SELECTION_METRIC]
            scores.append({"l2": l2, f"valid_{SELECTION_METRIC}": score})
            log(f"ease: l2 {l2:g}  valid R@20 {score:.4f}  ({time.perf_counter() - tick:.1f}s)")
            if score > best_score:  # strict: the first of equal scores is kept
                best_weights, best_score, best_l2 = weights, score, l2
            del weights
        log(f"ease: chosen l2 {best_l2:g} (valid R@20 {best_score:.4f})")
        model = cls(users, best_weights, l2=best_l2, grid_scores=scores)
        return model.to(device)

    def __init__(self, users: torch.Tensor, weights: torch.Tensor, *, l2: float,
                 grid_scores: list[dict[str, float]]) -> None:
        super().__init__()
        # not in state_dict: nothing is trained; the run keeps the vectors themselves
        self.register_buffer("users", users, persistent=False)  # (U, I) X
        self.register_buffer("item_rows", weights.T.contiguous(), persistent=False)  # (I, I) B^T
        self.l2, self.grid_scores = l2, grid_scores

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users, self.item_rows  # (U, I), (I, I): X[u] . B^T[i] = (X B)[u, i]

    def fitted(self) -> dict:
        """The chosen l2 and every candidate's valid Recall@20."""
        return {"l2": self.l2, "grid": self.grid_scores}
