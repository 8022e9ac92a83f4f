"""Typed settings of the caption and embed stages (stdlib dataclasses; no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

DEFAULT_PROMPT = (
    "Describe this item for a shopper in one or two sentences: what the object is, its colours, "
    "material and style, and any visible text."
)
DEFAULT_VLM = "HuggingFaceTB/SmolVLM-256M-Instruct"
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"

CAPTION_BACKENDS = ("transformers", "openai", "descriptor")
EMBED_BACKENDS = ("sentence-transformers", "openai")
MODALITY_SOURCES = (
    "caption",
    "text",
    "imported",
)  # imported: vectors that came with the dataset (MMRec .npy)
LOAD_FAILURE_POLICIES = ("fail", "fallback")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _check_choice(section: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"[{section}] {name} = {value!r}: expected one of {', '.join(choices)}")


def _check_positive(section: str, name: str, value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"[{section}] {name} = {value!r}: must be > 0")


@dataclass(frozen=True)
class CaptionConfig:
    """`[caption]`: which captioner turns item images into text, and how it runs."""

    __pydantic_config__: ClassVar[dict] = {"extra": "forbid"}

    backend: str = "transformers"  # transformers | openai | descriptor
    model: str = (
        DEFAULT_VLM  # hub id or local checkpoint folder (transformers); served model name (openai)
    )
    revision: str | None = None  # hub revision (commit, tag, branch); part of the key
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 64
    batch_size: int = 8
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = (
        "auto"  # auto (bfloat16 on GPUs that have it, else float32) | float32 | bfloat16 | float16
    )
    on_load_failure: str = "fail"  # fail | fallback (to the descriptor captioner, with a warning)
    max_image_pixels: int = 40_000_000  # larger images get an error row (decompression-bomb guard)
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = (
        "OPENAI_API_KEY"  # name of the env var holding the key; the key is never stored
    )
    concurrency: int = 4  # openai: requests in flight
    timeout: float = 120.0  # openai: seconds per request
    max_retries: int = 4  # openai: retries on 429/5xx/timeouts, exponential backoff
    retry_backoff_s: float = 0.5  # openai: first backoff; doubles per retry (capped at 30 s)
    image_detail_side: int = 768  # openai: longest image side sent (JPEG re-encoded)

    def __post_init__(self) -> None:
        _check_choice("caption", "backend", self.backend, CAPTION_BACKENDS)
        _check_choice("caption", "on_load_failure", self.on_load_failure, LOAD_FAILURE_POLICIES)
        _check_choice("caption", "dtype", self.dtype, DTYPES)
        for name in (
            "max_new_tokens",
            "batch_size",
            "max_image_pixels",
            "concurrency",
            "timeout",
            "image_detail_side",
            "retry_backoff_s",
        ):
            _check_positive("caption", name, getattr(self, name))
        if self.max_retries < 0:
            raise ValueError(f"[caption] max_retries = {self.max_retries}: must be >= 0")
        if not self.model.strip() and self.backend != "descriptor":
            raise ValueError("[caption] model is empty")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("[caption] base_url is required when backend = 'openai'")


@dataclass(frozen=True)
class EmbedConfig:
    """`[embed]`: which text embedder turns captions and item texts into vectors."""

    __pydantic_config__: ClassVar[dict] = {"extra": "forbid"}

    backend: str = "sentence-transformers"  # sentence-transformers | openai
    model: str = (
        DEFAULT_EMBEDDER  # hub id or local folder (sentence-transformers); served name (openai)
    )
    revision: str | None = None
    instruction: str = (
        ""  # prefix put before every text (e.g. "query: " or an LLM embedder's instruction)
    )
    batch_size: int = 64
    normalize: bool = False  # L2-normalise vectors (MiniLM already ends in a Normalize layer)
    max_seq_length: int | None = (
        None  # tokens; None keeps the model's own limit; longer texts are truncated
    )
    device: str = "auto"
    dtype: str = "auto"
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    dimensions: int | None = None  # openai: requested output size, where the endpoint supports it
    max_input_chars: int = 32_000  # openai: longer texts are cut (and the cut recorded)
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 4
    retry_backoff_s: float = 0.5

    def __post_init__(self) -> None:
        _check_choice("embed", "backend", self.backend, EMBED_BACKENDS)
        _check_choice("embed", "dtype", self.dtype, DTYPES)
        for name in (
            "batch_size",
            "max_seq_length",
            "dimensions",
            "max_input_chars",
            "concurrency",
            "timeout",
            "retry_backoff_s",
        ):
            _check_positive("embed", name, getattr(self, name))
        if self.max_retries < 0:
            raise ValueError(f"[embed] max_retries = {self.max_retries}: must be >= 0")
        if not self.model.strip():
            raise ValueError("[embed] model is empty")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("[embed] base_url is required when backend = 'openai'")


@dataclass(frozen=True)
class ModalityConfig:
    """`[modalities.<name>]`: one embedded modality: its source text and an optional embedder override."""

    __pydantic_config__: ClassVar[dict] = {"extra": "forbid"}

    source: str = "text"  # caption (the captioner's output) | text (the catalog's item text)
    embedder: EmbedConfig | None = None  # None: use [embed]

    def __post_init__(self) -> None:
        _check_choice("modalities", "source", self.source, MODALITY_SOURCES)


def default_modalities() -> dict[str, ModalityConfig]:
    """The paper's two text modalities: the caption of the image and the item's own text."""
    return {"caption": ModalityConfig(source="caption"), "text": ModalityConfig(source="text")}
