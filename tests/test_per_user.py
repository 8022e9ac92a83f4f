"""per_user.parquet: the long table of every split's per-user metrics, written and read back."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from model.metrics import UserMetrics
from model.run import RunFolder
from pipeline import schemas
from pipeline.per_user import per_user_provenance, read_per_user, write_per_user
from pipeline.store import StoreError

USER_IDS = np.array(["u0", "u1", "u2", "u3"], dtype=object)
PER_USER = {
    "valid": UserMetrics(np.array([0, 2, 3]), {"recall@5": np.array([0.5, 0.0, 1.0]),
                                               "ndcg@5": np.array([0.3, 0.0, 0.9])}),
    "test": UserMetrics(np.array([1, 3]), {"recall@5": np.array([0.25, 1.0]),
                                           "ndcg@5": np.array([0.1, 0.7])}),
    "test_warm": UserMetrics(np.array([3]), {"recall@5": np.array([1.0]),
                                             "ndcg@5": np.array([0.7])}),
    "test_cold": UserMetrics(np.zeros(0, dtype=np.int64), {"recall@5": np.zeros(0),
                                                           "ndcg@5": np.zeros(0)}),
}


def test_per_user_round_trip_in_the_declared_long_layout(tmp_path):
    run = RunFolder(tmp_path)
    write_per_user(run, PER_USER, USER_IDS, {"best_epoch": 4})
    table = pq.read_table(run.per_user)
    assert table.schema.names == schemas.PER_USER.names
    assert table.num_rows == 2 * (3 + 2 + 1)  # (split, user, metric, k) rows
    rows = table.to_pylist()
    assert {"split": "test", "user_index": 1, "user_id": "u1", "metric": "recall", "k": 5,
            "value": 0.25} in rows
    assert per_user_provenance(run.path) == {"run": run.name, "best_epoch": 4}

    read = read_per_user(run.path)
    assert list(read) == list(schemas.PER_USER_SPLITS)
    for split, scored in PER_USER.items():
        users, values = read[split]
        assert users.tolist() == scored.users.tolist()
        if len(users):
            assert values.keys() == scored.values.keys()
            for name, column in scored.values.items():
                assert values[name].tolist() == column.tolist()
    assert read["test_cold"][1] == {}  # no cold item: no user, no value


def test_a_run_without_the_file_is_named_with_how_to_add_it(tmp_path):
    with pytest.raises(StoreError, match="per_user.parquet: missing; the run predates per-user"):
        read_per_user(tmp_path)
