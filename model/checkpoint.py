"""Checkpoints that resume only the run they came from: same train config, same data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.config import TrainConfig
from model.run import config_dict, read_torch
from model.schedule import batch_rule

# Fields that change how a run is executed but not what it computes: a checkpoint may be resumed
# with other values for them.
EXECUTION_FIELDS = ("device", "num_threads", "eval_user_chunk", "eval_scoring", "compile",
                    "eval_test_every_epoch", "checkpoint_every_steps", "checkpoint_every_minutes")
# Fields added after runs existed, with the default that computes what runs did before them: left
# out of a run's identity while at that default, so those runs keep their folder names and resume.
LATER_FIELDS = {"feature_dtype_force": False, "lr_scaling": "none", "lr_reference_batch": 2048,
                "warmup_steps": 0, "eval_every": 1, "checkpoint_every_steps": 0,
                "checkpoint_every_minutes": 0.0, "eval_scoring": "auto", "compile": "auto"}


def run_identity(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """What names a run (its folder's hash) and what a resumed checkpoint must match: the config
    with `feature_dtype` as it runs on this machine ("auto" resolved; "float32" for ID-only models,
    which have no features), `lr_scaling` "auto" as the rule it resolves to, and the LATER_FIELDS
    left out while at their defaults. So runs made
    before these settings existed keep their folder names."""
    from model.registry import uses_features

    values = config_dict(config) if isinstance(config, TrainConfig) else dict(config)
    if "model" not in values:
        return values
    if values.get("lr_scaling") == "auto":  # the rule it resolves to ("none" at batch 2048)
        values["lr_scaling"] = batch_rule("auto", values["batch_size"],
                                          values.get("lr_reference_batch", 2048))
    for name, default in LATER_FIELDS.items():
        if name in values and values[name] == default \
                and isinstance(values[name], bool) == isinstance(default, bool):
            values.pop(name)
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
