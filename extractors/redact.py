"""One redaction for every string that leaves the process: configured API keys, auth headers, URL credentials.

What is replaced by `MARK`:
- the values of the environment variables registered as holding keys (every configured
  `api_key_env`: the endpoint clients and `load_config` register them), and the user:password
  of every registered endpoint URL;
- the value of an Authorization-like header or field (Authorization, Proxy-Authorization,
  X-Api-Key, api-key, api_key), in `Name: value`, `"name": "value"` and `name=value` forms, and
  any `Bearer <token>`;
- the user information of a URL (`https://user:pass@host` -> `https://[REDACTED]@host`).

The points where text leaves call `redact` (error strings of the backends, stage summaries and
error rows, exceptions raised out of stages, artifacts); `install_log_redaction` makes every log
record of the process redacted as it is created, whatever handler (console, Prefect API, file)
writes it; `redacted_output` does the same for what the CLI prints.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

MARK = "[REDACTED]"
MIN_SECRET_CHARS = 4  # shorter values are no keys, and replacing them would garble every text

_key_variables: set[str] = set()
_url_secrets: set[str] = set()

_HEADER = re.compile(
    r"""(?ix)
    \b(proxy-authorization|authorization|x-api-key|api-key|api_key|apikey)
    (["']?\s*[:=]\s*["']?)                          # ': ', '": "', '=' ...
    (?!(?:(?:bearer|basic|token)\s+)?\[REDACTED\])    # not done already (redact is idempotent)
    (?:(?:bearer|basic|token)\s+)?[^\s"',;&}\]]+       # the value, with its scheme word if any
    """
)
_BEARER = re.compile(r"(?i)\bbearer\s+(?!\[REDACTED\])[A-Za-z0-9._~+/=-]+")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@")


def register_key_variable(name: str | None) -> None:
    """Redact from now on the value of environment variable `name` (a configured api_key_env)."""
    if name:
        _key_variables.add(name)


def register_url(url: str | None) -> None:
    """Redact from now on the password (and user) that `url` carries, wherever it shows up."""
    if not url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    for value in (parts.password, parts.username):
        if value:
            _url_secrets.update({value, unquote(value)})


def _secrets() -> list[str]:
    values = {os.environ.get(name) or "" for name in _key_variables} | _url_secrets
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every secret this module knows of, and every credential-looking value, replaced."""
    if not text:
        return text
    text = _HEADER.sub(rf"\1\2{MARK}", text)
    text = _URL_USERINFO.sub(rf"\1{MARK}@", text)
    text = _BEARER.sub(f"Bearer {MARK}", text)
    for secret in _secrets():
        text = text.replace(secret, MARK)
    return text


def redact_value(value: Any) -> Any:
    """`value` with `redact` applied to every string inside it (dicts, lists, tuples, keys too)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


# --- log records ----------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and its traceback text) redacted; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if getattr(record, "_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: keep the raw message, redacted
        message = str(record.msg)
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._redacted = True
    return record


_installed = False


def install_log_redaction() -> None:
    """Make every log record this process creates redacted at creation (idempotent).

    A record factory, not a handler filter, so records of any logger reach any handler (the
    console, Prefect's API handler, a file) already redacted, handlers added later included.
    """
    global _installed
    if _installed:
        return
    factory = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(factory(*args, **kwargs))

    logging.setLogRecordFactory(redacting_factory)
    _installed = True


# --- printed output -------------------------------------------------------------------------


class _RedactingStream(io.TextIOBase):
    """A text stream that redacts each write before passing it on."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


@contextmanager
def redacted_output() -> Iterator[None]:
    """sys.stdout and sys.stderr redacted (and log records too) while the block runs: the CLI's output."""
    install_log_redaction()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _RedactingStream(saved[0]), _RedactingStream(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
