"""Protocol check: BPR-MF and LightGCN on MMRec's exact Amazon Baby split vs MMRec's published numbers.

MMRec's settings: d 64, lr 1e-3, batch 2048, patience 20, seed 999, up to 1000 epochs; its grids
are BPR reg_weight {1e-1 .. 1e-5} and LightGCN n_layers {1..4} x reg_weight {1e-2 .. 1e-6}. The
grid is searched here as categorical ranges (default: MMRec's full grid; or the subset given with
--grid) by pipeline.search, --max-configs seeded TPE trials without pruning (each trained as MMRec
does, to early stopping), chosen by VALID Recall@20; the selected config's
test Recall@20 / NDCG@20 are compared with the published BPR 0.0575 / 0.0249 and LightGCN
0.0754 / 0.0328 (target: within 5% relative). --seeds retrains the selected config at more seeds
and compares their mean too (one seed's spread is of the order of the gap being tested). Run
folders under artifacts/bench/baby/ resume.

    nice -n 5 python bench/bench_baselines_baby.py --model bpr --max-configs 5
    nice -n 5 python bench/bench_baselines_baby.py --model lightgcn \
        --grid '{"n_ui_layers": [2, 3], "reg_weight": [1e-4]}' --seeds 1000,1001
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lirdrec_data import ROOT, amazon, describe  # noqa: E402
from model.config import SearchConfig, SearchParam, TrainConfig  # noqa: E402
from model.train import train  # noqa: E402
from pipeline.search import format_table, run_search  # noqa: E402

PUBLISHED = {"bpr": (0.0575, 0.0249), "lightgcn": (0.0754, 0.0328)}  # test R@20, N@20
MMREC_GRIDS = {
    "bpr": {"reg_weight": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]},
    "lightgcn": {"n_ui_layers": [1, 2, 3, 4], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(PUBLISHED), required=True)
    parser.add_argument("--grid", type=json.loads, default=None,
                        help="JSON {field: [values]}; default: MMRec's grid for the model")
    parser.add_argument("--max-configs", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seeds", default="", help="extra seeds for the selected config, e.g. 1000,1001")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "baby")
    args = parser.parse_args()
    data = amazon("baby")
    print(f"baby: {describe(data)}")
    base = TrainConfig(model=args.model, embedding_size=64, learning_rate=1e-3, batch_size=2048,
                       patience=20, seed=999, num_threads=args.threads)
    grid = args.grid or MMREC_GRIDS[args.model]
    search = SearchConfig(space={name: SearchParam(kind="categorical", choices=values)
                                 for name, values in grid.items()},
                          n_trials=args.max_configs, max_epochs=args.max_epochs, prune=False)
    result = run_search(base, search, data, args.out / args.model,
                        log=lambda line: print(line, flush=True))
    print(format_table(result))
    report(args.model, f"selected {result.best['params']} (best epoch {result.best['best_epoch']})",
           result.best["test"]["recall@20"], result.best["test"]["ndcg@20"])
    if not args.seeds:
        return
    selected = dataclasses.replace(base, **result.best["params"])
    recalls, ndcgs = [result.best["test"]["recall@20"]], [result.best["test"]["ndcg@20"]]
    for seed in [int(s) for s in args.seeds.split(",")]:
        metrics = train(dataclasses.replace(selected, seed=seed), data,
                        args.out / f"{args.model}-seeds" / f"seed{seed}",
                        log=lambda line: print(line, flush=True)).metrics
        recalls.append(metrics["test"]["recall@20"])
        ndcgs.append(metrics["test"]["ndcg@20"])
        report(args.model, f"seed {seed}", recalls[-1], ndcgs[-1])
    report(args.model, f"mean of {len(recalls)} seeds (std R@20 {statistics.stdev(recalls):.4f}, "
           f"N@20 {statistics.stdev(ndcgs):.4f})", statistics.mean(recalls), statistics.mean(ndcgs))


def report(model: str, what: str, recall: float, ndcg: float) -> None:
    paper_recall, paper_ndcg = PUBLISHED[model]
    print(f"PROTOCOL {model} {what}: test R@20 {recall:.4f} "
          f"({(recall / paper_recall - 1) * 100:+.1f}% vs MMRec {paper_recall}), N@20 {ndcg:.4f} "
          f"({(ndcg / paper_ndcg - 1) * 100:+.1f}% vs MMRec {paper_ndcg})", flush=True)


if __name__ == "__main__":
    main()
