"""Sparse graphs equal their dense constructions (kNN ties: the item itself, then the lower index)."""

import numpy as np
import pytest

from model.graph import item_item_graph, knn_neighbours, knn_recall, user_item_adjacency


def dense_knn(features: np.ndarray, k: int) -> np.ndarray:
    """The reference construction: the full (I x I) cosine matrix, one stable sort per row."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms > 0, norms, 1.0)
    sims = unit @ unit.T
    n = len(features)
    rows = []
    for i in range(n):
        order = sorted(range(n), key=lambda j: (j != i, -sims[i, j], j))
        rows.append(order[:k])
    return np.array(rows)


def tie_heavy_features(seed: int = 0) -> np.ndarray:
    """Rows of four +-1 entries (norm 2), so cosines are exact multiples of 1/4 and tie often;
    with duplicated rows and one all-zero row."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((40, 8), dtype=np.float32)
    for row in rows:
        row[rng.choice(8, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    rows[5] = rows[17] = rows[30] = rows[2]  # duplicates of item 2
    rows[11] = 0.0  # zero-norm row
    return rows


@pytest.mark.parametrize("k", [1, 4, 10])
def test_knn_equals_dense_construction_with_ties_and_duplicates(k):
    features = tie_heavy_features()
    neighbours = knn_neighbours(features, k, chunk=7)
    np.testing.assert_array_equal(neighbours, dense_knn(features, k))


def test_duplicates_rank_themselves_first_then_lower_copies():
    neighbours = knn_neighbours(tie_heavy_features(), 4)
    np.testing.assert_array_equal(neighbours[17], [17, 2, 5, 30])
    np.testing.assert_array_equal(neighbours[11], [11, 0, 1, 2])  # zero row: cosine 0 to all


def test_knn_rejects_k_larger_than_the_catalog():
    with pytest.raises(ValueError, match="knn_k=50 exceeds"):
        knn_neighbours(tie_heavy_features(), 50)


def test_approximate_knn_reports_high_recall():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(3000, 16)).astype(np.float32)
    exact = knn_neighbours(features, 10)
    assert knn_recall(features, exact, sample=200) == 1.0
    ivf = knn_neighbours(features, 10, method="ivf", nlist=16, nprobe=8)
    assert (ivf[:, 0] == np.arange(3000)).all()
    assert knn_recall(features, ivf, sample=200) > 0.9
    hnsw = knn_neighbours(features, 10, method="hnsw")
    assert knn_recall(features, hnsw, sample=200) > 0.9


def test_user_item_adjacency_equals_dense_normalisation():
    train = np.array([[0, 0], [0, 2], [1, 2], [2, 1], [2, 2]])
    n_users, n_items = 4, 3  # user 3 has no edge: its row stays zero
    dense = np.zeros((7, 7))
    for user, item in train:
        dense[user, n_users + item] = dense[n_users + item, user] = 1.0
    degree = dense.sum(axis=1)
    inv_sqrt = np.where(degree > 0, degree, 1.0) ** -0.5 * (degree > 0)
    expected = inv_sqrt[:, None] * dense * inv_sqrt[None, :]
    adjacency = user_item_adjacency(n_users, n_items, train).to_dense().numpy()
    np.testing.assert_allclose(adjacency, expected, rtol=1e-6)


def test_item_graph_blends_row_normalised_modalities():
    features = tie_heavy_features()
    k = 4
    image = knn_neighbours(features, k)
    text = knn_neighbours(features[:, ::-1].copy() * np.arange(1, 9, dtype=np.float32), k)
    graph = item_item_graph({"image": image, "text": text}, {"image": 0.2, "text": 0.8},
                            len(features)).to_dense().numpy()
    expected = np.zeros((40, 40))
    for weight, nearest in ((0.2, image), (0.8, text)):
        for i, row in enumerate(nearest):
            expected[i, row] += weight / k  # 1/sqrt(k) * 1/sqrt(k)
    np.testing.assert_allclose(graph, expected, rtol=1e-6)
    np.testing.assert_allclose(graph.sum(axis=1), 1.0, rtol=1e-6)
