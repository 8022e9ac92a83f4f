"""RecData validation: bad inputs are clear errors; awkward ones have a documented handling."""

import numpy as np
import pytest

from model.data import RecData, hold_out_items
from tests.support.synthetic import planted_data


def make(**changes) -> RecData:
    base = dict(n_users=3, n_items=4, train=np.array([[0, 0], [0, 1], [1, 2], [2, 3]]),
                valid=np.array([[0, 2], [1, 0]]), test=np.array([[0, 3], [2, 1]]),
                features={"text": np.eye(4, 3, dtype=np.float32) + 0.5})
    base.update(changes)
    return RecData(**base)


def test_valid_data_is_stored_as_int64_and_float32():
    data = make(features={"text": np.ones((4, 2), dtype=np.float64)})
    assert data.train.dtype == np.int64 and data.features["text"].dtype == np.float32


@pytest.mark.parametrize("changes, message", [
    ({"train": np.array([[0, 9]])}, r"RecData.train: row 0 has item_index 9 outside \[0, 4\)"),
    ({"test": np.array([[5, 0]])}, "RecData.test: row 0 has user_index 5"),
    ({"train": np.array([0, 1])}, r"expected an \(N, 2\) integer array"),
    ({"valid": np.zeros((0, 2), dtype=np.int64)}, "empty valid split"),
    ({"train": np.zeros((0, 2), dtype=np.int64)}, "no training interactions"),
    ({"train": np.array([[0, 0], [0, 0]])}, "1 duplicate"),
    ({"features": {"image": np.ones((3, 2), dtype=np.float32)}},
     r"features\['image'\]: 3 rows but the catalog has n_items=4"),
])
def test_bad_inputs_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        make(**changes)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_name_the_modality_and_row(bad):
    features = np.ones((4, 2), dtype=np.float32)
    features[2, 1] = bad
    with pytest.raises(ValueError, match=r"features\['caption'\]: NaN or inf in item row 2"):
        make(features={"caption": features})


def test_zero_rows_and_users_without_train_are_counted():
    features = np.ones((4, 2), dtype=np.float32)
    features[[1, 3]] = 0.0
    data = make(features={"text": features}, n_users=4, test=np.array([[0, 3], [3, 1]]))
    assert data.zero_norm_rows == {"text": 2}
    assert data.users_without_train == 1


def test_cold_items_have_no_train_or_valid_interaction():
    data = make(train=np.array([[0, 0], [1, 2]]), valid=np.array([[1, 0]]),
                test=np.array([[0, 3], [2, 1], [2, 2]]))
    np.testing.assert_array_equal(data.cold_items, [1, 3])


def test_hold_out_items_moves_every_interaction_of_the_share_to_test():
    data = planted_data(seed=3)
    cold = hold_out_items(data, 0.25, seed=1)
    assert len(cold.cold_items) == 10
    assert len(cold.train) + len(cold.valid) + len(cold.test) == \
        len(data.train) + len(data.valid) + len(data.test)
    assert not np.isin(cold.train[:, 1], cold.cold_items).any()
    assert not np.isin(cold.valid[:, 1], cold.cold_items).any()


def test_fingerprint_changes_with_splits_and_features():
    data = make()
    assert data.fingerprint() == make().fingerprint()
    assert data.fingerprint() != make(test=np.array([[0, 3]])).fingerprint()
    assert data.fingerprint() != make(features={"text": np.ones((4, 3), np.float32)}).fingerprint()
