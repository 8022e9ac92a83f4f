"""Build the configured captioner and embedders, including the descriptor fallback when no VLM loads."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from extractors.base import Captioner, Embedder, ModelLoadError
from extractors.config import CaptionConfig, EmbedConfig
from extractors.descriptor import DescriptorCaptioner

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


@dataclass
class BuiltCaptioner:
    """The captioner to use and the warnings its construction raised (fallbacks), for the stage summary."""

    captioner: Captioner
    warnings: list[str] = field(default_factory=list)


def build_captioner(config: CaptionConfig) -> BuiltCaptioner:
    """The backend `config` names; on a VLM load failure, fail or fall back as `on_load_failure` says."""
    if config.backend == "descriptor":
        return BuiltCaptioner(DescriptorCaptioner())
    if config.backend == "openai":
        from extractors.openai_backends import OpenAICaptioner

        return BuiltCaptioner(OpenAICaptioner(config))
    from extractors.transformers_captioner import TransformersCaptioner

    try:
        return BuiltCaptioner(TransformersCaptioner(config))
    except ModelLoadError as error:
        if config.on_load_failure == "fail":
            raise
        warning = (
            f"{error} FALLING BACK to the descriptor captioner (classical image statistics, not a "
            f"multimodal LLM) because [caption] on_load_failure = 'fallback'."
        )
        log.warning(warning)
        return BuiltCaptioner(DescriptorCaptioner(), [warning])


def build_embedder(config: EmbedConfig) -> Embedder:
    if config.backend == "openai":
        from extractors.openai_backends import OpenAIEmbedder

        return OpenAIEmbedder(config)
    from extractors.st_embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(config)


def caption_each(
    captioner: Captioner, images: list[Image.Image]
) -> list[tuple[str | None, str | None]]:
    """(caption, None) or (None, error) per image; a failing batch is retried image by image to isolate it."""
    each = getattr(captioner, "caption_each", None)
    if each is not None:
        return each(images)
    try:
        captions = captioner.caption(images)
        if len(captions) != len(images):
            raise RuntimeError(
                f"captioner returned {len(captions)} captions for {len(images)} images"
            )
        return [_checked(caption) for caption in captions]
    except Exception as error:  # noqa: BLE001 - any backend failure becomes per-item error rows below
        if len(images) == 1:
            return [(None, f"captioning failed: {type(error).__name__}: {error}"[:500])]
        log.warning("batch of %d failed (%s); retrying one by one", len(images), error)
        return [result for image in images for result in caption_each(captioner, [image])]


def _checked(caption: str) -> tuple[str | None, str | None]:
    if not isinstance(caption, str) or not caption.strip():
        return None, "empty caption"
    return caption.strip(), None
