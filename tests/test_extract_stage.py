"""The caption and embed stages: incremental keys, error rows, retries, fallback, kill-and-resume, concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from extractors import factory, hub
from extractors.base import Embedded, ModelLoadError
from extractors.config import (
    DescriptorCaptionConfig,
    ModalityConfig,
    SentenceTransformersEmbedConfig,
    TransformersCaptionConfig,
)
from pipeline.extract import caption_store, embed_store
from pipeline.schemas import CAPTIONS, ITEMS, embeddings
from pipeline.store import PartStore, StoreLayout, current_key, write_table

DESCRIPTOR = DescriptorCaptionConfig(batch_size=3)
EMBED = SentenceTransformersEmbedConfig()  # the tests below hand the stage a FakeEmbedder
ROOT = Path(__file__).resolve().parents[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_catalog(
    store: Path, images: Path, entries: list[tuple[str, str | None, str | None]]
) -> None:
    """items.parquet from (item_id, image file name or None, text)."""
    rows = []
    for item_id, name, text in entries:
        path = images / name if name else None
        sha = _sha(path) if path is not None and path.is_file() else None
        rows.append(
            {
                "item_id": item_id,
                "title": f"title {item_id}",
                "text": text,
                "image_path": str(path) if path else None,
                "image_sha256": sha,
            }
        )
    write_table(StoreLayout(store).items, pa.Table.from_pylist(rows, ITEMS), ITEMS)


@pytest.fixture()
def catalog(tmp_path: Path) -> tuple[Path, Path]:
    """A store whose catalog has 6 good images, 4 bad ones, one item without image; texts of all kinds."""
    images = tmp_path / "images"
    images.mkdir()
    for index in range(6):
        Image.new("RGB", (40 + index, 60), (index * 40, 90, 200 - index * 30)).save(
            images / f"{index}.jpg"
        )
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(images / "alpha.png")
    (images / "corrupt.jpg").write_bytes(b"not an image at all")
    (tmp_path / "outside.jpg").write_bytes((images / "0.jpg").read_bytes())
    entries = [(f"i{index}", f"{index}.jpg", f"text of item {index}") for index in range(6)]
    entries += [
        ("alpha", "alpha.png", "transparent"),
        ("corrupt", "corrupt.jpg", "   "),
        ("gone", "missing.jpg", "word " * 400),
        ("escape", "../outside.jpg", "escape text"),
        ("noimage", None, None),
    ]
    store = tmp_path / "store"
    write_catalog(store, images, entries)
    return store, images


class FakeEmbedder:
    """Deterministic 8-d vectors from a text hash; counts calls; marks texts over 100 characters truncated."""

    dim = 8
    key = "fake-embedder-0001"
    name = "fake"
    provenance = {"backend": "fake", "model": "text-hash"}

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> Embedded:
        self.texts += texts
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        vectors = np.stack([np.random.default_rng(seed).standard_normal(8) for seed in seeds])
        return Embedded(vectors.astype(np.float32), [len(text) > 100 for text in texts])


@pytest.fixture()
def fake_embedder(monkeypatch: pytest.MonkeyPatch) -> FakeEmbedder:
    embedder = FakeEmbedder()
    monkeypatch.setattr(factory, "build_embedder", lambda config: embedder)
    return embedder


def _captions(store: Path) -> pa.Table:
    parent = StoreLayout(store).root / "features" / "captions"
    return PartStore(StoreLayout(store).captions(current_key(parent)), CAPTIONS).read()


def test_caption_is_incremental_records_errors_and_retries_them(catalog: tuple[Path, Path]) -> None:
    store, images = catalog
    first = caption_store(DESCRIPTOR, store, [images], progress=False)
    assert (first.computed, first.failed, first.no_input, first.skipped) == (7, 3, 1, 0)
    table = _captions(store)
    assert sorted(table.column("item_id").to_pylist()) == sorted(
        [f"i{i}" for i in range(6)] + ["alpha", "corrupt", "gone", "escape"]
    )
    errors = dict(
        zip(table.column("item_id").to_pylist(), table.column("error").to_pylist(), strict=True)
    )
    assert errors["corrupt"].startswith("corrupt") and errors["gone"].startswith("missing")
    assert errors["escape"].startswith("rejected") and errors["alpha"] is None

    second = caption_store(DESCRIPTOR, store, [images], progress=False)
    assert (second.computed, second.failed, second.retried, second.skipped) == (0, 3, 3, 7)

    Image.new("RGB", (50, 50), (255, 255, 0)).save(images / "3.jpg")  # a changed poster
    Image.new("RGB", (50, 50), (0, 0, 0)).save(images / "missing.jpg")  # a fixed failure
    entries = [(f"i{i}", f"{i}.jpg", "t") for i in range(6)] + [("gone", "missing.jpg", "t")]
    write_catalog(store, images, entries)
    third = caption_store(DESCRIPTOR, store, [images], progress=False)
    assert (third.computed, third.failed, third.retried, third.skipped) == (2, 0, 1, 5)
    forced = caption_store(DESCRIPTOR, store, [images], force=True, progress=False)
    assert (forced.computed, forced.skipped) == (7, 0)
    table = _captions(store)
    assert table.num_rows == len(set(table.column("item_id").to_pylist()))  # one row per item
    assert (
        len(PartStore(StoreLayout(store).captions(forced.key), CAPTIONS).parts()) == 1
    )  # compacted


def test_fallback_is_labelled_in_summary_and_store_and_fail_explains(
    catalog: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, images = catalog
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        vlm = TransformersCaptionConfig(
            model="HuggingFaceTB/SmolVLM-256M-Instruct", on_load_failure="fallback"
        )
        summary = caption_store(vlm, store, [images], progress=False)
        with pytest.raises(ModelLoadError, match="set `model` to the checkpoint folder"):
            caption_store(
                TransformersCaptionConfig(model=vlm.model, on_load_failure="fail"), store, [images]
            )
    finally:
        hub.hub_reachable.cache_clear()
    assert summary.key.startswith("descriptor-not-mllm") and "NOT a multimodal LLM" in summary.name
    assert "FALLING BACK" in summary.warnings[0] and "FALLING BACK" in str(summary)
    written = json.loads((store / "features" / "captions" / "summary.json").read_text())
    assert written["warnings"] == summary.warnings
    provenance = PartStore(StoreLayout(store).captions(summary.key), CAPTIONS).provenance()
    assert "not a multimodal LLM" in provenance["settings"]["note"]


def test_embed_modalities_incremental_with_error_and_truncation_rows(
    catalog: tuple[Path, Path], fake_embedder: FakeEmbedder
) -> None:
    store, images = catalog
    caption_store(DESCRIPTOR, store, [images], progress=False)
    first = embed_store(EMBED, None, store, progress=False)
    caption_counts, text_counts = first.per_modality["caption"], first.per_modality["text"]
    assert (caption_counts["computed"], caption_counts["no_input"]) == (
        7,
        4,
    )  # 3 failed captions, 1 no image
    assert (text_counts["computed"], text_counts["failed"], text_counts["no_input"]) == (9, 1, 1)
    assert text_counts["truncated"] == 1
    assert first.truncated == caption_counts["truncated"] + 1
    layout = StoreLayout(store)
    texts = PartStore(layout.embeddings("text", FakeEmbedder.key), embeddings(8)).read()
    by_item = {row["item_id"]: row for row in texts.to_pylist()}
    assert by_item["corrupt"]["error"] == "empty text" and by_item["corrupt"]["vector"] is None
    assert by_item["gone"]["truncated"] is True and len(by_item["i0"]["vector"]) == 8
    assert current_key(layout.embeddings("text", FakeEmbedder.key).parent) == FakeEmbedder.key

    calls = len(fake_embedder.texts)
    again = embed_store(EMBED, None, store, progress=False)
    assert again.computed == 0 and again.skipped == 16 and again.retried == 1
    assert len(fake_embedder.texts) == calls  # nothing re-embedded
    only_text = {"text": ModalityConfig(source="text")}
    write_catalog(store, images, [("i0", "0.jpg", "a new text"), ("i1", "1.jpg", "text of item 1")])
    third = embed_store(EMBED, only_text, store, progress=False)
    assert (third.computed, third.skipped) == (1, 1) and fake_embedder.texts[-1] == "a new text"


def test_a_failing_embedding_batch_isolates_the_bad_text(
    catalog: tuple[Path, Path], fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = catalog
    original = FakeEmbedder.embed

    def picky(self, texts: list[str]) -> Embedded:
        if any("item 2" in text for text in texts):
            raise RuntimeError("endpoint choked")
        return original(self, texts)

    monkeypatch.setattr(FakeEmbedder, "embed", picky)
    summary = embed_store(
        EMBED, {"text": ModalityConfig(source="text")}, store, progress=False
    )
    assert summary.failed == 2  # the empty text and the one the endpoint choked on
    assert any("i2: embedding failed: RuntimeError: endpoint choked" in e for e in summary.errors)
    assert summary.computed == 8


_SLOW_CAPTION_RUN = """
import json, sys, time
from pathlib import Path
from extractors import descriptor
from extractors.config import DescriptorCaptionConfig
from pipeline.extract import caption_store

original = descriptor.DescriptorCaptioner.caption
def slow(self, images):
    time.sleep(float(sys.argv[3]) * len(images))
    return original(self, images)
descriptor.DescriptorCaptioner.caption = slow
summary = caption_store(DescriptorCaptionConfig(batch_size=2), Path(sys.argv[1]), [Path(sys.argv[2])],
                        progress=False, part_rows=2)
print(json.dumps(summary.to_dict()))
"""


def _slow_run(store: Path, images: Path, seconds_per_image: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_CAPTION_RUN, str(store), str(images), str(seconds_per_image)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture()
def many_items(tmp_path: Path) -> tuple[Path, Path, int]:
    images = tmp_path / "images"
    images.mkdir()
    count = 30
    for index in range(count):
        Image.new("RGB", (30, 30), (index * 8, 50, 100)).save(images / f"{index}.jpg")
    store = tmp_path / "store"
    write_catalog(store, images, [(f"item{i}", f"{i}.jpg", "t") for i in range(count)])
    return store, images, count


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_leaves_exactly_one_row_per_item(
    many_items: tuple[Path, Path, int],
) -> None:
    store, images, count = many_items
    process = _slow_run(store, images, 0.1)
    parts_folder = store / "features" / "captions" / DESCRIPTOR_KEY()
    deadline = time.monotonic() + 60
    while len(list(parts_folder.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    survived = PartStore(parts_folder, CAPTIONS).read().num_rows
    assert 0 < survived < count

    rerun = caption_store(DESCRIPTOR, store, [images], progress=False)
    assert rerun.skipped == survived and rerun.computed == count - survived
    table = PartStore(parts_folder, CAPTIONS).read()
    assert sorted(table.column("item_id").to_pylist()) == sorted(f"item{i}" for i in range(count))
    assert table.column("error").null_count == count
    assert (
        sum(pa.parquet.read_metadata(p).num_rows for p in parts_folder.glob("part-*.parquet"))
        == count
    )


@pytest.mark.slow
def test_two_concurrent_runs_neither_duplicate_rows_nor_work(
    many_items: tuple[Path, Path, int],
) -> None:
    store, images, count = many_items
    runs = [_slow_run(store, images, 0.02) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    summaries = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert sorted(s["computed"] for s in summaries) == [
        0,
        count,
    ]  # the second waited, then found it done
    parts_folder = store / "features" / "captions" / DESCRIPTOR_KEY()
    parts = list(parts_folder.glob("part-*.parquet"))
    assert sum(pa.parquet.read_metadata(p).num_rows for p in parts) == count


def DESCRIPTOR_KEY() -> str:  # noqa: N802 - reads as the constant it is
    from extractors.descriptor import DescriptorCaptioner

    return DescriptorCaptioner().key
