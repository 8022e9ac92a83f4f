"""OpenAI-compatible captioner and embedder against a real HTTP server on 127.0.0.1 that misbehaves."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from extractors.config import OpenAICaptionConfig, OpenAIEmbedConfig
from extractors.openai_backends import OpenAICaptioner, OpenAIEmbedder
from extractors.openai_http import EndpointError

SECRET = "sk-test-secret-123"


class FakeEndpoint:
    """Answers chat/completions and embeddings; `plan` holds the next answers' kinds, then 'ok'."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    action = endpoint.plan.pop(0) if endpoint.plan else "ok"
                    endpoint.requests.append(
                        {
                            "path": self.path,
                            "auth": self.headers.get("Authorization"),
                            "body": body,
                            "action": action,
                        }
                    )
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                try:
                    endpoint.answer(self, action, body)
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a client that timed out has gone when the slow answer is written: nothing to report
        self.server.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, handler: BaseHTTPRequestHandler, action: str, body: dict) -> None:
        if action == "slow":
            time.sleep(1.0)
        elif action == "pause":
            time.sleep(0.3)
        if action in ("429", "500", "400"):
            self._send(
                handler,
                int(action),
                b'{"error": "nope"}',
                {"Retry-After": "0"} if action == "429" else {},
            )
        elif action == "garbage":
            self._send(handler, 200, b"<html>upstream exploded</html>")
        elif action == "wrong-shape":
            self._send(handler, 200, json.dumps({"result": "what"}).encode())
        elif handler.path.endswith("/chat/completions"):
            text = f"caption {len(self.requests)}"
            self._send(
                handler, 200, json.dumps({"choices": [{"message": {"content": text}}]}).encode()
            )
        else:
            vectors = [[float(len(text)), 1.0, -1.0, 0.5] for text in body["input"]]
            data = [{"index": i, "embedding": v} for i, v in reversed(list(enumerate(vectors)))]
            self._send(handler, 200, json.dumps({"data": data}).encode())

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict | None = None
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)


@pytest.fixture()
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEndpoint]:
    monkeypatch.setenv("TEST_ENDPOINT_KEY", SECRET)
    fake = FakeEndpoint()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _caption_config(endpoint: FakeEndpoint, **overrides) -> OpenAICaptionConfig:
    settings = dict(
        model="served-vlm",
        base_url=endpoint.url,
        api_key_env="TEST_ENDPOINT_KEY",
        concurrency=1,
        timeout=0.5,
        max_retries=2,
        retry_backoff_s=0.01,
    )
    return OpenAICaptionConfig(**{**settings, **overrides})


def _images(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (40 + i, 30), (i * 20, 100, 50)) for i in range(count)]


def test_captioner_retries_429_500_and_slow_answers(endpoint: FakeEndpoint) -> None:
    endpoint.plan = ["429", "500", "slow"]
    captioner = OpenAICaptioner(_caption_config(endpoint, max_retries=3))
    assert captioner.caption(_images(1)) == ["caption 4"]  # the 4th request succeeds
    assert [r["action"] for r in endpoint.requests] == ["429", "500", "slow", "ok"]
    request = endpoint.requests[-1]
    assert request["auth"] == f"Bearer {SECRET}"
    content = request["body"]["messages"][0]["content"]
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert request["body"]["temperature"] == 0


def test_garbage_fails_only_its_own_item_and_never_shows_the_key(
    endpoint: FakeEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.plan = ["ok", "garbage", "wrong-shape", "500", "500", "500"]
    captioner = OpenAICaptioner(_caption_config(endpoint))
    with caplog.at_level("DEBUG"):
        results = captioner.caption_each(_images(4))
    assert results[0] == ("caption 1", None)
    assert results[1][0] is None and "garbage answer (not JSON)" in results[1][1]
    assert results[2][0] is None and "no choices[0].message.content" in results[2][1]
    assert results[3][0] is None and "HTTP 500, 2 retries exhausted" in results[3][1]
    assert SECRET not in caplog.text and all(SECRET not in str(r) for r in results)
    with pytest.raises(EndpointError, match="1 of 1 images failed"):
        endpoint.plan = ["garbage"]
        captioner.caption(_images(1))


def test_client_errors_are_not_retried(endpoint: FakeEndpoint) -> None:
    endpoint.plan = ["400"]
    results = OpenAICaptioner(_caption_config(endpoint)).caption_each(_images(1))
    assert "HTTP 400" in results[0][1] and len(endpoint.requests) == 1


def test_concurrency_is_bounded(endpoint: FakeEndpoint) -> None:
    endpoint.plan = ["pause"] * 8
    captioner = OpenAICaptioner(_caption_config(endpoint, concurrency=3))
    started = time.perf_counter()
    assert len(captioner.caption(_images(8))) == 8
    assert endpoint.max_in_flight == 3
    assert time.perf_counter() - started < 8 * 0.3  # they did overlap


def test_key_ignores_endpoint_and_secret(endpoint: FakeEndpoint) -> None:
    one = OpenAICaptioner(_caption_config(endpoint))
    other = OpenAICaptioner(
        _caption_config(endpoint, base_url="http://127.0.0.1:9/v1", api_key_env=None)
    )
    assert one.key == other.key and one.key.startswith("openai-served-vlm-")
    assert one.key != OpenAICaptioner(_caption_config(endpoint, prompt="Other prompt")).key


def _embed_config(endpoint: FakeEndpoint, **overrides) -> OpenAIEmbedConfig:
    settings = dict(
        model="served-embedder",
        base_url=endpoint.url,
        api_key_env="TEST_ENDPOINT_KEY",
        batch_size=2,
        concurrency=2,
        timeout=0.5,
        max_retries=2,
        retry_backoff_s=0.01,
        instruction="doc: ",
        max_input_chars=12,
    )
    return OpenAIEmbedConfig(**{**settings, **overrides})


def test_embedder_orders_rows_batches_and_truncates(endpoint: FakeEndpoint) -> None:
    embedder = OpenAIEmbedder(_embed_config(endpoint))
    assert embedder.dim == 4  # from the probe request
    endpoint.plan = ["429", "slow"]
    vectors, truncated = embedder.embed(["a", "bb", "ccc", "a very long text indeed"])
    assert vectors.shape == (4, 4) and vectors.dtype == np.float32
    np.testing.assert_array_equal(
        vectors[:, 0], [6, 7, 8, 12]
    )  # "doc: " + text, cut to 12 characters
    assert truncated == [False, False, False, True]
    inputs = [r["body"]["input"] for r in endpoint.requests if r["action"] == "ok"][1:]
    assert sorted(map(tuple, inputs)) == [("doc: a", "doc: bb"), ("doc: ccc", "doc: a very ")]


def test_embedder_rejects_garbage(endpoint: FakeEndpoint) -> None:
    embedder = OpenAIEmbedder(_embed_config(endpoint, normalize=True))
    np.testing.assert_allclose(
        np.linalg.norm(embedder.embed(["x"]).vectors, axis=1), 1.0, rtol=1e-6
    )
    for action, message in (("garbage", "not JSON"), ("wrong-shape", "no data")):
        endpoint.plan = [action]
        with pytest.raises(EndpointError, match=message):
            embedder.embed(["x"])


def test_caption_stage_stores_garbage_as_error_row_and_retries_it(
    endpoint: FakeEndpoint, tmp_path
) -> None:
    import pyarrow as pa

    from pipeline.extract import caption_store
    from pipeline.schemas import CAPTIONS, ITEMS
    from pipeline.store import PartStore, StoreLayout, write_table

    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for index, image in enumerate(_images(3)):
        image.save(images / f"{index}.png")
        rows.append(
            {
                "item_id": f"item{index}",
                "title": None,
                "text": None,
                "image_path": str(images / f"{index}.png"),
                "image_sha256": None,
            }
        )
    write_table(StoreLayout(tmp_path / "store").items, pa.Table.from_pylist(rows, ITEMS), ITEMS)
    config = _caption_config(endpoint, batch_size=3)
    endpoint.plan = ["ok", "garbage", "ok"]
    first = caption_store(config, tmp_path / "store", [images], progress=False)
    assert (first.computed, first.failed) == (2, 1) and "garbage answer" in first.errors[0]
    second = caption_store(config, tmp_path / "store", [images], progress=False)
    assert (second.computed, second.failed, second.retried, second.skipped) == (1, 0, 1, 2)
    assert second.name == "openai:served-vlm" and SECRET not in str(first) + str(second)
    provenance = PartStore(StoreLayout(tmp_path / "store").captions(second.key), CAPTIONS).provenance()
    assert provenance["captioner_name"] == "openai:served-vlm"
    assert provenance["settings"]["api_key_env"] == "TEST_ENDPOINT_KEY"  # the name, never the key
    assert SECRET not in str(provenance)
