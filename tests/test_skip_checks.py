"""Each stage's skip check verifies every file its outputs consist of: a deleted one is rebuilt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.run import RunFolder
from pipeline import stages
from pipeline.config import Config, load_config
from pipeline.per_user import read_per_user
from pipeline.schemas import CAPTIONS
from pipeline.store import CURRENT_FILE, PartStore, StoreError, StoreLayout, current_key
from tests.test_datasets_mmrec import ROWS, write_inter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ranked(tiny_catalog):
    """A config whose every stage has run once (in process, as the CLI runs them)."""
    _, _, config_path = tiny_catalog
    config = load_config(config_path)
    for stage in (stages.ingest_stage, stages.caption_stage, stages.embed_stage):
        stage(config, progress=False) if stage is not stages.ingest_stage else stage(config)
    run = RunFolder(stages.train_stage(config, log=lambda _: None).run_dir)
    stages.rank_stage(config, run.path)
    return config, run


def _metrics(run: RunFolder) -> dict:
    metrics = json.loads(run.metrics.read_text())
    metrics.pop("seconds")
    return metrics


@pytest.mark.parametrize(
    "name", ["metrics", "item_vectors", "item_ids", "item_encoder"]
)
def test_train_rebuilds_a_deleted_run_file_with_the_same_metrics(ranked, name):
    config, run = ranked
    before = _metrics(run)
    getattr(run, name).unlink()
    result = stages.train_stage(config, log=lambda _: None)
    assert result.ran and getattr(run, name).exists()
    assert _metrics(run) == before
    assert not stages.train_stage(config, log=lambda _: None).ran


def test_train_completes_metrics_killed_before_its_inputs_record(ranked):
    config, run = ranked
    metrics = json.loads(run.metrics.read_text())
    inputs = metrics.pop("inputs")
    run.metrics.write_text(json.dumps(metrics))
    assert stages.train_stage(config, log=lambda _: None).ran
    assert json.loads(run.metrics.read_text())["inputs"] == inputs


def test_a_run_without_per_user_metrics_gets_them_from_its_vectors_not_trained_again(ranked):
    """A run of an earlier version (no per_user.parquet): the train stage evaluates its saved
    vectors; no weight, vector, history or metrics file is rewritten."""
    config, run = ranked
    before = read_per_user(run.path)
    run.per_user.unlink()
    with pytest.raises(StoreError, match="predates per-user metrics"):
        read_per_user(run.path)
    files = (run.checkpoint, run.best_model, run.user_vectors, run.history, run.metrics)
    written = {path: path.stat().st_mtime_ns for path in files}
    lines = []
    assert stages.train_stage(config, log=lines.append).ran
    assert any("per_user.parquet missing; computing it from the saved vectors" in line
               for line in lines)
    assert {path: path.stat().st_mtime_ns for path in files} == written
    after = read_per_user(run.path)
    metrics = json.loads(run.metrics.read_text())
    for split, (users, values) in after.items():
        assert users.tolist() == before[split][0].tolist()
        assert len(users) == metrics["n_users"][split]
        for name, column in values.items():
            assert column.tolist() == before[split][1][name].tolist()
            if split != "valid":  # valid is the best epoch's history line
                assert np.mean(column) == metrics[split][name]
    assert not stages.train_stage(config, log=lambda _: None).ran


@pytest.mark.parametrize("name", ["candidates", "index", "rank_record"])
def test_rank_rebuilds_a_deleted_output(ranked, name):
    config, run = ranked
    getattr(run, name).unlink()
    assert stages.rank_stage(config, run.path).ran and getattr(run, name).exists()
    assert not stages.rank_stage(config, run.path).ran


def test_rank_without_vectors_says_to_train_first(tmp_path, ranked):
    config, _ = ranked
    with pytest.raises(FileNotFoundError, match="item_vectors.npy: missing; train the run first"):
        stages.rank_stage(config, tmp_path)


def test_caption_and_embed_rewrite_current_and_recompute_deleted_parts(ranked):
    config, run = ranked
    layout = StoreLayout(config.store)
    key = current_key(layout.captions_root)
    (layout.captions_root / CURRENT_FILE).unlink()
    captions = PartStore(layout.captions(key), CAPTIONS)
    for part in captions.parts():
        part.unlink()
    result = stages.caption_stage(config, progress=False)
    assert result.summary.computed == result.summary.items  # every deleted row recomputed
    assert current_key(layout.captions_root) == key
    assert captions.read().num_rows == result.summary.items

    text = layout.modality_embeddings("text")
    embedder_key = current_key(text)
    (text / CURRENT_FILE).unlink()
    for part in sorted(layout.embeddings("text", embedder_key).glob("part-*.parquet")):
        part.unlink()
    summary = stages.embed_stage(config, progress=False).summary
    assert summary.per_modality["text"]["computed"] == summary.items
    assert current_key(text) == embedder_key
    assert not stages.train_stage(config, log=lambda _: None).ran  # same inputs: same run


def test_ingest_reimports_a_deleted_feature_store(tmp_path):
    folder = write_inter(tmp_path / "toy", ROWS)
    np.save(folder / "image_feat.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
    config = Config.model_validate(
        {"name": "toy", "store": "store", "dataset": {"kind": "mmrec", "path": "toy"},
         "split": {"method": "given"}},
        context={"base_dir": tmp_path},
    )
    assert stages.ingest_stage(config).ran
    assert not stages.ingest_stage(config).ran
    store = StoreLayout(config.store).embeddings("image", "imported")
    for part in store.glob("part-*.parquet"):
        part.unlink()
    assert stages.ingest_stage(config).ran
    assert len(list(store.glob("part-*.parquet"))) == 1
