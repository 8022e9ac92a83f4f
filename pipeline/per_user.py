"""A run's per-user metrics as per_user.parquet (schemas.PER_USER), and the reader for significance tests.

The file holds, for valid, test, test_warm and test_cold, every evaluated user's metric@k at the
best-valid epoch (model.train.per_user_metrics, from the saved vectors): the users each mean of
metrics.json was taken over, and the values it is the mean of. Two runs on the same inputs
evaluate the same users, so their values pair up by user_index for a paired test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from model.run import RunFolder
from pipeline import schemas
from pipeline.store import StoreError, read_metadata, read_table, write_table

PerUser = dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]  # split -> (users (U,), {metric@k: (U,)})


def per_user_table(per_user: dict, user_ids: np.ndarray) -> pa.Table:
    """The long table of {split: model.metrics.UserMetrics}; `user_ids` maps user index -> id."""
    columns: dict[str, list[np.ndarray]] = {name: [] for name in schemas.PER_USER.names}
    for split, scored in per_user.items():
        for name, values in scored.values.items():  # "recall@20" -> (U,)
            metric, k = name.split("@")
            n = len(scored.users)
            columns["split"].append(np.full(n, split, dtype=object))
            columns["user_index"].append(scored.users)
            columns["user_id"].append(np.asarray(user_ids, dtype=object)[scored.users])
            columns["metric"].append(np.full(n, metric, dtype=object))
            columns["k"].append(np.full(n, int(k), dtype=np.int32))
            columns["value"].append(values)
    return pa.table({
        field.name: pa.array(np.concatenate(columns[field.name]) if columns[field.name] else [],
                             field.type)
        for field in schemas.PER_USER
    })


def write_per_user(run: RunFolder, per_user: dict, user_ids: np.ndarray,
                   provenance: dict) -> Path:
    return write_table(run.per_user, per_user_table(per_user, user_ids), schemas.PER_USER,
                       provenance={"run": run.name, **provenance})


def read_per_user(run_dir: Path) -> PerUser:
    """{split: (user indices (U,), {"recall@20": (U,) values, ...})} of a run's per_user.parquet,
    for every split of schemas.PER_USER_SPLITS (one without users, test_cold when the split holds
    no cold item, is (empty, {})); values are in the order of the users.

    A run trained before runs kept per-user metrics has no file: the error says how to add it
    (the train stage computes it from the run's saved vectors, without training again).
    """
    run = RunFolder(run_dir)
    if not run.per_user.exists():
        raise StoreError(
            f"{run.per_user}: missing; the run predates per-user metrics (or has not finished). "
            f"`python -m pipeline train --config <its config>` adds it from the run's saved "
            f"vectors without training again")
    table = read_table(run.per_user, schemas.PER_USER).sort_by(
        [("split", "ascending"), ("metric", "ascending"), ("k", "ascending"),
         ("user_index", "ascending")])
    split, metric = (table.column(name).to_numpy(zero_copy_only=False) for name in
                     ("split", "metric"))
    k, users, values = (table.column(name).to_numpy() for name in ("k", "user_index", "value"))
    result: PerUser = {}
    for name in schemas.PER_USER_SPLITS:
        in_split = split == name
        split_users = np.unique(users[in_split])
        by_metric = {}
        for metric_name, k_value in dict.fromkeys(zip(metric[in_split], k[in_split],
                                                      strict=True)):
            rows = in_split & (metric == metric_name) & (k == k_value)
            by_metric[f"{metric_name}@{k_value}"] = values[rows]  # sorted by user_index
        result[name] = (split_users, by_metric)
    return result


def per_user_provenance(run_dir: Path) -> dict:
    """The run, best epoch and data fingerprint the per-user values belong to."""
    return read_metadata(RunFolder(run_dir).per_user)
