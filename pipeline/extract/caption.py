"""The caption stage: describe each catalog image with the configured captioner, incrementally."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from extractors.config import CaptionConfig
from extractors.redact import redact
from pipeline.schemas import CAPTIONS, ITEMS
from pipeline.store import (
    PartStore,
    StoreLayout,
    read_table,
    set_current,
)

if TYPE_CHECKING:
    from pipeline.config import Config

from pipeline.extract.common import (
    CAPTION_PART_ROWS,
    PART_SECONDS,
    StageSummary,
    chunks,
    count_outcome,
    lock_name,
    progress_bar,
    shard_items,
    stored_state,
    write_summary,
)

log = logging.getLogger(__name__)

NO_IMAGE = "no input: the catalog has no image for this item now"


def image_roots(config: Config) -> list[Path]:
    """Folders the catalog's image paths must stay inside: the dataset's own, and the store's image cache."""
    dataset = config.dataset
    roots = [StoreLayout(Path(config.store)).image_cache]
    if dataset.kind == "movielens":
        roots.append(Path(dataset.path))
    elif dataset.kind == "generic":
        roots.append(Path(dataset.image_root) if dataset.image_root else Path(dataset.items).parent)
    return roots


def caption_store(
    caption_config: CaptionConfig,
    store_root: Path,
    roots: Sequence[Path],
    force: bool = False,
    progress: bool = True,
    part_rows: int = CAPTION_PART_ROWS,
    shard: tuple[int, int] = (0, 1),
    on_progress: Callable[[int, int], None] | None = None,
) -> StageSummary:
    """Caption every catalog item whose (image_sha256, captioner key) is not stored yet; `force` redoes all.

    Holds the store folder's lock while working, so a second run waits and then finds the work done.
    """
    from extractors.factory import build_captioner
    from extractors.images import load_image

    layout = StoreLayout(Path(store_root))
    items = read_table(layout.items, ITEMS, columns=["item_id", "image_path", "image_sha256"])
    items = shard_items(items, shard)
    started = time.perf_counter()
    built = build_captioner(caption_config)
    captioner = built.captioner
    summary = StageSummary(
        "caption",
        captioner.key,
        captioner.name,
        items=items.num_rows,
        warnings=list(built.warnings),
        load_seconds=time.perf_counter() - started,
    )
    store = PartStore(layout.captions(captioner.key), CAPTIONS)
    provenance = {
        "captioner_key": captioner.key,
        "captioner_name": captioner.name,
        "settings": captioner.provenance,
    }
    started = time.perf_counter()
    with store.lock(lock_name(shard)):
        # with force nothing stored is read (so it works past a damaged part): every item
        # without input gets its null row
        done, failed_before = ({}, set()) if force else stored_state(store, "image_sha256")
        todo, rows = [], []
        for item_id, image_path in zip(
            *(items.column(c).to_pylist() for c in ("item_id", "image_path")), strict=True
        ):
            if image_path is None:
                summary.no_input += 1
                if force or item_id in done:  # its image left the catalog: its caption must go too
                    rows.append(_caption_row(item_id, None, None, NO_IMAGE))
                    summary.dropped += 1
                continue
            # Hash the bytes as they are now: a poster replaced since ingest is captioned again,
            # and one gone or unreadable is tried again, so it gets an error row, not its old caption.
            image_sha256 = _current_sha256(image_path, roots)
            if done.get(item_id) == image_sha256 and image_sha256 is not None:
                summary.skipped += 1
            else:
                todo.append((item_id, image_path, image_sha256))
        summary.retried = sum(item_id in failed_before for item_id, _, _ in todo)
        last_write = time.monotonic()
        with progress_bar(
            len(todo), f"caption [{captioner.key}]", progress, on_progress
        ) as advance:
            for batch in chunks(len(todo), captioner.preferred_batch):
                entries = todo[batch]
                loaded = [
                    load_image(path, roots, caption_config.max_image_pixels)
                    for _, path, _ in entries
                ]
                good = [index for index, image in enumerate(loaded) if image.error is None]
                results: dict[int, tuple[str | None, str | None]] = {
                    index: (None, image.error)
                    for index, image in enumerate(loaded)
                    if image.error is not None
                }
                if good:
                    outputs = captioner.caption_each([loaded[index].image for index in good])
                    results.update(zip(good, outputs, strict=True))
                for index, (item_id, _, image_sha256) in enumerate(entries):
                    text, error = results[index]
                    rows.append(_caption_row(item_id, image_sha256, text, error))
                    count_outcome(summary, item_id, error)
                advance(len(entries))
                if len(rows) >= part_rows or time.monotonic() - last_write > PART_SECONDS:
                    store.append(pa.Table.from_pylist(rows, CAPTIONS), provenance)
                    rows, last_write = [], time.monotonic()
        store.append(pa.Table.from_pylist(rows, CAPTIONS), provenance)
    store.compact()
    set_current(layout.captions_root, captioner.key)
    summary.stage_seconds = time.perf_counter() - started
    write_summary(layout.caption_summary, summary)
    return summary


def _caption_row(
    item_id: str, image_sha256: str | None, caption: str | None, error: str | None
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "image_sha256": image_sha256,
        "caption": caption,
        "error": redact(error) if error else error,
    }


def _current_sha256(image_path: str, roots: Sequence[Path]) -> str | None:
    """The sha256 of the image file's current bytes; None when it is gone, unreadable or outside
    the roots (the load then records the error row)."""
    from extractors.images import resolve_image_path
    from pipeline.images import sha256_file

    try:
        return sha256_file(resolve_image_path(image_path, roots))
    except (OSError, ValueError):
        return None
