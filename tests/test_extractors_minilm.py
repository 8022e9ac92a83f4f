"""The default embedder is the real all-MiniLM-L6-v2 (packaged weights offline) and reproduces text_feat.npy."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from extractors import hub
from extractors.config import ModalityConfig, SentenceTransformersEmbedConfig
from pipeline.extract import embed_store
from pipeline.schemas import ITEMS, embeddings
from pipeline.store import PartStore, StoreLayout, write_table

BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench" / "ml100k-mmrec"


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


def test_default_model_resolves_to_the_packaged_weights_offline(offline) -> None:
    from extractors.st_embedder import SentenceTransformerEmbedder

    assert hub.minilm_package_folder() is not None
    embedder = SentenceTransformerEmbedder(SentenceTransformersEmbedConfig())
    assert embedder.dim == 384 and embedder.max_seq_length == 256
    # the key every MiniLM store on disk is named by (see test_extractors_config.PINNED_KEYS)
    assert embedder.key == "sentence-transformers-all-MiniLM-L6-v2-758d6b632306"
    assert embedder.provenance["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    vectors, truncated = embedder.embed(["short", "word " * 300])
    assert vectors.shape == (2, 384) and truncated == [False, True]
    prefixed = SentenceTransformerEmbedder(SentenceTransformersEmbedConfig(instruction="query: "))
    assert prefixed.key != embedder.key
    first = prefixed.embed(["a red dress"]).vectors[0]
    second = embedder.embed(["query: a red dress"]).vectors[0]
    np.testing.assert_allclose(first, second, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not BENCH.is_dir(), reason=f"{BENCH} not present")
def test_movielens_item_texts_reproduce_text_feat(tmp_path: Path, offline) -> None:
    with open(BENCH / "item_text.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    items = pa.Table.from_pylist(
        [
            {
                "item_id": row["itemID"],
                "title": None,
                "text": row["text"],
                "image_path": None,
                "image_sha256": None,
            }
            for row in rows
        ],
        ITEMS,
    )
    write_table(StoreLayout(tmp_path).items, items, ITEMS)
    summary = embed_store(
        SentenceTransformersEmbedConfig(),
        {"text": ModalityConfig(source="text")},
        tmp_path,
        progress=False,
    )
    assert summary.computed == len(rows) == 1682 and summary.failed == 0
    assert summary.truncated == 23  # SPLIT.md: 23 strings exceed MiniLM's 256 word pieces
    key = summary.per_modality["text"]["key"]
    stored = PartStore(StoreLayout(tmp_path).embeddings("text", key), embeddings(384)).read()
    order = np.array([int(item_id) for item_id in stored.column("item_id").to_pylist()])
    vectors = np.asarray(stored.column("vector").to_pylist(), dtype=np.float32)  # (1682, 384)
    reference = np.load(BENCH / "text_feat.npy")[order]  # row = itemID
    cosine = (
        (vectors * reference).sum(1)
        / np.linalg.norm(vectors, axis=1)
        / np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() > 0.9999, f"worst item {order[cosine.argmin()]}: cosine {cosine.min()}"
