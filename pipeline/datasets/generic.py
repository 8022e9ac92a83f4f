"""A catalog of your own: items and interactions as CSV or Parquet, column names from the config."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extractors.images import ImageFileError
from pipeline.datasets.common import (
    DatasetError,
    SourceData,
    as_strings,
    check_unique_ids,
    drop_below_rating,
    make_drop,
    read_tabular,
    source_interactions,
    text_ids,
)
from pipeline.images import download_images, is_url, sha256_file

if TYPE_CHECKING:
    from pipeline.config import GenericDataset


def load_generic(dataset: GenericDataset, image_cache: Path, progress: bool = False) -> SourceData:
    """The catalog described by `dataset`; image URLs are fetched once into `image_cache`."""
    items_file, inter_file = Path(dataset.items), Path(dataset.interactions)
    id_column = dataset.item_id_column
    text_columns = list(dataset.text_columns)
    items_string_columns = [id_column, *text_columns] + [
        c for c in (dataset.title_column, dataset.image_column) if c
    ]
    raw_items = read_tabular(
        items_file,
        string_columns=items_string_columns,
        required={
            "dataset.item_id_column": id_column,
            "dataset.title_column": dataset.title_column,
            "dataset.image_column": dataset.image_column,
            **{f"dataset.text_columns[{i}]": c for i, c in enumerate(text_columns)},
        },
    )
    item_ids = pc.utf8_trim_whitespace(text_ids(raw_items.column(id_column), items_file, id_column))
    check_unique_ids(item_ids, items_file, id_column)
    n_items = len(item_ids)
    title = (
        _blank_to_null(
            as_strings(raw_items.column(dataset.title_column), items_file, dataset.title_column)
        )
        if dataset.title_column
        else pa.nulls(n_items, pa.string())
    )
    text = _joined_text(raw_items, text_columns, items_file)
    source = SourceData(
        pa.table({}),
        pa.table({}),
        files={"items": str(items_file), "interactions": str(inter_file)},
    )
    if text_columns:
        no_text = pc.filter(item_ids, pc.is_null(text))
        source.add_drop(
            make_drop(
                "text",
                f"no text in columns {text_columns} (item kept, text null)",
                no_text,
                items_file,
            )
        )
    image_path, image_sha256 = pa.nulls(n_items, pa.string()), pa.nulls(n_items, pa.string())
    if dataset.image_column:
        values = _blank_to_null(
            as_strings(raw_items.column(dataset.image_column), items_file, dataset.image_column)
        )
        root = Path(dataset.image_root) if dataset.image_root else items_file.parent
        image_path, image_sha256 = _resolve_images(
            item_ids, values, root, image_cache, dataset, source, items_file, progress
        )
    source.items = pa.table(
        {
            "item_id": item_ids,
            "title": title,
            "text": text,
            "image_path": image_path,
            "image_sha256": image_sha256,
        }
    )
    source.interactions = _read_interactions(dataset, inter_file, item_ids, source)
    return source


def _blank_to_null(values: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _joined_text(table: pa.Table, columns: list[str], path: Path) -> pa.Array:
    """The non-empty text columns of each item joined by one space; null when all are empty."""
    if not columns:
        return pa.nulls(table.num_rows, pa.string())
    parts = [_blank_to_null(as_strings(table.column(c), path, c)) for c in columns]
    # Pairwise, because pyarrow 26's null_handling="skip" loses rows whose parts are all null.
    joined = parts[0]
    for part in parts[1:]:
        joined = pc.coalesce(pc.binary_join_element_wise(joined, part, " "), joined, part)
    return joined


def _resolve_images(
    item_ids: pa.Array,
    values: pa.Array,
    root: Path,
    image_cache: Path,
    dataset: GenericDataset,
    source: SourceData,
    items_file: Path,
    progress: bool,
) -> tuple[pa.Array, pa.Array]:
    """Absolute image paths and sha256s per item; missing, escaping or failed images are null and counted."""
    root = root.resolve()
    paths: list[str | None] = [None] * len(item_ids)
    digests: list[str | None] = [None] * len(item_ids)
    failed: dict[str, list[str]] = defaultdict(list)  # reason -> item ids
    ids = item_ids.to_pylist()
    urls: dict[int, str] = {}
    for row, value in enumerate(values.to_pylist()):
        if value is None:
            failed[f"no image in column {dataset.image_column!r}"].append(ids[row])
        elif is_url(value):
            urls[row] = value
        else:
            candidate = (root / value).resolve()
            if not candidate.is_relative_to(root):
                failed[f"image path outside image_root {root}"].append(ids[row])
            elif not candidate.is_file():
                failed["image file not found"].append(ids[row])
            else:
                try:
                    paths[row], digests[row] = str(candidate), sha256_file(candidate)
                except ImageFileError as error:  # a file over the size limit, or swapped since
                    failed[f"image file {error.reason}"].append(ids[row])
    if urls:
        download = dataset.download
        fetched = download_images(
            urls.values(),
            image_cache,
            concurrency=download.concurrency,
            retries=download.retries,
            timeout_s=download.timeout_s,
            max_bytes=download.max_bytes,
            progress=progress,
        )
        for row, url in urls.items():
            result = fetched[url]
            if result.path is None:
                failed[f"image URL not fetched: {result.error}"].append(ids[row])
            else:
                paths[row], digests[row] = str(result.path.resolve()), result.sha256
    for reason, failed_ids in failed.items():
        source.add_drop(
            make_drop("images", f"{reason} (item kept, image null)", failed_ids, items_file)
        )
    return pa.array(paths, pa.string()), pa.array(digests, pa.string())


def _read_interactions(
    dataset: GenericDataset, path: Path, item_ids: pa.Array, source: SourceData
) -> pa.Table:
    user_column, item_column = dataset.user_column, dataset.interaction_item_column
    raw = read_tabular(
        path,
        string_columns=[user_column, item_column],
        required={
            "dataset.user_column": user_column,
            "dataset.interaction_item_column": item_column,
            "dataset.timestamp_column": dataset.timestamp_column,
            "dataset.rating_column": dataset.rating_column,
        },
    )
    if dataset.min_rating is not None and dataset.rating_column is None:
        raise DatasetError(f"{path}: dataset.min_rating is set but dataset.rating_column is not")
    user_id = _blank_to_null(text_ids(raw.column(user_column), path, user_column))
    item_id = _blank_to_null(text_ids(raw.column(item_column), path, item_column))
    timestamp = (
        _timestamp(raw.column(dataset.timestamp_column), path, dataset.timestamp_column)
        if dataset.timestamp_column
        else None
    )
    rating = (
        _rating(raw.column(dataset.rating_column), path, dataset.rating_column)
        if dataset.rating_column
        else None
    )
    valid = pc.and_(pc.is_valid(user_id), pc.is_valid(item_id))
    if not pc.all(valid).as_py():
        # Data row numbers (0-based) as the examples: there is no id to show.
        rows = np.flatnonzero(~valid.to_numpy(zero_copy_only=False))
        source.add_drop(
            make_drop(
                "interactions", "empty user or item id (examples are row numbers)", rows, path
            )
        )
    interactions = source_interactions(user_id, item_id, timestamp=timestamp, rating=rating).filter(
        valid
    )
    interactions, below = drop_below_rating(interactions, dataset.min_rating, path)
    source.add_drop(below)
    return interactions


def _timestamp(column: pa.ChunkedArray, path: Path, name: str) -> pa.Array:
    """Seconds since the epoch from numbers, Arrow timestamps/dates or ISO 8601 text."""
    values = column.combine_chunks()
    try:
        if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
            return pc.floor(values.cast(pa.float64())).cast(pa.int64())
        if pa.types.is_date(values.type):
            values = values.cast(pa.timestamp("s"))
        elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            values = values.cast(pa.timestamp("s"))
        if pa.types.is_timestamp(values.type):
            return values.cast(pa.timestamp("s", tz=values.type.tz), safe=False).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise DatasetError(
            f"{path}: column {name!r} (dataset.timestamp_column) is not a time: {error}"
        ) from error
    raise DatasetError(
        f"{path}: column {name!r} (dataset.timestamp_column) has type {values.type}, not a time"
    )


def _rating(column: pa.ChunkedArray, path: Path, name: str) -> pa.Array:
    try:
        return column.combine_chunks().cast(pa.float32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise DatasetError(
            f"{path}: column {name!r} (dataset.rating_column) is not numeric: {error}"
        ) from error
