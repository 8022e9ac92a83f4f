"""Train/valid/test splits (SPEC-lirdrec.md section 7), the cold-item holdout, and catalog id order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.schemas import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID

# The 8:1:1 rule gives valid and test one interaction each at least, and train one more.
MIN_SPLIT_INTERACTIONS = 3


def catalog_order(ids: pa.Array) -> pa.Array:
    """The distinct `ids` in catalog order: numerically when every id is an integer, else as text."""
    unique = pc.unique(ids)
    if len(unique) == 0:
        return unique
    if pc.all(pc.match_substring_regex(unique, r"^[+-]?[0-9]{1,18}$")).as_py():
        # Ties ("7" and "007") keep text order, so the order never depends on input order.
        text_sorted = unique.take(pc.sort_indices(unique))
        numbers = text_sorted.cast(pa.int64()).to_numpy()
        return text_sorted.take(pa.array(np.argsort(numbers, kind="stable")))
    return unique.take(pc.sort_indices(unique))


def codes_in(ids: pa.Array | pa.ChunkedArray, ordered: pa.Array) -> np.ndarray:
    """Position of each id in `ordered` (int64; -1 where absent)."""
    index = pc.index_in(ids, value_set=ordered)
    return pc.fill_null(index, -1).to_numpy().astype(np.int64, copy=False)


def split_sizes(n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_train, n_valid, n_test) per user: valid = test = max(1, n // 10), the rest train."""
    n = np.asarray(n, dtype=np.int64)
    if n.size and n.min() < MIN_SPLIT_INTERACTIONS:
        raise ValueError(
            f"a user has {int(n.min())} interaction(s); the 8:1:1 split needs {MIN_SPLIT_INTERACTIONS}"
        )
    n_valid = np.maximum(1, n // 10)
    return n - 2 * n_valid, n_valid, n_valid.copy()


def _groups(sorted_user_code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offset and length of each run of equal users in a user-sorted code array."""
    if sorted_user_code.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_user_code[1:] != sorted_user_code[:-1]])
    counts = np.diff(np.r_[starts, sorted_user_code.size])
    return starts, counts


def _labels_by_position(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For rows laid out user after user, the label of each row's position k within its user."""
    n_train, n_valid, _ = split_sizes(counts)
    position = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)
    train_end = np.repeat(n_train, counts)
    valid_end = train_end + np.repeat(n_valid, counts)
    labels = np.full(position.size, SPLIT_TEST, dtype=np.int8)
    labels[position < valid_end] = SPLIT_VALID
    labels[position < train_end] = SPLIT_TRAIN
    return labels


def random_split(user_code: np.ndarray, item_code: np.ndarray, seed: int) -> np.ndarray:
    """MMRec's random 8:1:1 split: the label (0/1/2) of each row, aligned with the input.

    One `RandomState(seed)`; users in ascending code order; each user's rows in ascending item
    code; `perm = rs.permutation(n)`; rows perm[:n_train] train, then valid, then test. The loop
    over users only draws the permutations, so the draws match the reference exactly.
    """
    order = _by_user_then_item(user_code, item_code)
    starts, counts = _groups(user_code[order])
    by_position = _labels_by_position(starts, counts)
    # rs.permutation(n) is arange(n) shuffled in place; shuffling each user's slice of the
    # within-user positions draws the same numbers without an array per user.
    perm = np.arange(order.size, dtype=np.int64) - np.repeat(starts, counts)
    shuffle = np.random.RandomState(seed).shuffle
    for start, n in zip(starts.tolist(), counts.tolist(), strict=True):
        shuffle(perm[start : start + n])
    perm += np.repeat(starts, counts)
    sorted_labels = np.empty(order.size, dtype=np.int8)
    sorted_labels[perm] = by_position  # row perm[k] of a user gets the label of position k
    labels = np.empty(order.size, dtype=np.int8)
    labels[order] = sorted_labels
    return labels


def _by_user_then_item(user_code: np.ndarray, item_code: np.ndarray) -> np.ndarray:
    """Row order by (user, item); one stable argsort of a combined key, quick on sorted input."""
    if user_code.size == 0:
        return np.zeros(0, dtype=np.int64)
    n_item_codes = int(item_code.max()) + 1
    if (int(user_code.max()) + 1) * n_item_codes >= 2**62:  # the combined key would overflow
        return np.lexsort((item_code, user_code))
    return np.argsort(user_code * n_item_codes + item_code, kind="stable")


def temporal_split(
    user_code: np.ndarray, timestamp: np.ndarray, item_code: np.ndarray
) -> np.ndarray:
    """Per user, chronological 8:1:1 (same sizes as the random split); ties broken by item code."""
    order = np.lexsort((item_code, timestamp, user_code))
    starts, counts = _groups(user_code[order])
    labels = np.empty(order.size, dtype=np.int8)
    labels[order] = _labels_by_position(starts, counts)
    return labels


def cold_item_holdout(interacted_item_code: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Codes of the items held out entirely: `round(share * n)` of the given items, drawn by `seed`.

    `interacted_item_code` are the distinct items that have interactions, in catalog order.
    """
    if share <= 0 or interacted_item_code.size == 0:
        return np.zeros(0, dtype=np.int64)
    n_cold = int(round(share * interacted_item_code.size))
    chosen = np.random.RandomState(seed).choice(interacted_item_code.size, n_cold, replace=False)
    return np.sort(interacted_item_code[chosen])
