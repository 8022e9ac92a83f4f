"""A small retrying JSON client for OpenAI-compatible endpoints (vLLM, Ollama, llama.cpp server, TGI)."""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

from extractors.redact import redact, register_key_variable, register_url

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


class EndpointError(RuntimeError):
    """The endpoint refused, kept failing, or answered something that is not the expected JSON.

    Its message is redacted (extractors.redact): an answer that echoes the request's headers, or
    an endpoint URL with a password in it, never carries the key into error rows or logs.
    """

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class RetryingJsonClient:
    """POSTs JSON; retries 429, 5xx, timeouts and dropped connections with exponential backoff.

    The API key is read from the environment variable named by `api_key_env` and lives only in the
    request headers: both it and any password in `base_url` are registered with extractors.redact,
    so no message this client makes (nor any other redacted text) shows them.
    """

    def __init__(
        self,
        base_url: str,
        api_key_env: str | None,
        timeout: float,
        max_retries: int,
        concurrency: int,
        backoff_s: float = 0.5,
    ) -> None:
        import httpx

        register_key_variable(api_key_env)
        register_url(base_url)
        api_key = os.environ.get(api_key_env) if api_key_env else None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._client = httpx.Client(
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(float(retry_after), MAX_BACKOFF_S)
            except ValueError:
                pass  # an HTTP-date Retry-After: fall back to our own schedule
        return min(self.backoff_s * 2**attempt, MAX_BACKOFF_S) * (0.5 + random.random())

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The decoded JSON object answered to POST base_url/path; raises EndpointError when none comes."""
        import httpx

        url = f"{self.base_url}/{path.lstrip('/')}"
        shown = redact(url)  # what messages name: never a password in the URL
        problem = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self._client.post(url, json=payload)
            except httpx.TimeoutException:
                problem = f"timed out after {self._client.timeout.read}s"
            except httpx.TransportError as error:
                problem = f"connection failed ({type(error).__name__})"
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    problem = f"HTTP {response.status_code}"
                    retry_after = response.headers.get("retry-after")
                elif response.status_code >= 400:
                    raise EndpointError(
                        f"{shown}: HTTP {response.status_code}: {redact(response.text)[:300]}"
                    )
                else:
                    try:
                        answer = response.json()
                    except ValueError:
                        raise EndpointError(
                            f"{shown}: garbage answer (not JSON): {redact(response.text)[:120]!r}"
                        ) from None
                    if not isinstance(answer, dict):
                        raise EndpointError(
                            f"{shown}: garbage answer (JSON {type(answer).__name__}, not an object)"
                        )
                    return answer
            if attempt < self.max_retries:
                delay = self._delay(attempt, retry_after)
                log.warning(
                    "%s: %s; retry %d/%d in %.1fs",
                    shown,
                    problem,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
        raise EndpointError(f"{shown}: {problem}, {self.max_retries} retries exhausted")

    def close(self) -> None:
        self._client.close()
