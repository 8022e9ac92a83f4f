"""A modality whose every input was empty or failed: the embed summary and the train stage say so,
with the counts, the first errors and what to do."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.support.catalog import make_catalog, write_config

pytestmark = pytest.mark.slow


def _run(capsys, *args: str) -> tuple[int, str, str]:
    from pipeline.__main__ import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_caption_failed(tmp_path: Path, capsys) -> None:
    catalog = make_catalog(tmp_path / "catalog", n_items=8, n_users=6)
    for image in (catalog / "images").glob("*.png"):
        image.write_bytes(b"no image")
    config = str(write_config(tmp_path, catalog, name="nocaption"))
    for stage in ("ingest", "caption"):
        assert _run(capsys, stage, "--config", config)[0] == 0
    code, out, _ = _run(capsys, "embed", "--config", config)
    assert code == 0
    assert (
        "WARNING: modality 'caption': every input was empty or failed, so no item has a vector "
        "(8 of 8 items without caption, 0 empty or failed); first errors: 0: corrupt: not a "
        "readable image"
    ) in out
    assert "Fix the images or the captioner (the caption stage's errors are in " in out
    assert "then run caption and embed again, or remove [modalities.caption] from the config" in out

    code, _, err = _run(capsys, "train", "--config", config)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        "modality 'caption' has no usable vector for any of the 8 catalog items: every input "
        "was empty or failed (8 without caption, 0 empty or failed); first errors: 0: corrupt"
    ) in err
    assert "then run caption and embed again, or remove [modalities.caption] from the config" in err


def test_every_text_empty(tmp_path: Path, capsys) -> None:
    catalog = make_catalog(tmp_path / "catalog", n_items=8, n_users=6)
    with open(catalog / "items.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(catalog / "items.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "title": "", "text": ""} for row in rows)
    extra = '[modalities.text]\nsource = "text"\n'
    config = str(write_config(tmp_path, catalog, name="notext", extra=extra))
    assert _run(capsys, "ingest", "--config", config)[0] == 0
    code, out, _ = _run(capsys, "embed", "--config", config)
    assert code == 0
    assert (
        "WARNING: modality 'text': every input was empty or failed, so no item has a vector "
        "(8 of 8 items without text, 0 empty or failed); first errors: none. Give the items a "
        "text (the dataset's text columns), then run ingest and embed again"
    ) in out

    code, _, err = _run(capsys, "train", "--config", config)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        "modality 'text' has no usable vector for any of the 8 catalog items: every input was "
        "empty or failed (8 without text, 0 empty or failed); first errors: none." in err
    )
