"""An item whose image or text is gone loses its caption and vectors: training counts it as missing.

A store built step by step (train, then images removed or broken and a text emptied, then the
stages again) must give the same features, run folder and metrics as a store built from scratch
on the changed catalog.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.extract.common import StageSummary
from tests.support.catalog import make_catalog, write_config

pytestmark = pytest.mark.slow


def _stages(config_path: Path) -> tuple[dict[str, StageSummary], Path, list[str]]:
    """ingest, caption, embed, train in turn: (summaries, run folder, train log lines)."""
    from pipeline import stages

    config = load_config(config_path)
    summaries = {"ingest": stages.ingest_stage(config).summary}
    summaries["caption"] = stages.caption_stage(config, progress=False).summary
    summaries["embed"] = stages.embed_stage(config, progress=False).summary
    lines: list[str] = []
    result = stages.train_stage(config, log=lines.append)
    return summaries, result.run_dir, lines


def _features(config_path: Path) -> dict[str, np.ndarray]:
    from pipeline.training import load_inputs

    return load_inputs(load_config(config_path)).data.features


def _metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("seconds", None)
    for modality in metrics["inputs"]["modalities"].values():
        modality.pop("store")  # the two stores differ in path only
    return metrics


def _empty_fields(catalog: Path, fields: dict[int, str]) -> None:
    """Blank the given column of the given rows of items.csv (row index -> column name)."""
    with open(catalog / "items.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row, column in fields.items():
        rows[row][column] = ""
    with open(catalog / "items.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _no_vector_lines(log: list[str]) -> list[str]:
    return [line for line in log if "have no vector" in line]


def test_gone_inputs_drop_their_vectors_like_a_store_built_from_scratch(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path / "catalog", n_items=18, n_users=16)
    # one text a batch: a text's vector then does not depend on which texts shared its batch (in
    # batches the padding and the GEMM's shape follow the batch, and on an Intel Xeon with AVX512
    # and AMX, MKL rounded the same text ~1e-7 apart in two batches), so the exact equality with
    # a store built from scratch below compares the same arithmetic per text
    step = write_config(tmp_path, catalog, name="step", embed_batch_size=1)
    _, first_run, first_log = _stages(step)
    assert not _no_vector_lines(first_log)

    # item 4's image deleted and item 5's overwritten with garbage; the catalog is not rebuilt
    (catalog / "images" / "4.png").unlink()
    (catalog / "images" / "5.png").write_bytes(b"not a png any more")
    summaries, second_run, log = _stages(step)
    caption, embed = summaries["caption"], summaries["embed"]
    assert (caption.failed, caption.dropped) == (2, 0)  # error rows: missing, corrupt
    assert embed.per_modality["caption"]["dropped"] == 2  # their caption vectors are gone
    assert "dropped 2" in embed.format()
    assert second_run != first_run  # the features changed, so a new run folder is trained
    assert _no_vector_lines(log) == [
        "modality caption: 2 item(s) have no vector; they get the modality's mean vector"
    ]

    # item 6's text and item 7's image emptied in items.csv: ingest rebuilds the catalog
    _empty_fields(catalog, {6: "text", 7: "image"})
    summaries, run_dir, log = _stages(step)
    caption, embed = summaries["caption"], summaries["embed"]
    assert (caption.failed, caption.dropped) == (1, 1)  # 5 still corrupt; 7 has no image now
    assert "dropped 1" in caption.format()
    assert embed.per_modality["caption"]["dropped"] == 1
    assert embed.per_modality["text"]["dropped"] == 1
    assert run_dir not in (first_run, second_run)
    assert _no_vector_lines(log) == [
        "modality caption: 3 item(s) have no vector; they get the modality's mean vector",
        "modality text: 1 item(s) have no vector; they get the modality's mean vector",
    ]
    inputs = json.loads((run_dir / "inputs.json").read_text())
    assert {m: v["missing_items"] for m, v in inputs["modalities"].items()} == {
        "caption": 3,
        "text": 1,
    }

    # the same changed catalog, from scratch
    scratch_catalog = tmp_path / "scratch-catalog"
    shutil.copytree(catalog, scratch_catalog)
    scratch = write_config(tmp_path, scratch_catalog, name="scratch", embed_batch_size=1)
    _, scratch_run, scratch_log = _stages(scratch)
    assert _no_vector_lines(scratch_log) == _no_vector_lines(log)
    step_features, scratch_features = _features(step), _features(scratch)
    for modality in ("caption", "text"):
        np.testing.assert_array_equal(step_features[modality], scratch_features[modality])
    assert run_dir.name == scratch_run.name
    assert _metrics(run_dir) == _metrics(scratch_run)

    # and once more: nothing is dropped again, nothing retrained
    summaries, again, _ = _stages(step)
    assert again == run_dir and summaries["caption"].dropped == 0
    assert summaries["embed"].per_modality["text"]["dropped"] == 0
