"""Dataset adapters: each turns one source format into a SourceData (items + interactions + drops)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.datasets.common import DatasetError, Drop, ImportedFeature, SourceData
from pipeline.datasets.generic import load_generic
from pipeline.datasets.mmrec import load_mmrec
from pipeline.datasets.movielens import load_movielens

if TYPE_CHECKING:
    from pipeline.config import Dataset

__all__ = ["DatasetError", "Drop", "ImportedFeature", "SourceData", "load_source"]


def load_source(dataset: Dataset, image_cache: Path, progress: bool = False) -> SourceData:
    """Run the adapter that `dataset.kind` names."""
    if dataset.kind == "movielens":
        return load_movielens(dataset.path, min_rating=dataset.min_rating)
    if dataset.kind == "mmrec":
        return load_mmrec(dataset.path, name=dataset.name, features=dataset.features)
    if dataset.kind == "generic":
        return load_generic(dataset, image_cache, progress=progress)
    raise DatasetError(f"unknown dataset kind {dataset.kind!r}")
