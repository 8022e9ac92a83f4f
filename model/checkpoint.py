"""Run-folder files written atomically: the resumable checkpoint, vectors, metrics and history."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import TrainConfig

# Fields that change how a run is executed but not what it computes: a checkpoint may be resumed
# with other values for them.
EXECUTION_FIELDS = ("device", "num_threads", "eval_user_chunk", "eval_test_every_epoch")


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists, JSON-clean


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write` into a temp file of this call's own (two runs never share one), then rename it."""
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    _write_atomically(path, lambda temporary: torch.save(state, temporary))


def load_checkpoint(path: Path, config: TrainConfig, fingerprint: str) -> dict[str, Any]:
    """The checkpoint at `path`, refused when it came from another config or other data."""
    state = torch.load(path, map_location="cpu", weights_only=False)
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


def save_vectors(run_dir: Path, user_vectors: torch.Tensor, item_vectors: torch.Tensor) -> None:
    for name, vectors in (("user_vectors", user_vectors), ("item_vectors", item_vectors)):
        array = vectors.detach().float().cpu().numpy()
        _write_atomically(run_dir / f"{name}.npy", lambda temporary, array=array: np.save(temporary, array))


def load_vectors(run_dir: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(np.load(run_dir / f"{name}.npy")).to(device)
                 for name in ("user_vectors", "item_vectors"))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2) + "\n"
    _write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def read_history(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """History lines up to a checkpoint's epoch (a killed run may have written one more)."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [line for line in lines if line["epoch"] <= up_to_epoch]


def write_history(path: Path, lines: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    _write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def append_history(path: Path, line: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
