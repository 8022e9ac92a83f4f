"""Wall time of `python -m pipeline recommend --item-features` on a trained run (default: the demo's).

Times what a user waits for: a fresh process scoring one new item against every user. The new
item is a copy of a cold catalog item's stored features. `--repo` times another checkout's code
on the same run folder (e.g. a `git worktree` of an earlier commit, for a before/after), and
`--cold-encoder` first deletes the run's item_encoder.npz, so the first call of a run made by an
earlier version (which rebuilds it from the store once) is timed too.

    python bench/bench_recommend.py                                  # the demo run, this checkout
    git worktree add /tmp/before afbd86c && python bench/bench_recommend.py --repo /tmp/before
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def demo_run(config_path: Path) -> Path:
    from pipeline.config import load_config
    from pipeline.training import current_runs

    return current_runs(load_config(config_path))[0].path


def item_features(config_path: Path, folder: Path) -> Path:
    """An .npz with a cold catalog item's stored vectors (one array per modality)."""
    import numpy as np

    from pipeline.config import load_config
    from pipeline.training import load_inputs

    data = load_inputs(load_config(config_path)).data
    item = int(data.cold_items[0]) if len(data.cold_items) else 0
    path = folder / "new_item.npz"
    np.savez(path, **{name: matrix[item] for name, matrix in data.features.items()})
    return path


def time_call(repo: Path, run_dir: Path, features: Path) -> float:
    command = [sys.executable, "-m", "pipeline", "recommend", "--run", str(run_dir),
               "--item-features", str(features), "--k", "10"]
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"recommend failed ({repo}):\n{result.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "movielens.toml")
    parser.add_argument("--run", type=Path, help="run folder (default: the config's [train] run)")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose code is timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold-encoder", action="store_true",
                        help="delete item_encoder.npz first (a run of an earlier version)")
    args = parser.parse_args()
    run_dir = args.run or demo_run(args.config)
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.machine())
    print(f"cpu: {cpu}, {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.2f}; code: {args.repo}; run: {run_dir}")
    with tempfile.TemporaryDirectory() as folder:
        features = item_features(args.config, Path(folder))
        if args.cold_encoder:
            (run_dir / "item_encoder.npz").unlink(missing_ok=True)
            print(f"first call (item encoder rebuilt from the store): "
                  f"{time_call(args.repo, run_dir, features):.2f} s")
        times = [time_call(args.repo, run_dir, features) for _ in range(args.repeats)]
    print(f"recommend --item-features: median {statistics.median(times):.2f} s over "
          f"{len(times)} calls ({', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
