"""A local OpenAI-compatible endpoint for tests: chat completions and embeddings that misbehave on request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SECRET = "sk-test-secret-123"


class FakeEndpoint:
    """Answers chat/completions and embeddings; `plan` holds the next answers' kinds, then 'ok'."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        # requests for which the answer is a 400 whose body echoes the request's headers (the key
        # among them), as some proxies do: (path, body) -> whether to echo
        self.echo: Callable[[str, dict], bool] = lambda path, body: False
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
                    if endpoint.echo(self.path, body):
                        action = "echo"
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
        elif action == "echo":
            headers = dict(handler.headers)
            self._send(
                handler,
                400,
                json.dumps({"error": "bad request", "request_headers": headers}).encode(),
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


def serve_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEndpoint]:
    """A running FakeEndpoint, with SECRET in the environment variable TEST_ENDPOINT_KEY."""
    monkeypatch.setenv("TEST_ENDPOINT_KEY", SECRET)
    fake = FakeEndpoint()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


