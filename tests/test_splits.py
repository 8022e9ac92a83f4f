"""Splits: the random split against SPLIT.md's reference loop, temporal order, sizes, cold holdout, id order."""

import numpy as np
import pyarrow as pa
import pytest

from pipeline.splits import (
    catalog_order,
    codes_in,
    cold_item_holdout,
    random_split,
    split_sizes,
    temporal_split,
)


def reference_random_split(user_code, item_code, seed):
    """SPLIT.md's procedure written as plainly as possible: one RandomState, user after user."""
    labels = np.empty(len(user_code), dtype=np.int8)
    random_state = np.random.RandomState(seed)
    for user in sorted(set(user_code.tolist())):
        rows = np.flatnonzero(user_code == user)
        rows = rows[np.argsort(item_code[rows], kind="stable")]
        n = len(rows)
        n_valid = n_test = max(1, n // 10)
        n_train = n - n_valid - n_test
        perm = random_state.permutation(n)
        labels[rows[perm[:n_train]]] = 0
        labels[rows[perm[n_train : n_train + n_valid]]] = 1
        labels[rows[perm[n_train + n_valid :]]] = 2
    return labels


def test_random_split_matches_the_reference_loop_on_shuffled_rows():
    rng = np.random.default_rng(0)
    pairs = [
        (u, i) for u in range(40) for i in rng.choice(200, size=rng.integers(3, 60), replace=False)
    ]
    rng.shuffle(pairs)
    user_code = np.array([u for u, _ in pairs])
    item_code = np.array([i for _, i in pairs])
    labels = random_split(user_code, item_code, seed=7)
    np.testing.assert_array_equal(labels, reference_random_split(user_code, item_code, 7))
    assert not np.array_equal(labels, random_split(user_code, item_code, seed=8))


def test_random_split_sizes_per_user():
    user_code = np.repeat([0, 1, 2], [3, 10, 25])
    item_code = np.concatenate([np.arange(3), np.arange(10), np.arange(25)])
    labels = random_split(user_code, item_code, seed=1)
    for user, expected in [(0, [1, 1, 1]), (1, [8, 1, 1]), (2, [21, 2, 2])]:
        assert np.bincount(labels[user_code == user], minlength=3).tolist() == expected


def test_split_sizes_rule_and_minimum():
    n_train, n_valid, n_test = split_sizes(np.array([3, 9, 10, 19, 20, 105]))
    assert n_valid.tolist() == [1, 1, 1, 1, 2, 10]
    assert n_test.tolist() == n_valid.tolist()
    assert n_train.tolist() == [1, 7, 8, 17, 16, 85]
    with pytest.raises(ValueError, match="needs 3"):
        split_sizes(np.array([5, 2]))


def test_temporal_split_puts_the_latest_interactions_in_test():
    user_code = np.array([0] * 10 + [1] * 3)
    timestamp = np.array([50, 10, 90, 20, 30, 40, 60, 70, 80, 100, 5, 3, 4])
    item_code = np.arange(13)
    labels = temporal_split(user_code, timestamp, item_code)
    assert labels[np.argmax(timestamp[:10])] == 2  # time 100
    assert labels[np.flatnonzero(timestamp == 90)[0]] == 1
    assert (labels[:10] == 0).sum() == 8
    assert labels[10:].tolist() == [2, 0, 1]  # times 5, 3, 4


def test_catalog_order_is_numeric_for_integer_ids_and_text_otherwise():
    assert catalog_order(pa.array(["10", "9", "100", "9", "-1"])).to_pylist() == [
        "-1",
        "9",
        "10",
        "100",
    ]
    assert catalog_order(pa.array(["b10", "a", "b9"])).to_pylist() == ["a", "b10", "b9"]
    ordered = catalog_order(pa.array(["10", "2"]))
    assert codes_in(pa.array(["2", "10", "7"]), ordered).tolist() == [0, 1, -1]


def test_cold_item_holdout_is_seeded_and_sized():
    items = np.arange(0, 200, 2)
    cold = cold_item_holdout(items, share=0.1, seed=3)
    assert len(cold) == 10 and set(cold) <= set(items.tolist())
    np.testing.assert_array_equal(cold, cold_item_holdout(items, share=0.1, seed=3))
    assert not np.array_equal(cold, cold_item_holdout(items, share=0.1, seed=4))
    assert cold_item_holdout(items, share=0.0, seed=3).size == 0
