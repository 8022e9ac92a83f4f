"""The trainer's schedule: the learning-rate batch rule and warmup, the batch clamp, eval_every,
checkpoints within an epoch and their exact resume (one process)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from model.checkpoint import run_identity
from model.config import TrainConfig
from model.run import RunFolder, read_torch
from model.schedule import clamped_batch, learning_rate_at
from model.train import train
from tests.support.synthetic import planted_data

CONFIG = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=3, patience=20,
                     batch_size=128, device="cpu", topk=(5, 10, 20))
QUIET = {"log": lambda _: None}


def without_timings(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "seconds"}


def test_learning_rate_rules_relative_to_the_reference_batch_and_warmup():
    base = TrainConfig(learning_rate=1e-3)
    # "auto", the default: linear above the reference batch, the given rate at or below it
    assert learning_rate_at(base, 65536, 0) == pytest.approx(32e-3)
    assert learning_rate_at(base, 2048, 0) == learning_rate_at(base, 512, 0) == 1e-3
    assert learning_rate_at(dataclasses.replace(base, lr_scaling="none"), 65536, 0) == 1e-3
    linear = dataclasses.replace(base, lr_scaling="linear")
    assert learning_rate_at(linear, 512, 0) == pytest.approx(0.25e-3)
    assert learning_rate_at(linear, 8192, 0) == pytest.approx(4e-3)
    assert learning_rate_at(linear, 2048, 5) == 1e-3
    sqrt = dataclasses.replace(base, lr_scaling="sqrt", lr_reference_batch=1024)
    assert learning_rate_at(sqrt, 65536, 0) == pytest.approx(8e-3)
    warm = dataclasses.replace(linear, warmup_steps=4)
    assert [learning_rate_at(warm, 4096, step) for step in range(6)] == pytest.approx(
        [0.5e-3, 1e-3, 1.5e-3, 2e-3, 2e-3, 2e-3])
    with pytest.raises(ValueError, match="lr_scaling: expected one of"):
        TrainConfig(lr_scaling="cubic")
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(warmup_steps=-1)


def test_new_settings_at_their_defaults_leave_the_run_identity_alone():
    identity = run_identity(CONFIG)
    for name in ("lr_scaling", "lr_reference_batch", "warmup_steps", "eval_every",
                 "checkpoint_every_steps", "checkpoint_every_minutes"):
        assert name not in identity
    assert run_identity(dataclasses.replace(CONFIG, eval_every=2))["eval_every"] == 2
    # "auto" names the run by the rule it resolves to: at or below the reference batch the run
    # made before "auto" existed ("none"), above it the "linear" one
    assert run_identity(dataclasses.replace(CONFIG, lr_scaling="none")) == identity
    big = dataclasses.replace(CONFIG, batch_size=8192)
    assert run_identity(big) == run_identity(dataclasses.replace(big, lr_scaling="linear"))
    assert run_identity(big) != run_identity(dataclasses.replace(big, lr_scaling="none"))


def test_a_batch_larger_than_the_training_pairs_is_clamped_with_a_warning(tmp_path):
    data = planted_data()
    lines = []
    assert clamped_batch(CONFIG, 480, lines.append) == 128 and lines == []
    big = dataclasses.replace(CONFIG, batch_size=65536, epochs=1, lr_scaling="linear")
    clamped = train(big, data, tmp_path / "big", log=lines.append)
    assert any(line.startswith("warning: train.batch_size 65536 is larger than the 480 training "
                               "pairs") for line in lines)
    # the same as asking for the 480 pairs: the rule scales to the clamped batch
    exact = train(dataclasses.replace(big, batch_size=480), data, tmp_path / "exact", **QUIET)
    assert clamped.metrics["test"] == exact.metrics["test"]


def test_eval_every_evaluates_every_n_epochs_and_after_the_last(tmp_path):
    data = planted_data()
    result = train(dataclasses.replace(CONFIG, epochs=5, eval_every=2), data, tmp_path, **QUIET)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in history] == [2, 4, 5]
    assert result.epochs_run == result.metrics["epochs_run"] == 5
    assert result.best_epoch in (2, 4, 5)


def test_patience_counts_evaluations(tmp_path):
    # lr ~0 never improves after the first evaluation (epoch 2); evaluations at 4 and 6 fail,
    # the second failure (patience 1) stops
    config = dataclasses.replace(CONFIG, learning_rate=1e-12, patience=1, epochs=50, eval_every=2)
    result = train(config, planted_data(), tmp_path, **QUIET)
    assert result.best_epoch == 2 and result.epochs_run == 6


class Killed(Exception):
    pass


@pytest.mark.parametrize("stop_at", ["checkpoint: epoch 1 step 2 of 4",
                                     "checkpoint: epoch 3 step 2 of 4"])
def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, stop_at):
    data = planted_data()
    config = dataclasses.replace(CONFIG, checkpoint_every_steps=2)

    def stop(line: str) -> None:
        if line == stop_at:  # right after that checkpoint was written
            raise Killed

    with pytest.raises(Killed):
        train(config, data, tmp_path / "killed", log=stop)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    lines = []
    resumed = train(config, data, tmp_path / "killed", log=lines.append)
    assert any(line.startswith("resumed") and "step 2 of epoch" in line for line in lines)
    # checkpoints are an execution setting: the run without them computes the same
    straight = train(CONFIG, data, tmp_path / "straight", **QUIET)
    assert without_timings(resumed.metrics)["test"] == straight.metrics["test"]
    assert without_timings(resumed.metrics)["valid"] == straight.metrics["valid"]
    killed, straight_run = RunFolder(tmp_path / "killed"), RunFolder(tmp_path / "straight")
    assert [line["epoch"] for line in killed.read_history()] == [1, 2, 3]
    assert [(line["loss"], line["valid"]) for line in killed.read_history()] == \
        [(line["loss"], line["valid"]) for line in straight_run.read_history()]
    for name in ("user_vectors.npy", "item_vectors.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "killed" / name),
                                      np.load(tmp_path / "straight" / name))
    last, last_straight = read_torch(killed.checkpoint), read_torch(straight_run.checkpoint)
    for name, weights in last["model"].items():  # the last epoch's weights too
        torch.testing.assert_close(weights, last_straight["model"][name], rtol=0, atol=0)
