"""Protocol check: BPR-MF and LightGCN on MMRec's exact Amazon Baby split vs MMRec's published numbers.

MMRec's settings: d 64, lr 1e-3, batch 2048, patience 20, seed 999, up to 1000 epochs; its grids
are BPR reg_weight {1e-1 .. 1e-5} and LightGCN n_layers {1..4} x reg_weight {1e-2 .. 1e-6}. A
budgeted subset of each grid is trained (chosen by VALID Recall@20); the selected config's test
Recall@20 / NDCG@20 are compared with the published BPR 0.0575 / 0.0249 and LightGCN
0.0754 / 0.0328 (target: within 5% relative). Run folders under artifacts/bench/baby/ resume.

    nice -n 5 python bench/bench_baselines_baby.py --models bpr --max-configs 3
    nice -n 5 python bench/bench_baselines_baby.py --models lightgcn --max-configs 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lirdrec_data import ROOT, amazon, describe  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.search import format_table, run_points  # noqa: E402

PUBLISHED = {"bpr": (0.0575, 0.0249), "lightgcn": (0.0754, 0.0328)}  # test R@20, N@20
# Grid points in the order they are tried when the budget is small (most promising first).
GRIDS = {
    "bpr": {"reg_weight": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]},
    "lightgcn": {"n_ui_layers": [2, 3, 4, 1], "reg_weight": [1e-4, 1e-2, 1e-3, 1e-5, 1e-6]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bpr,lightgcn")
    parser.add_argument("--max-configs", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "baby")
    args = parser.parse_args()
    data = amazon("baby")
    print(f"baby: {describe(data)}")
    for model in args.models.split(","):
        base = TrainConfig(model=model, embedding_size=64, learning_rate=1e-3, batch_size=2048,
                           patience=20, seed=999)
        points = _first_points(GRIDS[model], args.max_configs)
        result = run_points(base, points, data, args.out / model, max_epochs=args.max_epochs,
                            log=lambda line: print(line, flush=True))
        print(format_table(result))
        recall, ndcg = result.best["test"]["recall@20"], result.best["test"]["ndcg@20"]
        paper_recall, paper_ndcg = PUBLISHED[model]
        print(f"PROTOCOL {model}: selected {result.best['overrides']}: test R@20 {recall:.4f} "
              f"({(recall / paper_recall - 1) * 100:+.1f}% vs MMRec {paper_recall}), N@20 "
              f"{ndcg:.4f} ({(ndcg / paper_ndcg - 1) * 100:+.1f}% vs MMRec {paper_ndcg})",
              flush=True)


def _first_points(grid: dict[str, list], count: int) -> list[dict]:
    """The first `count` points, varying the first-listed values of every field first."""
    names = list(grid)
    points: list[dict] = []
    depth = 1
    while len(points) < count and depth <= max(len(v) for v in grid.values()):
        for values in _product([grid[name][:depth] for name in names]):
            point = dict(zip(names, values, strict=True))
            if point not in points and len(points) < count:
                points.append(point)
        depth += 1
    return points


def _product(lists: list[list]) -> list[tuple]:
    result: list[tuple] = [()]
    for values in lists:
        result = [prefix + (value,) for prefix in result for value in values]
    return result


if __name__ == "__main__":
    main()
