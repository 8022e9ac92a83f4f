"""Checkpoints that resume only the run they came from: same train config, same data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.config import TrainConfig
from model.run import config_dict, read_torch

# Fields that change how a run is executed but not what it computes: a checkpoint may be resumed
# with other values for them.
EXECUTION_FIELDS = ("device", "num_threads", "eval_user_chunk", "eval_test_every_epoch")


def run_identity(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """What names a run (its folder's hash) and what a resumed checkpoint must match: the config
    with `feature_dtype` as it runs on this machine ("auto" resolved; "float32" for ID-only models,
    which have no features) and `feature_dtype_force` left out while false. So runs made before
    these two settings existed keep their folder names."""
    from model.registry import uses_features

    values = config_dict(config) if isinstance(config, TrainConfig) else dict(config)
    if "model" not in values:
        return values
    if values.get("feature_dtype_force") is False:
        values.pop("feature_dtype_force")
    if not uses_features(values["model"]):
        values["feature_dtype"] = "float32"
    elif values.get("feature_dtype") == "auto":
        import torch

        from model.build import resolve_device
        from model.dtype import resolve_feature_dtype

        device = resolve_device(values.get("device", "auto"))
        values["feature_dtype"] = resolve_feature_dtype("auto", torch.device(device),
                                                        log=None).resolved
    return values


def load_checkpoint(path: Path, config: TrainConfig, fingerprint: str) -> dict[str, Any]:
    """The checkpoint at `path`, refused when it came from another config or other data."""
    state = read_torch(path)
    if state.get("data_fingerprint") != fingerprint:
        raise ValueError(f"{path}: checkpoint was trained on different data (fingerprint "
                         f"{state.get('data_fingerprint')} != {fingerprint}); use a new run "
                         f"folder or resume=False")
    saved, current = run_identity(state.get("config", {})), run_identity(config)
    changed = sorted(name for name in set(saved) | set(current)
                     if name not in EXECUTION_FIELDS and saved.get(name) != current.get(name))
    if changed:
        details = ", ".join(f"{n}: {saved.get(n)!r} -> {current.get(n)!r}" for n in changed)
        raise ValueError(f"{path}: checkpoint was trained with a different config ({details}); "
                         f"use a new run folder or resume=False")
    return state
