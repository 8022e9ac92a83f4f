"""No configured key or URL password leaves the process: store files, printed output, logs, Prefect's API.

The local endpoint answers some requests with a 400 whose body echoes the request headers (the
Authorization header with the key among them), as some proxies do; the embedding endpoint's URL
carries a user and password. Caption and embed run from the CLI, then the whole pipeline as a
flow, then an embed flow whose endpoint refuses the dimension probe; every file, every printed
line and every log record, state message and artifact the Prefect API holds is searched.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from extractors.redact import MARK, redact, register_key_variable, register_url
from tests.support.catalog import make_catalog, write_config
from tests.support.endpoint import SECRET, FakeEndpoint

pytestmark = pytest.mark.slow

URL_USER, URL_PASSWORD = "embuser", "url-pass-4567"
BASIC = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()  # httpx sends this
SECRETS = (SECRET, URL_PASSWORD, BASIC)


def _leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [secret for secret in SECRETS if secret.encode() in data]


def _config(root: Path, endpoint: FakeEndpoint) -> Path:
    catalog = make_catalog(root / "catalog", n_items=18, n_users=16)
    path = write_config(root, catalog, name="secret")
    port = endpoint.server.server_address[1]
    text = path.read_text()
    text = text.replace(
        '[caption]\nbackend = "descriptor"\n',
        f"""[caption]
backend = "openai"
model = "served-vlm"
base_url = "{endpoint.url}"
api_key_env = "TEST_ENDPOINT_KEY"
concurrency = 1
max_retries = 1
retry_backoff_s = 0.01
""",
    )
    text = text.replace(
        "[embed]\nbatch_size = 16\n",
        f"""[embed]
backend = "openai"
model = "served-embedder"
base_url = "http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{port}/v1"
api_key_env = "TEST_ENDPOINT_KEY"
batch_size = 4
concurrency = 1
max_retries = 1
retry_backoff_s = 0.01
""",
    )
    assert "openai" in text and URL_PASSWORD in text
    path.write_text(text)
    return path


def _echo_some(endpoint: FakeEndpoint):
    """Every third caption request, and every embedding request with a '7' in a text, echo the headers."""

    def echo(path: str, body: dict) -> bool:
        if path.endswith("chat/completions"):
            return len(endpoint.requests) % 3 == 0
        return any("7" in text for text in body.get("input", []))

    return echo


def _store_texts(store: Path):
    """(path, bytes) for every file under the store, plus each Parquet file's decoded rows and metadata."""
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        yield path, path.read_bytes()
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            yield path, (str(table.to_pylist()) + str(table.schema.metadata)).encode()


def _api_texts(flow_run_ids: list) -> list[tuple[str, str]]:
    """(what, text) of every log, state message (flow and task runs) and artifact of the flow runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    texts = []
    runs = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
    with get_client(sync_client=True) as client:
        for flow_run_id in flow_run_ids:
            for state in client.read_flow_run_states(flow_run_id):
                texts.append(("flow run state", f"{state.name}: {state.message}"))
        for task_run in client.read_task_runs(flow_run_filter=runs):
            texts.append((f"task {task_run.name} state", f"{task_run.state.message}"))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
        texts += [("log", log.message) for log in logs]
        for artifact in client.read_artifacts(flow_run_filter=runs):
            texts.append((f"artifact {artifact.key}", f"{artifact.description} {artifact.data}"))
    return texts


def _database_files() -> list[Path]:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    folder = Path(url.split(":///", 1)[1]).parent
    return [path for path in folder.rglob("*") if path.is_file()]


def test_redact_replaces_keys_headers_and_url_credentials(monkeypatch) -> None:
    monkeypatch.setenv("REDACT_TEST_KEY", "key-value-42")
    register_key_variable("REDACT_TEST_KEY")
    register_url("https://alice:s3cret-pw@example.org/v1")
    cases = {
        "sent key-value-42 twice: key-value-42": f"sent {MARK} twice: {MARK}",
        '{"Authorization": "Bearer abc.def"}': f'{{"Authorization": "{MARK}"}}',
        "'x-api-key': 'zzz9'": f"'x-api-key': '{MARK}'",
        "api-key=qqq&page=2": f"api-key={MARK}&page=2",
        "Proxy-Authorization: Basic dXNlcjpw": f"Proxy-Authorization: {MARK}",
        "token Bearer eyJhbGciOi.x": f"token Bearer {MARK}",
        "GET https://bob:pw@host/x failed": f"GET https://{MARK}@host/x failed",
        "the password s3cret-pw alone": f"the password {MARK} alone",
        "api_key_env = REDACT_TEST_KEY": "api_key_env = REDACT_TEST_KEY",  # the name stays
    }
    for text, expected in cases.items():
        assert redact(text) == expected
        assert redact(expected) == expected  # idempotent


def test_no_key_in_store_output_logs_or_prefect_api(
    prefect_api, endpoint: FakeEndpoint, tmp_path: Path, capfd, caplog
) -> None:
    from flows.dag import embed_flow, extract_and_train
    from pipeline.__main__ import main

    config = _config(tmp_path, endpoint)
    endpoint.echo = _echo_some(endpoint)
    with caplog.at_level(logging.DEBUG):
        for stage in ("ingest", "caption", "embed"):
            assert main([stage, "--config", str(config)]) == 0
        cli_out = capfd.readouterr()
        assert "HTTP 400" in cli_out.out and MARK in cli_out.out  # the error lines, redacted

        flow = extract_and_train(str(config), return_state=True)
        assert flow.is_completed(), flow
        # an embed flow whose endpoint refuses the dimension probe: the task fails, naming the URL
        endpoint.echo = lambda path, body: path.endswith("embeddings")
        failed = embed_flow(str(config), force=True, return_state=True)
        assert failed.is_failed()
    flow_out = capfd.readouterr()

    store = tmp_path / "store-secret"
    error_rows = [
        row["error"]
        for part in store.glob("features/**/part-*.parquet")
        for row in pq.read_table(part).to_pylist()
        if row["error"]
    ]
    assert error_rows and all(MARK in error for error in error_rows), error_rows
    leaked = [str(path) for path, data in _store_texts(store) if _leaks(data)]
    assert not leaked, leaked

    assert not _leaks(cli_out.out + cli_out.err + flow_out.out + flow_out.err)
    assert not _leaks(caplog.text)
    api = _api_texts([flow.state_details.flow_run_id, failed.state_details.flow_run_id])
    assert not [what for what, text in api if _leaks(text)]
    failures = [text for what, text in api if what.startswith("task embed") and "HTTP 400" in text]
    assert failures and MARK in failures[0], api
    assert any(MARK in text for what, text in api if what == "log")
    assert not [str(path) for path in _database_files() if _leaks(path.read_bytes())]
