"""Query a ranked run: a user's history and recommendations, or the users a new item suits best."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from model.run import RunFolder, read_torch, write_npz
from pipeline import schemas
from pipeline.rank import user_candidates
from pipeline.store import StoreLayout, read_ids, read_table
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
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
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
    """The new item's score for every user (run's user vectors . the item encoder's vector).

    Reads only the run folder: the best weights (best_model.pt), the catalog arrays of the item
    encoder (item_encoder.npz) and the user vectors; no store, no graph build.
    """
    from model.config import resolve_mm_weights
    from model.encode import UNIT_PREFIX, encode_new_items
    from model.registry import MODELS, model_class, scores_new_items, uses_features

    run = RunFolder(run_dir)
    best = read_torch(run.best_model) if run.best_model.exists() else {}
    train_config = _train_config(run, best)
    if not scores_new_items(train_config.model):
        kind = "a features-only baseline" if uses_features(train_config.model) else "ID-only model"
        able = [name for name in MODELS if scores_new_items(name)]
        raise ValueError(
            f"{run.path}: a {train_config.model} run has no item encoder ({kind}); new items "
            f"can be scored with a run of {', '.join(able)}"
        )
    if not run.item_encoder.exists():  # a run of an earlier version: build it once
        _write_item_encoder(run, train_config, best)
    with np.load(run.item_encoder) as npz:
        catalog = {name: npz[name] for name in npz.files}
    modalities = sorted(n.removeprefix(UNIT_PREFIX) for n in catalog if n.startswith(UNIT_PREFIX))
    dims = {name: catalog[UNIT_PREFIX + name].shape[1] for name in modalities}
    new = _checked_features(item_features, dims)
    users, _ = run.load_vectors()  # (U, D)
    model = model_class(train_config.model).encoder_only(
        train_config, len(users), [dims[name] for name in modalities]
    )
    model.load_state_dict(best["model"])
    weights = resolve_mm_weights(train_config, modalities)
    vector = encode_new_items(model, catalog, new, weights, train_config.knn_k)  # (1, D)
    return users @ vector[0]


def _checked_features(
    item_features: dict[str, np.ndarray], dims: dict[str, int]
) -> dict[str, np.ndarray]:
    """One (1, dim) float32 row per modality of the run; anything else is an error naming it.

    An array for a modality the run does not have is an error too (a misspelt name would
    otherwise be ignored while the real modality is missing).
    """
    expected = ", ".join(f"{name} ({dim})" for name, dim in dims.items())
    unknown = sorted(set(item_features) - set(dims))
    missing = sorted(set(dims) - set(item_features))
    if unknown or missing:
        raise KeyError(
            f"item features: {len(unknown)} unknown array(s) {unknown}, missing {missing}; "
            f"expected one array per modality of the run: {expected}"
        )
    checked = {}
    for name, dim in dims.items():
        vector = np.asarray(item_features[name])
        if vector.shape not in ((dim,), (1, dim)):
            raise ValueError(
                f"item features: modality {name!r} has shape {vector.shape}; expected one "
                f"vector of {dim} values (shape ({dim},) or (1, {dim})) for one new item"
            )
        if not np.issubdtype(vector.dtype, np.number) or np.issubdtype(vector.dtype, np.complexfloating):
            raise ValueError(f"item features: modality {name!r} holds {vector.dtype}, not real numbers")
        vector = vector.astype(np.float32).reshape(1, dim)
        bad = int((~np.isfinite(vector)).sum())
        if bad:
            raise ValueError(
                f"item features: modality {name!r} has {bad} NaN or infinite value(s) of {dim}"
            )
        checked[name] = vector
    return checked


def read_item_features(features_file: Path) -> dict[str, np.ndarray]:
    """The arrays of a new item's .npz (one per modality name); a file that is none is a clear error."""
    import zipfile

    features_file = Path(features_file)
    hint = "write it with numpy.savez(path, caption=vector, text=vector), one array per modality"
    if features_file.is_file() and features_file.stat().st_size == 0:
        raise ValueError(f"{features_file}: empty file, not an .npz archive; {hint}")
    try:
        with np.load(features_file, allow_pickle=False) as loaded:
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError(f"{features_file}: a single .npy array, not an .npz archive; {hint}")
            return {name: loaded[name] for name in loaded.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{features_file}: no such file") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{features_file}: not a readable .npz archive ({error}); {hint}") from error
    except ValueError as error:
        if str(features_file) in str(error):
            raise
        raise ValueError(f"{features_file}: not a readable .npz archive ({error}); {hint}") from error


def _train_config(run: RunFolder, best: dict):
    """The run's own train config: best_model.pt's (metrics.json's for runs of earlier versions)."""
    from model.config import TrainConfig

    saved = best.get("config") or run.read_json(run.metrics)["config"]
    return TrainConfig(**{**saved, "topk": tuple(saved["topk"])})


def _write_item_encoder(run: RunFolder, train_config, best: dict) -> None:
    """item_encoder.npz for a run trained before runs kept it: rebuilt from the store once."""
    import torch

    from model.build import build_model
    from model.encode import catalog_encoder
    from pipeline.training import load_inputs

    inputs = load_inputs(run_config(run.path))
    if inputs.fingerprint() != run.read_json(run.inputs)["fingerprint"]:
        raise ValueError(
            f"{run.path}: the store's features changed since this run was trained; rerun train"
        )
    model = build_model(train_config, inputs.data, torch.device("cpu"), log=lambda _: None)
    model.load_state_dict(best["model"])
    write_npz(run.item_encoder, catalog_encoder(model, inputs.data.features))


def recommend_for_item(run_dir: Path, features_file: Path, k: int = 10) -> str:
    """The k users a new item (features in an .npz, one array per modality) scores highest for."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = score_new_item(run_dir, read_item_features(features_file))
    run = RunFolder(run_dir)
    user_ids, n_items = read_ids(run.user_ids), len(read_ids(run.item_ids))
    top = np.argsort(-scores, kind="stable")[:k]
    lines = [f"new item from {features_file} (catalog of {n_items:,} items): top {len(top)} users"]
    lines += [
        f"  {rank:3d}. user {user_ids[u]:>8}  {scores[u]:8.4f}"
        for rank, u in enumerate(top, start=1)
    ]
    return "\n".join(lines)
