"""The rank stage: FAISS top-K equals brute force with every known item excluded."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from model.run import RunFolder
from pipeline import schemas
from pipeline.config import RankConfig
from pipeline.rank import item_index, rank, seen_items, top_unseen, user_candidates
from pipeline.store import read_ids, read_table, write_ids, write_table


@pytest.fixture
def run(tmp_path):
    rng = np.random.default_rng(0)
    n_users, n_items, dim = 40, 300, 16
    folder = RunFolder(tmp_path)
    np.save(folder.user_vectors, rng.normal(size=(n_users, dim)).astype(np.float32))
    np.save(folder.item_vectors, rng.normal(size=(n_items, dim)).astype(np.float32))
    user_ids = [f"u{u}" for u in range(n_users)]
    item_ids = [f"i{i}" for i in range(n_items)]
    write_ids(folder.user_ids, user_ids)
    write_ids(folder.item_ids, item_ids)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=rng.integers(1, 60), replace=False):
            rows.append(
                {
                    "user_id": f"u{u}",
                    "item_id": f"i{i}",
                    "timestamp": None,
                    "rating": None,
                    "split": int(rng.integers(0, 3)),
                }
            )
    rows.append(
        {"user_id": "stranger", "item_id": "i0", "timestamp": None, "rating": None, "split": 0}
    )
    path = write_table(
        tmp_path / "interactions.parquet", pa.Table.from_pylist(rows), schemas.INTERACTIONS
    )
    return tmp_path, path


def brute_force(users, items, seen, k):
    scores = users @ items.T
    for u, known in enumerate(seen):
        scores[u, known] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_flat_candidates_are_exact_and_never_known(run):
    run_dir, interactions = run
    summary = rank(run_dir, interactions, RankConfig(k=10))
    assert summary.recall_vs_exact is None  # exact search: nothing to compare
    table = read_table(RunFolder(run_dir).candidates, schemas.CANDIDATES)
    users = np.load(run_dir / "user_vectors.npy")
    items = np.load(run_dir / "item_vectors.npy")
    user_ids, item_ids = read_ids(RunFolder(run_dir).user_ids), read_ids(RunFolder(run_dir).item_ids)
    seen = seen_items(read_table(interactions, schemas.INTERACTIONS), user_ids, item_ids)
    expected = brute_force(users, items, seen, 10)
    got = {}
    for row in table.to_pylist():
        got.setdefault(row["user_id"], []).append(row["item_id"])
    known = {
        (r["user_id"], r["item_id"])
        for r in read_table(interactions, schemas.INTERACTIONS).to_pylist()
    }
    for u, user_id in enumerate(user_ids):
        assert got[user_id] == [item_ids[i] for i in expected[u]]
        assert not any((user_id, item) in known for item in got[user_id])
    first = user_candidates(run_dir, "u0").to_pylist()
    assert [r["rank"] for r in first] == list(range(1, 11))
    assert first[0]["score"] >= first[-1]["score"]


def test_user_who_has_seen_almost_everything_gets_what_is_left():
    items = np.eye(5, dtype=np.float32)
    users = np.ones((1, 5), dtype=np.float32)
    index = item_index(items, RankConfig(index="exact"))
    found, scores = top_unseen(index, users, [np.array([0, 1, 2, 3])], k=3)
    assert found.tolist() == [[4, -1, -1]]
    assert np.isneginf(scores[0, 1:]).all()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_report_recall_against_exact(run, kind):
    run_dir, interactions = run
    summary = rank(run_dir, interactions, RankConfig(k=10, index=kind, nlist=4, nprobe=4))
    assert 0.0 <= summary.recall_vs_exact <= 1.0
    assert summary.recall_vs_exact > 0.9  # 4 of 4 IVF lists probed / HNSW on 300 items: near exact
    assert f"recall@10 against exact search: {summary.recall_vs_exact:.4f}" in str(summary)


def test_mismatched_run_folder_is_refused(run):
    run_dir, interactions = run
    write_ids(RunFolder(run_dir).user_ids, ["only-one"])
    with pytest.raises(ValueError, match="incomplete or mixed"):
        rank(run_dir, interactions, RankConfig())


def test_unknown_user_names_the_user(run):
    run_dir, interactions = run
    rank(run_dir, interactions, RankConfig(k=5))
    with pytest.raises(KeyError, match="nobody"):
        user_candidates(run_dir, "nobody")
