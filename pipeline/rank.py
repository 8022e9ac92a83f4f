"""Rank stage: the run's item vectors in a FAISS index, and each user's top-K unseen items."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model.index import build_index
from model.run import RunFolder, write_atomically, write_json
from pipeline import schemas
from pipeline.config import RankConfig
from pipeline.splits import codes_in
from pipeline.store import read_ids, read_table, write_table


@dataclass(frozen=True)
class RankSummary:
    run_dir: Path
    n_users: int
    n_items: int
    k: int
    index: str
    seconds: float
    recall_vs_exact: float | None  # mean recall@k of an approximate index against exact search

    def __str__(self) -> str:
        lines = [
            f"ranked {self.n_users:,} users x {self.n_items:,} items, top {self.k} each "
            f"({self.index} index, {self.seconds:.1f} s)",
        ]
        if self.recall_vs_exact is not None:
            lines.append(
                f"  {self.index} recall@{self.k} against exact search: {self.recall_vs_exact:.4f}"
            )
        run = RunFolder(self.run_dir)
        lines.append(f"  wrote {run.candidates}")
        lines.append(f"  wrote {run.index}")
        return "\n".join(lines)


def item_index(item_vectors: np.ndarray, config: RankConfig):
    """The inner-product FAISS index over a run's item vectors, as `[rank]` asks."""
    return build_index(item_vectors, config.index, nlist=config.nlist, nprobe=config.nprobe,
                       hnsw_m=config.hnsw_m, ef_search=config.ef_search)


def top_unseen(
    index, user_vectors: np.ndarray, seen: list[np.ndarray], k: int, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's k best items by inner product, skipping `seen[u]` (item rows); -1 pads short lists.

    Asks the index for k + (most items seen by a user in the chunk), so filtering never leaves a
    user short while the catalog has enough unseen items.
    """
    n_users = user_vectors.shape[0]
    items = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        depth = min(index.ntotal, k + max(len(seen[u]) for u in range(start, stop)))
        found_scores, found_items = index.search(
            np.ascontiguousarray(user_vectors[start:stop], dtype=np.float32), depth
        )
        for row, user in enumerate(range(start, stop)):
            keep = (found_items[row] >= 0) & ~np.isin(found_items[row], seen[user])
            chosen = found_items[row][keep][:k]
            items[user, : len(chosen)] = chosen
            scores[user, : len(chosen)] = found_scores[row][keep][:k]
    return items, scores


def seen_items(
    interactions: pa.Table, user_ids: np.ndarray, item_ids: np.ndarray
) -> list[np.ndarray]:
    """For each user row, the item rows they interacted with in ANY split (never recommended again)."""
    users = codes_in(interactions.column("user_id"), pa.array(user_ids.tolist(), pa.string()))
    items = codes_in(interactions.column("item_id"), pa.array(item_ids.tolist(), pa.string()))
    known = (users >= 0) & (items >= 0)
    users, items = users[known], items[known]
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    bounds = np.searchsorted(users, np.arange(len(user_ids) + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(len(user_ids))]


def rank(run_dir: Path, interactions_path: Path, config: RankConfig) -> RankSummary:
    """Index the run's final item vectors and write `candidates.parquet` (user_id, rank, item_id, score)."""
    import faiss

    started = time.perf_counter()
    run = RunFolder(run_dir)
    user_vectors, item_vectors = run.load_vectors()
    user_ids, item_ids = read_ids(run.user_ids), read_ids(run.item_ids)
    if len(user_ids) != len(user_vectors) or len(item_ids) != len(item_vectors):
        raise ValueError(
            f"{run.path}: {len(user_vectors)} user / {len(item_vectors)} item vectors but "
            f"{len(user_ids)} / {len(item_ids)} ids: the run folder is incomplete or mixed"
        )
    interactions = read_table(
        interactions_path, schemas.INTERACTIONS, columns=["user_id", "item_id"]
    )
    seen = seen_items(interactions, user_ids, item_ids)
    k = min(config.k, len(item_ids))

    index = item_index(item_vectors, config)
    items, scores = top_unseen(index, user_vectors, seen, k)
    recall = None
    if config.index != "exact":
        exact_items, _ = top_unseen(build_index(item_vectors), user_vectors, seen, k)
        recall = overlap_recall(items, exact_items)

    valid = items >= 0
    user_rows = np.repeat(np.arange(len(user_ids)), k).reshape(-1, k)
    table = pa.table(
        {
            "user_id": pa.array(user_ids[user_rows[valid]].tolist(), pa.string()),
            "rank": pa.array(
                np.tile(np.arange(1, k + 1, dtype=np.int32), (len(user_ids), 1))[valid]
            ),
            "item_id": pa.array(item_ids[items[valid]].tolist(), pa.string()),
            "score": pa.array(scores[valid]),
        }
    )
    write_table(run.candidates, table, schemas.CANDIDATES, {"index": config.index, "k": k})
    write_atomically(run.index, lambda temporary: faiss.write_index(index, str(temporary)))
    seconds = time.perf_counter() - started
    record = {"index": config.index, "k": k, "recall_vs_exact": recall, "seconds": seconds}
    write_json(run.rank_record, record)  # written last: the rank stage's outputs are complete
    return RankSummary(run.path, len(user_ids), len(item_ids), k, config.index, seconds, recall)


def overlap_recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each user's exact top-k that the approximate search also returned."""
    hits = [
        len(np.intersect1d(f[f >= 0], e[e >= 0])) / max(1, (e >= 0).sum())
        for f, e in zip(found, exact, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


def user_candidates(run_dir: Path, user_id: str) -> pa.Table:
    """One user's rows of candidates.parquet, best first."""
    table = read_table(RunFolder(run_dir).candidates, schemas.CANDIDATES)
    rows = table.filter(pc.equal(table.column("user_id"), user_id))
    if rows.num_rows == 0:
        raise KeyError(f"user {user_id!r} has no candidates in {run_dir} (unknown user?)")
    return rows.sort_by("rank")
