"""evaluate_splits: several held-out sets ranked once give what separate evaluate calls give."""

import numpy as np
import pytest
import torch

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
