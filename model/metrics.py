"""Full-ranking Recall/NDCG/Precision/MAP@K (MMRec protocol), scored in user chunks.

Protocol (SPEC-lirdrec.md section 7): every evaluated user is scored against all items (or, for
the cold-start protocol, against the given candidate items only); the user's TRAINING items are
masked; users with no held-out item are skipped; each metric is averaged over users.
Per user with n held-out items and binary hits h_1..h_K of the top K:
  Recall@K    = sum(h) / n
  Precision@K = sum(h) / K
  NDCG@K      = sum_r h_r / log2(r + 1)  /  sum_{r <= min(n, K)} 1 / log2(r + 1)
  MAP@K       = sum_r h_r * Precision@r  /  min(n, K)
`evaluate_splits_per_user` keeps these per-user values (for significance tests across runs);
`evaluate_splits` and `evaluate` report their means, so a mean is exactly np.mean of the values.

Large catalogs are ranked in (user chunk x item block) tiles: each block's top K is kept and the
blocks' tops merged, so a chunk of users is never a handful of rows against every item (a
(16 x 192) x (192 x 10^6) product reads the whole item matrix for 16 users, at a fraction of the
GEMM rate) and the score block stays SCORE_BLOCK floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.gemm import DEFAULT, GemmPlan, frozen_linear, plan_for

METRICS = ("recall", "ndcg", "precision", "map")
SCORE_BLOCK = 2**24  # floats per (users x items) score block when the chunk size is automatic
ITEM_BLOCK = 2**14  # items scored at once when there are more (automatic chunks: 1,024 users)
TOP_GROUP = 64  # columns per group when a wide block's top K is found through its groups


@dataclass(frozen=True)
class UserMetrics:
    """Every metric@k of each evaluated user (users with at least one held-out pair)."""

    users: np.ndarray  # (U,) int64 user indices, ascending
    values: dict[str, np.ndarray]  # "recall@20" -> (U,) float64, row u for users[u]

    def means(self) -> dict[str, float]:
        """The reported metrics: the mean over users of each metric@k ({} without users)."""
        return {metric: float(np.mean(column)) for metric, column in self.values.items()} \
            if len(self.users) else {}


def metrics_from_hits(hits: np.ndarray, n_held_out: np.ndarray,
                      ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per-user metric@k, each (U,), from (U, K_max) top-K hit flags and (U,) held-out counts."""
    hits = hits.astype(np.float64)
    n_held_out = n_held_out.astype(np.float64)
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)  # (K_max,)
    cum_hits = np.cumsum(hits, axis=1)  # (U, K_max)
    dcg = np.cumsum(hits / np.log2(ranks + 1.0), axis=1)  # (U, K_max)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(ranks + 1.0))])  # (K_max+1,)
    precision_sum = np.cumsum(hits * cum_hits / ranks, axis=1)  # (U, K_max)
    values = {}
    for k in ks:
        column = min(k, hits.shape[1]) - 1  # fewer candidates than K: the list is just shorter
        relevant_in_k = np.minimum(n_held_out, k)
        values[f"recall@{k}"] = cum_hits[:, column] / n_held_out
        values[f"ndcg@{k}"] = dcg[:, column] / ideal[relevant_in_k.astype(np.int64)]
        values[f"precision@{k}"] = cum_hits[:, column] / k
        values[f"map@{k}"] = precision_sum[:, column] / relevant_in_k
    return values


def evaluate(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    held_out: np.ndarray,
    train: np.ndarray,
    ks: tuple[int, ...],
    *,
    user_chunk: int = 0,
    candidate_items: np.ndarray | None = None,
    item_block: int = 0,
) -> tuple[dict[str, float], int]:
    """Mean metrics over users with held-out pairs, and how many users that is.

    user_vectors (U, D) and item_vectors (I, D) live on the scoring device; `held_out` and `train`
    are (N, 2) [user_index, item_index]; `candidate_items` restricts the ranking to those items
    (held-out pairs on other items are dropped first).
    """
    return evaluate_splits(user_vectors, item_vectors, {"held_out": held_out}, train, ks,
                           user_chunk=user_chunk, candidate_items=candidate_items,
                           item_block=item_block)["held_out"]


def evaluate_splits(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    held_outs: dict[str, np.ndarray],
    train: np.ndarray,
    ks: tuple[int, ...],
    *,
    user_chunk: int = 0,
    candidate_items: np.ndarray | None = None,
    item_block: int = 0,
) -> dict[str, tuple[dict[str, float], int]]:
    """`evaluate` for several held-out sets at once (valid and test), ranked once: the means and
    user counts of `evaluate_splits_per_user`."""
    scored = evaluate_splits_per_user(user_vectors, item_vectors, held_outs, train, ks,
                                      user_chunk=user_chunk, candidate_items=candidate_items,
                                      item_block=item_block)
    return {name: (per_user.means(), len(per_user.users)) for name, per_user in scored.items()}


def evaluate_splits_per_user(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    held_outs: dict[str, np.ndarray],
    train: np.ndarray,
    ks: tuple[int, ...],
    *,
    user_chunk: int = 0,
    candidate_items: np.ndarray | None = None,
    item_block: int = 0,
) -> dict[str, UserMetrics]:
    """Each held-out set's per-user metrics. A user's ranking (all candidates, training items
    masked) does not depend on the held-out set, so each user is scored and ranked once, and
    every set counts its hits in that one top-K. `item_block` candidates are scored at once
    (0: ITEM_BLOCK); `user_chunk` users (0: as many as fit SCORE_BLOCK floats of scores)."""
    n_items = item_vectors.shape[0]
    device = item_vectors.device
    if candidate_items is not None:
        is_candidate = np.zeros(n_items, dtype=bool)
        is_candidate[candidate_items] = True
        held_outs = {name: pairs[is_candidate[pairs[:, 1]]] for name, pairs in held_outs.items()}
        train = train[is_candidate[train[:, 1]]]
        column_of_item = np.full(n_items, -1, dtype=np.int64)
        column_of_item[candidate_items] = np.arange(len(candidate_items))
        candidate_vectors = item_vectors[torch.as_tensor(candidate_items, device=device)]
    else:
        column_of_item = np.arange(n_items, dtype=np.int64)
        candidate_vectors = item_vectors
    n_columns = candidate_vectors.shape[0]
    names = list(held_outs)
    held_outs = {name: pairs for name, pairs in held_outs.items() if len(pairs)}
    if not held_outs or n_columns == 0:
        return {name: _no_users(ks) for name in names}

    users = np.unique(np.concatenate([pairs[:, 0] for pairs in held_outs.values()]))  # (U_eval,)
    n_held_out, held_keys = {}, {}
    for name, pairs in held_outs.items():  # per set: (U_eval,) held-out counts, sorted keys
        set_users, counts = np.unique(pairs[:, 0], return_counts=True)
        n_held_out[name] = np.zeros(len(users), dtype=np.int64)
        n_held_out[name][np.searchsorted(users, set_users)] = counts
        held_keys[name] = torch.as_tensor(np.sort(pairs[:, 0] * n_items + pairs[:, 1]),
                                          device=device)
    train = train[np.argsort(train[:, 0], kind="stable")]
    train_start = np.searchsorted(train[:, 0], users, side="left")
    train_end = np.searchsorted(train[:, 0], users, side="right")
    k_max = min(max(ks), n_columns)
    block = min(n_columns, item_block or ITEM_BLOCK)
    chunk = user_chunk or max(1, SCORE_BLOCK // block)
    candidates = torch.as_tensor(candidate_items if candidate_items is not None
                                 else np.arange(n_items), device=device)

    # the scores on the faster GEMM library (model/gemm.py), measured on a tile's shape once per
    # process: on a 2-core AMD EPYC (another job sharing the CPU) oneDNN scored (1024 x 192) x
    # (192 x 16384) tiles at 205-225 GFLOP/s against MKL's 107-121 (the two round differently:
    # only exact near-ties can move; the choice is not recorded in the run, unlike training's)
    plan = plan_for(user_vectors[:min(chunk, len(users))], block, backward=False)
    pieces: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in held_outs}
    for start in range(0, len(users), chunk):
        chunk_users = users[start:start + chunk]  # (C,)
        user_index = torch.as_tensor(chunk_users, device=device)
        rows, cols = _train_mask(train, train_start[start:start + chunk],
                                 train_end[start:start + chunk], column_of_item)
        top_columns = _top_columns(user_vectors[user_index], candidate_vectors, rows, cols,
                                   k_max, block, plan)  # (C, k_max)
        top_keys = user_index[:, None] * n_items + candidates[top_columns]  # (C, k_max)
        for name, keys in held_keys.items():
            counts = n_held_out[name][start:start + chunk]
            found = torch.searchsorted(keys, top_keys).clamp_(max=len(keys) - 1)
            hits = (keys[found] == top_keys).cpu().numpy()[counts > 0]  # (C_set, k_max) bool
            pieces[name].append(metrics_from_hits(hits, counts[counts > 0], ks))
    results = {}
    for name in names:
        if name not in held_outs:
            results[name] = _no_users(ks)
            continue
        results[name] = UserMetrics(
            users=users[n_held_out[name] > 0].astype(np.int64),
            values={metric: np.concatenate([piece[metric] for piece in pieces[name]])
                    for metric in pieces[name][0]})
    return results


def _top_columns(chunk_vectors: torch.Tensor, candidate_vectors: torch.Tensor,
                 rows: np.ndarray, cols: np.ndarray, k: int, block: int,
                 plan: GemmPlan = DEFAULT) -> torch.Tensor:
    """(C, k) columns of each chunk user's k best-scored candidates, the masked (row, col) pairs
    excluded: every `block` candidates scored and cut to their top k, the cuts merged."""
    device = chunk_vectors.device
    order = np.argsort(cols, kind="stable")  # the mask by column: each block's pairs a slice
    rows, cols = rows[order], cols[order]
    n_columns = candidate_vectors.shape[0]
    edges = np.searchsorted(cols, np.arange(0, n_columns + block, block))
    best_scores, best_columns = None, None
    for index, first in enumerate(range(0, n_columns, block)):
        scores = frozen_linear(chunk_vectors, candidate_vectors[first:first + block], plan)  # (C, B)
        masked = slice(edges[index], edges[index + 1])
        scores[torch.as_tensor(rows[masked], device=device),
               torch.as_tensor(cols[masked] - first, device=device)] = -torch.inf
        top_scores, top_columns = _row_top(scores, min(k, scores.shape[1]))  # (C, <= k) each
        if best_scores is None:  # one block (most catalogs): its top is the ranking
            best_scores, best_columns = top_scores, top_columns
            continue
        pooled = torch.cat([best_scores, top_scores], dim=1)  # (C, <= 2k)
        merged = torch.topk(pooled, min(k, pooled.shape[1]), dim=1)
        best_columns = torch.cat([best_columns, top_columns + first], dim=1).gather(
            1, merged.indices)
        best_scores = merged.values
    return best_columns


def _row_top(scores: torch.Tensor, k: int, group: int = TOP_GROUP
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest scores and their columns, (C, k) each, as torch.topk gives them (up to
    the order of ties). Wide rows go through their groups of `group` columns: the k groups with
    the largest maxima hold every one of the row's k largest scores (a group without one has
    its maximum at or below the k-th), so topk runs on one max per group and then on k groups'
    columns: 1.7-2.1x faster than topk on a whole (1024 x 16384) block on a 2-core AMD EPYC."""
    n_rows, width = scores.shape
    if width % group or width < 4 * k * group:
        top = torch.topk(scores, k, dim=1)
        return top.values, top.indices
    groups = scores.view(n_rows, width // group, group)
    best_groups = torch.topk(groups.amax(2), k, dim=1).indices  # (C, k)
    columns = (best_groups.unsqueeze(2) * group
               + torch.arange(group, device=scores.device)).reshape(n_rows, k * group)
    top = torch.topk(scores.gather(1, columns), k, dim=1)  # over the k groups' columns
    return top.values, columns.gather(1, top.indices)


def _no_users(ks: tuple[int, ...]) -> UserMetrics:
    return UserMetrics(np.zeros(0, dtype=np.int64),
                       {f"{metric}@{k}": np.zeros(0) for k in ks for metric in METRICS})


def _train_mask(train: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                column_of_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row in chunk, score column) of every training pair of the chunk's users."""
    counts = ends - starts
    rows = np.repeat(np.arange(len(starts)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    items = train[np.repeat(starts, counts) + offsets, 1]
    cols = column_of_item[items]
    keep = cols >= 0
    return rows[keep], cols[keep]
