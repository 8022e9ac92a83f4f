"""LIRDRec beside LightGCN, BPR-MF and most-popular on ../shared/bench/ml100k-mmrec, several seeds.

Reads ml100k.inter, image_feat.npy and text_feat.npy with NumPy. LIRDRec uses the reference
settings (d 64, 2 UI layers, image 0.1 / text 0.9, reg 1e-3, decay 0.9, lr 1e-4, knn_k 10, batch
2048, patience 20); the ID baselines MMRec's defaults (d 64, lr 1e-3, batch 2048, patience 20)
with reg_weight 1e-4 and LightGCN n_layers 2. Prints each run (test at the best-valid epoch) and
mean / std per model. Run folders live under artifacts/bench/ml100k/ and resume. Usage:

    nice -n 5 python bench/bench_model_ml100k.py --models lirdrec --seeds 999
    nice -n 5 python bench/bench_model_ml100k.py --models lirdrec,lightgcn,bpr,pop --seeds 999,1000,1001
    nice -n 5 python bench/bench_model_ml100k.py --models lirdrec --seeds 999 --feature-dtype bfloat16
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lirdrec_data import ROOT, mean_std, ml100k  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.train import train  # noqa: E402

SETTINGS = {
    "lirdrec": TrainConfig(model="lirdrec", mm_weights={"image": 0.1, "text": 0.9}),
    "lightgcn": TrainConfig(model="lightgcn", n_ui_layers=2, learning_rate=1e-3, reg_weight=1e-4),
    "bpr": TrainConfig(model="bpr", learning_rate=1e-3, reg_weight=1e-4),
    "pop": TrainConfig(model="pop"),
}
SHOWN = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lirdrec,lightgcn,bpr,pop")
    parser.add_argument("--seeds", default="999,1000,1001")
    parser.add_argument("--feature-dtype", choices=["auto", "float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "ml100k")
    args = parser.parse_args()
    data = ml100k()
    results: dict[str, list[dict]] = {}
    for model in args.models.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            config = dataclasses.replace(SETTINGS[model], seed=seed,
                                         feature_dtype=args.feature_dtype,
                                         num_threads=args.threads)
            suffix = "" if args.feature_dtype == "float32" else f"-{args.feature_dtype}"
            run_dir = args.out / f"{model}-seed{seed}{suffix}"
            metrics = train(config, data, run_dir, log=lambda line: print(line, flush=True)).metrics
            row = {name: metrics["test"][name] for name in SHOWN}
            row["best_epoch"] = metrics["best_epoch"]
            row["s_per_epoch"] = (metrics["seconds"]["train_per_epoch_median"] or 0.0) + \
                metrics["seconds"]["eval_per_epoch_median"]
            results.setdefault(model, []).append(row)
            print(f"RESULT {model} seed {seed}: " + "  ".join(
                f"{name} {row[name]:.4f}" for name in SHOWN)
                + f"  best_epoch {row['best_epoch']}  s/epoch {row['s_per_epoch']:.2f}"
                + f"  ({run_dir})", flush=True)
    print("\n| model | " + " | ".join(f"test {n}" for n in SHOWN) + " | best epoch | s/epoch |")
    print("|---|" + "---|" * (len(SHOWN) + 2))
    for model, rows in results.items():
        cells = [mean_std([row[name] for row in rows], 4) for name in SHOWN]
        cells += [mean_std([row["best_epoch"] for row in rows], 0),
                  mean_std([row["s_per_epoch"] for row in rows], 2)]
        print(f"| {model} (n={len(rows)}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
