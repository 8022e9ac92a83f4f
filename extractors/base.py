"""Captioner and Embedder protocols, their stable keys, and the load error both raise."""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

KEY_HASH_CHARS = 12


class ModelLoadError(RuntimeError):
    """A configured model could not be loaded (not cached, hub unreachable, broken checkpoint)."""


@runtime_checkable
class Captioner(Protocol):
    """Image -> text. `key` names the store folder; `name` is what reports show."""

    key: str
    name: str

    def caption(self, images: list[Image.Image]) -> list[str]:
        """One caption per image, in order. Raises only for whole-batch failures."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Text -> vector of `dim` float32 values."""

    key: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 array, rows in the order of `texts`."""
        ...


def _slug(text: str, max_chars: int = 40) -> str:
    """A filesystem-safe short name: the last path/hub component, odd characters replaced."""
    tail = text.rstrip("/").split("/")[-1] or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", tail)[:max_chars].strip("-.") or "model"


def stable_key(backend: str, model: str, settings: dict) -> str:
    """`<backend>-<model slug>-<hash of every output-affecting setting>`; same inputs, same key, any machine."""
    payload = json.dumps(
        {"backend": backend, "model": model, **settings}, sort_keys=True, default=str
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:KEY_HASH_CHARS]
    return f"{backend}-{_slug(model)}-{digest}"
