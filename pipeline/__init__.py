"""Plain functions of the pipeline: config, Parquet stores, ingest, features, ranking, reports (no Prefect)."""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # huge pages for torch's buffers: model/__init__.py
