"""Parquet stores: schema round trips with provenance, atomic writes, validating reads, part dedupe."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import store as store_module
from pipeline.schemas import (
    CANDIDATES,
    CAPTIONS,
    INTERACTIONS,
    ITEMS,
    embedding_dim,
    embeddings,
    provenance_of,
    with_provenance,
)
from pipeline.store import (
    PartStore,
    StoreError,
    StoreLayout,
    current_key,
    keep_last,
    read_metadata,
    read_table,
    set_current,
    write_table,
)


def sample_tables() -> dict[str, tuple[pa.Schema, pa.Table]]:
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(8, dtype=np.float32)), 4)
    return {
        "items": (
            ITEMS,
            pa.table(
                {
                    "item_id": ["1", "2"],
                    "title": ["a", None],
                    "text": ["t", "u"],
                    "image_path": [None, "/x.jpg"],
                    "image_sha256": [None, "ab"],
                }
            ),
        ),
        "interactions": (
            INTERACTIONS,
            pa.table(
                {
                    "user_id": ["u"],
                    "item_id": ["1"],
                    "timestamp": [5],
                    "rating": [None],
                    "split": [2],
                }
            ),
        ),
        "captions": (
            CAPTIONS,
            pa.table(
                {"item_id": ["1"], "image_sha256": ["ab"], "caption": ["a cat"], "error": [None]}
            ),
        ),
        "embeddings": (
            embeddings(4),
            pa.table(
                {
                    "item_id": ["1", "2"],
                    "input_sha256": ["h1", "h2"],
                    "vector": vectors,
                    "truncated": [False, True],
                    "error": [None, None],
                }
            ),
        ),
        "candidates": (
            CANDIDATES,
            pa.table(
                {"user_id": ["u", "u"], "rank": [1, 2], "item_id": ["2", "1"], "score": [0.75, 0.5]}
            ),
        ),
    }


@pytest.mark.parametrize("name", list(sample_tables()))
def test_schema_round_trip_with_provenance(tmp_path, name):
    schema, table = sample_tables()[name]
    path = write_table(tmp_path / f"{name}.parquet", table, schema, {"model": "m", "dim": 4})
    back = read_table(path, schema)
    assert back.schema.remove_metadata().equals(schema)
    assert back.to_pylist() == table.to_pylist()
    assert read_metadata(path) == {"model": "m", "dim": 4}


def test_extra_item_columns_survive_when_declared_and_reads_project(tmp_path):
    items = sample_tables()["items"][1].append_column("year", pa.array([1999, None], pa.int32()))
    schema = pa.schema([*ITEMS, pa.field("year", pa.int32())])
    path = write_table(tmp_path / "items.parquet", items, schema)
    assert read_table(path, ITEMS).column("year").to_pylist() == [1999, None]
    assert read_table(path, ITEMS, columns=["item_id", "title"]).column_names == [
        "item_id",
        "title",
    ]


def test_provenance_helpers_and_embedding_dim():
    schema = with_provenance(embeddings(7), {"k": [1, 2]})
    assert provenance_of(schema) == {"k": [1, 2]} and provenance_of(ITEMS) == {}
    assert embedding_dim(schema) == 7
    with pytest.raises(ValueError, match="dim must be positive"):
        embeddings(0)


def test_failed_write_leaves_no_temp_and_keeps_the_old_file(tmp_path, monkeypatch):
    schema, table = sample_tables()["captions"]
    path = write_table(tmp_path / "captions.parquet", table, schema)

    def half_write(table, where, **kwargs):
        open(where, "wb").write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(store_module.pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_table(path, table.slice(0, 0), schema)
    assert [p.name for p in tmp_path.iterdir()] == ["captions.parquet"]
    assert read_table(path, schema).num_rows == 1


def test_bad_tables_are_errors_naming_the_file(tmp_path):
    schema, table = sample_tables()["interactions"]
    with pytest.raises(StoreError, match=r"bad\.parquet: missing column\(s\) \['split'\]"):
        write_table(tmp_path / "bad.parquet", table.drop_columns(["split"]), schema)
    with pytest.raises(StoreError, match=r"nulls\.parquet: column 'user_id' has 1 null"):
        write_table(
            tmp_path / "nulls.parquet",
            table.set_column(0, "user_id", pa.array([None], pa.string())),
            schema,
        )
    assert list(tmp_path.iterdir()) == []
    pq.write_table(table.set_column(4, "split", pa.array(["train"])), tmp_path / "typed.parquet")
    with pytest.raises(
        StoreError, match=r"typed\.parquet: column 'split' is string, expected int8"
    ):
        read_table(tmp_path / "typed.parquet", schema)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(StoreError, match=r"junk\.parquet: unreadable Parquet file"):
        read_table(tmp_path / "junk.parquet", schema)
    with pytest.raises(StoreError, match=r"absent\.parquet: no such store file"):
        read_table(tmp_path / "absent.parquet", schema)


def test_part_store_keeps_the_last_row_per_key_and_compacts(tmp_path):
    parts = PartStore(tmp_path / "captions", CAPTIONS)
    assert parts.read().num_rows == 0 and parts.append(CAPTIONS.empty_table()) is None
    first = pa.table(
        {
            "item_id": ["1", "2"],
            "image_sha256": ["a", "b"],
            "caption": ["old", "two"],
            "error": [None, None],
        }
    )
    second = pa.table(
        {
            "item_id": ["1", "3"],
            "image_sha256": ["a", "c"],
            "caption": ["new", "three"],
            "error": [None, None],
        }
    )
    parts.append(first, {"prompt": "p1"})
    parts.append(second, {"prompt": "p2"})
    merged = parts.read()
    assert sorted(
        zip(merged.column("item_id").to_pylist(), merged.column("caption").to_pylist(), strict=True)
    ) == [("1", "new"), ("2", "two"), ("3", "three")]
    assert parts.read(columns=["caption"]).column_names == ["item_id", "caption"]
    assert parts.provenance() == {"prompt": "p2"}
    parts.compact()
    assert (
        len(parts.parts()) == 1
        and parts.read().num_rows == 3
        and parts.provenance() == {"prompt": "p2"}
    )


def test_keep_last_on_two_key_columns():
    table = pa.table({"a": ["x", "x", "y", "x"], "b": ["1", "2", "1", "1"], "v": [1, 2, 3, 4]})
    assert keep_last(table, ("a", "b")).column("v").to_pylist() == [2, 3, 4]


def test_layout_names_and_current_pointer(tmp_path):
    layout = StoreLayout(tmp_path)
    assert layout.items == tmp_path / "catalog" / "items.parquet"
    assert (
        layout.embeddings("text", "abc-1")
        == tmp_path / "features" / "embeddings" / "text" / "abc-1"
    )
    with pytest.raises(StoreError, match="may hold only"):
        layout.captions("../escape")
    with pytest.raises(StoreError, match="CURRENT: missing"):
        current_key(tmp_path / "features" / "captions")
    set_current(tmp_path / "features" / "captions", "key1")
    assert current_key(tmp_path / "features" / "captions") == "key1"
