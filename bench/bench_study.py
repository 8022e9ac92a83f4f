"""A study end to end and the time per arm: `python bench/bench_study.py --config FILE`.

Runs the config's ingest, caption and embed stages and its [study] (resuming whatever an earlier
call finished), then prints, per arm: the runs, the seconds of the runs this call trained (reused
runs keep the seconds they took when trained), the tuning searches' seconds, and the best epochs;
beside the CPU model and the load. Usage:

    nice -n 5 python bench/bench_study.py --config configs/bench-ml100k-mmrec.toml
    nice -n 5 python bench/bench_study.py --config configs/movielens.toml --preset quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_reference import machine_line  # noqa: E402
from pipeline.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--preset", choices=("full", "quick"), help="override [study] preset")
    args = parser.parse_args()
    overrides = {"study.preset": args.preset} if args.preset else None
    config = load_config(args.config, overrides=overrides)
    print(machine_line(), f"load {os.getloadavg()[0]:.2f}", flush=True)

    from pipeline import stages
    from pipeline.study import study_layout

    started = time.perf_counter()
    for stage in (stages.ingest_stage, stages.caption_stage, stages.embed_stage):
        stage(config, progress=False)
    extracted = time.perf_counter() - started
    result = stages.study_stage(config)
    total = time.perf_counter() - started
    print(result)

    layout = study_layout(config)
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(layout.table).to_pylist()
            if r["split"] == "test" and r["metric"] == "ndcg" and r["k"] == 20]
    per_arm = defaultdict(list)
    for row in rows:
        per_arm[row["arm"]].append(row)
    searches = defaultdict(float)
    for table in (layout.root / "search").glob("*/search.json"):
        arm = table.parent.name.split("@f", 1)[0]  # <arm>@f<fraction>-<digest>
        searches[arm] += sum(r["seconds"] or 0.0 for r in json.loads(table.read_text())["rows"])
    print("\n| arm | runs | seconds (runs) | s/run | tuning s | best epochs |\n|---|---|---|---|---|---|")
    for arm, arm_rows in per_arm.items():
        seconds = [r["seconds"] for r in arm_rows if r["seconds"] is not None]
        slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in arm)
        print(f"| {arm} | {len(arm_rows)} | {sum(seconds):.0f} | "
              f"{sum(seconds) / max(len(seconds), 1):.1f} | {searches.get(slug, 0.0):.0f} | "
              f"{sorted(r['best_epoch'] for r in arm_rows)} |")
    print(f"\nextraction stages {extracted:.0f} s; this call in all {total:.0f} s "
          f"({total / 60:.1f} min); study folder {layout.root}")


if __name__ == "__main__":
    main()
