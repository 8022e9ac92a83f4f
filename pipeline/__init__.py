"""Plain functions of the pipeline: config, Parquet stores, ingest, features, ranking, reports (no Prefect)."""
