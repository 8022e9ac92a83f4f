"""Shared fixtures: a tiny generic catalog with its config, planted synthetic data, a Prefect API."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tests.support.catalog import make_catalog, write_config
from tests.support.endpoint import serve_endpoint
from tests.support.synthetic import planted_data


@pytest.fixture(scope="module")
def tiny_catalog(tmp_path_factory):
    """(root, catalog folder, config path): a tiny generic catalog made once per test module."""
    root = tmp_path_factory.mktemp("catalog")
    catalog = make_catalog(root / "catalog")
    return root, catalog, write_config(root, catalog)


@pytest.fixture
def planted():
    """Seeded synthetic RecData with planted user-item structure and two feature modalities."""
    return planted_data()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A temporary Prefect server and database for the session's flow runs."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def endpoint(monkeypatch):
    """A local OpenAI-compatible endpoint (tests/support/endpoint.py); its key is in TEST_ENDPOINT_KEY."""
    yield from serve_endpoint(monkeypatch)
