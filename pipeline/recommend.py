"""Query a ranked run: a user's history and recommendations, or the users a new item suits best."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from pipeline import schemas
from pipeline.rank import ITEM_IDS_FILE, USER_IDS_FILE, read_ids, user_candidates
from pipeline.store import StoreLayout, read_table
from pipeline.training import run_config

SPLIT_NAMES = {
    schemas.SPLIT_TRAIN: "train",
    schemas.SPLIT_VALID: "valid",
    schemas.SPLIT_TEST: "test",
}


def _titles(store_root: Path) -> dict[str, str | None]:
    items = read_table(StoreLayout(store_root).items, schemas.ITEMS, columns=["item_id", "title"])
    return dict(
        zip(items.column("item_id").to_pylist(), items.column("title").to_pylist(), strict=True)
    )


def recommend_for_user(run_dir: Path, user_id: str, k: int = 10) -> str:
    """The user's interactions (with their split) and top-k candidates, with titles, as text."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    titles = _titles(config.store)
    interactions = read_table(StoreLayout(config.store).interactions, schemas.INTERACTIONS)
    history = interactions.filter(pc.equal(interactions.column("user_id"), user_id))
    candidates = user_candidates(run_dir, user_id).slice(0, k)
    lines = [f"user {user_id}: {history.num_rows} interactions"]
    for row in history.to_pylist():
        lines.append(
            f"  [{SPLIT_NAMES[row['split']]:5}] {row['item_id']:>8}  {titles.get(row['item_id']) or ''}"
        )
    lines.append(f"top {candidates.num_rows} recommendations ({run_dir.name}):")
    for row in candidates.to_pylist():
        lines.append(
            f"  {row['rank']:3d}. {row['item_id']:>8}  {row['score']:8.4f}  {titles.get(row['item_id']) or ''}"
        )
    return "\n".join(lines)


def score_new_item(run_dir: Path, item_features: dict[str, np.ndarray]) -> np.ndarray:
    """The new item's score for every user (run's user vectors . the item encoder's vector)."""
    import torch

    from model.build import build_model
    from model.config import resolve_mm_weights
    from model.encode import encode_new_items
    from model.train import BEST_MODEL_FILE
    from pipeline.training import load_inputs

    run_dir = Path(run_dir)
    config = run_config(run_dir)
    train_config = _run_train_config(run_dir)
    if train_config.model != "lirdrec":
        raise ValueError(
            f"{run_dir}: a {train_config.model} run has no item encoder (ID-only model)"
        )
    inputs = load_inputs(config)
    trained_on = json.loads((run_dir / "inputs.json").read_text())["fingerprint"]
    if inputs.fingerprint() != trained_on:
        raise ValueError(
            f"{run_dir}: the store's features changed since this run was trained; rerun train"
        )
    data = inputs.data
    missing = sorted(set(data.modalities) - set(item_features))
    if missing:
        raise KeyError(f"item features lack modality {missing}; the run has {data.modalities}")
    model = build_model(train_config, data, torch.device("cpu"), log=lambda _: None)
    state = torch.load(run_dir / BEST_MODEL_FILE, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    new = {
        name: np.atleast_2d(np.asarray(item_features[name], dtype=np.float32))
        for name in data.modalities
    }
    weights = resolve_mm_weights(train_config, data.modalities)
    vector = encode_new_items(model, data.features, new, weights, train_config.knn_k)  # (1, D)
    users = np.load(run_dir / "user_vectors.npy")  # (U, D)
    return users @ vector[0]


def _run_train_config(run_dir: Path):
    from model.config import TrainConfig

    saved = json.loads((Path(run_dir) / "metrics.json").read_text())["config"]
    return TrainConfig(**{**saved, "topk": tuple(saved["topk"])})


def recommend_for_item(run_dir: Path, features_file: Path, k: int = 10) -> str:
    """The k users a new item (features in an .npz, one array per modality) scores highest for."""
    with np.load(features_file) as npz:
        features = {name: npz[name] for name in npz.files}
    scores = score_new_item(run_dir, features)
    user_ids = read_ids(Path(run_dir) / USER_IDS_FILE)
    n_items = len(read_ids(Path(run_dir) / ITEM_IDS_FILE))
    top = np.argsort(-scores, kind="stable")[:k]
    lines = [f"new item from {features_file} (catalog of {n_items:,} items): top {len(top)} users"]
    lines += [
        f"  {rank:3d}. user {user_ids[u]:>8}  {scores[u]:8.4f}"
        for rank, u in enumerate(top, start=1)
    ]
    return "\n".join(lines)
