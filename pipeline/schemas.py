"""Every Parquet schema the pipeline writes, declared once; provenance travels in schema metadata."""

from __future__ import annotations

import json

import pyarrow as pa

PROVENANCE_KEY = b"provenance"

# catalog/items.parquet: one row per item; adapters may add extra columns after these.
ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),
        pa.field("image_path", pa.string()),  # absolute path, or null when the item has no image
        pa.field("image_sha256", pa.string()),  # of the image file's bytes; null with image_path
    ]
)

# catalog/items.parquet also holds, after the ITEMS columns and before the adapter's extras:
# True for the items held out entirely as cold start ([split] cold_item_share).
COLD_HOLDOUT = pa.field("cold_holdout", pa.bool_(), nullable=False)

# The interactions a dataset adapter hands to ingest; `split` is null unless the source has one.
SOURCE_INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64()),
        pa.field("rating", pa.float32()),
        pa.field("split", pa.int8()),
    ]
)

# catalog/interactions.parquet: one row per (user, item) event, with its split.
SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST = 0, 1, 2
INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64()),  # seconds since the epoch, null when unknown
        pa.field("rating", pa.float32()),  # null when the source has none
        pa.field("split", pa.int8(), nullable=False),  # 0 train, 1 valid, 2 test (MMRec's x_label)
    ]
)

# features/captions/<captioner_key>/part-*.parquet
CAPTIONS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("image_sha256", pa.string()),
        pa.field("caption", pa.string()),  # null when captioning failed
        pa.field("error", pa.string()),  # null on success; the reason otherwise
    ]
)


def embeddings(dim: int) -> pa.Schema:
    """features/embeddings/<modality>/<embedder_key>/part-*.parquet for vectors of `dim` floats."""
    if dim <= 0:
        raise ValueError(f"embedding dim must be positive, got {dim}")
    return pa.schema(
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("input_sha256", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),  # null when the input was missing
            pa.field("truncated", pa.bool_()),  # the input was cut to the model's max length
            pa.field("error", pa.string()),
        ]
    )


def embedding_dim(schema: pa.Schema) -> int:
    """The vector width of an embeddings schema read from a file."""
    vector_type = schema.field("vector").type
    if not pa.types.is_fixed_size_list(vector_type):
        raise ValueError(f"column 'vector' must be fixed_size_list<float32>, got {vector_type}")
    return vector_type.list_size


# runs/<run_id>/user_ids.parquet and item_ids.parquet: row i of the run's vectors belongs to id i.
IDS = pa.schema([pa.field("id", pa.string(), nullable=False)])

# runs/<run_id>/candidates.parquet: each user's top-K unseen items.
CANDIDATES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),  # 1 = best
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
)

# runs/<run_id>/per_user.parquet: every evaluated user's metric@k at the best-valid epoch, long
# layout (one row per split, user, metric and k; the means are metrics.json's). Provenance: the
# run, its best epoch and data fingerprint. Read back with pipeline.per_user.read_per_user.
PER_USER_SPLITS = ("valid", "test", "test_warm", "test_cold")
PER_USER = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),  # one of PER_USER_SPLITS
        pa.field("user_index", pa.int64(), nullable=False),  # row of user_vectors / user_ids
        pa.field("user_id", pa.string(), nullable=False),  # user_ids.parquet's id of that row
        pa.field("metric", pa.string(), nullable=False),  # recall, ndcg, precision, map
        pa.field("k", pa.int32(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)


def with_provenance(schema: pa.Schema, provenance: dict) -> pa.Schema:
    """The schema with `provenance` (model id, revision, prompt, dim, code version...) as JSON metadata."""
    metadata = dict(schema.metadata or {})
    metadata[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
    return schema.with_metadata(metadata)


def provenance_of(schema: pa.Schema) -> dict:
    """The provenance dict stored in a schema's metadata ({} when there is none)."""
    raw = (schema.metadata or {}).get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}
