"""LIRDRec at large batches: test Recall/NDCG@20, the best epoch and the wall time to it, per batch rule.

The reference settings (d 64, 2 UI layers, image 0.1 / text 0.9, reg 1e-3, decay 0.9, lr 1e-4 at
batch 2048, knn_k 10, patience 20) on ../shared/bench/ml100k-mmrec (default) or on Amazon Baby's
exact split with the synthetic 4,096-d + 384-d features of bench/bench_train_speed.py
(`--dataset baby`), at each `--batches` size, each `--rules` learning-rate rule (lr_scaling:
none | linear | sqrt, relative to batch 2048; `--warmup` steps of linear warmup) and each
`--seeds` seed. The test figures are at the best VALID epoch; choosing a rule reads the valid
column, never test. "to best" is the wall time from the start of training to the end of the best
epoch (build excluded: it is the same at every batch). Run folders live under
artifacts/bench/large-batch/ and resume. Usage:

    nice -n 5 python bench/bench_large_batch.py --batches 32768 --rules none,linear,sqrt --seeds 999
    nice -n 5 python bench/bench_large_batch.py --batches 2048,8192,32768,65536 --rules linear
    nice -n 5 python bench/bench_large_batch.py --dataset baby --batches 2048,32768 --rules linear \\
        --seeds 999 --max-epochs 60
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_reference import machine_line  # noqa: E402
from bench.lirdrec_data import ROOT, amazon, mean_std, ml100k  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.train import train  # noqa: E402

SHOWN = ("recall@20", "ndcg@20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["ml100k", "baby"], default="ml100k")
    parser.add_argument("--batches", default="2048,8192,32768,65536")
    parser.add_argument("--rules", default="linear", help="lr_scaling values, comma-separated")
    parser.add_argument("--warmup", type=int, default=0, help="warmup_steps")
    parser.add_argument("--seeds", default="999,1000,1001")
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="train.compile (the run folder says which when not auto)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "large-batch")
    args = parser.parse_args()
    data = ml100k() if args.dataset == "ml100k" else \
        amazon("baby", synthetic_dims={"image": 4096, "text": 384}, seed=0)
    print(f"{machine_line()}; {args.dataset}: {len(data.train)} train pairs", flush=True)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        for rule in args.rules.split(","):
            if batch == TrainConfig.lr_reference_batch and rule != args.rules.split(",")[0]:
                continue  # every rule is the reference learning rate at the reference batch
            for seed in [int(s) for s in args.seeds.split(",")]:
                rows.append(run_one(args, data, batch, rule, seed))
    print_table(rows)


def run_one(args, data, batch: int, rule: str, seed: int) -> dict:
    config = TrainConfig(model="lirdrec", mm_weights={"image": 0.1, "text": 0.9},
                         feature_dtype="float32", batch_size=batch, lr_scaling=rule,
                         warmup_steps=args.warmup, seed=seed, epochs=args.max_epochs,
                         compile=args.compile)
    compiled = "" if args.compile == "auto" else f"-compile-{args.compile}"
    run_dir = args.out / args.dataset / f"b{batch}-{rule}-w{args.warmup}-seed{seed}{compiled}"
    metrics = train(config, data, run_dir, log=lambda line: print(line, flush=True)).metrics
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    to_best = sum(line["train_seconds"] + line["eval_seconds"] for line in history
                  if line["epoch"] <= metrics["best_epoch"])
    row = {"batch": batch, "rule": rule, "seed": seed, "best_epoch": metrics["best_epoch"],
           "epochs_run": metrics["epochs_run"], "seconds_to_best": round(to_best, 1),
           "valid_recall@20": metrics["valid"]["recall@20"],
           **{name: metrics["test"][name] for name in SHOWN}}
    print("RESULT " + json.dumps(row), flush=True)
    return row


def print_table(rows: list[dict]) -> None:
    print("\n| batch | lr rule | n | valid R@20 | test R@20 | test N@20 | best epoch | to best (s) |")
    print("|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["batch"], row["rule"]), []).append(row)
    for (batch, rule), group in groups.items():
        cells = [mean_std([r[k] for r in group], 4) for k in ("valid_recall@20", *SHOWN)]
        cells += [mean_std([r["best_epoch"] for r in group], 0),
                  mean_std([r["seconds_to_best"] for r in group], 0)]
        print(f"| {batch} | {rule} | {len(group)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
