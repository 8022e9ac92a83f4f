"""Vectors for items that have features and no interactions (SPEC-lirdrec.md section 8).

A new item's step-3 row is its normalised encoder outputs (it has no user-item edges, so
propagation adds nothing); step 5 adds its kNN neighbours' rows, the neighbours found among the
trained catalog's items (the item itself first, then its k-1 most cosine-similar catalog items,
ties to the lower index), each edge weighted w_m / k. The catalog's graph is left as trained:
catalog items do not gain the new item as a neighbour. For n_mm_layers = 1 this is exactly the
vector the model gives a cold catalog item with the same features.

What the catalog contributes is saved once, at the end of training (`catalog_encoder`, the run's
item_encoder.npz): the unit-norm catalog features of each modality (for the neighbour search) and
the catalog's item rows A_mm^l r at the best-valid epoch for l = 0..L-1. With the trained weights
(best_model.pt) that is all a new item needs: no store read, no graph build, no catalog forward.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model.graph import nearest, unit_rows
from model.index import build_index
from model.lirdrec import LIRDRec

UNIT_PREFIX, LAYER_PREFIX = "unit.", "layer."


@torch.no_grad()
def catalog_encoder(model: LIRDRec, catalog_features: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """What scoring new items needs of the catalog, as named arrays (for an .npz file)."""
    model.eval()
    _, layer = model.propagated_rows()  # (I, S*d): r
    arrays = {f"{UNIT_PREFIX}{name}": unit_rows(matrix) for name, matrix in
              catalog_features.items()}
    for depth in range(model.n_mm_layers):
        arrays[f"{LAYER_PREFIX}{depth}"] = layer.float().cpu().numpy()  # A_mm^depth r
        layer = model.item_item(layer)
    return arrays


@torch.no_grad()
def encode_new_items(model: LIRDRec, catalog: dict[str, np.ndarray],
                     new_features: dict[str, np.ndarray], mm_weights: dict[str, float],
                     knn_k: int) -> np.ndarray:
    """(N, S*d) vectors, comparable by dot product with the model's user vectors.

    `catalog` is `catalog_encoder`'s arrays; `new_features` the new items' rows (modality ->
    (N, D_m)); `mm_weights` the resolved per-modality weights. `model` needs only its trained
    encoders (LIRDRec.encoder_only with the run's best weights will do).
    """
    names = sorted(mm_weights)
    units = {name: catalog[f"{UNIT_PREFIX}{name}"] for name in names if
             f"{UNIT_PREFIX}{name}" in catalog}
    if sorted(new_features) != names or sorted(units) != names:
        raise ValueError(f"encode_new_items: modalities differ: catalog {sorted(units)}, new "
                         f"{sorted(new_features)}, weights {names}")
    n_new = next(iter(new_features.values())).shape[0]
    for name in names:
        if new_features[name].shape != (n_new, units[name].shape[1]):
            raise ValueError(f"encode_new_items: new_features[{name!r}] has shape "
                             f"{new_features[name].shape}, expected ({n_new}, "
                             f"{units[name].shape[1]})")
    model.eval()
    device, dtype = model.theta.device, model.features_0.dtype
    inputs = [torch.from_numpy(np.ascontiguousarray(new_features[name], dtype=np.float32))
              .to(device=device, dtype=dtype) for name in names]
    streams = model.item_streams(inputs)  # S tensors (N, d)
    new_rows = torch.cat([F.normalize(r, dim=1) for r in streams], dim=1)  # (N, S*d)

    neighbours = {}  # (N, k-1) catalog rows per modality
    for name in names:
        queries = unit_rows(new_features[name])
        neighbours[name] = nearest(units[name], queries, knn_k - 1, build_index(units[name]))
    layer_new = new_rows
    for depth in range(model.n_mm_layers):
        layer_catalog = torch.from_numpy(catalog[f"{LAYER_PREFIX}{depth}"]).to(device)
        next_new = torch.zeros_like(layer_new)
        for name in names:
            weight = mm_weights[name] / knn_k  # 1/sqrt(k) * 1/sqrt(k) per edge
            index = torch.as_tensor(neighbours[name], device=device)  # (N, k-1)
            next_new += weight * (layer_new + layer_catalog[index].sum(dim=1))
        layer_new = next_new
    return (new_rows + layer_new).float().cpu().numpy()
