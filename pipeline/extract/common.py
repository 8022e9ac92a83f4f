"""What the caption and embed stages share: their summary, progress, shards and stored state."""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from extractors.redact import redact, redact_value
from model.run import write_json
from pipeline.store import PartStore, StoreError

log = logging.getLogger(__name__)


CAPTION_PART_ROWS = 256  # a part is written at least this often (rows) ...
EMBED_PART_ROWS = 2048
PART_SECONDS = 30.0  # ... or this often (seconds), so a killed run loses little
MAX_ERRORS_SHOWN = 5


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class StageSummary:
    """What one caption or embed run did; printed by the CLI and stored beside the features."""

    stage: str
    key: str  # captioner key, or "<modality>=<embedder key>, ..." for embed
    name: str  # the backend's human name (says "NOT a multimodal LLM" for the descriptor)
    items: int = 0
    skipped: int = 0  # already in the store with the same input hash and key
    computed: int = 0  # new rows written without error this run
    failed: int = 0  # error rows written this run (retried next run)
    retried: int = 0  # items that had an error row before this run and were tried again
    no_input: int = 0  # items with no image / no caption / no text: nothing to compute
    dropped: int = 0  # of those, items that had a stored result: a null row (reason "no input")
    # replaces it (with force: every item without input, since force reads nothing stored)
    truncated: int = 0  # embed: inputs cut to the model's max length
    load_seconds: float = 0.0  # imports and model loading
    stage_seconds: float = 0.0  # the work itself
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few "item_id: reason"
    per_modality: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Its fields, redacted (extractors.redact): what summary.json and reports hold."""
        return redact_value(asdict(self))

    def format(self) -> str:
        lines = [
            f"{self.stage}: {self.name} [{self.key}]",
            f"  items {self.items}: computed {self.computed}, skipped (cached) {self.skipped}, "
            f"failed {self.failed} (retried from earlier runs: {self.retried}), no input {self.no_input}"
            f" (dropped {self.dropped}: stored results whose input is gone)"
            + (f", truncated {self.truncated}" if self.stage == "embed" else ""),
            f"  time: load {self.load_seconds:.1f}s, stage {self.stage_seconds:.1f}s",
        ]
        for modality, counts in self.per_modality.items():
            lines.append(f"  {modality}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        lines += [f"  WARNING: {warning}" for warning in self.warnings]
        lines += [f"  error: {error}" for error in self.errors]
        return redact("\n".join(lines))

    def __str__(self) -> str:
        return self.format()


@contextmanager
def progress_bar(
    total: int,
    description: str,
    enabled: bool,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[Callable[[int], None]]:
    """A tqdm bar (when enabled) whose updates also reach `on_progress(done, total)` (the UI's)."""
    from tqdm.auto import tqdm

    done = 0
    with tqdm(total=total, desc=description, unit="item", disable=not enabled or total == 0) as bar:

        def update(count: int) -> None:
            nonlocal done
            done += count
            bar.update(count)
            if on_progress is not None:
                on_progress(done, total)

        yield update


def shard_items(items: pa.Table, shard: tuple[int, int]) -> pa.Table:
    """The items of shard `index` of `count` (a stable hash of item_id), so shards never overlap."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index} of {count}: expected 0 <= index < count")
    if count == 1:
        return items
    keep = [
        zlib.crc32(item_id.encode()) % count == index
        for item_id in items.column("item_id").to_pylist()
    ]
    return items.filter(pa.array(keep, pa.bool_()))


def lock_name(shard: tuple[int, int]) -> str:
    return ".lock" if shard[1] == 1 else f".lock-{shard[0]}-of-{shard[1]}"


def chunks(count: int, rows: int) -> Iterator[slice]:
    for start in range(0, count, rows):
        yield slice(start, min(start + rows, count))


def write_summary(path: Path, summary: StageSummary) -> None:
    write_json(path, summary.to_dict())  # concurrent runs write it too: unique temp names


def stored_state(store: PartStore, hash_column: str) -> tuple[dict[str, str], set[str]]:
    """item_id -> input hash of the stored successes, and the item_ids whose newest row is an error."""
    for attempt in range(3):
        try:
            table = store.read(columns=[hash_column, "error"])
            break
        except StoreError:
            # another shard's compaction removed a part between listing and reading: list again
            if attempt == 2:
                raise
            time.sleep(0.2)
    item_ids = table.column("item_id").to_pylist()
    hashes = table.column(hash_column).to_pylist()
    errors = table.column("error").to_pylist()
    done = {
        item: digest
        for item, digest, error in zip(item_ids, hashes, errors, strict=True)
        if error is None
    }
    failed = {item for item, error in zip(item_ids, errors, strict=True) if error is not None}
    return done, failed


def count_outcome(summary: StageSummary, item_id: str, error: str | None) -> None:
    if error is None:
        summary.computed += 1
        return
    summary.failed += 1
    if len(summary.errors) < MAX_ERRORS_SHOWN:
        summary.errors.append(redact(f"{item_id}: {error}"))
