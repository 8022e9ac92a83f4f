"""Ingest on tiny catalogs: dedupe, user filter, cold-item holdout, split methods, summary and errors."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config
from pipeline.datasets import DatasetError
from pipeline.ingest import ingest
from pipeline.schemas import INTERACTIONS, ITEMS
from pipeline.store import StoreLayout, read_metadata, read_table


def write_catalog(folder: Path, interactions: dict, n_items: int = 30) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    item_ids = [str(i) for i in range(n_items)]
    pq.write_table(
        pa.table(
            {
                "item_id": item_ids,
                "title": item_ids,
                "text": [f"item {i}" for i in item_ids],
                "image": [None] * n_items,
            }
        ),
        folder / "items.parquet",
    )
    pq.write_table(pa.table(interactions), folder / "inter.parquet")


def config_for(tmp_path: Path, split: dict | None = None, **dataset) -> Config:
    raw = {
        "name": "tiny",
        "store": "store",
        "dataset": {
            "kind": "generic",
            "items": "data/items.parquet",
            "interactions": "data/inter.parquet",
            **dataset,
        },
        "split": split or {},
    }
    return Config.model_validate(raw, context={"base_dir": tmp_path})


def dense_interactions(
    n_users: int = 12, per_user: int = 12, n_items: int = 30, seed: int = 0
) -> dict:
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False)
        users += [f"u{user:02d}"] * per_user
        items += [str(i) for i in chosen]
        times += rng.permutation(per_user).tolist()
    return {"user_id": users, "item_id": items, "ts": times}


def read_catalog(tmp_path: Path) -> tuple[pa.Table, pa.Table, dict]:
    layout = StoreLayout(tmp_path / "store")
    summary = json.loads(layout.ingest_summary.read_text(encoding="utf-8"))
    return read_table(layout.items, ITEMS), read_table(layout.interactions, INTERACTIONS), summary


def test_repeated_pairs_and_short_users_are_counted_drops(tmp_path):
    data = {
        "user_id": ["a"] * 5 + ["b"] * 2 + ["c"] * 4,
        "item_id": ["1", "2", "3", "4", "1", "5", "6", "1", "2", "3", "3"],
        "ts": [5, 1, 2, 3, 4, 1, 2, 1, 2, 3, 9],
    }
    write_catalog(tmp_path / "data", data)
    summary = ingest(config_for(tmp_path, {"min_user_interactions": 1}, timestamp_column="ts"))
    _, interactions, written = read_catalog(tmp_path)
    reasons = {d["reason"].split(";")[0]: d for d in written["drops"]}
    repeated = reasons["repeated (user, item) pair (the earliest is kept)"]
    assert (repeated["count"], repeated["examples"]) == (2, ["a", "c"])
    short = reasons[
        "user has fewer than 3 interactions outside the cold items (the 8:1:1 split's minimum)"
    ]
    assert (short["count"], short["examples"]) == (1, ["b"])
    assert "removed with their 2 interactions" in short["reason"]
    rows = list(
        zip(
            interactions.column("user_id").to_pylist(),
            interactions.column("item_id").to_pylist(),
            interactions.column("timestamp").to_pylist(),
            strict=True,
        )
    )
    assert ("a", "1", 4) in rows and (
        "a",
        "1",
        5,
    ) not in rows  # the earliest repeat is the one kept
    assert [u for u, _, _ in rows] == ["a"] * 4 + ["c"] * 3  # sorted by user, then item
    assert summary.n_users == 2 and summary.n_interactions == 7
    assert "repeated (user, item) pair" in summary.format()


def test_interactions_naming_unknown_items_are_a_counted_drop(tmp_path):
    data = dense_interactions(n_users=3, per_user=10)
    data = {
        k: v + extra
        for (k, v), extra in zip(
            data.items(), [["u00", "ghost"], ["nope", "404"], [0, 0]], strict=True
        )
    }
    write_catalog(tmp_path / "data", data)
    summary = ingest(config_for(tmp_path))
    drop = next(d for d in summary.drops if d.kind == "interactions")
    assert (drop.reason, drop.count, drop.examples) == (
        "item id not in the item catalog",
        2,
        ("nope", "404"),
    )
    assert drop.file == str((tmp_path / "data" / "inter.parquet").resolve())
    assert summary.n_interactions == 30 and summary.n_users == 3
    assert not [d for d in summary.drops if d.kind == "users"]  # "ghost" is gone with its rows


def test_min_user_interactions_drops_users_by_name(tmp_path):
    data = dense_interactions(n_users=3, per_user=10)
    data = {
        k: v + extra
        for (k, v), extra in zip(
            data.items(), [["small"] * 4, ["1", "2", "3", "4"], [0, 1, 2, 3]], strict=True
        )
    }
    write_catalog(tmp_path / "data", data)
    summary = ingest(config_for(tmp_path, {"min_user_interactions": 5}))
    drop = next(d for d in summary.drops if d.kind == "users")
    assert (
        drop.count == 1
        and drop.examples == ("small",)
        and drop.reason.startswith("user has fewer than 5 interactions;")
    )
    assert summary.n_users == 3


def test_cold_items_send_all_their_interactions_to_test(tmp_path):
    write_catalog(tmp_path / "data", dense_interactions(n_users=20, per_user=15))
    summary = ingest(config_for(tmp_path, {"cold_item_share": 0.2, "cold_item_seed": 5}))
    items, interactions, _ = read_catalog(tmp_path)
    cold = set(pc_filter(items.column("item_id"), items.column("cold_holdout")))
    assert len(cold) == summary.cold_items == 6  # 20% of the 30 interacted items
    split_of = list(
        zip(
            interactions.column("item_id").to_pylist(),
            interactions.column("split").to_pylist(),
            strict=True,
        )
    )
    assert all(s == 2 for i, s in split_of if i in cold)
    assert any(s == 0 for i, s in split_of if i not in cold)
    again = tmp_path / "again"
    again.mkdir()
    (again / "data").symlink_to(tmp_path / "data")
    ingest(config_for(again, {"cold_item_share": 0.2, "cold_item_seed": 5}))
    assert read_catalog(again)[1].equals(interactions)  # the same seeds give the same catalog


def pc_filter(values: pa.ChunkedArray, mask: pa.ChunkedArray) -> list:
    return [v for v, m in zip(values.to_pylist(), mask.to_pylist(), strict=True) if m]


def test_temporal_split_through_ingest_and_its_errors(tmp_path):
    write_catalog(tmp_path / "data", dense_interactions(n_users=5, per_user=20))
    ingest(config_for(tmp_path, {"method": "temporal"}, timestamp_column="ts"))
    _, interactions, summary = read_catalog(tmp_path)
    assert summary["split_counts"] == {"train": 80, "valid": 10, "test": 10}
    for user in set(interactions.column("user_id").to_pylist()):
        rows = [
            (t, s)
            for u, t, s in zip(
                interactions.column("user_id").to_pylist(),
                interactions.column("timestamp").to_pylist(),
                interactions.column("split").to_pylist(),
                strict=True,
            )
            if u == user
        ]
        assert [s for _, s in sorted(rows)] == [0] * 16 + [1] * 2 + [2] * 2
    with pytest.raises(
        DatasetError, match=r"inter\.parquet: split\.method = 'temporal' needs timestamps"
    ):
        ingest(config_for(tmp_path, {"method": "temporal"}))
    with pytest.raises(
        DatasetError,
        match=r"inter\.parquet: split\.method = 'given' but this source carries no split",
    ):
        ingest(config_for(tmp_path, {"method": "given"}))


def test_nothing_left_is_an_error_listing_the_drops(tmp_path):
    write_catalog(tmp_path / "data", {"user_id": ["a", "a"], "item_id": ["1", "2"], "ts": [1, 2]})
    with pytest.raises(
        DatasetError,
        match=r"no interactions left after the drops: .*1 users: user has fewer than 3",
    ):
        ingest(config_for(tmp_path))


def test_written_catalog_has_provenance_and_progress_shows(tmp_path, capsys):
    write_catalog(tmp_path / "data", dense_interactions())
    summary = ingest(config_for(tmp_path, {"seed": 11}), progress=True)
    assert "ingest" in capsys.readouterr().err
    layout = StoreLayout(tmp_path / "store")
    provenance = read_metadata(layout.interactions)
    assert provenance["source"] == "generic" and provenance["split"]["seed"] == 11
    assert summary.written["items"] == str(layout.items)
    assert not list(layout.items.parent.glob(".*.tmp"))
