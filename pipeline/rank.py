"""Rank stage: the run's item vectors in a FAISS index, and each user's top-K unseen items."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas
from pipeline.config import RankConfig
from pipeline.splits import codes_in
from pipeline.store import read_table, write_table

INDEX_FILE = "items.faiss"
ITEM_IDS_FILE = "item_ids.parquet"
USER_IDS_FILE = "user_ids.parquet"
IDS_SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False)])


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
        lines.append(f"  wrote {self.run_dir / 'candidates.parquet'}")
        lines.append(f"  wrote {self.run_dir / INDEX_FILE}")
        return "\n".join(lines)


def write_ids(path: Path, ids: list[str] | np.ndarray) -> Path:
    """Row i of a run's vectors belongs to ids[i]; the rank stage maps rows back through this."""
    return write_table(path, pa.table({"id": pa.array(list(ids), pa.string())}), IDS_SCHEMA)


def read_ids(path: Path) -> np.ndarray:
    return np.asarray(read_table(path, IDS_SCHEMA).column("id").to_pylist(), dtype=object)


def build_index(item_vectors: np.ndarray, config: RankConfig):
    """An inner-product FAISS index over the item vectors: exact (flat), IVF or HNSW."""
    import faiss

    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    n_items, dim = vectors.shape
    if config.index == "flat":
        index = faiss.IndexFlatIP(dim)
    elif config.index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = config.ef_search
    else:
        nlist = max(1, min(config.nlist, n_items // 39))  # FAISS wants ~39 points per centroid
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(config.nprobe, nlist)
    index.add(vectors)
    return index


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
    run_dir = Path(run_dir)
    user_vectors = np.load(run_dir / "user_vectors.npy")
    item_vectors = np.load(run_dir / "item_vectors.npy")
    user_ids = read_ids(run_dir / USER_IDS_FILE)
    item_ids = read_ids(run_dir / ITEM_IDS_FILE)
    if len(user_ids) != len(user_vectors) or len(item_ids) != len(item_vectors):
        raise ValueError(
            f"{run_dir}: {len(user_vectors)} user / {len(item_vectors)} item vectors but "
            f"{len(user_ids)} / {len(item_ids)} ids: the run folder is incomplete or mixed"
        )
    interactions = read_table(
        interactions_path, schemas.INTERACTIONS, columns=["user_id", "item_id"]
    )
    seen = seen_items(interactions, user_ids, item_ids)
    k = min(config.k, len(item_ids))

    index = build_index(item_vectors, config)
    items, scores = top_unseen(index, user_vectors, seen, k)
    recall = None
    if config.index != "flat":
        exact_items, _ = top_unseen(
            build_index(item_vectors, RankConfig(index="flat")), user_vectors, seen, k
        )
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
    write_table(
        run_dir / "candidates.parquet", table, schemas.CANDIDATES, {"index": config.index, "k": k}
    )
    faiss.write_index(index, str(run_dir / INDEX_FILE))
    seconds = time.perf_counter() - started
    record = {"index": config.index, "k": k, "recall_vs_exact": recall, "seconds": seconds}
    (run_dir / "rank.json").write_text(json.dumps(record, indent=2))
    return RankSummary(run_dir, len(user_ids), len(item_ids), k, config.index, seconds, recall)


def overlap_recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each user's exact top-k that the approximate search also returned."""
    hits = [
        len(np.intersect1d(f[f >= 0], e[e >= 0])) / max(1, (e >= 0).sum())
        for f, e in zip(found, exact, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


def user_candidates(run_dir: Path, user_id: str) -> pa.Table:
    """One user's rows of candidates.parquet, best first."""
    table = read_table(Path(run_dir) / "candidates.parquet", schemas.CANDIDATES)
    rows = table.filter(pc.equal(table.column("user_id"), user_id))
    if rows.num_rows == 0:
        raise KeyError(f"user {user_id!r} has no candidates in {run_dir} (unknown user?)")
    return rows.sort_by("rank")
