"""Vectors for items that have features and no interactions (SPEC-lirdrec.md section 8).

A new item's step-3 row is its normalised encoder outputs (it has no user-item edges, so
propagation adds nothing); step 5 adds its kNN neighbours' rows, the neighbours found among the
trained catalog's items (the item itself first, then its k-1 most cosine-similar catalog items,
ties to the lower index), each edge weighted w_m / k. The catalog's graph is left as trained:
catalog items do not gain the new item as a neighbour. For n_mm_layers = 1 this is exactly the
vector the model gives a cold catalog item with the same features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model.lirdrec import LIRDRec


@torch.no_grad()
def encode_new_items(model: LIRDRec, catalog_features: dict[str, np.ndarray],
                     new_features: dict[str, np.ndarray], mm_weights: dict[str, float],
                     knn_k: int) -> np.ndarray:
    """(N, S*d) vectors, comparable by dot product with the model's user vectors.

    `catalog_features` are the training features (modality -> (I, D_m)); `new_features` the new
    items' rows (modality -> (N, D_m)); `mm_weights` the resolved per-modality weights.
    """
    names = sorted(catalog_features)
    if sorted(new_features) != names or sorted(mm_weights) != names:
        raise ValueError(f"encode_new_items: modalities differ: catalog {names}, new "
                         f"{sorted(new_features)}, weights {sorted(mm_weights)}")
    n_new = next(iter(new_features.values())).shape[0]
    for name in names:
        if new_features[name].shape != (n_new, catalog_features[name].shape[1]):
            raise ValueError(f"encode_new_items: new_features[{name!r}] has shape "
                             f"{new_features[name].shape}, expected ({n_new}, "
                             f"{catalog_features[name].shape[1]})")
    model.eval()
    device, dtype = model.theta.device, model.features_0.dtype
    inputs = [torch.from_numpy(np.ascontiguousarray(new_features[name], dtype=np.float32))
              .to(device=device, dtype=dtype) for name in names]
    streams = model.item_streams(inputs)  # S tensors (N, d)
    new_rows = torch.cat([F.normalize(r, dim=1) for r in streams], dim=1)  # (N, S*d)
    _, catalog_rows = model.propagated_rows()  # (I, S*d)

    neighbours = {name: _catalog_neighbours(catalog_features[name], new_features[name],
                                            knn_k - 1) for name in names}  # (N, k-1) each
    layer_catalog, layer_new = catalog_rows, new_rows
    for _ in range(model.n_mm_layers):
        next_new = torch.zeros_like(layer_new)
        for name in names:
            weight = mm_weights[name] / knn_k  # 1/sqrt(k) * 1/sqrt(k) per edge
            index = torch.as_tensor(neighbours[name], device=device)  # (N, k-1)
            next_new += weight * (layer_new + layer_catalog[index].sum(dim=1))
        layer_catalog = model.mm_adjacency @ layer_catalog
        layer_new = next_new
    return (new_rows + layer_new).float().cpu().numpy()


def _catalog_neighbours(catalog: np.ndarray, queries: np.ndarray, count: int) -> np.ndarray:
    """(N, count) catalog items most cosine-similar to each query, ties to the lower index."""
    import faiss

    def unit(x: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    if count == 0:
        return np.empty((len(queries), 0), dtype=np.int64)
    catalog_unit = unit(catalog)
    index = faiss.IndexFlatIP(catalog_unit.shape[1])
    index.add(catalog_unit)
    fetch = min(len(catalog_unit), count + 10)
    sims, ids = index.search(unit(queries), fetch)
    neighbours = np.empty((len(queries), count), dtype=np.int64)
    for row in range(len(queries)):
        if fetch < len(catalog_unit) and sims[row, count - 1] <= sims[row, -1]:
            # a tie group reaches the last fetched candidate: rank this query exactly
            all_sims = catalog_unit @ unit(queries[row:row + 1])[0]
            neighbours[row] = np.lexsort((np.arange(len(all_sims)), -all_sims))[:count]
        else:
            order = np.lexsort((ids[row], -sims[row]))
            neighbours[row] = ids[row][order][:count]
    return neighbours
