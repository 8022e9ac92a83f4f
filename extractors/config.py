"""Typed settings of the caption and embed stages: one frozen dataclass per backend, tagged on `backend`.

The dataclasses are stdlib; pydantic only reads them (the run config embeds them) and the tagged
unions `CaptionConfig` and `EmbedConfig` tell it which class a `[caption]` or `[embed]` table is, so
a key that the chosen backend does not take is an error. A field's trailing comment is its
description in the README's configuration reference (`pipeline/config_reference.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Tag

DEFAULT_PROMPT = (
    "Describe this item for a shopper in one or two sentences: what the object is, its colours, "
    "material and style, and any visible text."
)
DEFAULT_VLM = "HuggingFaceTB/SmolVLM-256M-Instruct"
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CAPTION_BACKEND = "transformers"  # what a [caption] table without `backend` is
DEFAULT_EMBED_BACKEND = "sentence-transformers"  # what an [embed] table without `backend` is

MODALITY_SOURCES = (
    "caption",
    "text",
    "imported",
)  # imported: vectors that came with the dataset (MMRec .npy)
LOAD_FAILURE_POLICIES = ("fail", "fallback")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Stdlib dataclasses read by pydantic: unknown keys are errors, and so are wrong types (the run
# config validates files in strict mode: "3" is not an integer).
_PYDANTIC_CONFIG: dict[str, Any] = {"extra": "forbid"}


def _check_choice(section: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"[{section}] {name} = {value!r}: expected one of {', '.join(choices)}")


def _check_positive(section: str, config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(f"[{section}] {name} = {value!r}: must be > 0")


def _check_endpoint(section: str, config: Any) -> None:
    """The settings every OpenAI-compatible endpoint client shares."""
    if not config.base_url.strip():
        raise ValueError(f"[{section}] base_url is empty")
    _check_positive(section, config, "concurrency", "timeout", "retry_backoff_s")
    if config.max_retries < 0:
        raise ValueError(f"[{section}] max_retries = {config.max_retries}: must be >= 0")


def _check_model(section: str, model: str) -> None:
    if not model.strip():
        raise ValueError(f"[{section}] model is empty")


@dataclass(frozen=True, kw_only=True)
class TransformersCaptionConfig:
    """`[caption] backend = "transformers"`: a local or hub VLM run through transformers."""

    __pydantic_config__: ClassVar[dict] = _PYDANTIC_CONFIG

    backend: Literal["transformers"] = "transformers"  # the default when `backend` is omitted
    model: str = DEFAULT_VLM  # hub id or local checkpoint folder
    revision: str | None = None  # hub revision (commit, tag, branch); part of the key
    prompt: str = DEFAULT_PROMPT  # the instruction sent with each image; part of the key
    max_new_tokens: int = 64  # caption length limit (greedy decoding); part of the key
    batch_size: int = 8  # images per generate call
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bfloat16 on GPUs that have it, else float32
    on_load_failure: Literal["fail", "fallback"] = "fail"  # fallback: to the descriptor captioner, with a warning
    max_image_pixels: int = 40_000_000  # larger images get an error row (decompression-bomb guard)

    def __post_init__(self) -> None:
        _check_model("caption", self.model)
        _check_choice("caption", "on_load_failure", self.on_load_failure, LOAD_FAILURE_POLICIES)
        _check_choice("caption", "dtype", self.dtype, DTYPES)
        _check_positive("caption", self, "max_new_tokens", "batch_size", "max_image_pixels")


@dataclass(frozen=True, kw_only=True)
class OpenAICaptionConfig:
    """`[caption] backend = "openai"`: any OpenAI-compatible chat endpoint with image input (vLLM, Ollama, ...)."""

    __pydantic_config__: ClassVar[dict] = _PYDANTIC_CONFIG

    backend: Literal["openai"] = "openai"  # this table's backend
    base_url: str  # the endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM) or http://127.0.0.1:11434/v1 (Ollama)
    model: str = DEFAULT_VLM  # the served model's name; part of the key
    prompt: str = DEFAULT_PROMPT  # part of the key
    max_new_tokens: int = 64  # sent as max_tokens (temperature 0); part of the key
    image_detail_side: int = 768  # longest image side sent (JPEG re-encoded); part of the key
    batch_size: int = 8  # images handed to the endpoint client at once (at least `concurrency`)
    api_key_env: str | None = "OPENAI_API_KEY"  # name of the env var holding the key; the key is never stored
    concurrency: int = 4  # requests in flight
    timeout: float = 120.0  # seconds per request
    max_retries: int = 4  # retries on 429/5xx/timeouts, exponential backoff
    retry_backoff_s: float = 0.5  # first backoff; doubles per retry (capped at 30 s)
    max_image_pixels: int = 40_000_000  # larger images get an error row (decompression-bomb guard)

    def __post_init__(self) -> None:
        _check_model("caption", self.model)
        _check_endpoint("caption", self)
        _check_positive(
            "caption", self, "max_new_tokens", "image_detail_side", "batch_size", "max_image_pixels"
        )


@dataclass(frozen=True, kw_only=True)
class DescriptorCaptionConfig:
    """`[caption] backend = "descriptor"`: classical image statistics, no weights; NOT a multimodal LLM."""

    __pydantic_config__: ClassVar[dict] = _PYDANTIC_CONFIG

    backend: Literal["descriptor"] = "descriptor"  # this table's backend
    batch_size: int = 8  # images described per call
    max_image_pixels: int = 40_000_000  # larger images get an error row (decompression-bomb guard)

    def __post_init__(self) -> None:
        _check_positive("caption", self, "batch_size", "max_image_pixels")


@dataclass(frozen=True, kw_only=True)
class SentenceTransformersEmbedConfig:
    """`[embed] backend = "sentence-transformers"`: any sentence-transformers model, LLM embedders included."""

    __pydantic_config__: ClassVar[dict] = _PYDANTIC_CONFIG

    backend: Literal["sentence-transformers"] = "sentence-transformers"  # the default when `backend` is omitted
    model: str = DEFAULT_EMBEDDER  # hub id or local folder
    revision: str | None = None  # hub revision; part of the key
    instruction: str = ""  # prefix put before every text (e.g. "query: " or an LLM embedder's instruction)
    batch_size: int = 64  # texts per encode batch
    normalize: bool = False  # L2-normalise vectors (MiniLM already ends in a Normalize layer)
    max_seq_length: int | None = None  # tokens; unset keeps the model's own limit; longer texts are truncated
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: as the checkpoint loads

    def __post_init__(self) -> None:
        _check_model("embed", self.model)
        _check_choice("embed", "dtype", self.dtype, DTYPES)
        _check_positive("embed", self, "batch_size", "max_seq_length")


@dataclass(frozen=True, kw_only=True)
class OpenAIEmbedConfig:
    """`[embed] backend = "openai"`: any OpenAI-compatible embeddings endpoint."""

    __pydantic_config__: ClassVar[dict] = _PYDANTIC_CONFIG

    backend: Literal["openai"] = "openai"  # this table's backend
    base_url: str  # the endpoint, e.g. http://127.0.0.1:8000/v1
    model: str = DEFAULT_EMBEDDER  # the served model's name; part of the key
    instruction: str = ""  # prefix put before every text; part of the key
    normalize: bool = False  # L2-normalise the returned vectors; part of the key
    dimensions: int | None = None  # requested output size, where the endpoint supports it; part of the key
    max_input_chars: int = 32_000  # longer texts are cut (and the cut recorded); part of the key
    batch_size: int = 64  # texts per request
    api_key_env: str | None = "OPENAI_API_KEY"  # name of the env var holding the key; the key is never stored
    concurrency: int = 4  # requests in flight
    timeout: float = 120.0  # seconds per request
    max_retries: int = 4  # retries on 429/5xx/timeouts, exponential backoff
    retry_backoff_s: float = 0.5  # first backoff; doubles per retry (capped at 30 s)

    def __post_init__(self) -> None:
        _check_model("embed", self.model)
        _check_endpoint("embed", self)
        _check_positive("embed", self, "dimensions", "max_input_chars", "batch_size")


def _backend_or(default: str):
    """The discriminator of a backend union: the table's `backend`, or `default` when it has none."""

    def backend(value: Any) -> Any:
        if isinstance(value, dict):
            return value.get("backend", default)
        return getattr(value, "backend", None)

    backend.__name__ = "backend"  # pydantic names the discriminator in its messages
    return backend


CAPTION_CONFIGS: dict[str, type] = {
    "transformers": TransformersCaptionConfig,
    "openai": OpenAICaptionConfig,
    "descriptor": DescriptorCaptionConfig,
}
EMBED_CONFIGS: dict[str, type] = {
    "sentence-transformers": SentenceTransformersEmbedConfig,
    "openai": OpenAIEmbedConfig,
}
CAPTION_BACKENDS = tuple(CAPTION_CONFIGS)
EMBED_BACKENDS = tuple(EMBED_CONFIGS)

# `[caption]`: one of the caption backends' settings, chosen by `backend` (default transformers).
CaptionConfig = Annotated[
    Annotated[TransformersCaptionConfig, Tag("transformers")]
    | Annotated[OpenAICaptionConfig, Tag("openai")]
    | Annotated[DescriptorCaptionConfig, Tag("descriptor")],
    Discriminator(_backend_or(DEFAULT_CAPTION_BACKEND)),
]
# `[embed]` and `[modalities.<name>.embedder]`: one of the embed backends' settings (default sentence-transformers).
EmbedConfig = Annotated[
    Annotated[SentenceTransformersEmbedConfig, Tag("sentence-transformers")]
    | Annotated[OpenAIEmbedConfig, Tag("openai")],
    Discriminator(_backend_or(DEFAULT_EMBED_BACKEND)),
]


@dataclass(frozen=True, kw_only=True)
class ModalityConfig:
    """`[modalities.<name>]`: one embedded modality: its source text and an optional embedder override."""

    __pydantic_config__: ClassVar[dict] = _PYDANTIC_CONFIG

    source: Literal["caption", "text", "imported"] = "text"  # caption: the captioner's output; text: the catalog's item text; imported: vectors that came with the dataset
    embedder: EmbedConfig | None = None  # a table like [embed] (any backend); unset: use [embed]

    def __post_init__(self) -> None:
        _check_choice("modalities", "source", self.source, MODALITY_SOURCES)


def default_modalities() -> dict[str, ModalityConfig]:
    """The paper's two text modalities: the caption of the image and the item's own text."""
    return {"caption": ModalityConfig(source="caption"), "text": ModalityConfig(source="text")}
