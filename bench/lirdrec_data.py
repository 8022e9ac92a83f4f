"""Benchmark inputs read straight from MMRec-format files with NumPy (no pipeline stores)."""

from __future__ import annotations

import resource
import statistics
from pathlib import Path

import numpy as np

from model.data import RecData
from tests.support.synthetic import gaussian_features

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ML100K = SHARED / "bench" / "ml100k-mmrec"
AMAZON = SHARED / "data" / "amazon"


def read_inter(path: Path) -> tuple[int, int, list[np.ndarray]]:
    """(n_users, n_items, [train, valid, test]) from an MMRec .inter file (x_label 0/1/2)."""
    table = np.loadtxt(path, skiprows=1, usecols=(0, 1, 4), dtype=np.int64)
    splits = [table[table[:, 2] == label][:, :2] for label in (0, 1, 2)]
    return int(table[:, 0].max()) + 1, int(table[:, 1].max()) + 1, splits


def ml100k() -> RecData:
    """MovieLens-100k in MMRec format with its image (3,072-d) and text (384-d) features."""
    n_users, _, (train, valid, test) = read_inter(ML100K / "ml100k.inter")
    features = {"image": np.load(ML100K / "image_feat.npy"),
                "text": np.load(ML100K / "text_feat.npy")}
    return RecData(n_users, features["text"].shape[0], train, valid, test, features)


def amazon(name: str, *, synthetic_dims: dict[str, int] | None = None, seed: int = 0) -> RecData:
    """An Amazon dataset's exact MMRec split; N(0,1) features of the given sizes when asked."""
    n_users, n_items, (train, valid, test) = read_inter(AMAZON / name / f"{name}.inter")
    features = gaussian_features(n_items, synthetic_dims, seed) if synthetic_dims else {}
    return RecData(n_users, n_items, train, valid, test, features)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def describe(data: RecData) -> str:
    dims = ", ".join(f"{n} {x.shape[1]}-d" for n, x in data.features.items()) or "no features"
    return (f"{data.n_users} users, {data.n_items} items, train/valid/test "
            f"{len(data.train)}/{len(data.valid)}/{len(data.test)}, {dims}")


def mean_std(values: list[float], digits: int) -> str:
    """'mean ± sample std' of `values` (± 0 for one value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"
