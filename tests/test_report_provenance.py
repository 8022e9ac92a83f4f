"""Reports name the extractors from the provenance keys the stages write."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
from PIL import Image

from extractors.config import DescriptorCaptionConfig
from pipeline import report
from pipeline.extract import caption_store
from pipeline.schemas import ITEMS
from pipeline.store import StoreLayout, write_table


def test_caption_samples_show_the_captioner_name_not_its_key(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (30, 20), (200, 30, 30)).save(images / "red.png")
    rows = [{"item_id": "1", "title": "Red mug", "text": "a mug", "image_path": str(images / "red.png"),
             "image_sha256": None}]
    store = tmp_path / "store"
    write_table(StoreLayout(store).items, pa.Table.from_pylist(rows, ITEMS), ITEMS)
    summary = caption_store(DescriptorCaptionConfig(), store, [images], progress=False)

    samples, captioner = report.caption_samples(SimpleNamespace(store=store))
    assert captioner == summary.name and "NOT a multimodal LLM" in captioner
    assert captioner != summary.key and report.is_descriptor(captioner)
    assert samples[0]["title"] == "Red mug" and samples[0]["captioner"] == captioner
