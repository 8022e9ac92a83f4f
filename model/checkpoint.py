"""Checkpoints that resume only the run they came from: same train config, same data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.config import TrainConfig
from model.run import config_dict, read_torch

# Fields that change how a run is executed but not what it computes: a checkpoint may be resumed
# with other values for them.
EXECUTION_FIELDS = ("device", "num_threads", "eval_user_chunk", "eval_test_every_epoch")


def load_checkpoint(path: Path, config: TrainConfig, fingerprint: str) -> dict[str, Any]:
    """The checkpoint at `path`, refused when it came from another config or other data."""
    state = read_torch(path)
    if state.get("data_fingerprint") != fingerprint:
        raise ValueError(f"{path}: checkpoint was trained on different data (fingerprint "
                         f"{state.get('data_fingerprint')} != {fingerprint}); use a new run "
                         f"folder or resume=False")
    saved, current = state.get("config", {}), config_dict(config)
    changed = sorted(name for name in set(saved) | set(current)
                     if name not in EXECUTION_FIELDS and saved.get(name) != current.get(name))
    if changed:
        details = ", ".join(f"{n}: {saved.get(n)!r} -> {current.get(n)!r}" for n in changed)
        raise ValueError(f"{path}: checkpoint was trained with a different config ({details}); "
                         f"use a new run folder or resume=False")
    return state
