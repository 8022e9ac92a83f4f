"""The demo end to end through Prefect: wall time by stage, and Prefect's overhead.

Runs the `extract-and-train` flow in this process on a fresh copy of the demo's store, with each
pipeline stage function wrapped by a timer, so "stage time" is the time spent inside the stage
functions (model loading included) and Prefect's overhead is the flow's wall time minus the sum.
Uses the Prefect server at PREFECT_API_URL when set (e.g. the one `make demo` leaves up), else a
temporary one. Usage:

    nice -n 5 python bench/bench_demo.py                      # configs/movielens.toml, fresh store
    nice -n 5 python bench/bench_demo.py --seeds 999,1000,1001   # LIRDRec and baselines, 3 seeds each
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", str(ROOT / "artifacts" / "prefect"))

TIMES: dict[str, float] = {}


def timed(name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[name] = TIMES.get(name, 0.0) + time.perf_counter() - started

    return wrapper


def bench_config(source: Path, store: Path, seeds: list[int] | None) -> Path:
    """The demo config with its store moved to `store` (paths made absolute) and optional seeds."""
    from pipeline.config import load_config

    config = load_config(source)
    raw = tomllib.loads(source.read_text())
    text = source.read_text()
    text = text.replace(f'store = "{raw["store"]}"', f'store = "{store}"')
    text = text.replace(f'path = "{raw["dataset"]["path"]}"', f'path = "{config.dataset.path}"')
    if seeds:
        text += f"\n[compare]\nseeds = {seeds}\n"
    path = store / "bench-demo.toml"
    store.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "movielens.toml")
    parser.add_argument("--store", type=Path, default=ROOT / "artifacts" / "bench-demo")
    parser.add_argument("--seeds", default="", help="comma list: every model once per seed")
    parser.add_argument("--keep", action="store_true", help="reuse the store (measure a rerun)")
    args = parser.parse_args()
    if args.store.exists() and not args.keep:
        shutil.rmtree(args.store)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    config_path = bench_config(args.config, args.store.resolve(), seeds)

    import pipeline.stages as stages
    import pipeline.training as training

    for name in ("ingest_stage", "caption_stage", "embed_stage", "train_stage", "rank_stage"):
        setattr(stages, name, timed(name.removesuffix("_stage"), getattr(stages, name)))
    original_train = training.train

    def train_one(config, *, train_config=None, **kwargs):
        label = f"  train {train_config.model} seed {train_config.seed}"
        return timed(label, original_train)(config, train_config=train_config, **kwargs)

    training.train = train_one

    from flows.dag import extract_and_train

    harness = contextlib.nullcontext()
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.testing.utilities import prefect_test_harness

        harness = prefect_test_harness(server_startup_timeout=120)
    with harness:
        started = time.perf_counter()
        state = extract_and_train(str(config_path), return_state=True)
        wall = time.perf_counter() - started
    run_dir = state.result()

    stage_total = sum(v for k, v in TIMES.items() if not k.startswith("  "))
    print(f"config {args.config.name} -> store {args.store} ({'rerun' if args.keep else 'fresh'})")
    print(f"flow state {state.name}, wall {wall:.1f} s")
    print("| stage | seconds |\n|---|---|")
    for name, seconds in TIMES.items():
        print(f"| {name.strip() if not name.startswith('  ') else '... ' + name.strip()} | {seconds:.1f} |")
    print(f"| stages total | {stage_total:.1f} |")
    print(f"| Prefect overhead (wall - stages) | {wall - stage_total:.1f} ({100 * (wall - stage_total) / wall:.1f}%) |")

    from pipeline.config import load_config
    from pipeline.report import mean_std_rows, metrics_rows

    runs = [run.path for run in training.current_runs(load_config(config_path))]
    rows = metrics_rows(runs)
    captioner = json.loads((Path(run_dir) / "metrics.json").read_text())["inputs"]["modalities"]
    print("\ncaptions and embeddings made by:")
    for modality, info in captioner.items():
        provenance = info["provenance"]
        print(f"  {modality}: {provenance.get('model')} (captioner {provenance.get('captioner_key', '-')})")
    print("\n| model | seeds | " + " | ".join(c for c in rows[0] if "test" in c and "@" in c) + " |")
    for row in mean_std_rows(rows):
        cells = [str(v) for k, v in row.items() if "test" in k and "@" in k]
        print(f"| {row['model']} | {row['seeds']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
