"""The plain command line end to end on a tiny catalog: all stages, recommend, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def trained(tiny_catalog):
    root, _, config = tiny_catalog
    text = config.read_text().replace("seed = 7", "seed = 7\ncold_item_share = 0.1")
    config.write_text(text)
    result = cli("all", "--config", str(config))
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    return root, config, run_dir


def test_all_stages_write_a_ranked_run(trained):
    root, config, run_dir = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "lirdrec"
    assert set(metrics["test"]) >= {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map") for k in (5, 10, 20, 50)}
    assert metrics["test_cold"], "the 10% cold items were not evaluated"
    captioner = metrics["inputs"]["modalities"]["caption"]["provenance"]
    assert "descriptor" in json.dumps(captioner)  # which captioner made the inputs travels along
    candidates = pq.read_table(run_dir / "candidates.parquet")
    assert candidates.num_rows > 0
    assert (run_dir / "items.faiss").exists()


def test_second_run_skips_what_is_up_to_date(trained):
    root, config, run_dir = trained
    result = cli("all", "--config", str(config))
    assert "catalog up to date" in result.stdout
    assert f"up to date {run_dir}" in result.stdout
    assert Path(result.stdout.strip().splitlines()[-1]) == run_dir


def test_recommend_for_a_user_shows_history_and_titles(trained):
    root, config, run_dir = trained
    result = cli("recommend", "--run", str(run_dir), "--user", "u1", "--k", "3")
    assert "user u1:" in result.stdout
    assert "top 3 recommendations" in result.stdout
    assert "[train]" in result.stdout
    assert "Green" in result.stdout or "green" in result.stdout.lower()  # titles are shown


def test_new_item_scored_like_the_same_cold_catalog_item(trained, tmp_path):
    """A "new" item with a cold catalog item's features ranks the users like that item does.

    Not identical: the new item finds the catalog item itself among its kNN neighbours (SPEC 8
    counts an item once), so the vectors differ by one neighbour's share.
    """
    from pipeline.config import load_config
    from pipeline.recommend import score_new_item
    from pipeline.training import load_inputs

    root, config, run_dir = trained
    inputs = load_inputs(load_config(config))
    cold = int(inputs.data.cold_items[0])
    features = {name: matrix[cold] for name, matrix in inputs.data.features.items()}
    scores = score_new_item(run_dir, features)
    expected = np.load(run_dir / "user_vectors.npy") @ np.load(run_dir / "item_vectors.npy")[cold]
    assert np.corrcoef(scores, expected)[0, 1] > 0.95
    np.savez(tmp_path / "item.npz", **features)
    result = cli("recommend", "--run", str(run_dir), "--item-features", str(tmp_path / "item.npz"), "--k", "2")
    assert "top 2 users" in result.stdout


def test_bad_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nstore = "s"\n[dataset]\nkind = "movielens"\npath = "nowhere"\n[train]\nepochz = 3\n')
    result = cli("ingest", "--config", str(bad), check=False)
    assert result.returncode == 2
    assert "dataset.path" in result.stderr and "train.epochz" in result.stderr
    assert str(bad) in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_user_is_a_clear_error(trained):
    root, config, run_dir = trained
    result = cli("recommend", "--run", str(run_dir), "--user", "nobody", check=False)
    assert result.returncode == 2
    assert "nobody" in result.stderr


def test_search_then_trains_the_selected_point_in_full(trained):
    root, config, run_dir = trained
    searched = root / "searched.toml"
    searched.write_text(config.read_text() + "\n[search]\nn_trials = 2\nmax_epochs = 1\n"
                        '[search.space.learning_rate]\nkind = "categorical"\nchoices = [1e-4, 1e-2]\n')
    result = cli("train", "--config", str(searched), "--search")
    folder = next((root / "store-tiny" / "runs").glob("search-lirdrec-*"))
    table = json.loads((folder / "search.json").read_text())
    chosen = next(row for row in table["rows"] if row["number"] == table["best_number"])
    assert len(table["rows"]) == 2 and (folder / "optuna.sqlite3").exists()
    assert all(row["epochs_run"] == 1 for row in table["rows"])  # the budget bounds the trials
    assert "| trial | state | params |" in result.stdout  # the CLI prints the trials table
    final = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "metrics.json").read_text())
    assert final["config"]["learning_rate"] == chosen["params"]["learning_rate"]
    assert final["epochs_run"] == 3  # the selected point trained with the config's own epochs
    again = cli("train", "--config", str(searched), "--search")  # the study is complete: resumes
    assert "2 of 2 trials finished, running 0" in again.stdout + again.stderr


def test_run_folder_files_and_checkpoints(trained):
    """best_model.pt holds the run's own config and data fingerprint; every torch file of a run
    loads with weights_only=True."""
    import torch

    from model.run import RunFolder

    root, config, run_dir = trained
    run = RunFolder(run_dir)
    metrics = json.loads(run.metrics.read_text())
    for path in (run.best_model, run.checkpoint):
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["config"] == metrics["config"]
        assert state["data_fingerprint"] == metrics["data_fingerprint"]
    assert run.item_encoder.exists()


def test_a_compare_runs_config_snapshot_is_its_own(trained):
    root, config, run_dir = trained
    compared = root / "compared.toml"
    compared.write_text(config.read_text() + '\n[compare]\nbaselines = { bpr = { learning_rate = 0.01 } }\n')
    result = cli("train", "--config", str(compared))
    bpr_run = Path(next(line.split()[-1] for line in result.stdout.splitlines() if "/bpr-" in line))
    snapshot = json.loads((bpr_run / "config.json").read_text())
    assert snapshot["train"]["model"] == "bpr"
    assert snapshot["train"]["learning_rate"] == 0.01
    assert json.loads((bpr_run / "metrics.json").read_text())["model"] == "bpr"


def test_new_item_scoring_reads_only_the_run_folder(trained):
    """recommend --item-features uses the run's saved item encoder: it works with the feature
    stores moved away, and a run without item_encoder.npz (an earlier version's) gets it rebuilt
    from the store with the same scores."""
    import shutil

    from pipeline.config import load_config
    from pipeline.recommend import score_new_item
    from pipeline.training import load_inputs

    root, config, run_dir = trained
    inputs = load_inputs(load_config(config))
    features = {name: matrix[3] for name, matrix in inputs.data.features.items()}
    store_features = root / "store-tiny" / "features"
    away = root / "features-away"
    shutil.move(store_features, away)
    try:
        saved = score_new_item(run_dir, features)
    finally:
        shutil.move(away, store_features)
    (run_dir / "item_encoder.npz").unlink()
    rebuilt = score_new_item(run_dir, features)
    assert (run_dir / "item_encoder.npz").exists()
    np.testing.assert_allclose(saved, rebuilt, rtol=1e-5, atol=1e-6)


def test_ingest_rebuilds_a_deleted_catalog_file(trained):
    root, config, run_dir = trained
    items = root / "store-tiny" / "catalog" / "items.parquet"
    items.unlink()
    result = cli("ingest", "--config", str(config))
    assert "up to date" not in result.stdout
    assert items.exists()
    assert "catalog up to date" in cli("ingest", "--config", str(config)).stdout


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ("nan", "modality 'text' has 1 NaN or infinite value(s)"),
        ("inf", "modality 'text' has 1 NaN or infinite value(s)"),
        ("wide", "modality 'text' has shape (385,); expected one vector of 384 values"),
        ("rows", "modality 'text' has shape (3, 384)"),
        ("extra", "1 unknown array(s) ['txet']"),
    ],
)
def test_bad_new_item_features_are_errors_naming_the_modality(trained, tmp_path, arrays, message):
    from pipeline.config import load_config
    from pipeline.recommend import recommend_for_item
    from pipeline.training import load_inputs

    root, config, run_dir = trained
    features = {name: m[0].copy() for name, m in load_inputs(load_config(config)).data.features.items()}
    if arrays in ("nan", "inf"):
        features["text"][5] = np.nan if arrays == "nan" else np.inf
    elif arrays == "wide":
        features["text"] = np.append(features["text"], 0.0)
    elif arrays == "rows":
        features["text"] = np.stack([features["text"]] * 3)
    else:
        features["txet"] = features["text"]
    np.savez(tmp_path / "item.npz", **features)
    with pytest.raises((ValueError, KeyError), match=re.escape(message)):
        recommend_for_item(run_dir, tmp_path / "item.npz")


def test_recommend_refuses_a_non_positive_k_and_a_file_that_is_no_archive(trained, tmp_path):
    root, config, run_dir = trained
    for k in ("0", "-3"):
        result = cli("recommend", "--run", str(run_dir), "--user", "u1", "--k", k, check=False)
        assert result.returncode == 2 and "--k: must be at least 1" in result.stderr
    empty, text = tmp_path / "empty.npz", tmp_path / "notes.npz"
    empty.write_bytes(b"")
    text.write_text("caption = 0.1 0.2\n")
    for path, reason in ((empty, "empty file, not an .npz archive"), (text, "not a readable .npz")):
        result = cli("recommend", "--run", str(run_dir), "--item-features", str(path), check=False)
        assert result.returncode == 2, result.stderr
        assert f"{path}: {reason}" in result.stderr and "numpy.savez" in result.stderr
        assert "Traceback" not in result.stderr
