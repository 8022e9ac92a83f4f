"""Content kNN: fused mean cosines against hand-computed values, cold items, a run, no new items."""

import math

import numpy as np
import pytest
import torch

from model.config import TrainConfig
from model.content_knn import ContentKNN
from model.data import RecData, hold_out_items
from model.run import RunFolder, write_json
from model.train import train
from pipeline.recommend import score_new_item
from pipeline.training import missing_outputs
from tests.support.synthetic import planted_data

QUIET = {"log": lambda _: None}
R = 1 / math.sqrt(2)


def test_scores_are_weighted_mean_cosines_to_the_users_training_items():
    features = {
        "image": np.array([[1, 0], [0, 2], [1, 1], [0, 0]], dtype=np.float32),  # item 3: all zero
        "text": np.array([[1, 1], [1, -1], [0, 3], [2, 0]], dtype=np.float32),
    }
    # user 0 trained on items 0 and 1, user 1 on item 2, user 2 on nothing; item 3 is cold
    data = RecData(3, 4, train=np.array([[0, 0], [0, 1], [1, 2]]), valid=np.array([[2, 0]]),
                   test=np.array([[0, 3], [1, 0]]), features=features)
    assert list(data.cold_items) == [3]
    config = TrainConfig(model="content_knn", mm_weights={"image": 0.25, "text": 0.75})
    users, items = ContentKNN.from_config(config, data, torch.device("cpu"), **QUIET)()
    assert users.shape == (3, 4) and items.shape == (4, 4)
    # cosines by hand: image cos(0,2) = cos(1,2) = R, the zero row 0 with all; text cos(0,2) =
    # cos(0,3) = cos(1,3) = R, cos(1,2) = -R, cos(0,1) = cos(2,3) = 0
    expected = np.array([
        [0.25 * 0.5 + 0.75 * 0.5, 0.25 * 0.5 + 0.75 * 0.5, 0.25 * R + 0.75 * 0.0, 0.75 * R],
        [0.25 * R + 0.75 * R, 0.25 * R - 0.75 * R, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # no training item: the zero vector
    ])
    np.testing.assert_allclose((users @ items.T).numpy(), expected, atol=1e-6)


def test_content_knn_run_learns_and_ranks_cold_items_from_their_features(tmp_path):
    data = hold_out_items(planted_data(seed=1, n_users=80), share=0.25, seed=0)
    config = TrainConfig(model="content_knn", device="cpu", topk=(5, 10, 20))
    metrics = train(config, data, tmp_path, **QUIET).metrics
    assert (tmp_path / "metrics.json").exists() and metrics["model"] == "content_knn"
    assert metrics["best_epoch"] == 0 and metrics["fitted"] == {}
    assert metrics["test"]["recall@5"] > 0.3  # random: about 0.12
    assert metrics["n_cold_items"] == 10
    assert metrics["test_cold"]["recall@5"] > 0.8  # random among the 10 cold items: about 0.5

    with pytest.raises(ValueError, match="content_knn run has no item encoder .*features-only"
                                         ".* with a run of lirdrec"):
        score_new_item(tmp_path, {name: m[0] for name, m in data.features.items()})

    # a finished run without best_model.pt / item_encoder.npz is complete: not retrained forever
    run = RunFolder(tmp_path)
    for path in (run.config, run.inputs, run.user_ids, run.item_ids, run.per_user):
        path.write_text("{}")
    write_json(run.metrics, {**metrics, "inputs": {}})
    assert missing_outputs(run, config) == []
