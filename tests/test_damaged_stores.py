"""A damaged or unwritable store: a clear message that says what to do, and a store left as it was."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from extractors.config import DescriptorCaptionConfig
from pipeline.extract import caption_store
from pipeline.schemas import CAPTIONS
from pipeline.store import PartStore, StoreError, StoreLayout
from tests.test_extract_stage import write_catalog

DESCRIPTOR = DescriptorCaptionConfig(batch_size=2)


@pytest.fixture()
def captioned(tmp_path: Path) -> tuple[Path, Path, PartStore]:
    """A caption store of 6 items."""
    images = tmp_path / "images"
    images.mkdir()
    for index in range(6):
        Image.new("RGB", (20, 20), (index * 40, 90, 90)).save(images / f"{index}.png")
    store = tmp_path / "store"
    write_catalog(store, images, [(f"i{i}", f"{i}.png", "t") for i in range(6)])
    summary = caption_store(DESCRIPTOR, store, [images], progress=False, part_rows=2)
    parts = PartStore(StoreLayout(store).captions(summary.key), CAPTIONS)
    return store, images, parts


def test_a_truncated_part_is_named_with_the_fix_and_force_works_past_it(captioned) -> None:
    store, images, parts = captioned
    [part] = parts.parts()  # the run's parts, compacted into one
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with pytest.raises(StoreError) as raised:
        caption_store(DESCRIPTOR, store, [images], progress=False)
    message = str(raised.value)
    assert str(part) in message and "unreadable Parquet file" in message
    assert re.search(r"fix: delete that part file \(rm '.*'\) and run the stage again", message)

    forced = caption_store(DESCRIPTOR, store, [images], force=True, progress=False)
    assert forced.computed == 6
    assert parts.read().num_rows == 6 and not part.exists()
    assert caption_store(DESCRIPTOR, store, [images], progress=False).skipped == 6
