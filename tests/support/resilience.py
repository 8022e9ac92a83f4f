"""SIGKILL a stage at a seeded random point, rerun it, and compare with an uninterrupted run.

Shared by tests/test_resilience.py (a few points per stage) and bench/bench_resilience.py (a longer
campaign). The killed run is a subprocess (`python -m tests.support.resilience STAGE CONFIG`) that
runs the real stage slowed down per unit of work (an image, a batch of texts, an epoch), so a kill
lands inside the work; the rerun is the plain stage (pipeline.stages), as a user would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("caption", "embed", "train")
SLOW_SECONDS = {"caption": 0.05, "embed": 0.2, "train": 0.2}  # per image / text chunk / epoch


@dataclass
class Reference:
    """An uninterrupted run: the store after each stage and the final tables and metrics."""

    config_path: Path
    stores: dict[str, Path]  # stage -> a copy of the store right after that stage
    captions: dict[str, tuple[str | None, str | None]]
    vectors: dict[str, dict[str, np.ndarray]]
    metrics: dict
    seconds: dict[str, float]


def config_text(tiny_config: Path) -> str:
    """The tiny catalog's config with more epochs (room for kill points inside training)."""
    text = tiny_config.read_text()
    return text.replace("epochs = 3\npatience = 2\n", "epochs = 8\npatience = 8\n")


def load(config_path: Path):
    from pipeline.config import load_config

    return load_config(config_path)


def store_of(config_path: Path) -> Path:
    return Path(load(config_path).store)


def run_stage(config_path: Path, stage: str) -> None:
    """The plain stage, in process (what `python -m pipeline STAGE` runs)."""
    from pipeline import stages

    config = load(config_path)
    if stage == "ingest":
        stages.ingest_stage(config)
    elif stage == "caption":
        stages.caption_stage(config, progress=False)
    elif stage == "embed":
        stages.embed_stage(config, progress=False)
    else:
        stages.train_stage(config, log=lambda _: None)


def captions(config_path: Path) -> dict[str, tuple[str | None, str | None]]:
    from pipeline.schemas import CAPTIONS
    from pipeline.store import PartStore, StoreLayout, current_key

    layout = StoreLayout(store_of(config_path))
    table = PartStore(layout.captions(current_key(layout.captions_root)), CAPTIONS).read()
    rows = table.to_pylist()
    assert len(rows) == len({row["item_id"] for row in rows}), "duplicate caption rows"
    return {row["item_id"]: (row["caption"], row["error"]) for row in rows}


def part_rows(folder: Path) -> int:
    """Rows over every part file of a folder (a duplicate item row would count twice)."""
    import pyarrow.parquet as pq

    rows = 0
    for part in folder.glob("part-*.parquet"):
        try:
            rows += pq.read_metadata(part).num_rows
        except FileNotFoundError:  # compacted away by the running stage while being counted
            continue
    return rows


def vectors(config_path: Path) -> dict[str, dict[str, np.ndarray]]:
    from pipeline.config import load_config
    from pipeline.schemas import embeddings
    from pipeline.store import PartStore, StoreLayout, current_key

    config = load_config(config_path)
    layout = StoreLayout(config.store)
    out = {}
    for modality in ("caption", "text"):
        folder = layout.embeddings(modality, current_key(layout.modality_embeddings(modality)))
        table = PartStore(folder, embeddings(384)).read()
        ids = table.column("item_id").to_pylist()
        assert len(ids) == len(set(ids)) == part_rows(folder), f"duplicate {modality} rows"
        out[modality] = {
            item_id: np.asarray(vector, np.float32)
            for item_id, vector in zip(ids, table.column("vector").to_pylist(), strict=True)
            if vector is not None
        }
    return out


def metrics(config_path: Path) -> dict:
    from pipeline.training import current_runs

    run = current_runs(load(config_path))[0]
    values = json.loads(run.metrics.read_text())
    values.pop("seconds")
    history = [json.loads(line) for line in run.history.read_text().splitlines()]
    assert [line["epoch"] for line in history] == list(range(1, len(history) + 1))
    return values


def reference(root: Path, tiny_config: Path) -> Reference:
    """Every stage once, uninterrupted, with the store copied after each."""
    config_path = root / "resilience.toml"
    config_path.write_text(config_text(tiny_config).replace('store = "store-tiny"',
                                                            'store = "store-resilience"'))
    store = store_of(config_path)
    shutil.rmtree(store, ignore_errors=True)
    stores, seconds = {}, {}
    for stage in ("ingest", *STAGES):
        started = time.perf_counter()
        run_stage(config_path, stage)
        seconds[stage] = time.perf_counter() - started
        stores[stage] = root / f"after-{stage}"
        shutil.rmtree(stores[stage], ignore_errors=True)
        shutil.copytree(store, stores[stage])
    return Reference(config_path, stores, captions(config_path), vectors(config_path),
                     metrics(config_path), seconds)


def kill_then_rerun(ref: Reference, stage: str, point: tuple[int, float]) -> dict:
    """Restore the store before `stage`, run the slowed stage and SIGKILL it once it has left
    `units` units of work in the store plus `extra` seconds, then rerun the plain stage.

    Returns the kill point, whether the kill landed before the run ended, what survived it.
    """
    units, extra = point
    before = {"caption": "ingest", "embed": "caption", "train": "embed"}[stage]
    store = store_of(ref.config_path)
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(ref.stores[before], store)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.resilience", stage, str(ref.config_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600  # a loaded machine: model loading alone may take a minute
    while process.poll() is None and _progress(ref, stage) < units:
        assert time.monotonic() < deadline, f"{stage}: no progress to {units} units"
        time.sleep(0.02)
    time.sleep(extra)
    killed = process.poll() is None
    if killed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    survived = _progress(ref, stage)
    run_stage(ref.config_path, stage)
    return {"stage": stage, "after_units": units, "extra_s": round(extra, 3), "killed": killed,
            "survived": survived}


def _progress(ref: Reference, stage: str) -> int:
    """Units the killed run left in the store: caption rows, embedding rows, or history epochs."""
    from pipeline.store import StoreLayout

    layout = StoreLayout(store_of(ref.config_path))
    if stage == "caption":
        return sum(part_rows(folder) for folder in layout.captions_root.glob("*/"))
    if stage == "embed":
        return sum(part_rows(folder) for folder in layout.embeddings_root.glob("*/*/"))
    histories = list(layout.runs.glob("*/history.jsonl"))
    return sum(len(path.read_text().splitlines()) for path in histories)


def check(ref: Reference, stage: str) -> dict:
    """The rerun's result equals the uninterrupted run's; returns the counts checked."""
    if stage == "caption":
        got = captions(ref.config_path)
        assert got == ref.captions, "captions differ from the uninterrupted run's"
        return {"caption_rows": len(got)}
    if stage == "embed":
        got = vectors(ref.config_path)
        for modality, expected in ref.vectors.items():
            assert got[modality].keys() == expected.keys(), f"{modality}: other items embedded"
            for item_id, vector in expected.items():
                np.testing.assert_allclose(got[modality][item_id], vector, atol=1e-5)
        return {f"{m}_rows": len(v) for m, v in got.items()}
    got = metrics(ref.config_path)
    assert got == ref.metrics, "metrics differ from the uninterrupted run's"
    return {"epochs": got["epochs_run"], "test_recall@20": got["test"]["recall@20"]}


UNITS = {"caption": 30, "embed": 60, "train": 8}  # caption rows, embedding rows, epochs


def kill_points(stage: str, count: int, seed: int) -> list[tuple[int, float]]:
    """Seeded (units done, extra seconds) kill points spread over the stage's work."""
    rng = np.random.default_rng([seed, STAGES.index(stage)])
    units = rng.choice(UNITS[stage], size=count, replace=count > UNITS[stage])
    extra = rng.uniform(0, SLOW_SECONDS[stage], size=count)
    return sorted((int(u), float(e)) for u, e in zip(units, extra, strict=True))


def _slowed_stage(stage: str, config_path: Path) -> None:
    """The stage with each unit of work slowed (the subprocess a kill lands in)."""
    from pipeline.config import load_config

    config = load_config(config_path)
    slow = SLOW_SECONDS[stage]
    if stage == "caption":
        from extractors import descriptor
        from pipeline.extract.caption import caption_store, image_roots

        original = descriptor.DescriptorCaptioner.caption

        def caption(self, images):
            time.sleep(slow * len(images))
            return original(self, images)

        descriptor.DescriptorCaptioner.caption = caption
        caption_store(config.caption, config.store, image_roots(config), progress=False,
                      part_rows=4)
    elif stage == "embed":
        from extractors import factory
        from pipeline.extract.embed import embed_store

        build = factory.build_embedder

        def slow_build(embed_config):
            embedder = build(embed_config)
            original = embedder.embed

            def embed(texts):
                time.sleep(slow)
                return original(texts)

            embedder.embed = embed
            return embedder

        factory.build_embedder = slow_build
        embed_store(config.embed, config.modalities, config.store, progress=False, part_rows=8)
    else:
        from pipeline import stages

        def log(line: str) -> None:
            if line.startswith("epoch"):
                time.sleep(slow)

        stages.train_stage(config, log=log)


if __name__ == "__main__":
    _slowed_stage(sys.argv[1], Path(sys.argv[2]))
