"""Protocol check: BPR-MF and LightGCN on MMRec's exact Amazon Baby split vs MMRec's published numbers.

MMRec's settings: d 64, lr 1e-3, batch 2048, patience 20, seed 999, up to 1000 epochs; its grids
are BPR reg_weight {1e-1 .. 1e-5} and LightGCN n_layers {1..4} x reg_weight {1e-2 .. 1e-6}. The
grid searched here (default: MMRec's full grid, cut to --max-configs by a seeded sample; or the
subset given with --grid) is a model.search run chosen by VALID Recall@20; the selected config's
test Recall@20 / NDCG@20 are compared with the published BPR 0.0575 / 0.0249 and LightGCN
0.0754 / 0.0328 (target: within 5% relative). Run folders under artifacts/bench/baby/ resume.

    nice -n 5 python bench/bench_baselines_baby.py --model bpr --max-configs 5
    nice -n 5 python bench/bench_baselines_baby.py --model lightgcn \
        --grid '{"n_ui_layers": [2, 3], "reg_weight": [1e-4]}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lirdrec_data import ROOT, amazon, describe  # noqa: E402
from model.config import SearchConfig, TrainConfig  # noqa: E402
from model.search import format_table, run_search  # noqa: E402

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
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "baby")
    args = parser.parse_args()
    data = amazon("baby")
    print(f"baby: {describe(data)}")
    base = TrainConfig(model=args.model, embedding_size=64, learning_rate=1e-3, batch_size=2048,
                       patience=20, seed=999, num_threads=args.threads)
    search = SearchConfig(grid=args.grid or MMREC_GRIDS[args.model],
                          max_configs=args.max_configs, max_epochs=args.max_epochs)
    result = run_search(base, search, data, args.out / args.model,
                        log=lambda line: print(line, flush=True))
    print(format_table(result))
    recall, ndcg = result.best["test"]["recall@20"], result.best["test"]["ndcg@20"]
    paper_recall, paper_ndcg = PUBLISHED[args.model]
    print(f"PROTOCOL {args.model}: selected {result.best['overrides']} (best epoch "
          f"{result.best['best_epoch']}): test R@20 {recall:.4f} "
          f"({(recall / paper_recall - 1) * 100:+.1f}% vs MMRec {paper_recall}), N@20 {ndcg:.4f} "
          f"({(ndcg / paper_ndcg - 1) * 100:+.1f}% vs MMRec {paper_ndcg})", flush=True)


if __name__ == "__main__":
    main()
