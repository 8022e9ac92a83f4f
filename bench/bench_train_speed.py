"""LIRDRec speed and memory on Amazon Baby / Clothing with synthetic N(0,1) 4,096-d + 384-d features.

Reference settings (d 64, 2 UI layers, knn_k 10, batch 2048, image 0.1 / text 0.9), full valid AND
test evaluation every epoch (as the reference does). Prints the sizes, model+graph build time,
per-epoch train and eval seconds, the median of epochs 2-4 of train+eval, and peak RSS. One
dataset per process so that peak RSS is that dataset's. Usage:

    nice -n 5 python bench/bench_train_speed.py --dataset baby
    nice -n 5 python bench/bench_train_speed.py --dataset clothing --feature-dtype bfloat16
    python bench/bench_train_speed.py --dataset baby --profile      # top ops of 3 training steps
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.lirdrec_data import amazon, describe, peak_rss_gb  # noqa: E402
from model.config import TrainConfig  # noqa: E402

DIMS = {"image": 4096, "text": 384}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["baby", "sports", "clothing"], default="baby")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--feature-dtype", choices=["auto", "float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    data = amazon(args.dataset, synthetic_dims=DIMS, seed=0)
    print(f"{args.dataset}: {describe(data)}; data made in {time.perf_counter() - started:.1f}s")
    config = TrainConfig(mm_weights={"image": 0.1, "text": 0.9}, epochs=args.epochs,
                         patience=args.epochs, feature_dtype=args.feature_dtype,
                         device=args.device, eval_test_every_epoch=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"feature_dtype {args.feature_dtype}")
    if args.profile:
        profile(config, data)
        return

    from model.train import train

    with tempfile.TemporaryDirectory() as run_dir:
        result = train(config, data, Path(run_dir), resume=False)
        history = [json.loads(line)
                   for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]
    per_epoch = [line["train_seconds"] + line["eval_seconds"] for line in history]
    later = per_epoch[1:4] or per_epoch
    print(json.dumps({
        "dataset": args.dataset, "feature_dtype": args.feature_dtype,
        "build_seconds": result.metrics["seconds"]["build"],
        "train_seconds": [line["train_seconds"] for line in history],
        "eval_seconds_valid_and_test": [line["eval_seconds"] for line in history],
        "median_epochs_2_4_train_plus_eval": round(statistics.median(later), 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
    }))


def profile(config: TrainConfig, data) -> None:
    """Where a training step's time goes (the kNN build is timed separately by the trainer)."""
    import numpy as np
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from model.build import build_model, resolve_device
    from model.sampling import NegativeSampler

    device = resolve_device(config.device)
    torch.manual_seed(0)
    model = build_model(config, data, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    sampler, rng = NegativeSampler(data.train, data.n_items), np.random.default_rng(0)
    batch = data.train[rng.permutation(len(data.train))[: config.batch_size]]
    users, positives = (torch.as_tensor(batch[:, i], device=device) for i in (0, 1))

    def step() -> None:
        negatives = torch.as_tensor(sampler.sample(batch[:, 0], rng), device=device)
        user_vectors, item_vectors = model()
        loss = model.batch_loss(user_vectors, item_vectors, users, positives, negatives)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    tick = time.perf_counter()
    step()
    print(f"one step: {time.perf_counter() - tick:.3f}s, "
          f"{(len(data.train) + config.batch_size - 1) // config.batch_size} steps per epoch")
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
