"""Stage 1: caption item images and embed captions and item texts into the feature stores, incrementally."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from extractors.config import CaptionConfig, EmbedConfig, ModalityConfig, default_modalities
from pipeline.schemas import CAPTIONS, ITEMS, embeddings
from pipeline.store import (
    PartStore,
    StoreError,
    StoreLayout,
    current_key,
    read_table,
    set_current,
)

if TYPE_CHECKING:
    from pipeline.config import Config

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
    truncated: int = 0  # embed: inputs cut to the model's max length
    load_seconds: float = 0.0  # imports and model loading
    stage_seconds: float = 0.0  # the work itself
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few "item_id: reason"
    per_modality: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"{self.stage}: {self.name} [{self.key}]",
            f"  items {self.items}: computed {self.computed}, skipped (cached) {self.skipped}, "
            f"failed {self.failed} (retried from earlier runs: {self.retried}), no input {self.no_input}"
            + (f", truncated {self.truncated}" if self.stage == "embed" else ""),
            f"  time: load {self.load_seconds:.1f}s, stage {self.stage_seconds:.1f}s",
        ]
        for modality, counts in self.per_modality.items():
            lines.append(f"  {modality}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        lines += [f"  WARNING: {warning}" for warning in self.warnings]
        lines += [f"  error: {error}" for error in self.errors]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


@contextmanager
def _progress(
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


def _lock_name(shard: tuple[int, int]) -> str:
    return ".lock" if shard[1] == 1 else f".lock-{shard[0]}-of-{shard[1]}"


def _chunks(count: int, rows: int) -> Iterator[slice]:
    for start in range(0, count, rows):
        yield slice(start, min(start + rows, count))


def _write_summary(path: Path, summary: StageSummary) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary.to_dict(), indent=2))
    tmp.replace(path)


def _stored_state(store: PartStore, hash_column: str) -> tuple[dict[str, str], set[str]]:
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


# --- caption ----------------------------------------------------------------------------------


def image_roots(config: Config) -> list[Path]:
    """Folders the catalog's image paths must stay inside: the dataset's own, and the store's image cache."""
    dataset = config.dataset
    roots = [StoreLayout(Path(config.store)).image_cache]
    if dataset.kind == "movielens":
        roots.append(Path(dataset.path))
    elif dataset.kind == "generic":
        roots.append(Path(dataset.image_root) if dataset.image_root else Path(dataset.items).parent)
    return roots


def caption(
    config: Config,
    force: bool = False,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    on_progress: Callable[[int, int], None] | None = None,
) -> StageSummary:
    """The caption stage for a run config (see caption_store)."""
    return caption_store(
        config.caption,
        Path(config.store),
        image_roots(config),
        force=force,
        progress=progress,
        shard=shard,
        on_progress=on_progress,
    )


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
    from extractors.factory import build_captioner, caption_each
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
        "settings": _caption_settings(caption_config, captioner.key),
    }
    started = time.perf_counter()
    with store.lock(_lock_name(shard)):
        done, failed_before = ({}, set()) if force else _stored_state(store, "image_sha256")
        todo = []
        for item_id, image_path, image_sha256 in zip(
            *(items.column(c).to_pylist() for c in ("item_id", "image_path", "image_sha256")),
            strict=True,
        ):
            if image_path is None:
                summary.no_input += 1
                continue
            # Hash the bytes as they are now: a poster replaced since ingest is captioned again.
            image_sha256 = _current_sha256(image_path, image_sha256, roots)
            if done.get(item_id) == image_sha256 and image_sha256 is not None:
                summary.skipped += 1
            else:
                todo.append((item_id, image_path, image_sha256))
        summary.retried = sum(item_id in failed_before for item_id, _, _ in todo)
        rows: list[dict[str, Any]] = []
        last_write = time.monotonic()
        with _progress(len(todo), f"caption [{captioner.key}]", progress, on_progress) as advance:
            for batch in _chunks(len(todo), _caption_batch_size(caption_config)):
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
                    outputs = caption_each(captioner, [loaded[index].image for index in good])
                    results.update(zip(good, outputs, strict=True))
                for index, (item_id, _, image_sha256) in enumerate(entries):
                    text, error = results[index]
                    rows.append(
                        {
                            "item_id": item_id,
                            "image_sha256": image_sha256,
                            "caption": text,
                            "error": error,
                        }
                    )
                    _count(summary, item_id, error)
                advance(len(entries))
                if len(rows) >= part_rows or time.monotonic() - last_write > PART_SECONDS:
                    store.append(pa.Table.from_pylist(rows, CAPTIONS), provenance)
                    rows, last_write = [], time.monotonic()
        store.append(pa.Table.from_pylist(rows, CAPTIONS), provenance)
    store.compact()
    set_current(layout.captions(captioner.key).parent, captioner.key)
    summary.stage_seconds = time.perf_counter() - started
    _write_summary(layout.captions(captioner.key).parent / "summary.json", summary)
    return summary


def _caption_batch_size(config: CaptionConfig) -> int:
    """Images handed to the captioner at once; an endpoint gets enough to keep `concurrency` busy."""
    if config.backend == "openai":
        return max(config.batch_size, config.concurrency)
    return config.batch_size


def _current_sha256(
    image_path: str, catalog_sha256: str | None, roots: Sequence[Path]
) -> str | None:
    """The sha256 of the image file's current bytes (the catalog's when unreadable or outside the roots)."""
    from extractors.images import resolve_image_path
    from pipeline.images import sha256_file

    try:
        return sha256_file(resolve_image_path(image_path, roots))
    except (OSError, ValueError):
        return catalog_sha256  # the load below records the error row


def _caption_settings(config: CaptionConfig, key: str) -> dict[str, Any]:
    """Provenance of a caption store: what produced it (never the API key, only the variable's name)."""
    if key.startswith("descriptor"):
        return {"backend": "descriptor", "note": "classical image statistics; not a multimodal LLM"}
    settings = asdict(config)
    return {
        name: settings[name]
        for name in (
            "backend",
            "model",
            "revision",
            "prompt",
            "max_new_tokens",
            "base_url",
            "api_key_env",
        )
    }


def _count(summary: StageSummary, item_id: str, error: str | None) -> None:
    if error is None:
        summary.computed += 1
        return
    summary.failed += 1
    if len(summary.errors) < MAX_ERRORS_SHOWN:
        summary.errors.append(f"{item_id}: {error}")


# --- embed ------------------------------------------------------------------------------------


def embed(
    config: Config,
    force: bool = False,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    on_progress: Callable[[int, int], None] | None = None,
) -> StageSummary:
    """The embed stage for a run config (see embed_store)."""
    return embed_store(
        config.embed,
        config.modalities,
        Path(config.store),
        force=force,
        progress=progress,
        shard=shard,
        on_progress=on_progress,
    )


def _modality_texts(layout: StoreLayout, items: pa.Table, source: str) -> list[str | None]:
    """Each catalog item's input text for a modality source, aligned with `items` (None: no input)."""
    if source == "text":
        return items.column("text").to_pylist()
    captions_parent = layout.root / "features" / "captions"
    captions = PartStore(layout.captions(current_key(captions_parent)), CAPTIONS).read(
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
    embedders: dict[EmbedConfig, Any] = {}
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
            config,
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
    summary.name = ", ".join(
        sorted({getattr(e, "name", type(e).__name__) for e in embedders.values()})
    )
    _write_summary(layout.root / "features" / "embeddings" / "summary.json", summary)
    return summary


def _embed_modality(
    layout: StoreLayout,
    items: pa.Table,
    modality: str,
    source: str,
    config: EmbedConfig,
    embedder: Any,
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
        "embedder_key": embedder.key,
        "modality": modality,
        "source": source,
        "dim": embedder.dim,
        "model": config.model,
        "revision": config.revision,
        "instruction": config.instruction,
        "normalize": config.normalize,
        "backend": config.backend,
    }
    texts = _modality_texts(layout, items, source)
    if source == "caption":
        provenance["captioner_key"] = current_key(layout.root / "features" / "captions")
    counts = {
        "key": embedder.key,
        "computed": 0,
        "failed": 0,
        "skipped": 0,
        "no_input": 0,
        "truncated": 0,
    }
    before = (summary.computed, summary.failed)
    with store.lock(_lock_name(shard)):
        done, failed_before = ({}, set()) if force else _stored_state(store, "input_sha256")
        todo, rows = [], []
        for item_id, text in zip(items.column("item_id").to_pylist(), texts, strict=True):
            if text is None:
                counts["no_input"] += 1
                continue
            digest = sha256_text(text)
            if done.get(item_id) == digest:
                counts["skipped"] += 1
            elif not text.strip():
                rows.append(_embed_row(item_id, digest, None, None, f"empty {source}"))
                _count(summary, item_id, f"empty {source}")
                summary.retried += item_id in failed_before
            else:
                todo.append((item_id, digest, text))
        summary.retried += sum(item_id in failed_before for item_id, _, _ in todo)
        with _progress(
            len(todo), f"embed {modality} [{embedder.key}]", progress, on_progress
        ) as advance:
            for chunk in _chunks(len(todo), part_rows):
                entries = todo[chunk]
                for (item_id, digest, _), (vector, truncated, error) in zip(
                    entries, _embed_checked(embedder, [text for _, _, text in entries]), strict=True
                ):
                    rows.append(_embed_row(item_id, digest, vector, truncated, error))
                    _count(summary, item_id, error)
                    counts["truncated"] += bool(truncated)
                store.append(_embed_table(rows, schema), provenance)
                rows = []
                advance(len(entries))
        store.append(_embed_table(rows, schema), provenance)
    store.compact()
    set_current(layout.embeddings(modality, embedder.key).parent, embedder.key)
    counts["computed"] = summary.computed - before[0]
    counts["failed"] = summary.failed - before[1]
    summary.skipped += counts["skipped"]
    summary.no_input += counts["no_input"]
    summary.truncated += counts["truncated"]
    return counts


def _embed_row(
    item_id: str, digest: str, vector: np.ndarray | None, truncated: bool | None, error: str | None
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "input_sha256": digest,
        "vector": vector,
        "truncated": truncated,
        "error": error,
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
    embedder: Any, texts: list[str]
) -> list[tuple[np.ndarray | None, bool | None, str | None]]:
    """(vector, truncated, error) per text; a failing batch is retried text by text to isolate the bad ones."""
    truncated_of = getattr(embedder, "truncated", None)
    try:
        truncated = truncated_of(texts) if truncated_of else [False] * len(texts)
        vectors = embedder.embed(texts)
        if vectors.shape != (len(texts), embedder.dim):
            raise RuntimeError(
                f"embedder returned shape {vectors.shape} for {len(texts)} texts, dim {embedder.dim}"
            )
    except Exception as error:  # noqa: BLE001 - any backend failure becomes per-item error rows
        if len(texts) == 1:
            return [(None, None, f"embedding failed: {type(error).__name__}: {error}"[:500])]
        log.warning("embedding batch of %d failed (%s); retrying one by one", len(texts), error)
        return [result for text in texts for result in _embed_checked(embedder, [text])]
    finite = np.isfinite(vectors).all(axis=1)
    return [
        (vector, cut, None) if ok else (None, None, "embedding has non-finite values")
        for vector, cut, ok in zip(vectors, truncated, finite, strict=True)
    ]
