"""OpenAI-compatible captioner and embedder against a real HTTP server on 127.0.0.1 that misbehaves."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from extractors.config import OpenAICaptionConfig, OpenAIEmbedConfig
from extractors.openai_backends import OpenAICaptioner, OpenAIEmbedder
from extractors.openai_http import EndpointError
from tests.support.endpoint import SECRET, FakeEndpoint


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
