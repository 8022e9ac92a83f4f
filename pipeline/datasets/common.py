"""What every dataset adapter returns, counted drops, and the table readers that name the bad file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.schemas import SOURCE_INTERACTIONS

_EXAMPLES = 5  # ids shown with each drop, so a user can look the rows up
_BOM = "\ufeff"


class DatasetError(ValueError):
    """Input that cannot be ingested; the message names the file and the key, column or item."""


@dataclass(frozen=True)
class Drop:
    """Rows (or parts of rows) left out of the catalog, with why, how many and where from."""

    kind: str  # what was dropped: "interactions", "users", "items", "images"
    reason: str
    count: int
    file: str | None = None
    examples: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "count": self.count,
            "file": self.file,
            "examples": list(self.examples),
        }


def make_drop(
    kind: str, reason: str, ids: pa.Array | np.ndarray | list, file: Path | str | None
) -> Drop | None:
    """A Drop counting `ids` (None when there are none), with the first few distinct ids as examples."""
    count = len(ids)
    if count == 0:
        return None
    head = ids[: _EXAMPLES * 20]
    head = head.to_pylist() if isinstance(head, pa.Array | pa.ChunkedArray) else list(head)
    examples = tuple(dict.fromkeys(str(value) for value in head))[:_EXAMPLES]
    return Drop(kind, reason, count, str(file) if file is not None else None, examples)


@dataclass(frozen=True)
class ImportedFeature:
    """A ready-made feature matrix (row i = the i-th item in `item_ids`) to import as an embedding store."""

    modality: str
    file: Path
    item_ids: pa.Array
    dim: int


@dataclass
class SourceData:
    """One dataset as read by an adapter, before users are filtered and the split is applied."""

    items: pa.Table  # ITEMS columns, extras after them; item_id unique
    interactions: pa.Table  # SOURCE_INTERACTIONS; ingest drops (and counts) unknown item ids
    drops: list[Drop] = field(default_factory=list)
    features: list[ImportedFeature] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # what was read: role -> path

    @property
    def has_split(self) -> bool:
        column = self.interactions.column("split")
        return self.interactions.num_rows > 0 and column.null_count == 0

    def add_drop(self, drop: Drop | None) -> None:
        if drop is not None:
            self.drops.append(drop)


def read_tabular(
    path: Path,
    *,
    delimiter: str | None = None,
    quoted: bool = True,
    string_columns: list[str] | None = None,
    required: dict[str, str | None] | None = None,
) -> pa.Table:
    """A CSV/TSV (by `delimiter` or the suffix) or Parquet file as a table; errors name the file.

    `string_columns` are read as text whatever they look like (ids stay "007", not 7). With
    `required` (config key -> column), each column must be in the file and only those are read.
    RecBole's `name:type` headers are shortened to `name`.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            names = pq.read_schema(path).names
            table = pq.read_table(path, columns=_present(names, required, path))
        else:
            table = _read_csv(
                path,
                delimiter or ("\t" if suffix in (".tsv", ".inter", ".item", ".user") else ","),
                quoted,
                string_columns or [],
                required,
            )
    except pa.ArrowInvalid as error:
        if "utf8" in str(error).lower() and suffix not in (".parquet", ".pq"):
            raise DatasetError(
                f"{path}: text is not valid UTF-8 ({_first_bad_utf8(path)}): {error}"
            ) from error
        raise DatasetError(f"{path}: unreadable table: {error}") from error
    except (OSError, pa.ArrowException) as error:
        raise DatasetError(f"{path}: unreadable file: {error}") from error
    table = table.rename_columns(
        [name.lstrip(_BOM).split(":", 1)[0] for name in table.column_names]
    )
    if table.num_rows == 0:
        raise DatasetError(f"{path}: no rows (only a header)")
    return table


def _read_csv(
    path: Path,
    delimiter: str,
    quoted: bool,
    string_columns: list[str],
    required: dict[str, str | None] | None,
) -> pa.Table:
    header = _header(path, delimiter)
    # Match `name` to a RecBole header `name:type` too.
    types = {name: pa.string() for name in header if name.split(":", 1)[0] in string_columns}
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter, quote_char='"' if quoted else False, newlines_in_values=quoted
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            strings_can_be_null=False,
            include_columns=_present(header, required, path) or [],
        ),
    )


def _present(
    names: list[str], required: dict[str, str | None] | None, path: Path
) -> list[str] | None:
    """The file's names of the `required` columns (None = read all); a missing one is an error."""
    if required is None:
        return None
    require_columns([name.split(":", 1)[0] for name in names], required, path)
    wanted = {column for column in required.values() if column is not None}
    return [name for name in names if name.split(":", 1)[0] in wanted]


def _header(path: Path, delimiter: str) -> list[str]:
    with open(path, "rb") as handle:
        line = handle.readline()
    try:
        text = line.decode("utf-8-sig")  # a BOM (Excel's CSV export) is not part of the first name
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: header is not valid UTF-8 (byte {error.start})") from error
    return [name.strip().strip('"') for name in text.rstrip("\r\n").split(delimiter)]


def _first_bad_utf8(path: Path) -> str:
    """'line N, byte M' of the first invalid UTF-8 sequence (read only when an error is raised)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return f"line {number}, byte {error.start}"
    return "position unknown"


def require_columns(
    names: pa.Table | list[str], columns: dict[str, str | None], path: Path
) -> None:
    """Each config key's column must be among `names` (or a table's); the error names file, key, column."""
    names = names.column_names if isinstance(names, pa.Table) else names
    for key, column in columns.items():
        if column is not None and column not in names:
            raise DatasetError(
                f"{path}: column {column!r} (config key {key}) not found; columns are {names}"
            )


def as_strings(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pa.Array:
    """`column` as one string array; binary that is not UTF-8 is an error naming the file and column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string(column.type):
        return column
    if pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid as error:
        raise DatasetError(
            f"{path}: column {name!r} cannot be read as text (invalid UTF-8?): {error}"
        ) from error


def text_ids(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pa.Array:
    """An id column as text in Unicode NFC, so "é" typed as one code point or as e + accent is
    one id; every adapter reads its item and user ids through this (and source_interactions)."""
    return pc.utf8_normalize(as_strings(column, path, name), "NFC")


def check_unique_ids(item_ids: pa.Array, path: Path, column: str) -> None:
    """Duplicate or empty item ids are an error naming the file, the column and a few of the ids."""
    if item_ids.null_count or pc.any(pc.equal(item_ids, "")).as_py():
        raise DatasetError(f"{path}: column {column!r} has empty item ids")
    counts = pc.value_counts(item_ids)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated):
        shown = ", ".join(repeated[:_EXAMPLES].to_pylist())
        raise DatasetError(
            f"{path}: {len(repeated)} duplicate item id(s) in column {column!r}: {shown}"
        )


def drop_below_rating(
    interactions: pa.Table, min_rating: float | None, path: Path
) -> tuple[pa.Table, Drop | None]:
    """With a threshold set, interactions rated below it (or unrated) are dropped and counted."""
    if min_rating is None:
        return interactions, None
    keep = pc.fill_null(pc.greater_equal(interactions.column("rating"), min_rating), False)
    below = pc.filter(interactions.column("item_id"), pc.invert(keep))
    drop = make_drop(
        "interactions", f"rating below min_rating {min_rating} (or no rating)", below, path
    )
    return interactions.filter(keep), drop


def source_interactions(
    user_id: pa.Array,
    item_id: pa.Array,
    timestamp: pa.Array | None = None,
    rating: pa.Array | None = None,
    split: pa.Array | None = None,
) -> pa.Table:
    """A SOURCE_INTERACTIONS table from columns; absent optional columns are null."""
    n = len(user_id)
    columns = [
        pc.utf8_normalize(user_id.cast(pa.string()), "NFC"),  # ids are NFC (see text_ids)
        pc.utf8_normalize(item_id.cast(pa.string()), "NFC"),
        timestamp if timestamp is not None else pa.nulls(n, pa.int64()),
        rating if rating is not None else pa.nulls(n, pa.float32()),
        split if split is not None else pa.nulls(n, pa.int8()),
    ]
    return pa.Table.from_arrays(
        [c.cast(f.type) for c, f in zip(columns, SOURCE_INTERACTIONS, strict=True)],
        schema=SOURCE_INTERACTIONS,
    )
