"""Full-ranking metrics against hand-computed values (MMRec formulas, training items masked)."""

import math

import numpy as np
import pytest
import torch

from model.metrics import evaluate, evaluate_splits_per_user, metrics_from_hits

# user 0 scores items 10,5,4,3,2,1 (item 0 is a training item); user 1 the negatives.
USERS = torch.tensor([[1.0], [-1.0]])
ITEMS = torch.tensor([[10.0], [5.0], [4.0], [3.0], [2.0], [1.0]])
TRAIN = np.array([[0, 0], [1, 1], [1, 2]])
HELD_OUT = np.array([[0, 1], [0, 3], [1, 0]])
IDCG2 = 1 + 1 / math.log2(3)


def expected_per_user() -> tuple[dict[str, float], dict[str, float]]:
    # user 0: ranking 1,2,3,4,5 with hits at ranks 1 and 3, two held-out items.
    # user 1: ranking 5,4,3,0 (1 and 2 masked) with the hit at rank 4, one held-out item.
    user0 = {
        "recall@1": 0.5, "precision@1": 1.0, "ndcg@1": 1.0, "map@1": 1.0,
        "recall@2": 0.5, "precision@2": 0.5, "ndcg@2": 1 / IDCG2, "map@2": 0.5,
        "recall@3": 1.0, "precision@3": 2 / 3, "ndcg@3": 1.5 / IDCG2, "map@3": (1 + 2 / 3) / 2,
        "recall@5": 1.0, "precision@5": 0.4, "ndcg@5": 1.5 / IDCG2, "map@5": (1 + 2 / 3) / 2,
    }
    user1 = {name: 0.0 for name in user0}
    user1.update({"recall@5": 1.0, "precision@5": 0.2, "ndcg@5": 1 / math.log2(5),
                  "map@5": 0.25})
    return user0, user1


def expected() -> dict[str, float]:
    user0, user1 = expected_per_user()
    return {name: (user0[name] + user1[name]) / 2 for name in user0}


@pytest.mark.parametrize("chunk", [0, 1])
def test_metrics_match_hand_computed_values(chunk):
    metrics, n_users = evaluate(USERS, ITEMS, HELD_OUT, TRAIN, (1, 2, 3, 5), user_chunk=chunk)
    assert n_users == 2
    assert metrics == pytest.approx(expected())


def test_candidate_ranking_ranks_only_the_candidates():
    # candidates 0, 3, 5: user 0 (item 0 masked) ranks 3, 5 -> hit at 1 (item 1 is no candidate,
    # so its held-out pair is dropped); user 1 ranks 5, 3, 0 -> hit at 3.
    metrics, n_users = evaluate(USERS, ITEMS, HELD_OUT, TRAIN, (1, 2, 20),
                                candidate_items=np.array([0, 3, 5]))
    assert n_users == 2
    assert metrics["recall@1"] == pytest.approx(0.5)
    assert metrics["recall@2"] == pytest.approx(0.5)
    assert metrics["recall@20"] == pytest.approx(1.0)  # fewer candidates than K: shorter list
    assert metrics["ndcg@20"] == pytest.approx((1 + 1 / math.log2(4)) / 2)


def test_users_without_held_out_items_are_skipped():
    metrics, n_users = evaluate(USERS, ITEMS, HELD_OUT[:2], TRAIN, (1, 2, 3, 5))
    assert n_users == 1
    assert metrics["recall@3"] == pytest.approx(1.0)


def test_metrics_from_hits_idcg_uses_min_of_held_out_and_k():
    hits = np.array([[True, True, False]])
    values = metrics_from_hits(hits, np.array([5]), (2, 3))
    assert values["ndcg@2"] == pytest.approx([1.0])  # 2 hits in 2 slots is ideal
    assert values["ndcg@3"] == pytest.approx([(1 + 1 / math.log2(3)) / (IDCG2 + 0.5)])
    assert values["map@3"] == pytest.approx([(1 + 1) / 3])


@pytest.mark.parametrize("chunk", [0, 1])
def test_per_user_values_are_hand_computed_and_their_mean_is_the_reported_metric(chunk):
    ks = (1, 2, 3, 5)
    scored = evaluate_splits_per_user(USERS, ITEMS, {"test": HELD_OUT, "one": HELD_OUT[:2]},
                                      TRAIN, ks, user_chunk=chunk)
    user0, user1 = expected_per_user()
    assert scored["test"].users.tolist() == [0, 1]
    assert scored["one"].users.tolist() == [0]  # users without held-out pairs are left out
    for name in user0:
        assert scored["test"].values[name] == pytest.approx([user0[name], user1[name]])
    metrics, n_users = evaluate(USERS, ITEMS, HELD_OUT, TRAIN, ks, user_chunk=chunk)
    assert n_users == len(scored["test"].users)
    assert set(metrics) == set(scored["test"].values) == {f"{m}@{k}" for m in
                                                          ("recall", "ndcg", "precision", "map")
                                                          for k in ks}
    for name, value in metrics.items():
        assert np.mean(scored["test"].values[name]) == value  # exactly: one code path


def test_per_user_of_an_empty_set_has_no_users():
    scored = evaluate_splits_per_user(USERS, ITEMS, {"none": HELD_OUT[:0]}, TRAIN, (1, 2))
    assert len(scored["none"].users) == 0
    assert scored["none"].means() == {}
    assert all(len(values) == 0 for values in scored["none"].values.values())
