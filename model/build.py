"""Build a model from a TrainConfig and RecData: features on the device, graphs, initial weights."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from model.baselines import BPRMF, LightGCN, Popularity
from model.config import TrainConfig, resolve_mm_weights
from model.data import RecData
from model.dtype import run_feature_dtype
from model.graph import item_item_graph, knn_neighbours, knn_recall, user_item_adjacency
from model.lirdrec import LIRDRec


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when present, else cpu; an explicit cuda without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but no CUDA device is available")
    return torch.device(name)


def knn_graphs(config: TrainConfig, data: RecData, log: Callable[[str], None] = print
               ) -> dict[str, np.ndarray]:
    """Each modality's (I, k) kNN neighbour lists (approximate search logs its sampled recall)."""
    neighbours = {}
    for name in data.modalities:
        features = data.features[name]
        neighbours[name] = knn_neighbours(
            features, config.knn_k, method=config.knn_method, chunk=config.knn_chunk,
            nlist=config.knn_nlist, nprobe=config.knn_nprobe, hnsw_m=config.knn_hnsw_m,
            ef_search=config.knn_ef_search, seed=config.seed)
        if config.knn_method != "exact":
            recall = knn_recall(features, neighbours[name], sample=500, seed=config.seed)
            log(f"knn {name}: {config.knn_method} recall@{config.knn_k} = {recall:.4f} "
                f"(500 sampled items vs exact search)")
    return neighbours


def build_model(config: TrainConfig, data: RecData, device: torch.device,
                log: Callable[[str], None] = print) -> nn.Module:
    """The configured model on `device`, initialised from torch's current RNG state."""
    if config.model == "pop":
        return Popularity(data.n_users, data.n_items, data.train).to(device)
    if config.model == "bpr":
        return BPRMF(data.n_users, data.n_items, embedding_size=config.embedding_size,
                     reg_weight=config.reg_weight).to(device)
    adjacency = user_item_adjacency(data.n_users, data.n_items, data.train)
    if config.model == "lightgcn":
        return LightGCN(data.n_users, data.n_items, adjacency,
                        embedding_size=config.embedding_size, n_layers=config.n_ui_layers,
                        reg_weight=config.reg_weight).to(device)

    weights = resolve_mm_weights(config, data.modalities)
    started = time.perf_counter()
    mm_adjacency = item_item_graph(knn_graphs(config, data, log), weights, data.n_items)
    log(f"item graph: {len(weights)} modalities, k={config.knn_k}, {config.knn_method}, "
        f"{mm_adjacency.values().numel()} edges, {time.perf_counter() - started:.1f}s")
    dtype = run_feature_dtype(config, device, log).torch_dtype
    features = [_to_device(data.features[name], device, dtype) for name in data.modalities]
    return LIRDRec(data.n_users, features, adjacency.to(device), mm_adjacency.to(device),
                   embedding_size=config.embedding_size, n_ui_layers=config.n_ui_layers,
                   n_mm_layers=config.n_mm_layers, decay_weight=config.decay_weight,
                   decay_base=config.decay_base, reg_weight=config.reg_weight).to(device)


def _to_device(x: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # torch.from_numpy shares memory: float32 features on the CPU are not copied.
    return torch.from_numpy(x).to(device=device, dtype=dtype)
