"""Scale check: LIRDRec on a synthetic 10^6-item, 10^7-interaction catalog with two 384-d modalities.

Builds the user-item graph and the approximate (IVF) kNN item graphs (their sampled recall
against exact search is printed), runs 100 training steps at the reference settings, and prints
the times, peak RSS and the extrapolated epoch (steps per epoch x median step time), and one
full-ranking valid evaluation: extrapolated from 2,048 and 4,096 timed users, or with
--full-eval timed whole. Features are clustered (1,000 centres + noise) so that nearest
neighbours mean something. Usage:

    nice -n 5 python bench/bench_train_scale.py                       # 10^6 items, 10^7 pairs
    python bench/bench_train_scale.py --items 20000 --interactions 200000 --steps 5   # a quick try
    python bench/bench_train_scale.py --batch-size 65536 --warmup-steps 20 --steps 5
    python bench/bench_train_scale.py --batch-size 65536 --warmup-steps 20 --steps 1 --full-eval
    python bench/bench_train_scale.py --eval-only --full-eval       # the evaluation alone
    python bench/bench_train_scale.py --eval-only --full-eval --eval-scoring float32
    python bench/bench_train_scale.py --items 200000 --interactions 2000000 --steps 4 --profile

--batch-size / --lr-scaling / --warmup-steps set the TrainConfig fields of those names (the
defaults are the trainer's: 2048, auto (linear above 2048), 0). The arithmetic floor of this
machine is printed beside the times: the step's wide feature products (forward and weight
gradient) over the better float32 GEMM library's rate on that product, and one full valid
evaluation's scoring (valid users x items x S*d) over its rate on the evaluation's tiles.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch loads: model/__init__.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.lirdrec_data import peak_rss_gb  # noqa: E402
from model.build import build_model  # noqa: E402
from model.config import LR_SCALINGS, TrainConfig  # noqa: E402
from model.data import RecData  # noqa: E402
from model.gemm import best_seconds, choose  # noqa: E402
from model.metrics import ITEM_BLOCK, SCORE_BLOCK, evaluate  # noqa: E402
from model.sampling import NegativeSampler  # noqa: E402


def synthetic(n_items: int, n_interactions: int, n_users: int, dim: int, seed: int) -> RecData:
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, n_users, n_interactions, dtype=np.int64) * n_items
                     + rng.integers(0, n_items, n_interactions, dtype=np.int64))
    pairs = np.stack([keys // n_items, keys % n_items], axis=1)
    label = rng.choice(3, size=len(pairs), p=[0.8, 0.1, 0.1])  # a random 8:1:1 split
    cluster = rng.integers(0, 1000, n_items)
    features = {}
    for name in ("image", "text"):
        centres = rng.standard_normal((1000, dim), dtype=np.float32)
        noise = rng.standard_normal((n_items, dim), dtype=np.float32)
        noise *= 0.5
        noise += centres[cluster]
        features[name] = noise
    return RecData(n_users, n_items, pairs[label == 0], pairs[label == 1], pairs[label == 2],
                   features)


def time_evaluation(user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                    valid_pairs: np.ndarray, train_pairs: np.ndarray, topk: tuple[int, ...],
                    forward: float, full: bool, scoring: str = "auto"
                    ) -> tuple[float, float | None]:
    """Seconds of one full valid evaluation (the forward included): extrapolated from 2,048 and
    4,096 timed users (the difference is the cost a user; what every call pays, sorting the
    training pairs, a full evaluation pays once), after an untimed call that measures the GEMM
    plan; and, when `full`, measured on every valid user. `scoring`: TrainConfig.eval_scoring."""
    rank = functools.partial(evaluate, scoring=scoring)
    valid_users = np.unique(valid_pairs[:, 0])
    samples = {n: valid_pairs[np.isin(valid_pairs[:, 0], valid_users[:n])] for n in (2048, 4096)}
    rank(user_vectors, item_vectors, samples[2048], train_pairs, topk,  # the plan, untimed
         log=lambda line: print(line, flush=True))
    seconds = {}
    for n, sample in samples.items():
        tick = time.perf_counter()
        rank(user_vectors, item_vectors, sample, train_pairs, topk)
        seconds[n] = time.perf_counter() - tick
    per_user = (seconds[4096] - seconds[2048]) / 2048
    if per_user <= 0:  # small catalogs: the timing noise exceeds the difference
        per_user = seconds[4096] / 4096
    fixed = max(seconds[2048] - 2048 * per_user, 0.0)
    estimate = forward + fixed + per_user * len(valid_users)
    print(f"evaluation forward {forward:.0f}s; 2,048 / 4,096 valid users ranked in "
          f"{seconds[2048]:.1f}s / {seconds[4096]:.1f}s ({per_user * 2048:.2f}s per 2,048 more, "
          f"{fixed:.1f}s once): one full valid evaluation extrapolated at {estimate / 60:.1f} min",
          flush=True)
    if not full:
        return estimate, None
    tick = time.perf_counter()
    metrics, n_users = rank(user_vectors, item_vectors, valid_pairs, train_pairs, topk)
    measured = forward + time.perf_counter() - tick
    print(f"one full valid evaluation: {n_users:,} users ranked against {item_vectors.shape[0]:,} "
          f"items in {measured / 60:.1f} min (forward included); valid Recall@20 "
          f"{metrics['recall@20']:.4f}", flush=True)
    return estimate, measured


def scoring_floor(valid_pairs: np.ndarray, n_items: int, vector_width: int
                  ) -> tuple[float, float, float]:
    """The evaluation's float32 tile rate (GFLOP/s, the better library), one full valid
    scoring's floor at that rate (minutes: valid users x items x vector_width multiply-adds),
    and the bf16 rate of the same tile (best of 3 calls after a warm-up; the scoring uses bf16 where
    model/metrics.py measures it faster: see its log line)."""
    chunk = SCORE_BLOCK // ITEM_BLOCK
    rates = choose(torch.randn(chunk, vector_width), ITEM_BLOCK, parts=("forward",))
    rate = max(rates.rates_gflops["forward"].values())
    users, items = torch.randn(chunk, vector_width).bfloat16(), torch.randn(
        ITEM_BLOCK, vector_width).bfloat16()
    seconds = best_seconds({"bf16": lambda: users @ items.T})["bf16"]
    bf16_rate = 2 * chunk * ITEM_BLOCK * vector_width / seconds / 1e9
    flops = 2 * len(np.unique(valid_pairs[:, 0])) * n_items * vector_width
    return rate, flops / rate / 1e9 / 60, bf16_rate


def evaluation_only(data: RecData, vector_width: int, full: bool, scoring: str) -> None:
    """--eval-only: the evaluation of random (U, S*d) and (I, S*d) vectors (the cost of a full
    ranking does not depend on what the vectors hold), no graphs and no training."""
    generator = torch.Generator().manual_seed(0)
    user_vectors = torch.randn(data.n_users, vector_width, generator=generator)
    item_vectors = torch.randn(data.n_items, vector_width, generator=generator)
    estimate, measured = time_evaluation(user_vectors, item_vectors, data.valid, data.train,
                                         TrainConfig().topk, 0.0, full, scoring)
    rate, floor, bf16_rate = scoring_floor(data.valid, data.n_items, vector_width)
    print(f"float32 {rate:.1f} GFLOP/s on the evaluation's ({SCORE_BLOCK // ITEM_BLOCK} x "
          f"{vector_width}) x ({vector_width} x {ITEM_BLOCK}) tiles: the floor of one full valid "
          f"float32 scoring {floor:.1f} min; bf16 {bf16_rate:.1f} GFLOP/s on them "
          f"({floor * rate / bf16_rate:.1f} min at that rate)", flush=True)
    print(json.dumps({
        "items": data.n_items, "users": data.n_users, "valid_users": len(np.unique(data.valid[:, 0])),
        "vector_width": vector_width, "extrapolated_valid_eval_minutes": round(estimate / 60, 1),
        "valid_eval_minutes": round(measured / 60, 1) if measured else None,
        "scoring_gflops": round(rate, 1), "floor_valid_scoring_minutes": round(floor, 1),
        "scoring_bf16_gflops": round(bf16_rate, 1), "peak_rss_gb": round(peak_rss_gb(), 2)}),
        flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=0, help="default: interactions / 20")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--feature-dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr-scaling", choices=LR_SCALINGS, default="auto")
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--full-eval", action="store_true",
                        help="also time one full valid evaluation (else it is extrapolated)")
    parser.add_argument("--profile", action="store_true",
                        help="profile one more training step (torch.profiler, by op and shape)")
    parser.add_argument("--eval-scoring", choices=["auto", "float32"], default="auto",
                        help="TrainConfig.eval_scoring: bf16 candidates re-scored in float32 "
                             "where faster (auto), or float32 throughout")
    parser.add_argument("--eval-only", action="store_true",
                        help="only the evaluation, of random vectors: no graphs, no training")
    args = parser.parse_args()
    n_users = args.users or args.interactions // 20

    tick = time.perf_counter()
    data = synthetic(args.items, args.interactions, n_users, args.dim, seed=0)
    made = time.perf_counter() - tick
    print(f"data: {n_users:,} users, {args.items:,} items, {len(data.train):,} train pairs, "
          f"two {args.dim}-d modalities, made in {made:.0f}s; RSS {peak_rss_gb():.1f} GB",
          flush=True)
    if args.eval_only:
        evaluation_only(data, (len(data.modalities) + 1) * TrainConfig().embedding_size,
                        args.full_eval, args.eval_scoring)
        return
    config = TrainConfig(mm_weights={"image": 0.5, "text": 0.5}, knn_method="ivf",
                         knn_nprobe=args.nprobe, feature_dtype=args.feature_dtype, device="cpu",
                         batch_size=args.batch_size, lr_scaling=args.lr_scaling,
                         warmup_steps=args.warmup_steps)
    tick = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(config, data, torch.device("cpu"), log=lambda s: print(s, flush=True))
    build = time.perf_counter() - tick
    print(f"model + graphs built in {build:.0f}s; peak RSS {peak_rss_gb():.1f} GB", flush=True)
    # The model holds its own feature copies when bfloat16 (and shares float32 ones): drop ours.
    train_pairs, valid_pairs, n_items = data.train, data.valid, data.n_items
    del data

    from model.schedule import learning_rate_at

    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=True)
    sampler, rng = NegativeSampler(train_pairs, n_items), np.random.default_rng(0)
    order = rng.permutation(len(train_pairs))
    step_seconds = []

    def train_step(step: int) -> torch.Tensor:
        start = step * config.batch_size % len(order)
        batch = train_pairs[order[start:start + config.batch_size]]
        users, positives = (torch.as_tensor(batch[:, i]) for i in (0, 1))
        negatives = torch.as_tensor(sampler.sample(batch[:, 0], rng))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(config, config.batch_size, step)
        user_vectors, item_vectors = model()
        loss = model.batch_loss(user_vectors, item_vectors, users, positives, negatives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for step in range(args.steps):
        tick = time.perf_counter()
        loss = train_step(step)
        step_seconds.append(time.perf_counter() - tick)
        if args.steps <= 20 or step % 10 == 0 or step == args.steps - 1:
            print(f"step {step + 1}: loss {loss.item():.5f}, {step_seconds[-1]:.1f}s, "
                  f"peak RSS {peak_rss_gb():.1f} GB", flush=True)
    if args.profile:  # one more step under torch's profiler: where a step's time goes
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            train_step(args.steps)
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=32,
            max_shapes_column_width=56), flush=True)

    model.eval()
    tick = time.perf_counter()
    with torch.no_grad():
        user_vectors, item_vectors = model()
    forward = time.perf_counter() - tick
    eval_estimate, full_eval = time_evaluation(user_vectors, item_vectors, valid_pairs,
                                               train_pairs, config.topk, forward, args.full_eval,
                                               args.eval_scoring)
    steps_per_epoch = -(-len(train_pairs) // config.batch_size)
    median_step = statistics.median(step_seconds)
    width = 8 * config.embedding_size
    rates = choose(torch.randn(8192, args.dim), width).rates_gflops  # both libraries, both parts
    rate = max(max(by_library.values()) for by_library in rates.values())
    vector_width = model.n_streams * config.embedding_size
    scoring_rate, scoring_minutes, scoring_bf16_rate = scoring_floor(valid_pairs, n_items,
                                                                     vector_width)
    wide_step = 2 * 2 * 2 * args.items * args.dim * width  # 2 modalities, forward + weight grad
    print(f"float32 GEMM {rate:.1f} GFLOP/s (the better of MKL and oneDNN) on a (8192 x {args.dim})"
          f" x ({args.dim} x {width}) product: the floor of a step's wide products "
          f"{wide_step / rate / 1e9:.1f}s (median step {median_step:.1f}s); {scoring_rate:.1f} "
          f"GFLOP/s on the evaluation's ({SCORE_BLOCK // ITEM_BLOCK} x {vector_width}) x "
          f"({vector_width} x {ITEM_BLOCK}) tiles: the floor of one full valid float32 scoring "
          f"{scoring_minutes:.1f} min (bf16 {scoring_bf16_rate:.1f} GFLOP/s on them)", flush=True)
    print(json.dumps({
        "items": args.items, "users": n_users, "train_pairs": len(train_pairs),
        "feature_dtype": args.feature_dtype, "data_seconds": round(made),
        "build_seconds": round(build), "steps": args.steps,
        "median_step_seconds": round(median_step, 2),
        "train_seconds_for_steps": round(sum(step_seconds)),
        "steps_per_epoch": steps_per_epoch,
        "extrapolated_train_epoch_hours": round(steps_per_epoch * median_step / 3600, 2),
        "extrapolated_valid_eval_hours": round(eval_estimate / 3600, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2), "batch_size": config.batch_size,
        "lr_scaling": config.lr_scaling, "float32_gflops": round(rate, 1),
        "floor_wide_step_seconds": round(wide_step / rate / 1e9, 2),
        "scoring_gflops": round(scoring_rate, 1),
        "floor_valid_scoring_minutes": round(scoring_minutes, 1),
        "scoring_bf16_gflops": round(scoring_bf16_rate, 1),
        "valid_eval_minutes": round(full_eval / 60, 1) if full_eval else None,
    }), flush=True)


if __name__ == "__main__":
    main()
