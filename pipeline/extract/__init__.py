"""Stage 1: caption item images and embed captions and item texts into the feature stores, incrementally."""

from pipeline.extract.caption import caption_store, image_roots
from pipeline.extract.common import StageSummary, sha256_text, shard_items
from pipeline.extract.embed import embed_store

__all__ = [
    "StageSummary",
    "caption_store",
    "embed_store",
    "image_roots",
    "sha256_text",
    "shard_items",
]
