"""Grid search: budgeted grid points, selection by VALID Recall@20, a table, resumable folders."""

import json

import pytest

from model.config import SearchConfig, TrainConfig
from model.search import format_table, grid_points, run_search
from tests.support.synthetic import planted_data

BASE = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=50, patience=50,
                   batch_size=128, device="cpu", topk=(5, 10, 20))


def test_grid_points_in_order_and_sampled_within_budget():
    search = SearchConfig(grid={"n_ui_layers": [1, 2], "reg_weight": [1e-2, 1e-3, 1e-4]},
                          max_configs=10)
    points = grid_points(search)
    assert len(points) == 6 and points[0] == {"n_ui_layers": 1, "reg_weight": 1e-2}
    small = grid_points(SearchConfig(grid=search.grid, max_configs=3, sample_seed=1))
    assert len(small) == 3 and all(point in points for point in small)
    assert small == grid_points(SearchConfig(grid=search.grid, max_configs=3, sample_seed=1))


def test_search_selects_by_valid_recall_within_the_epoch_budget(tmp_path):
    data = planted_data(seed=1)
    search = SearchConfig(grid={"learning_rate": [1e-12, 1e-2],
                                "mm_weights": [{"image": 0.5, "text": 0.5}]},
                          max_epochs=4)
    result = run_search(BASE, search, data, tmp_path, log=lambda _: None)
    assert [row["overrides"]["learning_rate"] for row in result.rows] == [1e-12, 1e-2]
    assert all(row["epochs_run"] <= 4 for row in result.rows)
    valid = [row["valid"]["recall@20"] for row in result.rows]
    assert result.best_index == valid.index(max(valid))
    assert result.best["overrides"]["learning_rate"] == 1e-2  # a model that learns wins
    saved = json.loads((tmp_path / "search.json").read_text())
    assert saved["best_index"] == result.best_index and len(saved["rows"]) == 2
    assert "(selected)" in format_table(result).splitlines()[2 + result.best_index]
    again = run_search(BASE, search, data, tmp_path, log=lambda _: None)  # resumes finished runs
    assert again.rows == result.rows


def test_bad_grid_values_fail_with_the_field_name(tmp_path):
    search = SearchConfig(grid={"reg_weight": [-1.0]})
    with pytest.raises(ValueError, match="train.reg_weight"):
        run_search(BASE, search, planted_data(), tmp_path, log=lambda _: None)
