"""A run folder: the name of every file a run holds, and the one atomic writer of the product.

Every file of `runs/<run_id>/` is named here and nowhere else (STYLE rule 11); callers ask a
`RunFolder` for `run.metrics`, never `run_dir / "metrics.json"`. Every write in the product, JSON,
NumPy, torch and Parquet alike, goes through `write_atomically`: a temp file of the call's own in
the same folder, then a rename, so a killed writer leaves the old file or the new one, never half
of one, and two concurrent writers never rename each other's temp file. `pipeline/` imports this
module for its store writes (model/ imports nothing from pipeline/).

What a run holds (file names are those of earlier versions: existing run folders stay valid):
  checkpoint.pt       resumable state: model, optimiser, epoch, best epoch, patience counter, PWC
                      state, NumPy and torch RNG states, config, data fingerprint
  best_model.pt       the weights at the best-valid epoch with the run's own train config and data
                      fingerprint: what rebuilds the item encoder for new items
  item_encoder.npz    what scoring a new item needs besides those weights (model/encode.py)
  history.jsonl       one line per epoch
  user_vectors.npy, item_vectors.npy   the vectors at the best-valid epoch
  metrics.json        written last by training: a run with it is finished
  per_user.parquet    every evaluated user's metric@k of valid, test, test_warm, test_cold at the
                      best-valid epoch (schema pipeline.schemas.PER_USER, written by the pipeline)
  training_curves.png valid Recall@20 and training loss per epoch of this run and the [compare]
                      runs trained beside it (in the [train] run's folder; flows publish it)
  user_ids.parquet, item_ids.parquet   row -> id of the vectors
  config.json         the run's own train config and the pipeline config it came from
  inputs.json         which feature stores (keys, provenance) and data fingerprint it read
  candidates.parquet, items.faiss, rank.json   the rank stage's outputs
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temp)` on a temp name of this call's own beside `path`, then rename it to `path`.

    The folder is created when missing; the temp file is removed when `write` fails.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(temporary)
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(OSError):  # a failed cleanup must not hide the real error
                temporary.unlink(missing_ok=True)
    except OSError as error:
        raise _naming(error, path) from error
    return path


def _naming(error: OSError, path: Path) -> OSError:
    """`error` with an errno and the file it was about (the target, never the temp name).

    Writers such as np.save and pyarrow report a full disk without errno or file name.
    """
    code = error.errno
    if code is None and _nearly_full(path.parent):
        code = errno.ENOSPC
    if code is None:
        return error
    named = error.filename if error.filename and ".tmp" not in str(error.filename) else path
    return OSError(code, os.strerror(code), str(named))


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def write_text(path: Path, text: str) -> Path:
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json(path: Path, value: Any) -> Path:
    """`value` as indented JSON (non-JSON values as their str)."""
    return write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def write_npy(path: Path, array: np.ndarray) -> Path:
    # np.save appends ".npy" to a name without it: hand it an open file instead
    def save(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            np.save(handle, array)

    return write_atomically(path, save)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    def save(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            np.savez(handle, **arrays)

    return write_atomically(path, save)


def write_torch(path: Path, state: dict[str, Any]) -> Path:
    import torch

    return write_atomically(path, lambda temporary: torch.save(state, temporary))


def read_torch(path: Path) -> dict[str, Any]:
    """A torch file of ours, loaded with weights_only=True (tensors and plain Python only)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def config_dict(config: object) -> dict[str, Any]:
    """A dataclass config as JSON-clean values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


@dataclass(frozen=True)
class RunFolder:
    """The files of one run; the folder's name is chosen by the caller (pipeline/training.py)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def best_model(self) -> Path:
        return self.path / "best_model.pt"

    @property
    def item_encoder(self) -> Path:
        return self.path / "item_encoder.npz"

    @property
    def history(self) -> Path:
        return self.path / "history.jsonl"

    @property
    def user_vectors(self) -> Path:
        return self.path / "user_vectors.npy"

    @property
    def item_vectors(self) -> Path:
        return self.path / "item_vectors.npy"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def per_user(self) -> Path:
        return self.path / "per_user.parquet"

    @property
    def training_curves(self) -> Path:
        return self.path / "training_curves.png"

    @property
    def user_ids(self) -> Path:
        return self.path / "user_ids.parquet"

    @property
    def item_ids(self) -> Path:
        return self.path / "item_ids.parquet"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def inputs(self) -> Path:
        return self.path / "inputs.json"

    @property
    def candidates(self) -> Path:
        return self.path / "candidates.parquet"

    @property
    def index(self) -> Path:
        return self.path / "items.faiss"

    @property
    def rank_record(self) -> Path:
        return self.path / "rank.json"

    def missing_outputs(self, item_encoder: bool = False) -> list[Path]:
        """The files a finished run consists of that are not there (metrics.json is written last,
        but any other may have been deleted since); `item_encoder` for models that score new items."""
        wanted = [self.config, self.inputs, self.user_ids, self.item_ids, self.user_vectors,
                  self.item_vectors, self.metrics]
        if item_encoder:
            wanted += [self.best_model, self.item_encoder]
        return [path for path in wanted if not path.exists()]

    @property
    def finished(self) -> bool:
        """Training wrote its last file (metrics.json) and every other file of a run is there."""
        return not self.missing_outputs()

    @property
    def resumable(self) -> bool:
        """A checkpoint and what it stands on (the best epoch's weights and vectors) are there."""
        return all(path.exists() for path in
                   (self.checkpoint, self.best_model, self.user_vectors, self.item_vectors))

    def read_json(self, path: Path) -> dict[str, Any]:
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (is {self.path} a finished run folder?)")
        return json.loads(path.read_text(encoding="utf-8"))

    def save_vectors(self, user_vectors, item_vectors) -> None:
        """The (U, D) and (I, D) vectors of a torch model, as float32 .npy files."""
        for path, vectors in ((self.user_vectors, user_vectors), (self.item_vectors, item_vectors)):
            write_npy(path, vectors.detach().float().cpu().numpy())

    def load_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        for path in (self.user_vectors, self.item_vectors):
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing (has the run been trained?)")
        return np.load(self.user_vectors), np.load(self.item_vectors)

    def read_history(self, up_to_epoch: int | None = None) -> list[dict[str, Any]]:
        """History lines (up to a checkpoint's epoch: a killed run may have written one more).

        A torn last line (a run killed while appending it) is dropped: it is after the
        checkpoint's epoch anyway. A damaged line before the last is an error naming the line.
        """
        if not self.history.exists():
            return []
        text = self.history.read_text(encoding="utf-8", errors="replace")
        raw = text.splitlines()
        lines = []
        for number, line in enumerate(raw, start=1):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number == len(raw) and not text.endswith("\n"):
                    break  # torn while being appended
                raise ValueError(
                    f"{self.history}: line {number} is not a JSON history line ({error.msg}); "
                    f"delete the run folder {self.path} to train it again from the start"
                ) from error
        return [line for line in lines if up_to_epoch is None or line["epoch"] <= up_to_epoch]

    def write_history(self, lines: list[dict[str, Any]]) -> None:
        write_text(self.history, "".join(json.dumps(line) + "\n" for line in lines))

    def append_history(self, line: dict[str, Any]) -> None:
        with self.history.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
