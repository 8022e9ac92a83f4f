"""A damaged or unwritable store: a clear message that says what to do, and a store left as it was."""

from __future__ import annotations

import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from extractors.config import DescriptorCaptionConfig
from flows.dag import StageFailed, ingest_task
from pipeline.extract import caption_store
from pipeline.schemas import CAPTIONS
from pipeline.store import PartStore, StoreError, StoreLayout
from tests.support.catalog import write_config
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


ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@contextmanager
def tmpfs(folder: Path, size: str):
    """A small tmpfs mounted at `folder` (needs root and mount permission, else the test skips)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'}): "
                    "the read-only and full-disk cases need one")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder`: file bytes (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.slow
def test_a_read_only_store_is_one_line_naming_the_file(tiny_catalog) -> None:
    root, catalog, _ = tiny_catalog
    config = write_config(root, catalog, name="readonly")
    store = root / "store-readonly"
    with tmpfs(store, "4m"):
        ingested = cli("ingest", "--config", str(config))
        assert ingested.returncode == 0, ingested.stderr
        subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
        before = snapshot(store)
        for stage in ("caption", "ingest"):
            args = ("--force",) if stage == "ingest" else ()
            line = one_line_error(cli(stage, "--config", str(config), *args))
            assert str(store) in line and "read-only file system" in line, line
            assert "point `store` at a writable folder" in line, line
        with pytest.raises(StageFailed, match=re.escape(f"{store}/catalog/items.parquet: read-only")):
            ingest_task.fn(str(config), force=True)  # the flows' tasks: the same one line
        assert snapshot(store) == before


@pytest.mark.slow
def test_a_full_disk_fails_clearly_and_leaves_the_store_as_it_was(tiny_catalog) -> None:
    root, catalog, _ = tiny_catalog
    config = write_config(root, catalog, name="full")
    store = root / "store-full"
    with tmpfs(store, "1m"):
        assert cli("ingest", "--config", str(config)).returncode == 0
        filler = store / "filler"
        with pytest.raises(OSError), filler.open("wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        before = snapshot(store)
        line = one_line_error(cli("caption", "--config", str(config)))
        assert "no space left on device" in line and "the disk is full" in line, line
        assert str(store) in line, line
        after = snapshot(store)
        assert not [name for name in after if name.endswith(".tmp")]  # no temp file left
        assert not [name for name in after if "part-" in name]  # no half-written part
        assert {name: data for name, data in after.items() if name in before} == before
        assert all(data in (None, b"") for name, data in after.items() if name not in before)
        filler.unlink()  # room again: the same store goes on
        result = cli("caption", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert "computed 30" in result.stdout
