"""Kill campaign: SIGKILL caption, embed and train at seeded random points, rerun, compare.

On the tiny generic catalog of tests/support/catalog.py (30 items, 24 users): an uninterrupted
run first, then for each stage `--points` kill points (units of work left in the store before
the kill: caption rows, embedding rows or epochs, plus a fraction of a unit), each followed by a
plain rerun of that stage. The rerun must leave one row per item (no duplicates), the same
captions, embeddings within 1e-5 of the uninterrupted run's (batches differ after a kill), and
after training downstream the same metrics.json. Prints each kill point and its counts.

    python bench/bench_resilience.py                 # 5 points per stage, seed 0
    python bench/bench_resilience.py --points 8 --seed 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import resilience  # noqa: E402 - after the path above
from tests.support.catalog import make_catalog, write_config  # noqa: E402

DOWNSTREAM = {"caption": ("embed", "train"), "embed": ("train",), "train": ()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=5, help="kill points per stage")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-resilience-") as folder:
        root = Path(folder)
        config = write_config(root, make_catalog(root / "catalog"))
        started = time.perf_counter()
        ref = resilience.reference(root, config)
        print(f"uninterrupted run: {', '.join(f'{s} {t:.1f}s' for s, t in ref.seconds.items())}; "
              f"{len(ref.captions)} captions, test R@20 {ref.metrics['test']['recall@20']:.4f}")
        failures = 0
        for stage in resilience.STAGES:
            for point in resilience.kill_points(stage, args.points, args.seed):
                outcome = resilience.kill_then_rerun(ref, stage, point)
                try:
                    outcome.update(resilience.check(ref, stage))
                    for later in DOWNSTREAM[stage]:
                        resilience.run_stage(ref.config_path, later)
                    outcome["metrics_equal"] = resilience.metrics(ref.config_path) == ref.metrics
                except AssertionError as error:
                    outcome["failed"] = str(error).splitlines()[0]
                failures += "failed" in outcome or not outcome.get("metrics_equal", False)
                print("  " + "  ".join(f"{key} {value}" for key, value in outcome.items()),
                      flush=True)
        kills = args.points * len(resilience.STAGES)
        print(f"{kills} kill points, {failures} failed, {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
