"""The training function: run folder contents, early stopping, cold/warm test, checkpoint guards."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from model.config import TrainConfig
from model.data import hold_out_items
from model.train import train
from tests.support.synthetic import planted_data

CONFIG = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=6, patience=20,
                     batch_size=128, device="cpu", topk=(5, 10, 20, 50))
QUIET = {"log": lambda _: None}


def test_run_folder_holds_metrics_history_vectors_and_checkpoint(tmp_path):
    data = planted_data()
    result = train(CONFIG, data, tmp_path, **QUIET)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == result.metrics
    assert metrics["model"] == "lirdrec" and 1 <= metrics["best_epoch"] <= 6
    expected = {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map") for k in (5, 10, 20, 50)}
    for split in ("valid", "test", "test_warm"):
        assert set(metrics[split]) == expected
    assert metrics["test_cold"] == {} and metrics["n_cold_items"] == 0
    assert metrics["test_warm"] == metrics["test"]
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in history] == [1, 2, 3, 4, 5, 6]
    best = history[metrics["best_epoch"] - 1]
    assert best["valid"] == metrics["valid"]
    assert best["valid"]["recall@20"] == max(line["valid"]["recall@20"] for line in history)
    assert np.load(tmp_path / "user_vectors.npy").shape == (data.n_users, 24)
    assert np.load(tmp_path / "item_vectors.npy").shape == (data.n_items, 24)
    assert (tmp_path / "checkpoint.pt").exists()
    best = torch.load(tmp_path / "best_model.pt", weights_only=False)
    assert best["epoch"] == metrics["best_epoch"] and "theta" in best["model"]


def test_early_stopping_after_patience_plus_one_bad_epochs(tmp_path):
    # lr 0 never improves after epoch 1: epochs 2..4 fail, the 3rd failure (patience 2) stops.
    config = dataclasses.replace(CONFIG, learning_rate=1e-12, patience=2, epochs=50)
    result = train(config, planted_data(), tmp_path, **QUIET)
    assert result.best_epoch == 1 and result.epochs_run == 4


def test_cold_items_are_ranked_among_themselves(tmp_path):
    data = hold_out_items(planted_data(n_users=80), 0.2, seed=0)
    result = train(CONFIG, data, tmp_path, **QUIET)
    metrics = result.metrics
    assert metrics["n_cold_items"] == 8
    assert set(metrics["test_cold"]) == set(metrics["test"])
    assert 0 < metrics["n_users"]["test_cold"] < metrics["n_users"]["test"]
    assert metrics["test_warm"] != metrics["test"]
    # per-user metrics of every split: their means are what metrics.json reports
    assert set(result.per_user) == {"valid", "test", "test_warm", "test_cold"}
    for split, per_user in result.per_user.items():
        assert len(per_user.users) == metrics["n_users"][split]
        assert all(len(values) == len(per_user.users) for values in per_user.values.values())
    for split in ("test", "test_warm", "test_cold"):
        assert result.per_user[split].means() == metrics[split]  # exactly: the same numbers
    # valid: recomputed from the saved best-valid vectors, the ranking of the best epoch
    assert result.per_user["valid"].means() == pytest.approx(metrics["valid"], rel=1e-9)


def test_finished_run_resumes_to_the_same_metrics(tmp_path):
    data = planted_data()
    first = train(CONFIG, data, tmp_path, **QUIET)
    again = train(CONFIG, data, tmp_path, **QUIET)
    without_timings = lambda metrics: {k: v for k, v in metrics.items() if k != "seconds"}  # noqa: E731
    assert without_timings(again.metrics) == without_timings(first.metrics)


def test_changing_epochs_is_a_config_change(tmp_path):
    data = planted_data()
    train(dataclasses.replace(CONFIG, epochs=2), data, tmp_path, **QUIET)
    with pytest.raises(ValueError, match="epochs: 2 -> 3"):
        train(dataclasses.replace(CONFIG, epochs=3), data, tmp_path, **QUIET)


def test_checkpoint_from_other_config_or_data_is_refused(tmp_path):
    data = planted_data()
    train(dataclasses.replace(CONFIG, epochs=2), data, tmp_path, **QUIET)
    with pytest.raises(ValueError, match=r"different config \(reg_weight: 0.001 -> 0.01\)"):
        train(dataclasses.replace(CONFIG, epochs=2, reg_weight=1e-2), data, tmp_path, **QUIET)
    with pytest.raises(ValueError, match="different data"):
        train(dataclasses.replace(CONFIG, epochs=2), planted_data(seed=5), tmp_path, **QUIET)
    fresh = train(dataclasses.replace(CONFIG, epochs=2, reg_weight=1e-2), data, tmp_path,
                  resume=False, **QUIET)
    assert fresh.epochs_run == 2


def test_execution_only_fields_may_change_on_resume(tmp_path):
    data = planted_data()
    first = train(dataclasses.replace(CONFIG, epochs=2), data, tmp_path, **QUIET)
    again = train(dataclasses.replace(CONFIG, epochs=2, eval_user_chunk=7, num_threads=1), data,
                  tmp_path, **QUIET)
    assert again.metrics["test"] == pytest.approx(first.metrics["test"])


def test_progress_lines_are_logged(tmp_path):
    lines = []
    train(dataclasses.replace(CONFIG, epochs=2), planted_data(), tmp_path, log=lines.append)
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert lines[-1].startswith("best epoch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_matches_cpu_closely(tmp_path):
    data = planted_data()
    config = dataclasses.replace(CONFIG, epochs=3)
    on_cpu = train(config, data, tmp_path / "cpu", **QUIET).metrics
    on_gpu = train(dataclasses.replace(config, device="cuda"), data, tmp_path / "gpu",
                   **QUIET).metrics
    assert on_gpu["config"]["device"] == "cuda"
    assert on_gpu["test"]["recall@20"] == pytest.approx(on_cpu["test"]["recall@20"], abs=0.05)
