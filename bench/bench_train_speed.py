"""LIRDRec speed and memory on Amazon Baby / Clothing with synthetic N(0,1) 4,096-d + 384-d features.

Reference settings (d 64, 2 UI layers, knn_k 10, batch 2048, image 0.1 / text 0.9), full valid AND
test evaluation every epoch (as the reference does). Prints the sizes, model+graph build time,
per-epoch train and eval seconds, the median of epochs 2-4 of train+eval, and peak RSS. One
dataset per process so that peak RSS is that dataset's. Also the arithmetic bound: the float32
GEMM rate of this machine on the epoch's own wide products (each at the better of MKL and oneDNN,
measured before and after training; the better one counts), the epoch's matmul FLOPs, and each epoch as a multiple of FLOPs / rate;
the bf16 rate of the same product (on 512 rows) and what feature_dtype = "auto" picks here.
bench/bench_reference.py runs this beside the reference implementation. Usage:

    nice -n 5 python bench/bench_train_speed.py --dataset baby
    nice -n 5 python bench/bench_train_speed.py --dataset clothing --feature-dtype bfloat16
    python bench/bench_train_speed.py --dataset baby --profile      # top ops of 3 training steps
    python bench/bench_train_speed.py --dataset baby --compile off  # the training forward eager
    python bench/bench_train_speed.py --dataset baby --compare-compile 6  # eager vs compiled steps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch loads: model/__init__.py

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
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="train.compile: torch.compile the training forward")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--compare-compile", type=int, default=0, metavar="ROUNDS",
                        help="time eager and compiled steps interleaved, ROUNDS rounds")
    parser.add_argument("--processes", type=int, default=1, help="data-parallel processes")
    args = parser.parse_args()

    started = time.perf_counter()
    data = amazon(args.dataset, synthetic_dims=DIMS, seed=0)
    print(f"{args.dataset}: {describe(data)}; data made in {time.perf_counter() - started:.1f}s")
    config = TrainConfig(mm_weights={"image": 0.1, "text": 0.9}, epochs=args.epochs,
                         patience=args.epochs, feature_dtype=args.feature_dtype,
                         device=args.device, eval_test_every_epoch=True, compile=args.compile)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"feature_dtype {args.feature_dtype}, compile {args.compile}")
    if args.profile:
        profile(config, data)
        return
    if args.compare_compile:
        compare_compile(config, data, args.compare_compile)
        return
    rates_before = wide_gemm_rates(data, config)

    from model.build import resolve_device
    from model.train import train

    with tempfile.TemporaryDirectory() as run_dir:
        if args.processes > 1:
            from model.distributed import local_world, train_everywhere

            with local_world(args.processes, config.device, timeout_s=1800.0) as world:
                result = train_everywhere(world, config, data, Path(run_dir), resume=False)
        else:
            result = train(config, data, Path(run_dir), resume=False)
        history = [json.loads(line)
                   for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]
    per_epoch = [line["train_seconds"] + line["eval_seconds"] for line in history]
    later = per_epoch[1:4] or per_epoch
    rates_after = wide_gemm_rates(data, config)
    rate = max(rates_before["float32_gflops"], rates_after["float32_gflops"])
    flops = epoch_flops(data, config)
    bound = sum(flops.values()) / (rate * 1e9)
    wide_bound = flops["wide_train"] / (rate * 1e9)
    # the bound as this benchmark counted it before 2026-12-06: without the small products
    earlier_bound = bound - (flops["small_train"] + flops["small_eval"]) / (rate * 1e9)
    from model.dtype import resolve_feature_dtype
    auto = resolve_feature_dtype("auto", resolve_device(config.device), log=None)
    print(f"float32 GEMM on the wide products: {rates_before['float32_gflops']:.1f} GFLOP/s before, "
          f"{rates_after['float32_gflops']:.1f} after; bf16 {rates_before['bfloat16_gflops']:.2f} "
          f"GFLOP/s; auto picks {auto.resolved} ({auto.reason})")
    print("epoch matmul FLOPs: " + ", ".join(f"{k} {v / 1e12:.3f} T" for k, v in flops.items())
          + f"; bound at {rate:.1f} GFLOP/s: {bound:.1f}s (wide training products only: "
          f"{wide_bound:.1f}s); epochs train+eval / bound: "
          + ", ".join(f"{t / bound:.2f}x" for t in per_epoch)
          + f"; median epochs 2-4 {statistics.median(later) / bound:.2f}x (without the small "
          f"products, {earlier_bound:.1f}s: {statistics.median(later) / earlier_bound:.2f}x)")
    print(json.dumps({
        "dataset": args.dataset, "feature_dtype": args.feature_dtype,
        "build_seconds": result.metrics["seconds"]["build"],
        "train_seconds": [line["train_seconds"] for line in history],
        "eval_seconds_valid_and_test": [line["eval_seconds"] for line in history],
        "median_epochs_2_4_train_plus_eval": round(statistics.median(later), 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "gemm_rates_before": rates_before, "gemm_rates_after": rates_after,
        "epoch_flops": flops, "bound_seconds": round(bound, 2),
        "median_over_bound": round(statistics.median(later) / bound, 3),
        "median_over_bound_without_small_products": round(statistics.median(later) / earlier_bound, 3),
        "auto_feature_dtype": {**auto.provenance(), **auto.measurement()},
    }))


def epoch_flops(data, config: TrainConfig) -> dict[str, float]:
    """The epoch's dense matmul FLOPs: the wide feature products (forward and weight gradient each
    step, one forward to evaluate), the small ones (each stream's second encoder layer on the
    items, Linear(4d, d), and its PWC scorer on the users, Linear(d, d/4) then Linear(d/4, 1):
    forward, input gradient and weight gradient each step, one forward to evaluate), and scoring
    every evaluated user against every item (valid and test ranked once)."""
    d, streams = config.embedding_size, len(data.features) + 1
    steps = -(-len(data.train) // config.batch_size)
    wide = sum(2 * data.n_items * x.shape[1] * 8 * d for x in data.features.values())  # forward
    small = streams * (2 * data.n_items * 4 * d * d  # forward
                       + 2 * data.n_users * d * (d // 4) + 2 * data.n_users * (d // 4))
    users = len(set(data.valid[:, 0]) | set(data.test[:, 0]))
    return {"wide_train": 2 * wide * steps, "wide_eval": wide,
            "small_train": 3 * small * steps, "small_eval": small,
            "scoring": 2 * users * data.n_items * streams * d}


def wide_gemm_rates(data, config: TrainConfig) -> dict[str, float]:
    """GFLOP/s of the epoch's own wide products: x (I, D_m) times W^T (D_m, 8d) and the weight
    gradient G^T (8d, I) times x, float32, each at the better of torch's two CPU GEMM libraries
    (model/gemm.py's interleaved best-of-3 on the whole product: the bound is the best this
    machine does, whichever library training ran on); bf16 on the first 512 rows (emulated bf16
    is ~100x slower: the full product would take half a minute)."""
    from model.gemm import choose

    width = 8 * config.embedding_size
    seconds, flops = 0.0, 0.0
    for x in data.features.values():
        x = torch.from_numpy(x)
        product = 2 * x.shape[0] * x.shape[1] * width
        rates = choose(x, width).rates_gflops  # {"forward": {library: rate}, "weight_grad": ...}
        seconds += sum(product / (max(by_library.values()) * 1e9) for by_library in rates.values())
        flops += 2 * product
    generator = torch.Generator().manual_seed(0)
    x = torch.from_numpy(next(iter(data.features.values()))[:512]).bfloat16()
    weight = torch.randn(width, x.shape[1], generator=generator).bfloat16()
    bf16 = _best_of(1, lambda: x @ weight.T)
    return {"float32_gflops": round(flops / seconds / 1e9, 2),
            "bfloat16_gflops": round(2 * x.shape[0] * x.shape[1] * width / bf16 / 1e9, 3)}


def _best_of(repeats: int, run) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - tick)
    return best


def training_steps(config: TrainConfig, data, modes: tuple[str, ...]):
    """One model and its (fused) Adam, as the trainer builds them, and a training step on one
    fixed batch for each train.compile mode in `modes` (each its own TrainingForward of the same
    model), plus the GFLOP of the step's wide products."""
    import numpy as np

    from model.build import build_model, resolve_device
    from model.compiled import TrainingForward, choose_compile, step_loss
    from model.sampling import NegativeSampler
    from model.train import adam

    device = resolve_device(config.device)
    torch.manual_seed(0)
    model = build_model(config, data, device)
    optimizer = adam(model, config.learning_rate, device)
    sampler, rng = NegativeSampler(data.train, data.n_items), np.random.default_rng(0)
    batch = data.train[rng.permutation(len(data.train))[: config.batch_size]]
    users, positives = (torch.as_tensor(batch[:, i], device=device) for i in (0, 1))

    def step_of(forward):
        def step() -> None:
            negatives = torch.as_tensor(sampler.sample(batch[:, 0], rng), device=device)
            loss = step_loss(model, forward(), users, positives, negatives)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return step

    steps = {mode: step_of(TrainingForward(model, choose_compile(mode, model, device)))
             for mode in modes}
    wide_gflop = epoch_flops(data, config)["wide_eval"] * 2 / 1e9  # forward + weight gradient
    return steps, wide_gflop


def profile(config: TrainConfig, data) -> None:
    """Where a training step's time goes (the kNN build is timed separately by the trainer)."""
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    inductor_config.cpp.enable_kernel_profile = True  # compiled: each fused kernel by name
    steps, _ = training_steps(config, data, (config.compile,))
    step = steps[config.compile]
    step()
    tick = time.perf_counter()
    step()
    print(f"one step: {time.perf_counter() - tick:.3f}s, "
          f"{(len(data.train) + config.batch_size - 1) // config.batch_size} steps per epoch")
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=32,
        max_shapes_column_width=48))


def compare_compile(config: TrainConfig, data, rounds: int, per_round: int = 4) -> None:
    """Eager against compiled training steps, interleaved in one process on one model: each
    round times `per_round` steps of each (after both are warm, the compile untimed), so a slow
    spell of a shared machine slows both alike. Also each as a multiple of the step's wide
    products at the float32 GEMM rate measured in the same process just before."""
    steps, wide_gflop = training_steps(config, data, ("off", "on"))
    rate = wide_gemm_rates(data, config)["float32_gflops"]
    for mode, step in steps.items():
        tick = time.perf_counter()
        step()
        step()
        print(f"{mode}: two warm-up steps {time.perf_counter() - tick:.1f}s", flush=True)
    seconds: dict[str, list[float]] = {mode: [] for mode in steps}
    for _ in range(rounds):
        for mode, step in steps.items():
            tick = time.perf_counter()
            for _ in range(per_round):
                step()
            seconds[mode].append((time.perf_counter() - tick) / per_round)
    bound = wide_gflop / rate
    for mode, values in seconds.items():
        print(f"compile {mode}: step {statistics.median(values):.3f}s median of {rounds} rounds "
              f"({', '.join(f'{v:.3f}' for v in values)}), {statistics.median(values) / bound:.2f}x "
              f"the wide products' {bound:.3f}s at {rate:.1f} GFLOP/s")
    eager, fused = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    print(f"compiled / eager: {fused / eager:.3f} ({(eager - fused) * 1000:.0f} ms a step less)")


if __name__ == "__main__":
    main()
