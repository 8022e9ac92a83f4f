"""Optuna search: typed ranges, seeded proposals, pruning, resume, identity check, valid-only selection."""

import dataclasses
import json
import time

import optuna
import pytest

from model.config import SearchConfig, SearchParam, TrainConfig, check_space
from model.run import RunFolder
from model.train import TrainResult
from pipeline import search as search_module
from pipeline.report import search_rows
from pipeline.search import SearchFolder, format_table, run_search
from tests.support.synthetic import planted_data

BASE = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=50, patience=50,
                   batch_size=128, device="cpu", topk=(5, 10, 20), feature_dtype="float32")
SPACE = {"learning_rate": SearchParam(kind="float", low=1e-4, high=1e-1, log=True),
         "n_mm_layers": SearchParam(kind="int", low=0, high=3),
         "knn_k": SearchParam(kind="categorical", choices=[3, 5])}


def quiet(_line: str) -> None:
    pass


def fake_train(monkeypatch, curve):
    """Replace the search's train(): valid Recall@20 per epoch is curve(config); test is
    1 - valid, so a selection that looked at test would pick the worst trial. Returns the calls."""
    calls = []

    def train(config, data, run_dir, *, resume, log, on_epoch):
        calls.append(config)
        values = curve(config)[:config.epochs]
        for epoch, value in enumerate(values, start=1):
            on_epoch(epoch, {"recall@20": value, "ndcg@20": value / 2})
        best = max(range(len(values)), key=values.__getitem__)
        metrics = {"valid": {"recall@20": values[best], "ndcg@20": values[best] / 2},
                   "test": {"recall@20": 1 - values[best], "ndcg@20": (1 - values[best]) / 2}}
        return TrainResult(run_dir, best + 1, len(values), metrics)

    monkeypatch.setattr(search_module, "train", train)
    return calls


def by_learning_rate(config):  # the nearer 1e-2, the better; rising over 4 epochs
    import math

    top = 1.0 / (1.0 + abs(math.log10(config.learning_rate) + 2))
    return [top * epoch / 4 for epoch in range(1, 5)]


@pytest.mark.parametrize("space, message", [
    ({"lr": SearchParam(kind="float", low=1e-4, high=1e-2)}, r"search\.space\.lr: not a train config field"),
    ({"learning_rate": SearchParam(kind="float", low=1e-2, high=1e-4)}, r"search\.space\.learning_rate: low = 0\.01 > high"),
    ({"reg_weight": SearchParam(kind="float", low=0, high=1e-2, log=True)}, r"search\.space\.reg_weight: a log range needs low > 0"),
    ({"knn_k": SearchParam(kind="categorical", choices=[])}, r"search\.space\.knn_k\.choices: expected a non-empty list"),
    ({"knn_k": SearchParam(kind="uniform", low=1, high=3)}, r"search\.space\.knn_k\.kind: expected one of"),
    ({"knn_k": SearchParam(kind="float", low=1, high=3)}, r"search\.space\.knn_k: kind 'float' does not fit .* int; use kind = \"int\""),
    ({"knn_k": SearchParam(kind="int", low=1.5, high=3)}, r"search\.space\.knn_k\.low: expected an integer"),
    ({"knn_k": SearchParam(kind="categorical", choices=[3], low=1)}, r"search\.space\.knn_k: \['low'\] are not keys"),
    ({}, r"search\.space: empty"),
])
def test_bad_ranges_name_the_key(space, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(space=space)


def test_ranges_that_train_would_refuse_fail_before_training(tmp_path):
    space = {"decay_weight": SearchParam(kind="float", low=0.5, high=1.5)}
    with pytest.raises(ValueError, match=r"search\.space\.decay_weight: 1\.5 .*train\.decay_weight"):
        check_space(BASE, space)
    with pytest.raises(ValueError, match=r"search\.space\.decay_weight"):
        run_search(BASE, SearchConfig(space=space), planted_data(), tmp_path, log=quiet)
    assert not any(tmp_path.iterdir())  # nothing trained, no study made


def test_same_seed_proposes_the_same_points(monkeypatch, tmp_path):
    fake_train(monkeypatch, by_learning_rate)
    data = planted_data()

    def proposed(seed, folder):
        search = SearchConfig(space=SPACE, n_trials=2, startup_trials=1, seed=seed, prune=False)
        return [row["params"] for row in run_search(BASE, search, data, tmp_path / folder,
                                                    log=quiet).rows]

    first = proposed(3, "a")
    assert first == proposed(3, "b")
    assert first != proposed(4, "c")
    assert len({json.dumps(params) for params in first}) == 2  # trial 1 is TPE's


def test_selection_is_the_best_valid_figure_never_test(monkeypatch, tmp_path):
    fake_train(monkeypatch, by_learning_rate)
    search = SearchConfig(space=SPACE, n_trials=5, startup_trials=5, seed=1, prune=False)
    result = run_search(BASE, search, planted_data(), tmp_path, log=quiet)
    valid = {row["number"]: row["valid"]["recall@20"] for row in result.rows}
    test = {row["number"]: row["test"]["recall@20"] for row in result.rows}
    assert result.best_number == max(valid, key=valid.get)
    assert result.best_number != max(test, key=test.get)  # test would have chosen another
    assert all(row["value"] == row["valid"]["recall@20"] for row in result.rows)
    saved = json.loads(SearchFolder(tmp_path).table.read_text())
    assert saved["best_number"] == result.best_number
    assert saved["best_params"] == result.best["params"]
    table = format_table(result).splitlines()
    assert len(table) == 2 + 5 and "(selected)" in table[2 + result.best_number]
    artifact = search_rows(SearchFolder(tmp_path).table)  # the flow's table artifact
    assert [row["trial"] for row in artifact if row["selected"]] == [result.best_number]
    assert {"state", "params", "best_epoch", "valid recall@20", "valid ndcg@20", "test recall@20",
            "seconds"} <= set(artifact[0])


def test_resume_runs_only_the_missing_trials(monkeypatch, tmp_path):
    calls = fake_train(monkeypatch, by_learning_rate)
    data = planted_data()
    search = SearchConfig(space=SPACE, n_trials=2, seed=5, prune=False)
    run_search(BASE, search, data, tmp_path, log=quiet)
    assert len(calls) == 2
    # a search killed while trial 2 trained: the storage holds it RUNNING
    study = optuna.load_study(study_name="search",
                              storage=f"sqlite:///{SearchFolder(tmp_path).storage}")
    study.ask()
    bigger = SearchConfig(space=SPACE, n_trials=3, seed=5, prune=False)  # same study, larger budget
    result = run_search(BASE, bigger, data, tmp_path, log=quiet)
    assert len(calls) == 3  # one new trial, not three
    assert [row["state"] for row in result.rows] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert result.rows[2]["note"] == "stopped before it finished"
    assert result.rows[2]["seconds"] is None
    assert len({json.dumps(row["params"]) for row in result.rows if row["params"]}) == 3
    run_search(BASE, bigger, data, tmp_path, log=quiet)
    assert len(calls) == 3  # the budget is met: nothing to run
    calls = fake_train(monkeypatch, lambda config: time.sleep(0.1) or by_learning_rate(config))
    timed = SearchConfig(space=SPACE, n_trials=10, timeout_s=0.05, seed=5, prune=False)
    run_search(BASE, timed, data, tmp_path, log=quiet)
    assert len(calls) == 1  # the time budget: no trial starts once it is spent


def test_a_diverged_trial_fails_with_its_error_and_is_redone_by_the_next_run(monkeypatch, tmp_path):
    def curve(config):
        if not calls[1:]:  # the first trial diverges
            raise FloatingPointError("epoch 1: training loss is nan")
        return by_learning_rate(config)

    calls = fake_train(monkeypatch, curve)
    search = SearchConfig(space=SPACE, n_trials=2, prune=False)
    rows = run_search(BASE, search, planted_data(), tmp_path, log=quiet).rows
    assert [(row["state"], row["note"]) for row in rows] == [
        ("FAIL", "epoch 1: training loss is nan"), ("COMPLETE", "")]
    rows = run_search(BASE, search, planted_data(), tmp_path, log=quiet).rows
    assert [row["state"] for row in rows] == ["FAIL", "COMPLETE", "COMPLETE"]


def test_a_storage_file_of_another_study_is_refused(monkeypatch, tmp_path):
    fake_train(monkeypatch, by_learning_rate)
    data = planted_data()
    run_search(BASE, SearchConfig(space=SPACE, n_trials=1), data, tmp_path, log=quiet)
    storage = SearchFolder(tmp_path).storage
    other_space = {"learning_rate": SearchParam(kind="float", low=1e-3, high=1e-1, log=True)}
    with pytest.raises(ValueError, match=rf"{storage}: made by a different search \(differs in: "
                                         rf"space;.*Delete {tmp_path} to start"):
        run_search(BASE, SearchConfig(space=other_space, n_trials=2), data, tmp_path, log=quiet)
    with pytest.raises(ValueError, match=r"differs in: data"):
        run_search(BASE, SearchConfig(space=SPACE, n_trials=2), planted_data(seed=9), tmp_path,
                   log=quiet)
    with pytest.raises(ValueError, match=r"differs in: train"):
        run_search(dataclasses.replace(BASE, embedding_size=16),
                   SearchConfig(space=SPACE, n_trials=2), data, tmp_path, log=quiet)


def test_hopeless_trials_are_pruned_at_their_first_prunable_epoch(monkeypatch, tmp_path):
    def curve(config):  # lr 1e-12 learns nothing
        return [0.0] * 4 if config.learning_rate < 1e-6 else [0.1, 0.2, 0.3, 0.4]

    fake_train(monkeypatch, curve)
    space = {"learning_rate": SearchParam(kind="categorical", choices=[1e-2, 1e-12])}
    search = SearchConfig(space=space, n_trials=6, startup_trials=6, seed=0,
                          prune_after_trials=1, prune_from_epoch=1)
    rows = run_search(BASE, search, planted_data(), tmp_path, log=quiet).rows
    first_complete = min(row["number"] for row in rows if row["state"] == "COMPLETE")
    hopeless = [row for row in rows
                if row["params"]["learning_rate"] < 1e-6 and row["number"] > first_complete]
    assert hopeless, "seed 0 proposes no hopeless trial after a complete one: pick another seed"
    assert all(row["state"] == "PRUNED" and row["epochs_run"] == 1 for row in hopeless)
    assert all(row["state"] == "COMPLETE" for row in rows if row["params"]["learning_rate"] > 1e-6)


def test_a_real_search_prunes_and_leaves_no_finished_looking_trial(tmp_path):
    """Real training on tiny data: the trial that cannot learn is pruned, its folder unfinished."""
    space = {"learning_rate": SearchParam(kind="categorical", choices=[1e-2, 1e-12])}
    search = SearchConfig(space=space, n_trials=2, startup_trials=2, seed=10, max_epochs=3,
                          prune_after_trials=1, prune_from_epoch=2)  # seed 10: 1e-2, then 1e-12
    base = dataclasses.replace(BASE, model="bpr", embedding_size=16)  # fast; the hook is the same
    result = run_search(base, search, planted_data(seed=1), tmp_path, log=quiet)
    states = {row["number"]: (row["params"]["learning_rate"], row["state"]) for row in result.rows}
    assert result.best["params"]["learning_rate"] == 1e-2
    pruned = [row for row in result.rows if row["state"] == "PRUNED"]
    assert pruned, f"nothing pruned: {states}"
    for row in pruned:
        run = RunFolder(row["run_dir"])
        assert not run.metrics.exists() and not run.finished
        assert len(run.read_history()) == row["epochs_run"] == search.prune_from_epoch
    assert [row["epochs_run"] for row in result.rows] == [3, 2]  # max_epochs bounds the trials
