"""Captioner and Embedder protocols, their stable keys, and the load error both raise."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from extractors.redact import redact

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

KEY_HASH_CHARS = 12
MAX_ERROR_CHARS = 500

log = logging.getLogger(__name__)

CaptionResult = tuple[str | None, str | None]  # (caption, None) or (None, error)


class ModelLoadError(RuntimeError):
    """A configured model could not be loaded (not cached, hub unreachable, broken checkpoint)."""


@runtime_checkable
class Captioner(Protocol):
    """Image -> text: everything the caption stage uses, so it never asks which backend it holds."""

    key: str  # names the store folder: the same output-affecting settings give the same key anywhere
    name: str  # what reports show (a descriptor's says it is NOT a multimodal LLM)
    provenance: dict[str, Any]  # what produced the captions, written into the store; never a secret
    preferred_batch: int  # images the stage hands to `caption_each` at once

    def caption(self, images: list[Image.Image]) -> list[str]:
        """One caption per image, in order. Raises when any image fails."""
        ...

    def caption_each(self, images: list[Image.Image]) -> list[CaptionResult]:
        """(caption, None) or (None, error) per image, in order: one bad image fails only its own row."""
        ...


class Embedded(NamedTuple):
    """What `Embedder.embed` returns: the vectors and, per text, whether its input was cut."""

    vectors: np.ndarray  # (len(texts), dim) float32, rows in the order of the texts
    truncated: list[bool]  # the text (with any instruction) exceeded the model's input limit


@runtime_checkable
class Embedder(Protocol):
    """Text -> vector of `dim` float32 values."""

    key: str  # names the store folder (see Captioner.key)
    name: str  # what reports show
    dim: int  # vector size
    provenance: dict[str, Any]  # what produced the vectors, written into the store; never a secret

    def embed(self, texts: list[str]) -> Embedded:
        """The texts' vectors and truncation flags. Raises for a failing batch."""
        ...


class BatchCaptioner:
    """Base of captioners whose `caption` takes a batch: `caption_each` isolates a failing batch's bad images."""

    def caption(self, images: list[Image.Image]) -> list[str]:
        raise NotImplementedError

    def caption_each(self, images: list[Image.Image]) -> list[CaptionResult]:
        """`caption` on the whole batch; when it fails, image by image, so only the bad ones get errors."""
        try:
            captions = self.caption(images)
            if len(captions) != len(images):
                raise RuntimeError(
                    f"captioner returned {len(captions)} captions for {len(images)} images"
                )
            return [_checked(caption) for caption in captions]
        except Exception as error:  # noqa: BLE001 - any backend failure becomes per-item error rows below
            if len(images) == 1:
                message = redact(f"captioning failed: {type(error).__name__}: {error}")
                return [(None, message[:MAX_ERROR_CHARS])]
            log.warning(
                "batch of %d failed (%s); retrying one by one", len(images), redact(str(error))
            )
            return [result for image in images for result in self.caption_each([image])]


def _checked(caption: str) -> CaptionResult:
    if not isinstance(caption, str) or not caption.strip():
        return None, "empty caption"
    return caption.strip(), None


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
