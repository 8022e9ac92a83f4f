"""The Prefect flows: one thin task per pipeline stage; `extract-and-train` chains them all.

Tasks pass the config file's path and run folders, never big objects. A task whose stage found
everything up to date in the store ends in a Completed state named "Skipped", so the UI and the
API show which stages did work in each run.
"""

from __future__ import annotations

import functools
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.states import Completed, State

from extractors.base import ModelLoadError
from extractors.redact import install_log_redaction, redact
from flows import reports
from pipeline.config import Config, load_config
from pipeline.errors import explain
from pipeline.stages import StageResult, parse_force

Force = bool | list[str] | str | None


class StageFailed(RuntimeError):
    """A stage stopped on an OSError or a model that would not load; the message is one line
    naming the file, model or endpoint and the fix."""


def _one_line_errors(function):
    """Re-raise an OSError or ModelLoadError of the stage as StageFailed(one line): the task's
    state message says which file, model or endpoint and what to do, without a traceback through the pipeline's internals. The task's
    logs are redacted (extractors.redact), and so is any exception that leaves it: one whose
    message held a key or URL password leaves as StageFailed with the redacted message."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        install_log_redaction()  # here too: a task may run in a Dask worker's process
        try:
            return function(*args, **kwargs)
        except OSError as error:
            raise StageFailed(redact(explain(error))) from None
        except ModelLoadError as error:  # names the model or endpoint and what to do
            raise StageFailed(redact(str(error))) from None
        except Exception as error:
            message = redact(str(error))
            if message != str(error):
                raise StageFailed(f"{type(error).__name__}: {message}") from None
            raise

    return wrapper


def _finish(result: StageResult, value: object = None):
    """The task's state: Completed, or Completed named "Skipped" when nothing needed computing."""
    get_run_logger().info("%s", result)
    data = value if value is not None else str(result)
    if result.ran:
        return Completed(data=data, message=f"{result.stage}: computed")
    return Completed(data=data, name="Skipped", message=f"{result.stage}: up to date")


@task(name="ingest")
@_one_line_errors
def ingest_task(config_path: str, force: bool = False):
    from pipeline.stages import ingest_stage

    config = load_config(config_path)
    result = ingest_stage(config, force=force)
    reports.dataset_summary(config)
    return _finish(result)


@task(name="caption")
@_one_line_errors
def caption_task(config_path: str, force: bool = False, shard: int = 0, shards: int = 1):
    from pipeline.stages import caption_stage

    config = load_config(config_path)
    with reports.Progress(f"Captioning {config.name}, shard {shard + 1}/{shards}") as progress:
        result = caption_stage(
            config, force=force, shard=(shard, shards), on_progress=progress.update
        )
    return _finish(result)


@task(name="embed")
@_one_line_errors
def embed_task(config_path: str, force: bool = False, shard: int = 0, shards: int = 1):
    from pipeline.stages import embed_stage

    config = load_config(config_path)
    with reports.Progress(f"Embedding {config.name}, shard {shard + 1}/{shards}") as progress:
        result = embed_stage(
            config, force=force, shard=(shard, shards), on_progress=progress.update
        )
    return _finish(result)


def _fan_out(stage_task, config_path: str, force: bool, shards: int) -> None:
    """Run a stage as `shards` tasks over disjoint item subsets (on Dask workers when so deployed)."""
    futures = [stage_task.submit(config_path, force, shard, shards) for shard in range(shards)]
    for future in futures:
        future.result()


@task(name="train")
@_one_line_errors
def train_task(config_path: str, force: bool = False, search: bool = False):
    from pipeline.stages import train_stage

    config = load_config(config_path)
    result = train_stage(config, force=force, search=search, log=get_run_logger().info)
    if result.search_table is not None:
        reports.search_trials(config, result.search_table)
    reports.training(config, result.runs)
    return _finish(result, value=str(result.run_dir))


@task(name="rank")
@_one_line_errors
def rank_task(config_path: str, run_dir: str, force: bool = False):
    from pipeline.stages import rank_stage

    config = load_config(config_path)
    result = rank_stage(config, Path(run_dir), force=force)
    reports.links(config, Path(run_dir))
    return _finish(result, value=str(run_dir))


def _value(result):
    # A task that returns a State (to be named "Skipped") hands the caller that State: unwrap it.
    return result.result() if isinstance(result, State) else result


def _config(config_path: str) -> Config:
    # Validate up front: a bad config fails the flow at once, naming the key, before any task runs.
    # Its keys are registered with extractors.redact, and the flow run's logs redacted from here on.
    install_log_redaction()
    return load_config(config_path)


def _extract(config_path: str, forced: set[str]) -> None:
    config = _config(config_path)
    _fan_out(caption_task, config_path, "caption" in forced, config.scale.shards)
    reports.sample_captions(config)
    _fan_out(embed_task, config_path, "embed" in forced, config.scale.shards)


@flow(name="ingest")
def ingest_flow(config: str, force: Force = None) -> None:
    _config(config)
    ingest_task(config, force="ingest" in parse_force(force))


@flow(name="caption")
def caption_flow(config: str, force: Force = None) -> None:
    """Caption only: new or changed images, or every image with force (any value but empty)."""
    settings = _config(config)
    forced = bool(parse_force(force))
    _fan_out(caption_task, config, forced, settings.scale.shards)
    reports.sample_captions(settings)


@flow(name="embed")
def embed_flow(config: str, force: Force = None) -> None:
    settings = _config(config)
    _fan_out(embed_task, config, bool(parse_force(force)), settings.scale.shards)


@flow(name="extract")
def extract_flow(config: str, force: Force = None) -> None:
    """Stage 1: ingest, caption, embed."""
    forced = parse_force(force)
    ingest_task(config, force="ingest" in forced)
    _extract(config, forced)


@flow(name="train")
def train_flow(config: str, force: Force = None, search: bool = False) -> str:
    """Train [train] and its comparisons; with `search`, the [search] study's selection first."""
    _config(config)
    return _value(train_task(config, force=bool(parse_force(force)), search=search))


@flow(name="rank")
def rank_flow(config: str, run_dir: str | None = None, force: Force = None) -> str:
    """Rank a run folder (default: the run the config's current inputs name)."""
    from pipeline.training import current_runs

    settings = _config(config)
    run_dir = run_dir or str(current_runs(settings)[0].path)
    return _value(rank_task(config, run_dir, force=bool(parse_force(force))))


@flow(name="extract-and-train")
def extract_and_train(config: str, force: Force = None) -> str:
    """Both stages: ingest, caption, embed, train (+ comparisons), rank; `force` names stages to redo."""
    forced = parse_force(force)
    _config(config)
    ingest_task(config, force="ingest" in forced)
    _extract(config, forced)
    run_dir = _value(train_task(config, force="train" in forced))
    rank_task(config, run_dir, force="rank" in forced)
    return run_dir


FLOWS = (
    ingest_flow,
    caption_flow,
    embed_flow,
    extract_flow,
    train_flow,
    rank_flow,
    extract_and_train,
)
