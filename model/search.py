"""Grid search over TrainConfig fields, chosen by VALID Recall@20 (never test), within a budget."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model.config import SELECTION_METRIC, SearchConfig, TrainConfig
from model.data import RecData
from model.run import write_json
from model.train import train


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """One row per trained grid point (overrides, best epoch, valid and test metrics), and the
    index of the row with the best VALID Recall@20."""

    rows: list[dict[str, Any]]
    best_index: int

    @property
    def best(self) -> dict[str, Any]:
        return self.rows[self.best_index]


def grid_points(search: SearchConfig) -> list[dict[str, Any]]:
    """The grid's points in grid order; a seeded sample of max_configs when the grid is larger."""
    names = list(search.grid)
    points = [dict(zip(names, values, strict=True))
              for values in itertools.product(*(search.grid[name] for name in names))]
    if len(points) > search.max_configs:
        keep = np.random.default_rng(search.sample_seed).choice(len(points), search.max_configs,
                                                                replace=False)
        points = [points[i] for i in sorted(keep)]
    return points


def run_search(base: TrainConfig, search: SearchConfig, data: RecData, run_root: Path, *,
               resume: bool = True, log: Callable[[str], None] = print) -> SearchResult:
    """Train every selected grid point into run_root/<point>/, write run_root/search.json."""
    return run_points(base, grid_points(search), data, run_root, max_epochs=search.max_epochs,
                      resume=resume, log=log)


def run_points(base: TrainConfig, points: list[dict[str, Any]], data: RecData, run_root: Path,
               *, max_epochs: int = 0, resume: bool = True,
               log: Callable[[str], None] = print) -> SearchResult:
    """Train `base` with each point's overrides (at most max_epochs each, 0 = base.epochs),
    select by valid Recall@20, write run_root/search.json."""
    run_root = Path(run_root)
    epochs = min(base.epochs, max_epochs) if max_epochs else base.epochs
    rows = []
    for number, overrides in enumerate(points, start=1):
        config = dataclasses.replace(base, **overrides, epochs=epochs)
        run_dir = run_root / _folder_name(number, overrides)
        log(f"search {number}/{len(points)}: {overrides} -> {run_dir}")
        result = train(config, data, run_dir, resume=resume, log=log)
        rows.append({"overrides": overrides, "run_dir": str(run_dir),
                     "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                     "valid": result.metrics["valid"], "test": result.metrics["test"],
                     "test_cold": result.metrics["test_cold"]})
    scores = [row["valid"][SELECTION_METRIC] for row in rows]
    best_index = int(np.argmax(scores))  # ties go to the earlier point
    write_json(run_root / "search.json", {"selection": f"valid {SELECTION_METRIC}",
                                          "best_index": best_index, "rows": rows})
    return SearchResult(rows=rows, best_index=best_index)


def format_table(result: SearchResult) -> str:
    """A markdown table of the search, the selected row marked."""
    lines = ["| # | overrides | best epoch | valid R@20 | valid N@20 | test R@20 | test N@20 |",
             "|---|---|---|---|---|---|---|"]
    for index, row in enumerate(result.rows):
        mark = " (selected)" if index == result.best_index else ""
        lines.append(f"| {index + 1}{mark} | {json.dumps(row['overrides'])} | {row['best_epoch']} "
                     f"| {row['valid']['recall@20']:.4f} | {row['valid']['ndcg@20']:.4f} "
                     f"| {row['test']['recall@20']:.4f} | {row['test']['ndcg@20']:.4f} |")
    return "\n".join(lines)


def _folder_name(number: int, overrides: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    return f"config-{number:02d}-{digest}"
