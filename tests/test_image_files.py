"""Every file read for an image is a regular file inside the root, opened without blocking, bounded in size."""

from __future__ import annotations

import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from extractors.config import DescriptorCaptionConfig
from extractors.images import ImageFileError, load_image, open_image_file
from pipeline.extract import caption_store
from pipeline.images import sha256_file
from tests.test_extract_stage import _captions, write_catalog

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo is POSIX only")


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the body takes longer than `seconds`."""

    def expired(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@needs_fifo
def test_a_fifo_where_an_image_was_gives_an_error_row_not_a_hang(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("good.png", "fifo.png"):
        Image.new("RGB", (20, 20), (200, 30, 30)).save(images / name)
    store = tmp_path / "store"
    write_catalog(store, images, [("good", "good.png", "t"), ("fifo", "fifo.png", "t")])
    (images / "fifo.png").unlink()  # replaced by a FIFO after ingest: no writer will ever come
    os.mkfifo(images / "fifo.png")
    with deadline(20):
        summary = caption_store(DescriptorCaptionConfig(), store, [images], progress=False)
    assert (summary.computed, summary.failed) == (1, 1)
    errors = dict(zip(*(_captions(store).column(c).to_pylist() for c in ("item_id", "error")),
                      strict=True))
    assert errors["good"] is None
    assert errors["fifo"].startswith("rejected: not a regular file"), errors["fifo"]


@needs_fifo
@pytest.mark.parametrize("kind", ["fifo", "folder", "too large"])
def test_every_image_reader_refuses_special_and_oversized_files(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "image.png"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"\0" * 2048)
    with deadline(10):
        with pytest.raises(ImageFileError, match=re.escape(str(path))):
            open_image_file(path, max_bytes=1024).close()
        with pytest.raises(ImageFileError):
            sha256_file(path, max_bytes=1024)
        loaded = load_image("image.png", [tmp_path], 10**6, max_bytes=1024)
    assert loaded.image is None
    assert loaded.error.startswith("too large" if kind == "too large" else "rejected"), loaded.error


def test_a_symlink_inside_the_root_to_a_file_outside_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    assert load_image("link.png", [root], 10**6).error.startswith("rejected")
