"""EASE: B against per-column ridge regressions, l2 chosen on valid only, the item limit, a run."""

import numpy as np
import pytest
import torch

from model.config import TrainConfig
from model.data import RecData
from model.ease import EASE, ease_weights
from model.train import train
from pipeline.config import RankConfig
from pipeline.rank import item_index, top_unseen
from pipeline.report import fitted_text
from tests.support.synthetic import planted_data

QUIET = {"log": lambda _: None}


def pairs_of(matrix: np.ndarray) -> np.ndarray:
    return np.argwhere(matrix > 0).astype(np.int64)  # (N, 2) [user, item]


def ridge_columns(x: np.ndarray, l2: float) -> np.ndarray:
    """EASE's B another way: column j regresses item j on the OTHER items (ridge, l2)."""
    n_items = x.shape[1]
    weights = np.zeros((n_items, n_items))
    for j in range(n_items):
        others = [i for i in range(n_items) if i != j]
        design = x[:, others]
        weights[others, j] = np.linalg.solve(design.T @ design + l2 * np.eye(len(others)),
                                             design.T @ x[:, j])
    return weights


def test_ease_weights_and_scores_match_hand_formulas():
    x = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=np.float64)  # 3 users x 4 items
    gram = x.T @ x
    np.testing.assert_array_equal(gram, [[2, 2, 1, 1], [2, 3, 2, 1], [1, 2, 2, 1], [1, 1, 1, 1]])
    weights = ease_weights(torch.from_numpy(gram), 1.0).numpy()
    expected = ridge_columns(x, 1.0)
    np.testing.assert_allclose(weights, expected, atol=1e-12)
    precision = np.linalg.inv(gram + np.eye(4))  # B = I - P diag(P)^-1 (Steck's eq. 8)
    np.testing.assert_allclose(weights, np.eye(4) - precision / np.diag(precision), atol=1e-12)
    assert np.all(np.diag(weights) == 0.0)

    data = RecData(3, 4, pairs_of(x), valid=np.array([[0, 2]]), test=np.array([[1, 3]]))
    model = EASE.from_config(TrainConfig(model="ease", ease_l2_grid=(1.0,), topk=(20,)), data,
                             torch.device("cpu"), **QUIET)
    users, items = model()
    assert users.shape == (3, 4) and items.shape == (4, 4) and users.dtype == torch.float32
    np.testing.assert_allclose((users @ items.T).numpy(), x @ expected, atol=1e-6)
    assert model.fitted()["l2"] == 1.0


def test_l2_is_chosen_on_valid_recall_and_test_is_never_read():
    # skewed popularity: a large l2 ranks about as co-occurrence counts do (popular items
    # first), a small one discounts popular items; so the two rank user 0's items differently
    rng = np.random.default_rng(0)
    x = (rng.random((30, 50)) < np.linspace(0.6, 0.05, 50)).astype(np.float64)
    small, large = 1.0, 1000.0
    ranks = {}  # l2 -> each item's rank for user 0, training items masked (0 = best)
    for l2 in (small, large):
        scores = x[0] @ ridge_columns(x, l2)
        scores[x[0] > 0] = -np.inf
        ranks[l2] = np.argsort(np.argsort(-scores, kind="stable"), kind="stable")
    unseen = np.flatnonzero(x[0] == 0)
    assert len(unseen) > 25  # a top 20 that leaves items out
    # an item that is clearly in one l2's top 20 and clearly out of the other's (no near ties)
    favours_small = next(i for i in unseen if ranks[small][i] < 15 and ranks[large][i] >= 25)
    favours_large = next(i for i in unseen if ranks[large][i] < 15 and ranks[small][i] >= 25)
    train_pairs = pairs_of(x)

    def chosen(valid_item: int, test_item: int, grid: tuple[float, ...]) -> float:
        data = RecData(30, 50, train_pairs, np.array([[0, valid_item]]),
                       np.array([[0, test_item]]))
        config = TrainConfig(model="ease", ease_l2_grid=grid, topk=(20,))
        return EASE.from_config(config, data, torch.device("cpu"), **QUIET).fitted()["l2"]

    for grid in ((small, large), (large, small)):  # not just the first (or last) of the grid
        assert chosen(favours_small, favours_large, grid) == small
        assert chosen(favours_large, favours_small, grid) == large


def test_too_many_items_is_refused_before_training(tmp_path):
    data = planted_data()  # 40 items
    config = TrainConfig(model="ease", ease_max_items=39, device="cpu")
    with pytest.raises(ValueError, match=r"train\.ease_max_items: .* 40 items, over the limit "
                                         r"of 39 .*raise train\.ease_max_items"):
        train(config, data, tmp_path, **QUIET)
    assert not (tmp_path / "history.jsonl").exists()


def test_ease_run_learns_records_its_l2_and_ranks_with_faiss(tmp_path):
    data = planted_data(seed=1, n_users=80)
    grid = (10.0, 100.0, 1000.0)
    config = TrainConfig(model="ease", ease_l2_grid=grid, device="cpu", topk=(5, 10, 20))
    result = train(config, data, tmp_path, **QUIET)
    metrics = result.metrics
    assert (tmp_path / "metrics.json").exists() and metrics["model"] == "ease"
    assert result.best_epoch == 0 and metrics["epochs_run"] == 0
    fitted = metrics["fitted"]
    assert [row["l2"] for row in fitted["grid"]] == list(grid)
    best = max(fitted["grid"], key=lambda row: row["valid_recall@20"])
    assert fitted["l2"] == best["l2"]
    assert metrics["valid"]["recall@20"] == pytest.approx(best["valid_recall@20"])
    assert metrics["test"]["recall@5"] > 0.3  # random: about 0.16

    # the rank stage's FAISS index takes the I-dimensional item rows
    users, items = np.load(tmp_path / "user_vectors.npy"), np.load(tmp_path / "item_vectors.npy")
    assert users.shape == (data.n_users, data.n_items) and items.shape == (data.n_items,) * 2
    seen = [data.train[data.train[:, 0] == u, 1] for u in range(data.n_users)]
    _, found = top_unseen(item_index(items, RankConfig(k=5)), users, seen, 5)
    scores = users @ items.T
    for user in range(data.n_users):
        scores[user, seen[user]] = -np.inf
    np.testing.assert_allclose(found, -np.sort(-scores, axis=1)[:, :5], rtol=1e-5, atol=1e-5)

    assert fitted_text(metrics["fitted"]) == f"l2={fitted['l2']:g}"  # the report's "fitted" column
    assert fitted_text({}) is None
