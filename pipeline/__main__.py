"""Plain command line: run one stage without Prefect (`python -m pipeline STAGE --config FILE`).

Under torchrun (`torchrun --nproc-per-node N -m pipeline train --config FILE`, RANK and
WORLD_SIZE set) every rank joins one process group; rank 0 runs the train stage and the others
train each of its runs with it (model/distributed.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

STAGES = ("ingest", "caption", "embed", "train", "rank", "all", "study")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the command; everything it prints and logs goes through extractors.redact, so no
    configured key or URL password reaches the terminal (a bug's traceback included)."""
    import traceback

    from extractors.redact import redacted_output

    with redacted_output():
        try:
            return _main(argv)
        except Exception:  # noqa: BLE001 - not a user's error: show the traceback, redacted
            traceback.print_exc()
            return 1


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {"all": "every stage in turn",
             "study": "ingest, caption and embed, then the config's [study] (arms x regimes x seeds)"}
    for stage in ("ingest", "caption", "embed", "train", "all", "study"):
        sub = commands.add_parser(stage, help=helps.get(stage, f"run the {stage} stage"))
        sub.add_argument("--config", required=True, type=Path, help="the run's TOML config")
        sub.add_argument("--force", action="store_true", help="recompute even what is up to date")
        if stage == "train":
            sub.add_argument("--search", action="store_true", help="run the config's [search] study (its missing trials), then train the point it selects in full")
            sub.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    rank = commands.add_parser("rank", help="FAISS index + each user's top-K candidates for a run")
    rank.add_argument("--run", required=True, type=Path, help="the run folder that `train` printed")
    rank.add_argument("--force", action="store_true", help="rank again even when up to date")
    rec = commands.add_parser("recommend", help="print a user's history and recommendations")
    rec.add_argument("--run", required=True, type=Path)
    rec.add_argument("--user", help="a user_id of the catalog")
    rec.add_argument("--k", type=_positive_int, default=10, help="how many (at least 1)")
    rec.add_argument(
        "--item-features",
        type=Path,
        help="an .npz with one row per modality name: score this new item against the users",
    )
    args = parser.parse_args(argv)

    from extractors.base import ModelLoadError
    from pipeline.config import ConfigError, load_config
    from pipeline.errors import explain

    try:
        if _under_torchrun():
            if args.command != "train" or args.search:
                parser.error("under torchrun only `train` runs (without --search: run the "
                             "search on one process, then train its selection under torchrun)")
            _train_on_ranks(load_config(args.config), force=args.force or args.fresh)
        elif args.command == "recommend":
            from pipeline.recommend import recommend_for_item, recommend_for_user

            if args.item_features is not None:
                print(recommend_for_item(args.run, args.item_features, args.k))
            elif args.user is not None:
                print(recommend_for_user(args.run, args.user, args.k))
            else:
                parser.error("recommend needs --user ID or --item-features FILE")
        elif args.command == "rank":
            from pipeline.training import run_config

            run_stages(["rank"], run_config(args.run), force=args.force, run_dir=args.run)
        else:
            config = load_config(args.config)
            stages = {"all": ["ingest", "caption", "embed", "train", "rank"],
                      "study": ["ingest", "caption", "embed", "study"]}.get(args.command,
                                                                           [args.command])
            run_stages(stages, config, force=getattr(args, "force", False),
                       fresh=getattr(args, "fresh", False), search=getattr(args, "search", False))
    except OSError as error:
        print(f"error: {explain(error)}", file=sys.stderr)
        return 2
    except KeyError as error:  # str() of a KeyError quotes its message
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    except (ConfigError, ValueError, ModelLoadError) as error:  # each names what to do
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: what was written is kept; rerun the same command to go on",
              file=sys.stderr)
        return 130
    return 0


def _under_torchrun() -> bool:
    """Started by torchrun (or by hand with its variables) with more than one process."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _train_on_ranks(config, force: bool) -> None:
    """This rank's part of a torchrun launch: rank 0 runs the train stage, the others serve it."""
    from model import distributed

    world = distributed.join_torchrun(config.train.device, config.scale.train_timeout_s)
    try:
        if world.main:
            run_stages(["train"], config, force=force, world=world)
            world.broadcast(None)  # no more jobs (on an error, rank 0's exit ends the others)
        else:
            distributed.serve_jobs(world)
    except BaseException:
        distributed.leave()
        raise
    distributed.leave(together=True)


def run_stages(names: list[str], config, *, force: bool = False, fresh: bool = False,
               search: bool = False, run_dir: Path | None = None, world=None) -> None:
    """Run the named stages in order through pipeline.stages (the flows' path too), printing each
    stage's result; a run folder that train or rank worked on is printed last."""
    from pipeline import stages

    for name in names:
        if name == "ingest":
            result = stages.ingest_stage(config, force=force, progress=True)
        elif name == "caption":
            result = stages.caption_stage(config, force=force)
        elif name == "embed":
            result = stages.embed_stage(config, force=force)
        elif name == "train":
            result = stages.train_stage(config, force=force or fresh, search=search, world=world)
            run_dir = result.run_dir
        elif name == "study":
            result = stages.study_stage(config)
        else:
            result = stages.rank_stage(config, run_dir, force=force)
        print(result)
    if run_dir is not None:
        print(run_dir)  # last line: the run folder


if __name__ == "__main__":
    sys.exit(main())
