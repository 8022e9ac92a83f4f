"""Benchmark ingest + split: Amazon Clothing (MMRec file) and a synthetic 10^6-item, 10^7-interaction catalog.

Each case runs in a fresh child process that reports its own wall time and peak RSS, so one case's
memory never counts against another's. Usage:

    nice -n 5 python bench/bench_ingest.py                      # all cases, full size
    python bench/bench_ingest.py --items 10000 --interactions 100000 --cases synthetic   # a quick try
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLOTHING = ROOT.parent / "shared" / "data" / "amazon" / "clothing"


def write_synthetic(
    folder: Path, n_items: int, n_interactions: int, n_users: int, seed: int = 0
) -> None:
    """Items (id, title, text) and interactions (user, item, timestamp) as Parquet; item popularity is skewed."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    item_number = pa.array(np.arange(n_items, dtype=np.int64))
    item_id = pc.cast(item_number, pa.string())
    items = pa.table(
        {
            "item_id": item_id,
            "title": pc.binary_join_element_wise("item", item_id, " "),
            "text": pc.binary_join_element_wise(
                "a synthetic product numbered", item_id, "for the benchmark.", " "
            ),
        }
    )
    pq.write_table(items, folder / "items.parquet")
    del items
    # Squaring a uniform draw puts more interactions on low item numbers (a long tail).
    item_of = (n_items * rng.random(n_interactions) ** 2).astype(np.int64)
    user_of = rng.integers(0, n_users, n_interactions)
    interactions = pa.table(
        {
            "user_id": pc.cast(pa.array(user_of), pa.string()),
            "item_id": pc.cast(pa.array(item_of), pa.string()),
            "ts": pa.array(rng.integers(1_500_000_000, 1_700_000_000, n_interactions)),
        }
    )
    pq.write_table(interactions, folder / "interactions.parquet")


def config_text(case: str, folder: Path) -> str:
    store = folder / f"store-{case}"
    if case.startswith("clothing"):
        method = "given" if case == "clothing-given" else "random"
        return f'name = "{case}"\nstore = "{store}"\n[dataset]\nkind = "mmrec"\npath = "{CLOTHING}"\n[split]\nmethod = "{method}"\n'
    return (
        f'name = "{case}"\nstore = "{store}"\n[dataset]\nkind = "generic"\n'
        f'items = "{folder / "items.parquet"}"\ninteractions = "{folder / "interactions.parquet"}"\n'
        'timestamp_column = "ts"\n[split]\nmethod = "random"\nseed = 2024\n'
    )


def run_case(case: str, folder: Path) -> dict:
    """In this (child) process: ingest one case; wall time and this process's peak RSS."""
    sys.path.insert(0, str(ROOT))
    from pipeline.config import load_config
    from pipeline.ingest import ingest

    config_file = folder / f"{case}.toml"
    config_file.write_text(config_text(case, folder), encoding="utf-8")
    # The synthetic items have no images (TOML has no null to write in the file).
    overrides = {"dataset.image_column": None} if case == "synthetic" else None
    config = load_config(config_file, overrides=overrides)
    started = time.perf_counter()
    summary = ingest(config)
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "case": case,
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(peak_mib),
        "items": summary.n_items,
        "users": summary.n_users,
        "interactions": summary.n_interactions,
        "split": summary.split_counts,
        "drops": [f"{d.count} {d.kind}: {d.reason}" for d in summary.drops],
    }


def child(args: list[str]) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", default=["clothing-given", "clothing-random", "synthetic"]
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=0, help="default: interactions / 20")
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    parser.add_argument("--write-synthetic", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    users = args.users or max(1, args.interactions // 20)
    if args.write_synthetic:
        started = time.perf_counter()
        write_synthetic(args.folder, args.items, args.interactions, users)
        print(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
        return
    if args.run_case:
        print(json.dumps(run_case(args.run_case, args.folder)))
        return

    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        for case in args.cases:
            if case.startswith("clothing") and not (CLOTHING / "clothing.inter").exists():
                print(f"{case}: skipped, {CLOTHING}/clothing.inter not found")
                continue
            if case == "synthetic":
                made = child(
                    [
                        "--write-synthetic",
                        "--folder",
                        str(folder),
                        "--items",
                        str(args.items),
                        "--interactions",
                        str(args.interactions),
                        "--users",
                        str(users),
                    ]
                )
                size = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 2**20
                print(
                    f"synthetic: wrote {args.items:,} items, {args.interactions:,} interactions, {users:,} users ({size:.0f} MiB Parquet) in {made['seconds']} s"
                )
            result = child(["--run-case", case, "--folder", str(folder)])
            print(
                f"{case}: ingest+split {result['wall_s']} s, peak RSS {result['peak_rss_mib']:,} MiB; "
                f"{result['items']:,} items, {result['users']:,} users, {result['interactions']:,} interactions, split {result['split']}"
            )
            for drop in result["drops"]:
                print(f"    dropped {drop}")


if __name__ == "__main__":
    main()
