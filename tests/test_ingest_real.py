"""Ingest of the real data in ../shared: MovieLens-100k reproduces the reference split, Baby keeps its own."""

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from pipeline.config import Config
from pipeline.ingest import ingest
from pipeline.schemas import INTERACTIONS, ITEMS
from pipeline.store import StoreLayout, read_table

SHARED = Path(__file__).parents[2] / "shared"
MOVIELENS = SHARED / "data" / "movielens-100k"
REFERENCE = SHARED / "bench" / "ml100k-mmrec"
BABY = SHARED / "data" / "amazon" / "baby"

needs_movielens = pytest.mark.skipif(
    not (MOVIELENS / "ml-100k.inter").exists() or not (REFERENCE / "ml100k.inter").exists(),
    reason=f"MovieLens-100k or its MMRec reference not found under {SHARED}",
)
needs_baby = pytest.mark.skipif(
    not (BABY / "baby.inter").exists(), reason=f"{BABY}/baby.inter not found"
)


def make_config(tmp_path: Path, dataset: dict, split: dict | None = None) -> Config:
    raw = {"name": "test", "store": "store", "dataset": dataset, "split": split or {}}
    return Config.model_validate(raw, context={"base_dir": tmp_path})


@pytest.fixture(scope="module")
def movielens_store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("movielens")
    config = make_config(tmp_path, {"kind": "movielens", "path": str(MOVIELENS)}, {"seed": 2024})
    summary = ingest(config)
    return StoreLayout(tmp_path / "store"), summary


def _id_map(path: Path) -> dict[str, int]:
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    return {orig: int(new) for orig, new in rows}


@needs_movielens
def test_movielens_split_reproduces_the_reference_x_label(movielens_store):
    layout, summary = movielens_store
    interactions = read_table(layout.interactions, INTERACTIONS)
    user_map, item_map = (
        _id_map(REFERENCE / "user_id_map.csv"),
        _id_map(REFERENCE / "item_id_map.csv"),
    )
    ours = {
        (user_map[u], item_map[i]): s
        for u, i, s in zip(
            interactions.column("user_id").to_pylist(),
            interactions.column("item_id").to_pylist(),
            interactions.column("split").to_pylist(),
            strict=True,
        )
    }
    reference = pacsv.read_csv(
        REFERENCE / "ml100k.inter", parse_options=pacsv.ParseOptions(delimiter="\t")
    )
    expected = {
        (u, i): s
        for u, i, s in zip(
            reference.column("userID").to_pylist(),
            reference.column("itemID").to_pylist(),
            reference.column("x_label").to_pylist(),
            strict=True,
        )
    }
    assert len(ours) == len(expected) == 100_000
    assert ours == expected
    assert summary.split_counts == {"train": 80_808, "valid": 9_596, "test": 9_596}
    assert summary.n_users == 943 and summary.n_items == 1682


@needs_movielens
def test_movielens_items_text_images_and_summary(movielens_store):
    layout, summary = movielens_store
    items = read_table(layout.items, ITEMS)
    assert items.column("item_id").to_pylist()[:3] == ["1", "2", "3"]  # numeric catalog order
    assert {"year", "genres", "cold_holdout"} <= set(items.column_names)
    with open(REFERENCE / "items_without_poster.csv", encoding="utf-8") as handle:
        without_poster = {row["orig_item_id"] for row in csv.DictReader(handle)}
    null_image = {
        i
        for i, p in zip(
            items.column("item_id").to_pylist(), items.column("image_path").to_pylist(), strict=True
        )
        if p is None
    }
    assert null_image == without_poster and len(null_image) == 17
    assert all(Path(p).is_absolute() for p in items.column("image_path").to_pylist() if p)
    image_drops = [d for d in summary.drops if d.kind == "images"]
    assert len(image_drops) == 1 and image_drops[0].count == 17
    written = json.loads(layout.ingest_summary.read_text(encoding="utf-8"))
    assert written["drops"][0]["count"] == 17 and written["n_interactions"] == 100_000
    assert "17 images" in summary.format() and "train 80,808" in str(summary)


@needs_baby
def test_baby_imports_with_its_split_kept(tmp_path):
    config = make_config(tmp_path, {"kind": "mmrec", "path": str(BABY)}, {"method": "given"})
    summary = ingest(config)
    assert (summary.n_users, summary.n_items, summary.n_interactions) == (19_445, 7_050, 160_792)
    assert summary.split_counts == {"train": 118_551, "valid": 20_559, "test": 21_682}
    assert summary.drops == []
    layout = StoreLayout(tmp_path / "store")
    items = read_table(layout.items, ITEMS)
    assert items.num_rows == 7_050
    for column in ("title", "text", "image_path", "image_sha256"):
        assert items.column(column).null_count == 7_050
    interactions = read_table(layout.interactions, INTERACTIONS)
    assert np.bincount(interactions.column("split").to_numpy()).tolist() == [
        118_551,
        20_559,
        21_682,
    ]
