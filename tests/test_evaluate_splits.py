"""evaluate_splits: several held-out sets ranked once give what separate evaluate calls give."""

import numpy as np
import pytest
import torch

from model import metrics
from model.metrics import _row_top, evaluate, evaluate_splits, evaluate_splits_per_user


@pytest.mark.parametrize("chunk", [0, 1, 7])
@pytest.mark.parametrize("cold", [False, True])
def test_one_ranking_for_valid_and_test_matches_separate_evaluations(chunk, cold):
    rng = np.random.default_rng(0)
    users, items = torch.tensor(rng.normal(size=(30, 4))), torch.tensor(rng.normal(size=(25, 4)))
    pairs = np.stack([rng.integers(30, size=400), rng.integers(25, size=400)], axis=1)
    pairs = np.unique(pairs, axis=0)
    label = rng.integers(3, size=len(pairs))
    train, valid, test = (pairs[label == i] for i in range(3))
    test = test[test[:, 0] % 3 != 0]  # test users a strict subset of valid's
    candidates = np.arange(0, 25, 2) if cold else None
    both = evaluate_splits(users, items, {"valid": valid, "test": test, "none": test[:0]}, train,
                           (1, 5, 20), user_chunk=chunk, candidate_items=candidates)
    for name, held_out in (("valid", valid), ("test", test)):
        metrics, n_users = evaluate(users, items, held_out, train, (1, 5, 20), user_chunk=chunk,
                                    candidate_items=candidates)
        assert both[name][1] == n_users > 0
        assert both[name][0] == pytest.approx(metrics, rel=1e-12)
    assert both["none"] == ({}, 0)


@pytest.mark.parametrize("block", [1, 3, 8, 24])
@pytest.mark.parametrize("cold", [False, True])
def test_ranking_in_item_blocks_matches_ranking_all_items_at_once(block, cold):
    # blocks of 1 item (k > block: every cut shorter than k), of 3 and 8 (a partial last block),
    # and one block (25 or 13 candidates); training items in every block masked.
    rng = np.random.default_rng(1)
    users, items = torch.tensor(rng.normal(size=(30, 4))), torch.tensor(rng.normal(size=(25, 4)))
    pairs = np.unique(np.stack([rng.integers(30, size=500), rng.integers(25, size=500)], axis=1),
                      axis=0)
    label = rng.integers(3, size=len(pairs))
    train, valid, test = (pairs[label == i] for i in range(3))
    candidates = np.arange(0, 25, 2) if cold else None
    splits = {"valid": valid, "test": test}
    whole = evaluate_splits_per_user(users, items, splits, train, (1, 5, 20),
                                     candidate_items=candidates, item_block=10**6)
    blocked = evaluate_splits_per_user(users, items, splits, train, (1, 5, 20), user_chunk=7,
                                       candidate_items=candidates, item_block=block)
    for name in splits:
        assert blocked[name].users.tolist() == whole[name].users.tolist()
        for metric, values in whole[name].values.items():
            np.testing.assert_array_equal(blocked[name].values[metric], values, err_msg=metric)


def test_a_training_item_in_a_later_block_is_masked():
    # one user whose best item (column 4, in the second block of 3) is a training item: ranked
    # without it, the held-out item 1 comes first
    users = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[0.1, 0.0], [0.5, 0.0], [0.2, 0.0], [0.3, 0.0], [0.9, 0.0]])
    metrics, _ = evaluate(users, items, np.array([[0, 1]]), np.array([[0, 4]]), (1,),
                          item_block=3)
    assert metrics["recall@1"] == 1.0


@pytest.mark.parametrize("k", [1, 5, 20])
def test_a_wide_rows_top_through_its_groups_is_topk(k):
    # rows of random scores, one with a single finite score, one of ties, one with its top k
    # packed into one group: the same values as torch.topk, and columns that hold them
    rng = np.random.default_rng(k)
    scores = torch.tensor(rng.normal(size=(6, 4 * 20 * 8)), dtype=torch.float32)
    scores[0] = -torch.inf
    scores[0, 17] = 0.5
    scores[1] = 1.0
    scores[2, 8:8 + k] = 10.0
    values, columns = _row_top(scores, k, group=8)
    expected = torch.topk(scores, k, dim=1)
    assert torch.equal(values, expected.values)
    assert torch.equal(scores.gather(1, columns), values)
    assert all(len(set(row.tolist())) == k for row in columns)  # no column twice
    assert sorted(columns[2].tolist()) == list(range(8, 8 + k))


def _scoring_forced(monkeypatch, bf16: bool) -> None:
    """Every multi-block evaluation scores in bf16 (or float32), whatever this CPU measures."""
    monkeypatch.setattr(metrics, "_SCORING", {})
    monkeypatch.setattr(metrics, "_measured_scoring",
                        lambda chunk, block, gemm: metrics.ScoringPlan(gemm, bf16, "forced"))


@pytest.mark.parametrize("block", [512, 1000])
def test_later_blocks_give_up_only_scores_above_the_floor_and_rank_as_one_block(
        block, monkeypatch):
    # 3,000 float32 items in blocks of 512 (whole groups of 64) or 1,000 (15 groups and 40
    # columns past them); users with up to 300 training items, ranked as in one block
    _scoring_forced(monkeypatch, bf16=False)
    rng = np.random.default_rng(3)
    users = torch.tensor(rng.normal(size=(300, 16)), dtype=torch.float32)
    items = torch.tensor(rng.normal(size=(3000, 16)), dtype=torch.float32)
    train = np.stack([np.repeat(np.arange(300), np.arange(300)),
                      rng.integers(3000, size=300 * 299 // 2)], axis=1)
    valid = np.stack([rng.integers(300, size=900), rng.integers(3000, size=900)], axis=1)
    splits = {"valid": valid}
    whole = evaluate_splits_per_user(users, items, splits, train, (1, 10, 50), item_block=10**6)
    blocked = evaluate_splits_per_user(users, items, splits, train, (1, 10, 50), user_chunk=64,
                                       item_block=block)
    for metric, values in whole["valid"].values.items():
        np.testing.assert_array_equal(blocked["valid"].values[metric], values, err_msg=metric)


def _near_ties(seed: int = 4):
    """Users whose top 5 items score within a few bf16 steps of each other: 200 items w + d_j z
    (d_j up to 2% of w's score) shuffled among 3,896 weaker ones. Each user's held-out items
    are its float32 top 5 (training items excluded), so exact ranking gives recall@5 = 1."""
    rng = np.random.default_rng(seed)
    dim = 32
    w, z = rng.normal(size=dim), rng.normal(size=dim)
    close = w + np.linspace(0.0, 0.02, 200)[:, None] * z * (w @ w) / abs(w @ z)
    items = np.concatenate([close, 0.3 * rng.normal(size=(3896, dim))])[rng.permutation(4096)]
    users = w + 0.3 * rng.normal(size=(100, dim))
    users, items = (torch.tensor(a, dtype=torch.float32) for a in (users, items))
    train = np.stack([np.repeat(np.arange(100), 3), rng.integers(4096, size=300)], axis=1)
    scores = users @ items.T
    scores[train[:, 0], train[:, 1]] = -torch.inf
    top = torch.topk(scores, 5, dim=1).indices.numpy()
    held_out = np.stack([np.repeat(np.arange(100), 5), top.reshape(-1)], axis=1)
    return users, items, held_out, train


@pytest.mark.parametrize("cold", [False, True])
def test_bf16_candidates_rescored_in_float32_rank_as_float32(cold, monkeypatch):
    # all items, or the cold protocol's candidates (every other item: 2,048 in blocks of 1,024)
    users, items, held_out, train = _near_ties()
    plain_bf16 = torch.topk(users.bfloat16() @ items.bfloat16().T, 25, dim=1)  # sanity: bf16
    assert (plain_bf16.values[:, 4] == plain_bf16.values[:, 5]).any()  # ties at the 5th alone
    candidates = np.arange(0, 4096, 2) if cold else None
    _scoring_forced(monkeypatch, bf16=True)
    metrics_bf16 = evaluate_splits_per_user(users, items, {"valid": held_out}, train, (5, 20),
                                            item_block=1024, candidate_items=candidates)
    _scoring_forced(monkeypatch, bf16=False)
    metrics_float32 = evaluate_splits_per_user(users, items, {"valid": held_out}, train, (5, 20),
                                               item_block=1024, candidate_items=candidates)
    assert metrics_float32["valid"].values["recall@5"].min() == 1.0
    for metric, values in metrics_float32["valid"].values.items():
        np.testing.assert_array_equal(metrics_bf16["valid"].values[metric], values,
                                      err_msg=metric)


def test_without_its_margin_the_bf16_floor_loses_items_of_the_float32_top(monkeypatch):
    # the margin is what keeps them: at zero, ties at the floor and bf16 rounding drop some
    users, items, held_out, train = _near_ties()
    _scoring_forced(monkeypatch, bf16=True)
    monkeypatch.setattr(metrics, "bf16_score_error", lambda dim: 0.0)
    scored = evaluate_splits_per_user(users, items, {"valid": held_out}, train, (5,),
                                      item_block=1024)
    assert scored["valid"].values["recall@5"].min() < 1.0


@pytest.mark.parametrize("dim", [16, 192, 4096])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_bf16_scores_stay_within_their_bound(dim, scale):
    # normal and heavy-tailed vectors, three magnitudes: no bf16 score strays past the bound
    generator = torch.Generator().manual_seed(dim)
    for draw in (torch.randn, lambda *shape, generator: torch.randn(
            *shape, generator=generator) ** 3):
        users = scale * draw(64, dim, generator=generator)
        items = draw(2048, dim, generator=generator)
        error = metrics._worst_bf16_error(users, items, users @ items.T,
                                          users.bfloat16() @ items.bfloat16().T)
        assert 0.0 < error <= 1.0


def test_bf16_scoring_is_measured_and_refused_where_emulated_or_out_of_bound(monkeypatch):
    from model import dtype

    users, items = torch.randn(64, 32), torch.randn(512, 32)
    monkeypatch.setattr(metrics, "_SCORING", {})
    assert metrics.scoring_plan(users, items, several_blocks=False).bf16 is False  # one block
    assert metrics._SCORING == {}  # nothing measured for it
    assert metrics.scoring_plan(users, items, True, scoring="float32").bf16 is False
    assert metrics._SCORING == {}  # nor for eval_scoring = "float32"
    monkeypatch.setattr(dtype, "_MEASURED", {})
    monkeypatch.setattr(dtype, "measure_matmul_rates", lambda device: dtype.MatmulRates(
        "cpu (AVX2)", float32_gflops=100.0, bfloat16_gflops=1.0, seconds=0.003))
    lines = []
    emulated = metrics.scoring_plan(users, items, several_blocks=True, log=lines.append)
    assert not emulated.bf16 and "emulated" in emulated.reason and "float32" in lines[0]
    monkeypatch.setattr(metrics, "_SCORING", {})
    monkeypatch.setattr(dtype, "_MEASURED", {})
    monkeypatch.setattr(dtype, "measure_matmul_rates", lambda device: dtype.MatmulRates(
        "cpu (AVX512)", float32_gflops=100.0, bfloat16_gflops=300.0, seconds=0.003))
    monkeypatch.setattr(metrics, "BF16_SPEEDUP", 0.0)  # as fast as need be
    monkeypatch.setattr(metrics, "_worst_bf16_error", lambda *tiles: 1.5)  # bf16 accumulation
    assert not metrics.scoring_plan(users, items, several_blocks=True).bf16
    monkeypatch.setattr(metrics, "_SCORING", {})
    monkeypatch.setattr(metrics, "_worst_bf16_error", lambda *tiles: 0.2)
    assert metrics.scoring_plan(users, items, several_blocks=True).bf16
    monkeypatch.setattr(metrics, "_SCORING", {})
    monkeypatch.setattr(metrics, "BF16_SPEEDUP", 1e9)  # bf16 never that much faster
    assert not metrics.scoring_plan(users, items, several_blocks=True).bf16


@pytest.mark.parametrize("bf16", [False, True])
def test_ties_and_users_without_candidates_keep_k_real_columns(bf16, monkeypatch):
    # a zero user (every score 0: all tie) gets 20 distinct real columns; a user whose every
    # item but 3 is a training item gets its 3 items, and the padding is never counted a hit
    _scoring_forced(monkeypatch, bf16)
    users = torch.stack([torch.zeros(8), torch.ones(8)])
    items = torch.randn(300, 8, generator=torch.Generator().manual_seed(5))
    train = np.stack([np.ones(297, dtype=np.int64), np.arange(3, 300)], axis=1)
    scoring = metrics._Bf16Scoring.of(items) if bf16 else None
    columns = metrics._top_columns(users, items, train[:, 0], train[:, 1], 20, 128,
                                   bf16=scoring)
    assert len(set(columns[0].tolist())) == 20 and max(columns[0].tolist()) < 300
    assert set(columns[1].tolist()) >= {0, 1, 2}
    held_out = np.array([[0, 7], [1, 0], [1, 1], [1, 2]])
    scored = evaluate_splits_per_user(users, items, {"valid": held_out}, train, (20,),
                                      item_block=128)
    assert scored["valid"].values["recall@20"][1] == 1.0
    assert scored["valid"].values["precision@20"][1] == 3 / 20


def test_keeping_too_many_bf16_candidates_turns_the_rest_of_the_evaluation_to_float32(
        monkeypatch):
    users, items, held_out, train = _near_ties()
    _scoring_forced(monkeypatch, bf16=True)
    monkeypatch.setattr(metrics, "BF16_KEPT_MAX", 10)
    float32_tiles, lines = [], []
    real = metrics.frozen_linear
    monkeypatch.setattr(metrics, "frozen_linear",
                        lambda *args: float32_tiles.append(1) or real(*args))
    monkeypatch.setattr(metrics, "_CROWDED", [])
    for _ in range(2):
        scored = evaluate_splits_per_user(users, items, {"valid": held_out}, train, (5,),
                                          item_block=1024, user_chunk=25, log=lines.append)
        assert scored["valid"].values["recall@5"].min() == 1.0
    assert len(float32_tiles) == 2 * 4 * 4  # every chunk's 4 blocks in float32: the first again
    assert len([line for line in lines if "float32 for the rest" in line]) == 1  # said once
