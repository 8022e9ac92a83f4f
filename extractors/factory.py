"""Build the configured captioner and embedders, including the descriptor fallback when no VLM loads."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from extractors.base import Captioner, Embedder, ModelLoadError
from extractors.config import (
    CaptionConfig,
    DescriptorCaptionConfig,
    EmbedConfig,
    OpenAICaptionConfig,
    OpenAIEmbedConfig,
)
from extractors.descriptor import DescriptorCaptioner

log = logging.getLogger(__name__)


@dataclass
class BuiltCaptioner:
    """The captioner to use and the warnings its construction raised (fallbacks), for the stage summary."""

    captioner: Captioner
    warnings: list[str] = field(default_factory=list)


def build_captioner(config: CaptionConfig) -> BuiltCaptioner:
    """The backend `config` is for; on a VLM load failure, fail or fall back as `on_load_failure` says."""
    if isinstance(config, DescriptorCaptionConfig):
        return BuiltCaptioner(DescriptorCaptioner(config.batch_size))
    if isinstance(config, OpenAICaptionConfig):
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
        return BuiltCaptioner(DescriptorCaptioner(config.batch_size), [warning])


def build_embedder(config: EmbedConfig) -> Embedder:
    if isinstance(config, OpenAIEmbedConfig):
        from extractors.openai_backends import OpenAIEmbedder

        return OpenAIEmbedder(config)
    from extractors.st_embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(config)
