"""Inputs are normalised before use: a UTF-8 BOM is stripped, ids are Unicode NFC in every adapter;
MMRec feature files with NaN/inf are refused at ingest, naming the file and the row."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.datasets import DatasetError
from pipeline.datasets.generic import load_generic
from pipeline.datasets.mmrec import load_mmrec
from tests.test_datasets_generic import dataset
from tests.test_datasets_mmrec import ROWS, write_inter

NFC = unicodedata.normalize("NFC", "café-crème")
NFD = unicodedata.normalize("NFD", "café-crème")


def test_a_bom_in_a_csv_header_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_bytes("\ufeffsku,name\nA1,Lamp\nB2,Mug\n".encode())
    (tmp_path / "events.csv").write_bytes("\ufeffcustomer,sku\nu1,A1\nu1,B2\n".encode())
    source = load_generic(
        dataset(tmp_path, items="items.csv", interactions="events.csv", item_id_column="sku",
                title_column="name", text_columns=["name"], image_column="",
                user_column="customer", interaction_item_column="sku"),
        tmp_path / "cache",
    )
    assert source.items.column("item_id").to_pylist() == ["A1", "B2"]
    assert source.interactions.column("user_id").to_pylist() == ["u1", "u1"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_ids_that_differ_only_in_normalisation_are_one_id(tmp_path: Path, suffix: str) -> None:
    items = pa.table({"item_id": [NFC, "plain"], "text": ["a", "b"]})
    events = pa.table({"user_id": [NFD, NFC, "u2"], "item_id": [NFD, "plain", NFC]})
    for name, table in (("items", items), ("events", events)):
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp_path / f"{name}.csv")
        else:
            pq.write_table(table, tmp_path / f"{name}.parquet")
    source = load_generic(
        dataset(tmp_path, items=f"items{suffix}", interactions=f"events{suffix}",
                title_column="", image_column=""),
        tmp_path / "cache",
    )
    assert source.items.column("item_id").to_pylist() == [NFC, "plain"]
    assert source.interactions.column("item_id").to_pylist() == [NFC, "plain", NFC]
    assert source.interactions.column("user_id").to_pylist() == [NFC, NFC, "u2"]


def test_item_ids_equal_after_normalisation_are_duplicates(tmp_path: Path) -> None:
    pq.write_table(pa.table({"item_id": [NFC, NFD], "text": ["a", "b"]}), tmp_path / "items.parquet")
    pq.write_table(pa.table({"user_id": ["u"], "item_id": [NFC]}), tmp_path / "events.parquet")
    with pytest.raises(DatasetError, match="duplicate item id"):
        load_generic(dataset(tmp_path, items="items.parquet", interactions="events.parquet",
                             title_column="", image_column=""), tmp_path / "cache")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_mmrec_features_with_nan_or_inf_are_refused_at_ingest(tmp_path: Path, bad: float) -> None:
    folder = write_inter(tmp_path / "toy", ROWS)
    matrix = np.ones((4, 3), np.float32)
    matrix[2, 1] = bad
    np.save(folder / "image_feat.npy", matrix)
    with pytest.raises(DatasetError, match=r"image_feat\.npy: row 2 \(item 2\) has 1 NaN or infinite"):
        load_mmrec(folder, features={"image_feat.npy": "image"})
