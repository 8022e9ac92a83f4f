"""The embed stage: each modality's text (caption or item text) to vectors, incrementally."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extractors.config import EmbedConfig, ModalityConfig, default_modalities
from extractors.redact import redact
from pipeline.schemas import CAPTIONS, ITEMS, embeddings
from pipeline.store import (
    PartStore,
    StoreLayout,
    current_key,
    read_table,
    set_current,
)

if TYPE_CHECKING:
    from extractors.base import Embedder

from pipeline.extract.common import (
    EMBED_PART_ROWS,
    MAX_ERRORS_SHOWN,
    StageSummary,
    chunks,
    count_outcome,
    lock_name,
    progress_bar,
    sha256_text,
    shard_items,
    stored_state,
    write_summary,
)

log = logging.getLogger(__name__)

NO_INPUT = {
    "caption": "no input: the item has no caption now (its image is gone, or captioning failed)",
    "text": "no input: the item has no text now",
}


def _modality_texts(layout: StoreLayout, items: pa.Table, source: str) -> list[str | None]:
    """Each catalog item's input text for a modality source, aligned with `items` (None: no input)."""
    if source == "text":
        return items.column("text").to_pylist()
    captions = PartStore(layout.captions(current_key(layout.captions_root)), CAPTIONS).read(
        columns=["caption"]
    )
    by_item = dict(
        zip(
            captions.column("item_id").to_pylist(),
            captions.column("caption").to_pylist(),
            strict=True,
        )
    )
    return [by_item.get(item_id) for item_id in items.column("item_id").to_pylist()]


def first_caption_errors(layout: StoreLayout, limit: int = 3) -> list[str]:
    """The first "item_id: error" rows of the current captions: why a caption modality lacks input."""
    captions = PartStore(layout.captions(current_key(layout.captions_root)), CAPTIONS).read(
        columns=["error"]
    )
    failed = captions.filter(pc.is_valid(captions.column("error"))).slice(0, limit)
    return [
        redact(f"{item_id}: {error}")
        for item_id, error in zip(
            failed.column("item_id").to_pylist(), failed.column("error").to_pylist(), strict=True
        )
    ]


def embed_store(
    embed_config: EmbedConfig,
    modalities: Mapping[str, ModalityConfig] | None,
    store_root: Path,
    force: bool = False,
    progress: bool = True,
    part_rows: int = EMBED_PART_ROWS,
    shard: tuple[int, int] = (0, 1),
    on_progress: Callable[[int, int], None] | None = None,
) -> StageSummary:
    """Embed each modality's text for items whose (input sha256, embedder key) is not stored yet."""
    from extractors.factory import build_embedder

    layout = StoreLayout(Path(store_root))
    modalities = {
        name: modality
        for name, modality in dict(modalities or default_modalities()).items()
        if modality.source != "imported"  # vectors that came with the dataset: nothing to embed
    }
    items = shard_items(read_table(layout.items, ITEMS, columns=["item_id", "text"]), shard)
    embedders: dict[EmbedConfig, Embedder] = {}
    summary = StageSummary("embed", "", "", items=items.num_rows)
    for modality, modality_config in modalities.items():
        config = modality_config.embedder or embed_config
        started = time.perf_counter()
        if config not in embedders:
            embedders[config] = build_embedder(config)
        embedder = embedders[config]
        summary.load_seconds += time.perf_counter() - started
        started = time.perf_counter()
        counts = _embed_modality(
            layout,
            items,
            modality,
            modality_config.source,
            embedder,
            force,
            progress,
            part_rows,
            summary,
            shard,
            on_progress,
        )
        summary.stage_seconds += time.perf_counter() - started
        summary.per_modality[modality] = counts
    summary.key = ", ".join(f"{m}={c['key']}" for m, c in summary.per_modality.items())
    summary.name = ", ".join(sorted({embedder.name for embedder in embedders.values()}))
    write_summary(layout.embed_summary, summary)
    return summary


def _embed_modality(
    layout: StoreLayout,
    items: pa.Table,
    modality: str,
    source: str,
    embedder: Embedder,
    force: bool,
    progress: bool,
    part_rows: int,
    summary: StageSummary,
    shard: tuple[int, int] = (0, 1),
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    schema = embeddings(embedder.dim)
    store = PartStore(layout.embeddings(modality, embedder.key), schema)
    provenance = {
        **embedder.provenance,
        "embedder_key": embedder.key,
        "embedder_name": embedder.name,
        "modality": modality,
        "source": source,
        "dim": embedder.dim,
    }
    texts = _modality_texts(layout, items, source)
    if source == "caption":
        provenance["captioner_key"] = current_key(layout.captions_root)
    counts = {
        "key": embedder.key,
        "computed": 0,
        "failed": 0,
        "skipped": 0,
        "no_input": 0,
        "dropped": 0,  # of those, items that had a vector: a null row replaces it
        "truncated": 0,
    }
    before = (summary.computed, summary.failed)
    first_errors: list[str] = []  # this modality's, for the warning when none has a vector

    def outcome(item_id: str, error: str | None) -> None:
        count_outcome(summary, item_id, error)
        if error is not None and len(first_errors) < MAX_ERRORS_SHOWN:
            first_errors.append(redact(f"{item_id}: {error}"))

    with store.lock(lock_name(shard)):
        # with force nothing stored is read (so it works past a damaged part): every item
        # without input gets its null row
        done, failed_before = ({}, set()) if force else stored_state(store, "input_sha256")
        todo, rows = [], []
        for item_id, text in zip(items.column("item_id").to_pylist(), texts, strict=True):
            if text is None:
                counts["no_input"] += 1
                if force or item_id in done:  # its text or caption is gone: its vector must go too
                    rows.append(_embed_row(item_id, None, None, None, NO_INPUT[source]))
                    counts["dropped"] += 1
                continue
            digest = sha256_text(text)
            if done.get(item_id) == digest:
                counts["skipped"] += 1
            elif not text.strip():
                rows.append(_embed_row(item_id, digest, None, None, f"empty {source}"))
                outcome(item_id, f"empty {source}")
                summary.retried += item_id in failed_before
            else:
                todo.append((item_id, digest, text))
        summary.retried += sum(item_id in failed_before for item_id, _, _ in todo)
        with progress_bar(
            len(todo), f"embed {modality} [{embedder.key}]", progress, on_progress
        ) as advance:
            for chunk in chunks(len(todo), part_rows):
                entries = todo[chunk]
                for (item_id, digest, _), (vector, truncated, error) in zip(
                    entries, _embed_checked(embedder, [text for _, _, text in entries]), strict=True
                ):
                    rows.append(_embed_row(item_id, digest, vector, truncated, error))
                    outcome(item_id, error)
                    counts["truncated"] += bool(truncated)
                store.append(_embed_table(rows, schema), provenance)
                rows = []
                advance(len(entries))
        store.append(_embed_table(rows, schema), provenance)
    store.compact()
    set_current(layout.modality_embeddings(modality), embedder.key)
    counts["computed"] = summary.computed - before[0]
    counts["failed"] = summary.failed - before[1]
    summary.skipped += counts["skipped"]
    summary.no_input += counts["no_input"]
    summary.dropped += counts["dropped"]
    summary.truncated += counts["truncated"]
    if items.num_rows and counts["computed"] + counts["skipped"] == 0:
        if source == "caption" and not first_errors:
            first_errors = first_caption_errors(layout)  # no caption: why captioning failed
        summary.warnings.append(_nothing_embedded(layout, modality, source, items.num_rows, counts,
                                                  first_errors))
    return counts


def _nothing_embedded(
    layout: StoreLayout, modality: str, source: str, n_items: int, counts: dict, first_errors: list
) -> str:
    """The warning for a modality none of whose items has a vector: the counts, first errors, the fix."""
    return (
        f"modality {modality!r}: every input was empty or failed, so no item has a vector "
        f"({counts['no_input']} of {n_items} items without {source}, {counts['failed']} empty "
        f"or failed); first errors: {'; '.join(first_errors) or 'none'}. "
        f"{no_vector_advice(layout, modality, source)} (training refuses a modality without vectors)"
    )


def no_vector_advice(layout: StoreLayout, modality: str, source: str) -> str:
    """What to do about a modality without vectors (the embed warning's and the train error's)."""
    if source == "caption":
        fix = (
            "Fix the images or the captioner (the caption stage's errors are in "
            f"{layout.caption_summary}), then run caption and embed again"
        )
    else:
        fix = "Give the items a text (the dataset's text columns), then run ingest and embed again"
    return f"{fix}, or remove [modalities.{modality}] from the config"


def _embed_row(
    item_id: str, digest: str | None, vector: np.ndarray | None, truncated: bool | None, error: str | None
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "input_sha256": digest,
        "vector": vector,
        "truncated": truncated,
        "error": redact(error) if error else error,
    }


def _embed_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    dim = schema.field("vector").type.list_size
    vectors = np.zeros((len(rows), dim), dtype=np.float32)
    valid = np.zeros(len(rows), dtype=bool)
    for index, row in enumerate(rows):
        if row["vector"] is not None:
            vectors[index], valid[index] = row["vector"], True
    vector_array = pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.reshape(-1), pa.float32()), dim, mask=pa.array(~valid)
    )
    return pa.table(
        {
            "item_id": [r["item_id"] for r in rows],
            "input_sha256": [r["input_sha256"] for r in rows],
            "vector": vector_array,
            "truncated": pa.array([r["truncated"] for r in rows], pa.bool_()),
            "error": pa.array([r["error"] for r in rows], pa.string()),
        }
    )


def _embed_checked(
    embedder: Embedder, texts: list[str]
) -> list[tuple[np.ndarray | None, bool | None, str | None]]:
    """(vector, truncated, error) per text; a failing batch is retried text by text to isolate the bad ones."""
    try:
        vectors, truncated = embedder.embed(texts)
        if vectors.shape != (len(texts), embedder.dim) or len(truncated) != len(texts):
            raise RuntimeError(
                f"embedder returned shape {vectors.shape} and {len(truncated)} truncation flags "
                f"for {len(texts)} texts, dim {embedder.dim}"
            )
    except Exception as error:  # noqa: BLE001 - any backend failure becomes per-item error rows
        if len(texts) == 1:
            message = redact(f"embedding failed: {type(error).__name__}: {error}")
            return [(None, None, message[:500])]
        log.warning(
            "embedding batch of %d failed (%s); retrying one by one", len(texts), redact(str(error))
        )
        return [result for text in texts for result in _embed_checked(embedder, [text])]
    finite = np.isfinite(vectors).all(axis=1)
    return [
        (vector, cut, None) if ok else (None, None, "embedding has non-finite values")
        for vector, cut, ok in zip(vectors, truncated, finite, strict=True)
    ]
