"""Plain command line: run one stage without Prefect (`python -m pipeline STAGE --config FILE`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

STAGES = ("ingest", "caption", "embed", "train", "rank", "all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in ("ingest", "caption", "embed", "train", "all"):
        sub = commands.add_parser(stage, help=f"run the {stage} stage" if stage != "all" else "every stage in turn")
        sub.add_argument("--config", required=True, type=Path, help="the run's TOML config")
        if stage in ("caption", "embed", "all"):
            sub.add_argument("--force", action="store_true", help="recompute what the store already has")
        if stage == "train":
            sub.add_argument("--search", action="store_true", help="run the config's [search] grid, then train the point it selects")
            sub.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    rank = commands.add_parser("rank", help="FAISS index + each user's top-K candidates for a run")
    rank.add_argument("--run", required=True, type=Path, help="the run folder that `train` printed")
    rec = commands.add_parser("recommend", help="print a user's history and recommendations")
    rec.add_argument("--run", required=True, type=Path)
    rec.add_argument("--user", help="a user_id of the catalog")
    rec.add_argument("--k", type=int, default=10)
    rec.add_argument(
        "--item-features",
        type=Path,
        help="an .npz with one row per modality name: score this new item against the users",
    )
    args = parser.parse_args(argv)

    from pipeline.config import ConfigError, load_config

    try:
        if args.command == "rank":
            from pipeline.training import rank_run

            print(rank_run(args.run))
        elif args.command == "recommend":
            from pipeline.recommend import recommend_for_item, recommend_for_user

            if args.item_features is not None:
                print(recommend_for_item(args.run, args.item_features, args.k))
            elif args.user is not None:
                print(recommend_for_user(args.run, args.user, args.k))
            else:
                parser.error("recommend needs --user ID or --item-features FILE")
        else:
            config = load_config(args.config)
            run_stage(args.command, config, args)
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run_stage(stage: str, config, args: argparse.Namespace) -> None:
    """Run one stage, or every stage in turn (skipping what the stores show is up to date)."""
    force = getattr(args, "force", False)
    if stage == "all":
        from pipeline import stages

        forced = set(stages.STAGES) if force else set()
        for step in (stages.ingest_stage, stages.caption_stage, stages.embed_stage):
            print(step(config, force=step.__name__.removesuffix("_stage") in forced))
        trained = stages.train_stage(config, force="train" in forced)
        print(trained)
        print(stages.rank_stage(config, trained.run_dir, force="rank" in forced))
        print(trained.run_dir)  # last line: the run folder
    elif stage == "ingest":
        from pipeline.ingest import ingest

        print(ingest(config, progress=True))
    elif stage in ("caption", "embed"):
        from pipeline import extract

        print(getattr(extract, stage)(config, force=force))
    elif stage == "train":
        from pipeline.training import search, train

        selected = None
        if args.search:  # the grid within its budget, then the selected point trained in full
            table, selected = search(config)
            print(table)
        outcome = train(config, resume=not args.fresh, train_config=selected)
        print(outcome.run_dir)  # last line: the run folder


if __name__ == "__main__":
    sys.exit(main())
