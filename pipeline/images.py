"""Item images: sha256 of their bytes, and URL downloads into the store's image cache (once each)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from extractors.images import MAX_IMAGE_BYTES, ImageFileError, open_image_file
from model.run import write_atomically

_CHUNK = 1 << 20
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}  # worth another try; other 4xx are final


def sha256_file(path: Path, max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """Hex sha256 of an image file's bytes; ImageFileError (an OSError) for a FIFO, device,
    folder or a file over `max_bytes` (checked again while reading: a file may grow)."""
    digest = hashlib.sha256()
    size = 0
    with open_image_file(path, max_bytes) as handle:
        while chunk := handle.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ImageFileError(
                    "too large", f"more than the image file limit {max_bytes} bytes: {path}"
                )
            digest.update(chunk)
    return digest.hexdigest()


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def cache_path(cache_dir: Path, url: str) -> Path:
    """Where `url`'s bytes are kept: named by the URL's sha256, so each URL is fetched once."""
    return Path(cache_dir) / hashlib.sha256(url.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Fetched:
    """One URL's outcome: the cached file and its sha256, or why there is none."""

    url: str
    path: Path | None
    sha256: str | None
    error: str | None = None  # short and stable ("HTTP 404"), so failures group into counted drops
    detail: str = ""
    from_cache: bool = False


class _Empty(Exception):
    """The server answered with no bytes."""


class _TooLarge(Exception):
    pass


def download_images(
    urls: Iterable[str],
    cache_dir: Path,
    *,
    concurrency: int = 8,
    retries: int = 3,
    timeout_s: float = 30.0,
    max_bytes: int = 20 * 2**20,
    backoff_s: float = 0.5,
    progress: bool = False,
) -> dict[str, Fetched]:
    """Fetch each distinct URL into `cache_dir` (skipping those already there); never raises per URL.

    At most `concurrency` requests run at once; connection errors and 408/429/5xx are retried
    `retries` times with growing waits; an answer over `max_bytes` is refused. Files are written
    under a temp name and renamed, so an interrupted download never looks cached.
    """
    import httpx  # only runs that download need it

    distinct = list(dict.fromkeys(urls))
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Fetched] = {}
    todo = []
    for url in distinct:
        path = cache_path(cache_dir, url)
        if path.is_file():
            results[url] = Fetched(url, path, sha256_file(path), from_cache=True)
        else:
            todo.append(url)
    if not todo:
        return results
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with (
        httpx.Client(timeout=timeout_s, limits=limits, follow_redirects=True) as client,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        outcomes = pool.map(
            lambda url: _fetch(
                client, url, cache_path(cache_dir, url), retries, max_bytes, backoff_s
            ),
            todo,
        )
        if progress:
            from tqdm import tqdm

            outcomes = tqdm(outcomes, total=len(todo), desc="download images", unit="image")
        for fetched in outcomes:
            results[fetched.url] = fetched
    return results


def _fetch(client, url: str, path: Path, retries: int, max_bytes: int, backoff_s: float) -> Fetched:
    import httpx

    error, detail = "not tried", ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            with client.stream("GET", url) as response:
                if response.status_code != 200:
                    error, detail = f"HTTP {response.status_code}", response.reason_phrase
                    if response.status_code in _RETRY_STATUS:
                        continue
                    return Fetched(url, None, None, error)
                declared = int(response.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise _TooLarge(f"{declared} bytes declared")
                return _save(url, response.iter_bytes(_CHUNK), path, max_bytes)
        except _TooLarge as too_large:
            return Fetched(
                url, None, None, f"larger than max_bytes {max_bytes}", detail=str(too_large)
            )
        except httpx.HTTPError as http_error:
            error, detail = type(http_error).__name__, str(http_error)
            continue
    return Fetched(url, None, None, f"{error} after {retries + 1} tries", detail=detail)


def _save(url: str, chunks: Iterable[bytes], path: Path, max_bytes: int) -> Fetched:
    digest = hashlib.sha256()
    size = 0

    def stream(temporary: Path) -> None:
        nonlocal size
        with temporary.open("wb") as handle:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise _TooLarge(f"more than {max_bytes} bytes received")
                digest.update(chunk)
                handle.write(chunk)
        if size == 0:
            raise _Empty

    try:
        write_atomically(path, stream)
    except _Empty:
        return Fetched(url, None, None, "empty answer (0 bytes)")
    return Fetched(url, path, digest.hexdigest())
