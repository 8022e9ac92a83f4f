"""EASE (l2 chosen on valid) on ml100k-mmrec and Amazon Baby's exact split; content kNN on ml100k.

Each run is model.train's: EASE scores every l2 of `ease_l2_grid` on VALID Recall@20 while it is
built, keeps the best, and test is scored once with it; content kNN (no learning) is evaluated
once with equal modality weights and with the reference's image 0.1 / text 0.9. Prints each l2's
valid R@20, the chosen l2, test R@20 / N@20 and the wall time of each run (data loading
excluded), beside the CPU model. Run folders under artifacts/bench/ease/ (rebuilt each time:
nothing is trained, so nothing resumes). Usage:

    nice -n 10 python bench/bench_ease.py                       # ease on both, content_knn on ml100k
    nice -n 10 python bench/bench_ease.py --datasets ml100k --models ease --grid 100,300,1000
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lirdrec_data import ROOT, amazon, describe, ml100k, peak_rss_gb  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.train import train  # noqa: E402

LOADERS = {"ml100k": ml100k, "baby": lambda: amazon("baby")}
CONTENT_WEIGHTS = {"equal": {}, "image0.1-text0.9": {"image": 0.1, "text": 0.9}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml100k,baby")
    parser.add_argument("--models", default="ease,content_knn")
    parser.add_argument("--grid", default="", help="EASE l2 values, e.g. 100,300,1000 "
                        "(default: the TrainConfig default)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "ease")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}", flush=True)
    base = TrainConfig(device="cpu", num_threads=args.threads)
    if args.grid:
        base = dataclasses.replace(base, ease_l2_grid=tuple(float(v) for v in args.grid.split(",")))
    models = args.models.split(",")
    for dataset in args.datasets.split(","):
        data = LOADERS[dataset]()
        print(f"{dataset}: {describe(data)}", flush=True)
        runs = []
        if "ease" in models:
            runs.append(("ease", dataclasses.replace(base, model="ease")))
        if "content_knn" in models and data.features:
            runs += [(f"content_knn {name}",
                      dataclasses.replace(base, model="content_knn", mm_weights=weights))
                     for name, weights in CONTENT_WEIGHTS.items()]
        for label, config in runs:
            run_dir = args.out / dataset / label.replace(" ", "-")
            started = time.perf_counter()
            metrics = train(config, data, run_dir, resume=False,
                            log=lambda line: print(f"  {line}", flush=True)).metrics
            seconds = time.perf_counter() - started
            for row in metrics["fitted"].get("grid", []):
                print(f"  {dataset} {label}: l2 {row['l2']:g} valid R@20 "
                      f"{row['valid_recall@20']:.4f}", flush=True)
            chosen = f"chosen l2 {metrics['fitted']['l2']:g}, " if "l2" in metrics["fitted"] else ""
            print(f"RESULT {dataset} {label}: {chosen}valid R@20 "
                  f"{metrics['valid']['recall@20']:.4f}, test R@20 "
                  f"{metrics['test']['recall@20']:.4f} N@20 {metrics['test']['ndcg@20']:.4f}, "
                  f"wall {seconds:.1f} s, peak RSS {peak_rss_gb():.2f} GB", flush=True)


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
