"""Parquet stores: atomic writes, append-only part folders, reads that validate the declared schema."""

from __future__ import annotations

import fcntl
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.run import RunFolder, write_atomically, write_text
from pipeline.schemas import IDS, provenance_of, with_provenance

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class StoreError(ValueError):
    """A store file is missing, unreadable or does not match its declared schema (names the file)."""


@dataclass(frozen=True)
class StoreLayout:
    """Every path under one store root (ARCHITECTURE.md, "Stores"): nothing else names one."""

    root: Path

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    @property
    def items(self) -> Path:
        return self.catalog / "items.parquet"

    @property
    def interactions(self) -> Path:
        return self.catalog / "interactions.parquet"

    @property
    def ingest_summary(self) -> Path:
        return self.catalog / "ingest_summary.json"

    @property
    def ingest_inputs(self) -> Path:
        """The digest of what the catalog was built from (the ingest stage's skip check)."""
        return self.catalog / "ingest_inputs.json"

    @property
    def image_cache(self) -> Path:
        return self.root / "images"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, name: str) -> RunFolder:
        return RunFolder(self.runs / _checked_name(name))

    @property
    def captions_root(self) -> Path:
        """features/captions/: one folder per captioner key, CURRENT and the stage summary."""
        return self.root / "features" / "captions"

    def captions(self, captioner_key: str) -> Path:
        return self.captions_root / _checked_name(captioner_key)

    @property
    def caption_summary(self) -> Path:
        return self.captions_root / "summary.json"

    @property
    def embeddings_root(self) -> Path:
        return self.root / "features" / "embeddings"

    def modality_embeddings(self, modality: str) -> Path:
        """features/embeddings/<modality>/: one folder per embedder key, and CURRENT."""
        return self.embeddings_root / _checked_name(modality)

    def embeddings(self, modality: str, embedder_key: str) -> Path:
        return self.modality_embeddings(modality) / _checked_name(embedder_key)

    @property
    def embed_summary(self) -> Path:
        return self.embeddings_root / "summary.json"


def _checked_name(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise StoreError(
            f"store folder name {name!r} may hold only letters, digits, '.', '_' and '-'"
        )
    return name


# --- single files ---------------------------------------------------------------------------


def write_table(
    path: Path, table: pa.Table, schema: pa.Schema, provenance: dict | None = None
) -> Path:
    """Write `table` cast to `schema` at `path` atomically: a temp name in the same folder, then rename."""
    table = conform(table, schema, source=str(path))
    if provenance is not None:
        table = table.replace_schema_metadata(with_provenance(table.schema, provenance).metadata)
    return write_atomically(path, lambda temporary: pq.write_table(table, temporary))


def read_table(path: Path, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Read `path`, check it holds `schema`'s columns with compatible types, cast to `schema`.

    Columns beyond the schema are kept (adapters add extras to items); `columns` projects.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store file (has the stage that writes it run?)")
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as error:
        raise StoreError(f"{path}: unreadable Parquet file: {error}") from error
    wanted = schema if columns is None else pa.schema([f for f in schema if f.name in columns])
    return conform(table, wanted, source=str(path), keep_extra=True)


def write_ids(path: Path, ids: list[str] | np.ndarray) -> Path:
    """Row i of a run's vectors belongs to ids[i]; the rank stage maps rows back through this."""
    return write_table(path, pa.table({"id": pa.array(list(ids), pa.string())}), IDS)


def read_ids(path: Path) -> np.ndarray:
    return np.asarray(read_table(path, IDS).column("id").to_pylist(), dtype=object)


def read_metadata(path: Path) -> dict:
    """The provenance stored in a Parquet file's schema metadata."""
    try:
        return provenance_of(pq.read_schema(path))
    except (OSError, pa.ArrowException) as error:
        raise StoreError(f"{path}: unreadable Parquet file: {error}") from error


def conform(table: pa.Table, schema: pa.Schema, source: str, keep_extra: bool = False) -> pa.Table:
    """`table` with `schema`'s columns in order and types; a missing column or bad cast names `source`."""
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise StoreError(f"{source}: missing column(s) {missing}; has {table.column_names}")
    columns, fields = [], []
    for field in schema:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            raise StoreError(
                f"{source}: column {field.name!r} has {column.null_count} null value(s)"
            )
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise StoreError(
                    f"{source}: column {field.name!r} is {column.type}, expected {field.type}: {error}"
                ) from error
        columns.append(column)
        fields.append(field)
    if keep_extra:
        for name in table.column_names:
            if name not in schema.names:
                columns.append(table.column(name))
                fields.append(table.schema.field(name))
    out_schema = pa.schema(fields, metadata=table.schema.metadata)
    return pa.Table.from_arrays(columns, schema=out_schema)


# --- part folders ---------------------------------------------------------------------------


class PartStore:
    """An append-only folder of `part-*.parquet` files sharing one schema, keyed by `key` columns.

    Each append is one atomic file, so a killed run loses at most the part in flight. Reads keep
    the newest row per key, so two runs that appended the same item at once never yield duplicates;
    `compact` folds the parts into one under a lock.
    """

    def __init__(self, root: Path, schema: pa.Schema, key: tuple[str, ...] = ("item_id",)):
        self.root = Path(root)
        self.schema = schema
        self.key = key

    def parts(self) -> list[Path]:
        """Part files, oldest first (names start with a nanosecond timestamp)."""
        if not self.root.exists():
            return []
        return sorted(self.root.glob("part-*.parquet"))

    def append(self, table: pa.Table, provenance: dict | None = None) -> Path | None:
        """Write `table` as a new part; returns its path (None for an empty table)."""
        if table.num_rows == 0:
            return None
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        return write_table(self.root / name, table, self.schema, provenance)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """All parts concatenated, newest row per key kept; an empty table when there are none."""
        if columns is not None:
            columns = list(dict.fromkeys([*self.key, *columns]))
        tables = [self._read_part(part, columns) for part in self.parts()]
        wanted = (
            self.schema
            if columns is None
            else pa.schema([f for f in self.schema if f.name in columns])
        )
        if not tables:
            return wanted.empty_table()
        tables = [t.select(wanted.names).cast(wanted) for t in tables]
        return keep_last(pa.concat_tables(tables), self.key)

    def _read_part(self, part: Path, columns: list[str] | None) -> pa.Table:
        try:
            return read_table(part, self.schema, columns)
        except StoreError as error:
            if not part.exists():  # removed by a compaction since it was listed: the caller retries
                raise
            raise StoreError(
                f"{error}\n  fix: delete that part file (rm '{part}') and run the stage again: it "
                "recomputes the items the part held (or run the stage with --force)"
            ) from error

    def provenance(self) -> dict:
        """The provenance of the newest part that has one ({} when none has)."""
        for part in reversed(self.parts()):
            provenance = read_metadata(part)
            if provenance:
                return provenance
        return {}

    def compact(self) -> Path | None:
        """Fold all parts into one (newest row per key), under the folder's lock.

        A part that cannot be read (truncated on disk) is deleted with a warning: its items are
        then missing from the store, so the next run of the stage recomputes them.
        """
        with self.lock():
            for part in self.parts():
                try:
                    pq.read_metadata(part)
                except (OSError, pa.ArrowException) as error:
                    log.warning("%s: unreadable part deleted (%s); its items will be recomputed",
                                part, error)
                    part.unlink(missing_ok=True)
            parts = self.parts()
            if len(parts) <= 1:
                return parts[0] if parts else None
            merged = self.read()
            path = self.append(merged, self.provenance())
            for part in parts:
                part.unlink(missing_ok=True)
            return path

    @contextmanager
    def lock(self, name: str = ".lock") -> Iterator[None]:
        """An exclusive advisory lock on this folder (held by writers that must not interleave).

        Writers of disjoint item shards take differently named locks, so they run side by side.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / name, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def keep_last(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Rows of `table` with the last occurrence of each `key` value kept, in their original order."""
    if table.num_rows == 0:
        return table
    columns = [table.column(name).to_numpy(zero_copy_only=False).astype(str) for name in key]
    keys = (
        columns[0]
        if len(columns) == 1
        else np.array(["\x1f".join(row) for row in zip(*columns, strict=True)])
    )
    reversed_keys = keys[::-1]
    _, first_in_reversed = np.unique(reversed_keys, return_index=True)
    last_index = np.sort(len(keys) - 1 - first_in_reversed)
    if len(last_index) == table.num_rows:
        return table
    return table.take(pa.array(last_index))


# --- which keyed folder a stage last produced -----------------------------------------------

CURRENT_FILE = "CURRENT"


def set_current(keyed_parent: Path, key: str) -> None:
    """Record `key` as the folder under `keyed_parent` that downstream stages read (atomic).

    The caption stage writes it under features/captions/ and the embed stage under each
    features/embeddings/<modality>/, since the key is only known once a backend is loaded
    (a fallback captioner, a checkpoint's own max length).
    """
    write_text(keyed_parent / CURRENT_FILE, _checked_name(key) + "\n")


def current_key(keyed_parent: Path) -> str:
    """The key that `set_current` last recorded under `keyed_parent`."""
    path = keyed_parent / CURRENT_FILE
    if not path.exists():
        raise StoreError(f"{path}: missing (has the stage that writes {keyed_parent} run?)")
    return path.read_text().strip()
