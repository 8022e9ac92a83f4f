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

Large catalogs are ranked in (user chunk x item block) tiles, so a chunk of users is never a
handful of rows against every item (a (16 x 192) x (192 x 10^6) product reads the whole item
matrix for 16 users, at a fraction of the GEMM rate) and a tile stays SCORE_BLOCK scores. The
first block's top K sets each user's floor; a later block gives up only its scores above the
floor (found through group maxima, without sorting the block), and the kept candidates' K-th
best raises the floor. Where the CPU runs bfloat16 natively and a tile measures BF16_SPEEDUP
times faster in it (AMX: ~5x), the tiles are scored in bf16 and the floor is lowered by twice the
bound on a bf16 score's error (bf16_score_error), so the kept candidates hold every item of the
float32 top K; float32 re-scores them and ranks. The result is the float32 ranking (ties and
float32 rounding aside), at bf16's speed: see _Bf16Scoring for why nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from model.gemm import DEFAULT, GemmPlan, best_seconds, frozen_linear, plan_for

METRICS = ("recall", "ndcg", "precision", "map")
SCORE_BLOCK = 2**23  # scores per (users x items) tile when the chunk size is automatic
ITEM_BLOCK = 2**14  # items scored at once when there are more (automatic chunks: 512 users)
TOP_GROUP = 64  # columns per group when a wide block's top K is found through its groups


@dataclass(frozen=True)
class ScoringPlan:
    """How a chunk's scores are computed: the float32 library (model/gemm.py), and whether a
    bfloat16 product picks the candidates that float32 then ranks (`bf16`; see _Bf16Scoring)."""

    gemm: GemmPlan = DEFAULT
    bf16: bool = False
    reason: str = ""


_SCORING: dict[tuple, ScoringPlan] = {}  # per process: (chunk, D, block, threads) -> plan
_CROWDED: list[bool] = []  # per process: an evaluation gave up bf16 (logged the first time)


def scoring_plan(chunk_vectors: torch.Tensor, block_vectors: torch.Tensor, several_blocks: bool,
                 log: Callable[[str], None] | None = None, scoring: str = "auto") -> ScoringPlan:
    """The plan for scoring chunks like `chunk_vectors` (C, D) against blocks like
    `block_vectors` (B, D), measured once per process and shape. bfloat16 only for float32 CPU
    vectors ranked in several blocks, where the probe of model/dtype.py finds bf16 native, a
    (C x D) x (D x B) tile scores at least BF16_SPEEDUP times faster than in float32, and every
    score of that tile is within bf16_score_error of its float32 value (a library that
    accumulated in bf16 would not be). `scoring` "float32" (TrainConfig.eval_scoring) measures
    nothing and scores in float32."""
    gemm = plan_for(chunk_vectors, len(block_vectors), backward=False)
    if scoring == "float32" or not several_blocks or chunk_vectors.device.type != "cpu" \
            or chunk_vectors.dtype != torch.float32:
        return ScoringPlan(gemm)
    key = (*chunk_vectors.shape, len(block_vectors), torch.get_num_threads())
    if key not in _SCORING:
        _SCORING[key] = _measured_scoring(chunk_vectors, block_vectors, gemm)
        if log is not None:
            log(f"evaluation scoring ({key[0]} x {key[1]}) x ({key[1]} x {key[2]}) tiles: "
                f"{'bfloat16 candidates re-scored in float32' if _SCORING[key].bf16 else 'float32'}"
                f" ({_SCORING[key].reason})")
    return _SCORING[key]


def bf16_score_error(dim: int) -> float:
    """The most a score u.v computed from bf16-rounded u and v (float32 accumulation, a bf16
    result) can differ from u.v computed in float32, as a multiple of |u| |v| (D = dim):
    each input rounds by at most 2^-8 (8 significant bits), so the exact products sum to
    within (2^-7 + 2^-16) sum|u_i v_i|; float32 sums of D terms add gamma_D = D 2^-24 / (1 -
    D 2^-24) of sum|u_i v_i| each, in the bf16 product and in the float32 one; the bf16 result
    rounds by 2^-8 of its value; and sum|u_i v_i| <= |u| |v|. One percent on top covers the
    float32 rounding of the norms the bound is multiplied by."""
    unit = 2.0**-8
    gamma = dim * 2.0**-24 / (1.0 - dim * 2.0**-24)
    inputs = 2 * unit + unit**2
    accumulated = gamma * (1 + unit) ** 2
    result = unit * (1 + inputs + accumulated)
    return 1.01 * (inputs + accumulated + result + gamma)


@dataclass(frozen=True)
class _Bf16Scoring:
    """The candidates in bfloat16, for chunks scored in bf16 and re-scored in float32.

    Why the float32 top k survives: let eps bound |bf16 score - float32 score| for a user
    (bf16_score_error(D) |u| max_j |v_j|), t the k-th best float32 score and T the k-th best
    bf16 score over all items. The k items of the bf16 top k have float32 scores >= T - eps, so
    t >= T - eps; an item of the float32 top k has a bf16 score >= t - eps >= T - 2 eps. The
    running k-th best bf16 score is never above T, so a floor of (running k-th) - margin, with
    margin > 2 eps, never drops such an item."""

    vectors: torch.Tensor  # (I, D) bfloat16
    max_norm: float  # the largest |v_j|, float32

    @classmethod
    def of(cls, candidate_vectors: torch.Tensor) -> _Bf16Scoring:
        return cls(candidate_vectors.bfloat16(),
                   float(torch.linalg.vector_norm(candidate_vectors, dim=1).max()))

    def margin(self, chunk_vectors: torch.Tensor) -> torch.Tensor:
        """(C,) each user's floor below its running k-th best bf16 score: 2 eps, plus 1%."""
        eps = bf16_score_error(chunk_vectors.shape[1]) * self.max_norm \
            * torch.linalg.vector_norm(chunk_vectors, dim=1)
        return 2.02 * eps


BF16_SPEEDUP = 1.5  # bf16 tiles must score this much faster than float32 ones to be used
# candidates a user may keep in bf16: above, the rest of the evaluation is ranked in float32. On
# 512 users x 2^19 random items (Intel Xeon, AMX, K 20), bf16 ranked in 0.32 s keeping <= 199 a
# user, in 0.68 s keeping <= 796, float32 in 0.56 s; at 10^6 random items and K 50, 512 users
# kept <= 364 (so not less than this); trained Baby vectors kept <= 147 in 7 blocks (K 20)
BF16_KEPT_MAX = 1024


def _measured_scoring(chunk_vectors: torch.Tensor, block_vectors: torch.Tensor,
                      gemm: GemmPlan) -> ScoringPlan:
    from model.dtype import NATIVE_BF16_MIN_RATIO, device_rates

    rates = device_rates(chunk_vectors.device)  # milliseconds: emulated bf16 is not timed
    if rates.bf16_ratio < NATIVE_BF16_MIN_RATIO:
        return ScoringPlan(gemm, False, f"bf16 emulated: x{rates.bf16_ratio:.2g} of float32")
    chunk_bf16, block_bf16 = chunk_vectors.bfloat16(), block_vectors.bfloat16()
    calls = {"float32": lambda: frozen_linear(chunk_vectors, block_vectors, gemm),
             "bfloat16": lambda: chunk_bf16 @ block_bf16.T}
    best = best_seconds(calls)
    speedup = best["float32"] / max(best["bfloat16"], 1e-9)
    error = _worst_bf16_error(chunk_vectors, block_vectors, calls["float32"](),
                              calls["bfloat16"]())
    reason = (f"bf16 tile x{speedup:.2f} the float32 one's speed; worst score error "
              f"{error:.3g} of its bound")
    return ScoringPlan(gemm, speedup >= BF16_SPEEDUP and error <= 1.0, reason)


def _worst_bf16_error(chunk_vectors: torch.Tensor, block_vectors: torch.Tensor,
                      float32_scores: torch.Tensor, bf16_scores: torch.Tensor) -> float:
    """The largest |bf16 - float32| score difference of a tile, as a share of its bound."""
    bound = bf16_score_error(chunk_vectors.shape[1]) * torch.outer(
        torch.linalg.vector_norm(chunk_vectors, dim=1),
        torch.linalg.vector_norm(block_vectors, dim=1))
    error = (bf16_scores.float() - float32_scores).abs()
    return float((error / bound.clamp(min=torch.finfo(torch.float32).tiny)).max())


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
    log: Callable[[str], None] | None = None,
    scoring: str = "auto",
) -> tuple[dict[str, float], int]:
    """Mean metrics over users with held-out pairs, and how many users that is.

    user_vectors (U, D) and item_vectors (I, D) live on the scoring device; `held_out` and `train`
    are (N, 2) [user_index, item_index]; `candidate_items` restricts the ranking to those items
    (held-out pairs on other items are dropped first).
    """
    return evaluate_splits(user_vectors, item_vectors, {"held_out": held_out}, train, ks,
                           user_chunk=user_chunk, candidate_items=candidate_items,
                           item_block=item_block, log=log, scoring=scoring)["held_out"]


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
    log: Callable[[str], None] | None = None,
    scoring: str = "auto",
) -> dict[str, tuple[dict[str, float], int]]:
    """`evaluate` for several held-out sets at once (valid and test), ranked once: the means and
    user counts of `evaluate_splits_per_user`."""
    scored = evaluate_splits_per_user(user_vectors, item_vectors, held_outs, train, ks,
                                      user_chunk=user_chunk, candidate_items=candidate_items,
                                      item_block=item_block, log=log, scoring=scoring)
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
    log: Callable[[str], None] | None = None,
    scoring: str = "auto",
) -> dict[str, UserMetrics]:
    """Each held-out set's per-user metrics. A user's ranking (all candidates, training items
    masked) does not depend on the held-out set, so each user is scored and ranked once, and
    every set counts its hits in that one top-K. `item_block` candidates are scored at once
    (0: ITEM_BLOCK); `user_chunk` users (0: as many as fit SCORE_BLOCK scores). `scoring` "auto"
    lets scoring_plan pick bf16 candidates re-scored in float32, "float32" does not; `log`
    gets the plan it measured."""
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
    candidates = torch.cat([candidates, candidates.new_tensor([-1])])  # the column that pads

    # the scores on the faster GEMM library (model/gemm.py), measured on a tile's shape once per
    # process: on a 2-core AMD EPYC (another job sharing the CPU) oneDNN scored (1024 x 192) x
    # (192 x 16384) tiles at 205-225 GFLOP/s against MKL's 107-121 (the two round differently:
    # only exact near-ties can move; the choice is not recorded in the run, unlike training's)
    plan = scoring_plan(user_vectors[torch.as_tensor(users[:chunk], device=device)],
                        candidate_vectors[:block],
                        n_columns > block, log, scoring)
    bf16 = _Bf16Scoring.of(candidate_vectors) if plan.bf16 else None
    pieces: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in held_outs}
    for start in range(0, len(users), chunk):
        chunk_users = users[start:start + chunk]  # (C,)
        user_index = torch.as_tensor(chunk_users, device=device)
        rows, cols = _train_mask(train, train_start[start:start + chunk],
                                 train_end[start:start + chunk], column_of_item)
        top_columns = _top_columns(user_vectors[user_index], candidate_vectors, rows, cols,
                                   k_max, block, plan, bf16)  # (C, k_max)
        if top_columns is None:  # bf16 kept too many candidates: float32 from here on
            if not _CROWDED:  # said once a process (each evaluation tries bf16 again)
                _CROWDED.append(True)
                if log is not None:
                    log(f"evaluation scoring: more than {BF16_KEPT_MAX} bf16 candidates a user "
                        f"(items scoring within bf16's error of each other): float32 for the "
                        f"rest of this evaluation (said once; each evaluation tries bf16 again)")
            bf16 = None
            top_columns = _top_columns(user_vectors[user_index], candidate_vectors, rows, cols,
                                       k_max, block, plan)
        top_items = candidates[top_columns]  # (C, k_max); -1 pads (never a held-out key)
        top_keys = torch.where(top_items >= 0, user_index[:, None] * n_items + top_items, -1)
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
                 plan: ScoringPlan = ScoringPlan(), bf16: _Bf16Scoring | None = None
                 ) -> torch.Tensor | None:
    """(C, k) columns of each chunk user's k best-scored candidates, the masked (row, col) pairs
    excluded (a column n_columns pads rows with fewer than k candidates in several blocks);
    None where a user would keep more than BF16_KEPT_MAX candidates in bf16.

    One block: its top k. Several: the first block's top k sets each row's floor, and a later
    block gives up only its scores above the floor (found through group maxima: no sort of the
    block), merged into the rows' kept candidates, whose k-th best raises the floor. With `bf16`
    the blocks are scored in bfloat16 and the floor sits `bf16.margin` below the k-th bf16
    score: the kept candidates then hold every item of the float32 top k (see _Bf16Scoring),
    and float32 re-scores them to pick it."""
    device = chunk_vectors.device
    order = np.argsort(cols, kind="stable")  # the mask by column: each block's pairs a slice
    rows, cols = rows[order], cols[order]
    n_columns = candidate_vectors.shape[0]
    edges = np.searchsorted(cols, np.arange(0, n_columns + block, block))
    margin = bf16.margin(chunk_vectors) if bf16 is not None else 0.0  # (C,) or 0
    chunk_bf16 = chunk_vectors.bfloat16() if bf16 is not None else None
    limit = BF16_KEPT_MAX if bf16 is not None else None
    dtype = torch.promote_types(chunk_vectors.dtype, torch.float32)  # kept values: bf16 exactly
    kept: tuple[torch.Tensor, torch.Tensor] | None = None  # (C, W) values (descending), columns
    for index, first in enumerate(range(0, n_columns, block)):
        if bf16 is not None:
            scores = chunk_bf16 @ bf16.vectors[first:first + block].T  # (C, B) bf16
        else:
            scores = frozen_linear(chunk_vectors, candidate_vectors[first:first + block],
                                   plan.gemm)  # (C, B)
        masked = slice(edges[index], edges[index + 1])
        scores[torch.as_tensor(rows[masked], device=device),
               torch.as_tensor(cols[masked] - first, device=device)] = -torch.inf
        if kept is None and bf16 is None and block >= n_columns:  # one block: its top k
            return _row_top(scores, min(k, scores.shape[1]))[1]
        if kept is None:  # the floor from the first block's own k-th best
            floor = _row_top(scores, min(k, scores.shape[1]))[0][:, -1].to(dtype) - margin
            found = _above(scores, floor, inclusive=True, limit=limit)
        else:  # the kept k-th best; none while fewer than k are kept (blocks narrower than k)
            floor = kept[0][:, k - 1] - margin if kept[0].shape[1] >= k \
                else torch.full((len(scores),), -torch.inf, dtype=dtype, device=device)
            found = _above(scores, floor, limit=limit)
        if found is None:  # a margin too wide to pay: more than BF16_KEPT_MAX scores a user
            return None
        kept = _merged(kept, _padded(*found, first, len(scores), n_columns), k, margin)
        if bf16 is not None and kept[0].shape[1] > BF16_KEPT_MAX:  # a margin too wide to pay
            return None
    values, columns = kept
    if bf16 is not None:  # the float32 scores of the kept candidates; masked stay -inf
        exact = torch.bmm(candidate_vectors[columns.clamp(max=n_columns - 1)],
                          chunk_vectors.unsqueeze(2)).squeeze(2)  # (C, W)
        values = torch.where(torch.isfinite(values), exact, -torch.inf)
        top = torch.topk(values, min(k, values.shape[1]), dim=1).indices
        return columns.gather(1, top)
    return columns[:, :k]


def _above(scores: torch.Tensor, floor: torch.Tensor, inclusive: bool = False,
           group: int = TOP_GROUP, limit: int | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(rows, columns, values) of a block's scores above each row's floor ((C,), float32 or wider;
    at or above when `inclusive`; the values in the floor's dtype). The columns j, j + G, j + 2G,
    ... (G = width // group) form a group whose maximum is compared first: only the groups above
    the floor are read again. bf16 scores compare with the float32 floor in float32 (a floor
    rounded to bf16 could rise). None where a row has more than `limit` scores above its floor."""
    n_rows, width = scores.shape
    above = torch.ge if inclusive else torch.gt
    n_groups = width // group
    grouped = n_groups * group
    found_rows, found_cols = [], []
    if n_groups:
        maxima = scores[:, :grouped].unflatten(1, (group, n_groups)).amax(1)  # (C, G)
        group_rows, groups = above(maxima, floor[:, None]).nonzero(as_tuple=True)
        columns = groups[:, None] + n_groups * torch.arange(group, device=scores.device)
        hit, member = above(scores[group_rows[:, None], columns],
                            floor[group_rows, None]).nonzero(as_tuple=True)  # of (n, group)
        found_rows.append(group_rows[hit])
        found_cols.append(columns[hit, member])
    if grouped < width:  # the columns past the last whole group, compared directly
        rest_rows, rest_cols = above(scores[:, grouped:], floor[:, None]).nonzero(as_tuple=True)
        found_rows.append(rest_rows)
        found_cols.append(rest_cols + grouped)
    found_rows, found_cols = torch.cat(found_rows), torch.cat(found_cols)
    if limit is not None and len(found_rows) and int(torch.bincount(found_rows).max()) > limit:
        return None
    return found_rows, found_cols, scores[found_rows, found_cols].to(floor.dtype)


def _padded(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, first: int,
            n_rows: int, pad_column: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Found (row, block column, value) triples as (C, W) values and candidate columns, each row's
    found ones first and then -inf at column `pad_column`."""
    order = torch.argsort(rows, stable=True)
    rows, cols, values = rows[order], cols[order], values[order]
    counts = torch.bincount(rows, minlength=n_rows)
    width = int(counts.max()) if len(rows) else 0
    position = torch.arange(len(rows), device=rows.device) - (torch.cumsum(counts, 0)
                                                                - counts)[rows]
    padded_values = torch.full((n_rows, width), -torch.inf, dtype=values.dtype,
                               device=rows.device)
    padded_cols = torch.full((n_rows, width), pad_column, dtype=torch.int64, device=rows.device)
    padded_values[rows, position] = values
    padded_cols[rows, position] = cols + first
    return padded_values, padded_cols


def _merged(kept: tuple[torch.Tensor, torch.Tensor] | None,
            found: tuple[torch.Tensor, torch.Tensor], k: int, margin: torch.Tensor | float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept candidates and the found ones, sorted by value (descending) and cut to each row's
    floor (its k-th best minus `margin`), or to k where that keeps fewer."""
    values, cols = found if kept is None else (torch.cat([kept[0], found[0]], dim=1),
                                               torch.cat([kept[1], found[1]], dim=1))
    values, order = torch.sort(values, dim=1, descending=True)
    k = min(k, values.shape[1])
    floor = values[:, k - 1] - margin  # (C,)
    width = max(k, int((values > floor[:, None]).sum(1).max()))
    return values[:, :width], cols.gather(1, order[:, :width])


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
