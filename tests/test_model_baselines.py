"""ID-only baselines: most-popular scores, MMRec's EmbLoss, and BPR-MF / LightGCN learn."""

import numpy as np
import pytest
import torch

from model.baselines import LightGCN, Popularity, emb_loss
from model.config import TrainConfig
from model.graph import user_item_adjacency
from model.train import train
from tests.support.synthetic import planted_data


def test_popularity_scores_items_by_training_count():
    train_pairs = np.array([[0, 1], [1, 1], [2, 1], [0, 2], [1, 2], [2, 0]])
    users, items = Popularity(3, 4, train_pairs)()
    scores = (users @ items.T).numpy()
    np.testing.assert_array_equal(scores, [[1, 3, 2, 0]] * 3)


def test_emb_loss_is_mmrecs_unsquared_norm_over_batch():
    a, b = torch.full((2, 2), 1.0), torch.full((2, 2), 2.0)
    assert emb_loss(a, b).item() == pytest.approx((2.0 + 4.0) / 2)


def test_lightgcn_averages_its_layers():
    data = planted_data()
    adjacency = user_item_adjacency(data.n_users, data.n_items, data.train)
    model = LightGCN(data.n_users, data.n_items, adjacency, embedding_size=4, n_layers=2,
                     reg_weight=0.0)
    users, items = model()
    ego = torch.cat([model.user_embedding, model.item_embedding])
    one = adjacency @ ego
    mean = (ego + one + adjacency @ one) / 3
    torch.testing.assert_close(torch.cat([users, items]), mean)


@pytest.mark.parametrize("model", ["bpr", "lightgcn"])
def test_id_baselines_learn_a_planted_dataset(model, tmp_path):
    data = planted_data(seed=1, n_users=80)
    config = TrainConfig(model=model, embedding_size=16, learning_rate=0.05, reg_weight=1e-4,
                         epochs=40, batch_size=64, device="cpu", topk=(5, 10, 20))
    result = train(config, data, tmp_path, log=lambda _: None)
    assert result.metrics["test"]["recall@5"] > 0.3  # random: about 0.16


def test_pop_runs_as_a_single_evaluation(tmp_path):
    data = planted_data()
    result = train(TrainConfig(model="pop", device="cpu"), data, tmp_path, log=lambda _: None)
    assert result.best_epoch == 0 and result.metrics["epochs_run"] == 0
    assert np.load(tmp_path / "item_vectors.npy").shape == (data.n_items, 1)
