"""MMRec format: `<name>.inter` with its x_label split, plus feature .npy files (row i = item i)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.datasets.common import (
    DatasetError,
    ImportedFeature,
    SourceData,
    as_strings,
    read_tabular,
    require_columns,
    source_interactions,
)

_COLUMNS = {"user": "userID", "item": "itemID", "split": "x_label"}


def load_mmrec(
    path: Path, name: str | None = None, features: dict[str, str] | None = None
) -> SourceData:
    """The catalog of an MMRec dataset folder; items are 0..max itemID and carry no title, text or image.

    `features` maps a file in the folder (e.g. image_feat.npy) to the modality it is imported as;
    absent files are skipped, present ones must have one row per item.
    """
    path = Path(path)
    inter_file = path / f"{name or path.name}.inter"
    raw = read_tabular(
        inter_file, quoted=False, string_columns=[_COLUMNS["user"], _COLUMNS["item"]]
    )
    require_columns(raw, _COLUMNS, inter_file)
    item_number = _integer_ids(raw.column(_COLUMNS["item"]), inter_file, _COLUMNS["item"])
    split = raw.column(_COLUMNS["split"]).combine_chunks()
    if (
        not pa.types.is_integer(split.type)
        or split.null_count
        or not pc.all(pc.is_in(split, pa.array([0, 1, 2], split.type))).as_py()
    ):
        raise DatasetError(
            f"{inter_file}: column 'x_label' must hold only 0, 1 or 2 (train/valid/test)"
        )
    optional = {}
    for column in ("timestamp", "rating"):
        if column in raw.column_names:
            optional[column] = raw.column(column).combine_chunks()
    timestamp = optional.get("timestamp")
    if timestamp is not None:
        try:
            timestamp = pc.floor(timestamp.cast(pa.float64())).cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise DatasetError(
                f"{inter_file}: column 'timestamp' is not numeric: {error}"
            ) from error
    interactions = source_interactions(
        as_strings(raw.column(_COLUMNS["user"]), inter_file, _COLUMNS["user"]),
        item_number.cast(pa.string()),
        timestamp=timestamp,
        rating=optional.get("rating"),
        split=split,
    )
    n_items = int(pc.max(item_number).as_py()) + 1
    item_ids = pa.array(np.arange(n_items).astype(str), pa.string())
    nulls = pa.nulls(n_items, pa.string())
    items = pa.table(
        {
            "item_id": item_ids,
            "title": nulls,
            "text": nulls,
            "image_path": nulls,
            "image_sha256": nulls,
        }
    )
    source = SourceData(items, interactions, files={"interactions": str(inter_file)})
    for file_name, modality in (features or {}).items():
        feature_file = path / file_name
        if feature_file.exists():
            _, dim = check_feature_rows(feature_file, n_items, inter_file)
            source.features.append(ImportedFeature(modality, feature_file, item_ids, dim))
            source.files[f"features.{modality}"] = str(feature_file)
    return source


def _integer_ids(column: pa.ChunkedArray, path: Path, name: str) -> pa.Array:
    """MMRec item ids are row numbers of the feature files: non-negative integers."""
    text = as_strings(column, path, name)
    if not pc.all(pc.match_substring_regex(text, r"^[0-9]{1,18}$")).as_py():
        bad = pc.filter(text, pc.invert(pc.match_substring_regex(text, r"^[0-9]{1,18}$")))[
            :5
        ].to_pylist()
        raise DatasetError(
            f"{path}: column {name!r} must hold non-negative integer item ids (rows of the feature files); found {bad}"
        )
    return text.cast(pa.int64())


def check_feature_rows(feature_file: Path, n_items: int, inter_file: Path) -> tuple[int, int]:
    """A feature file must be a 2-D array with one row per item; returns its (rows, dim)."""
    try:
        matrix = np.load(feature_file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{feature_file}: unreadable .npy file: {error}") from error
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise DatasetError(
            f"{feature_file}: expected a 2-D (items x dim) array, got shape {matrix.shape}"
        )
    if matrix.shape[0] != n_items:
        raise DatasetError(
            f"{feature_file}: has {matrix.shape[0]} rows but {inter_file} names {n_items} items "
            f"(item ids 0..{n_items - 1}); row i must be item i"
        )
    _check_finite(matrix, feature_file)
    return matrix.shape


def _check_finite(matrix: np.ndarray, feature_file: Path, rows_per_chunk: int = 65536) -> None:
    """Every value is a finite number; the first row holding NaN or inf is named (read in chunks)."""
    if not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(matrix.dtype, np.complexfloating):
        raise DatasetError(f"{feature_file}: holds {matrix.dtype} values, not real numbers")
    for start in range(0, matrix.shape[0], rows_per_chunk):
        bad = ~np.isfinite(np.asarray(matrix[start:start + rows_per_chunk]))  # (chunk, dim)
        if bad.any():
            row = start + int(np.flatnonzero(bad.any(axis=1))[0])
            count = int(bad[row - start].sum())
            raise DatasetError(
                f"{feature_file}: row {row} (item {row}) has {count} NaN or infinite value(s); "
                "every feature must be a finite number (fix or drop that row's item)"
            )


def read_feature_rows(feature_file: Path, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of a feature file as float32 (memory-mapped, so large files stream)."""
    return np.asarray(
        np.load(feature_file, mmap_mode="r", allow_pickle=False)[start:stop], dtype=np.float32
    )
