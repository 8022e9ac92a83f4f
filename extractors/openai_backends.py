"""Captioner and embedder over OpenAI-compatible HTTP endpoints (chat completions with images; embeddings)."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from extractors.base import CaptionResult, Embedded, ModelLoadError, stable_key
from extractors.config import OpenAICaptionConfig, OpenAIEmbedConfig
from extractors.openai_http import EndpointError, RetryingJsonClient
from extractors.redact import redact

if TYPE_CHECKING:
    from PIL import Image

DIMENSION_PROBE_TEXT = "dimension probe"


def _client(config: OpenAICaptionConfig | OpenAIEmbedConfig) -> RetryingJsonClient:
    return RetryingJsonClient(
        config.base_url,
        config.api_key_env,
        config.timeout,
        config.max_retries,
        config.concurrency,
        config.retry_backoff_s,
    )


def image_data_url(image: Image.Image, longest_side: int) -> str:
    """The image as a base64 JPEG data URL, downscaled so its longest side is at most `longest_side`."""
    image = image.convert("RGB")
    if max(image.size) > longest_side:
        image = image.copy()
        image.thumbnail((longest_side, longest_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def parse_chat_answer(answer: dict[str, Any]) -> str:
    """The assistant text of a chat-completions answer; EndpointError for anything else."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(
            f"garbage answer: no choices[0].message.content in {redact(str(answer))[:120]!r}"
        ) from None
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str) or not content.strip():
        raise EndpointError("garbage answer: empty caption")
    return content.strip()


class OpenAICaptioner:
    """One chat-completions request per image, `concurrency` in flight, deterministic (temperature 0)."""

    def __init__(self, config: OpenAICaptionConfig) -> None:
        self.config = config
        settings = {
            "prompt": config.prompt,
            "max_tokens": config.max_new_tokens,
            "temperature": 0,
            "image_side": config.image_detail_side,
        }
        self.key = stable_key("openai", config.model, settings)  # not the endpoint: any server of the model
        self.name = f"openai:{config.model}"
        self.provenance = {
            "backend": "openai",
            "model": config.model,
            **settings,
            "base_url": redact(config.base_url),  # never a password in the URL
            "api_key_env": config.api_key_env,  # the variable's name, never its value
        }
        # enough images at once to keep `concurrency` requests in flight
        self.preferred_batch = max(config.batch_size, config.concurrency)
        self._client = _client(config)

    def _request(self, image: Image.Image) -> str:
        payload = {
            "model": self.config.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": self.config.prompt},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": image_data_url(image, self.config.image_detail_side)
                            },
                        },
                    ],
                }
            ],
            "max_tokens": self.config.max_new_tokens,
            "temperature": 0,
        }
        return parse_chat_answer(self._client.post("chat/completions", payload))

    def caption_each(self, images: list[Image.Image]) -> list[CaptionResult]:
        """(caption, None) or (None, error) per image: one bad answer fails only its own item."""

        def one(image: Image.Image) -> CaptionResult:
            try:
                return self._request(image), None
            except EndpointError as error:
                return None, str(error)

        with ThreadPoolExecutor(self.config.concurrency) as pool:
            return list(pool.map(one, images))

    def caption(self, images: list[Image.Image]) -> list[str]:
        results = self.caption_each(images)
        failures = [error for _, error in results if error is not None]
        if failures:
            raise EndpointError(
                f"{len(failures)} of {len(images)} images failed; first: {failures[0]}"
            )
        return [caption for caption, _ in results if caption is not None]


class OpenAIEmbedder:
    """Embeddings endpoint; batches of `batch_size` texts, `concurrency` batches in flight."""

    def __init__(self, config: OpenAIEmbedConfig) -> None:
        self.config = config
        self._client = _client(config)
        settings = {
            "instruction": config.instruction,
            "normalize": config.normalize,
            "dimensions": config.dimensions,
            "max_input_chars": config.max_input_chars,
        }
        self.key = stable_key("openai", config.model, settings)
        self.name = f"openai:{config.model}"
        self.provenance = {
            "backend": "openai",
            "model": config.model,
            **settings,
            "base_url": redact(config.base_url),  # never a password in the URL
            "api_key_env": config.api_key_env,  # the variable's name, never its value
        }
        self.dim: int = config.dimensions or self._probe_dim()

    def _probe_dim(self) -> int:
        """The vector size the endpoint answers with; ModelLoadError (one line) when it does not answer."""
        try:
            return self._request([DIMENSION_PROBE_TEXT], None).shape[1]
        except EndpointError as error:
            raise ModelLoadError(
                f"[embed] the embedding endpoint {redact(self.config.base_url)} (model "
                f"{self.config.model!r}) did not answer the dimension probe: {' '.join(str(error).split())}. Start the "
                "server there, or point base_url at one that serves the model, then rerun"
            ) from None

    def prepare(self, text: str) -> tuple[str, bool]:
        """(text sent, whether it was cut to max_input_chars)."""
        full = self.config.instruction + text
        return full[: self.config.max_input_chars], len(full) > self.config.max_input_chars

    def _request(self, texts: list[str], dim: int | None) -> np.ndarray:
        """(len(texts), D) vectors from one request; D must be `dim` unless that is None (the probe)."""
        payload: dict[str, Any] = {
            "model": self.config.model,
            "input": texts,
            "encoding_format": "float",
        }
        if self.config.dimensions:
            payload["dimensions"] = self.config.dimensions
        answer = self._client.post("embeddings", payload)
        try:
            rows = sorted(answer["data"], key=lambda row: row["index"])
            vectors = [[float(value) for value in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise EndpointError(
                f"garbage answer: no data[].embedding in {redact(str(answer))[:120]!r}"
            ) from None
        if len(vectors) != len(texts) or len({len(vector) for vector in vectors}) != 1:
            raise EndpointError(
                f"garbage answer: {len(vectors)} vectors of sizes "
                f"{sorted({len(v) for v in vectors})} for {len(texts)} texts"
            )
        matrix = np.asarray(vectors, dtype=np.float32)  # (B, D)
        if not np.isfinite(matrix).all():
            raise EndpointError("garbage answer: non-finite values in embeddings")
        if dim is not None and matrix.shape[1] != dim:
            raise EndpointError(f"garbage answer: vectors of size {matrix.shape[1]}, expected {dim}")
        if self.config.normalize:
            matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        return matrix

    def embed(self, texts: list[str]) -> Embedded:
        prepared = [self.prepare(text) for text in texts]
        sent = [text for text, _ in prepared]
        size = self.config.batch_size
        batches = [sent[start : start + size] for start in range(0, len(sent), size)]
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            parts = list(pool.map(lambda batch: self._request(batch, self.dim), batches))
        vectors = np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)
        return Embedded(vectors, [cut for _, cut in prepared])
