"""An embedding endpoint that cannot be reached while the embedder is built: one line naming it, at
the CLI and in the flow (never a traceback, never the key or a URL password)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from extractors.base import ModelLoadError
from extractors.config import OpenAIEmbedConfig
from extractors.redact import MARK
from tests.support.catalog import make_catalog, write_config
from tests.support.endpoint import SECRET

PASSWORD = "pw-9876-secret"


@pytest.fixture()
def closed_url(monkeypatch) -> str:
    """An endpoint URL (with a password in it) on a loopback port where nothing listens."""
    monkeypatch.setenv("TEST_ENDPOINT_KEY", SECRET)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://emb:{PASSWORD}@127.0.0.1:{port}/v1"


def _config(tmp_path: Path, url: str) -> Path:
    catalog = make_catalog(tmp_path / "catalog", n_items=8, n_users=6)
    path = write_config(tmp_path, catalog, name="unreachable")
    path.write_text(
        path.read_text().replace(
            "[embed]\nbatch_size = 16\n",
            f'[embed]\nbackend = "openai"\nbase_url = "{url}"\napi_key_env = "TEST_ENDPOINT_KEY"\n'
            "max_retries = 1\nretry_backoff_s = 0.01\ntimeout = 2.0\n",
        )
    )
    return path


def _check_line(message: str, url: str) -> None:
    shown = url.replace(f"emb:{PASSWORD}", MARK)
    assert f"the embedding endpoint {shown}" in message
    assert "did not answer the dimension probe" in message and "Start the server there" in message
    assert PASSWORD not in message and SECRET not in message and "\n" not in message.strip()


def test_the_probe_failure_is_a_model_load_error(closed_url: str) -> None:
    from extractors.openai_backends import OpenAIEmbedder

    config = OpenAIEmbedConfig(
        base_url=closed_url, api_key_env="TEST_ENDPOINT_KEY", max_retries=0, timeout=2.0
    )
    with pytest.raises(ModelLoadError) as raised:
        OpenAIEmbedder(config)
    _check_line(str(raised.value), closed_url)
    assert "connection failed" in str(raised.value)


def test_cli_prints_one_line(closed_url: str, tmp_path: Path, capsys) -> None:
    from pipeline.__main__ import main

    config = _config(tmp_path, closed_url)
    assert main(["ingest", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["embed", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: [embed] the embedding endpoint") and "Traceback" not in err
    _check_line(err, closed_url)


@pytest.mark.slow
def test_flow_task_fails_with_one_line(prefect_api, closed_url: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.dag import embed_flow, ingest_flow

    config = _config(tmp_path, closed_url)
    assert ingest_flow(str(config), return_state=True).is_completed()
    state = embed_flow(str(config), return_state=True)
    assert state.is_failed()
    runs = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        [task_run] = client.read_task_runs(flow_run_filter=runs)
    message = task_run.state.message
    assert "StageFailed: [embed] the embedding endpoint" in message
    _check_line(message, closed_url)
