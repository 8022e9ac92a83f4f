"""Prefect orchestration: the only package that imports Prefect (nothing imports it)."""
