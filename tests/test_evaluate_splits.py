"""evaluate_splits: several held-out sets ranked once give what separate evaluate calls give."""

import numpy as np
import pytest
import torch

from model.metrics import evaluate, evaluate_splits


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
