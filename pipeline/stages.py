"""Each stage as one call that says whether it computed anything: THE entry points of the stages.

The CLI (`python -m pipeline STAGE`) and the Prefect tasks (flows/dag.py) call these functions
and nothing below them, so what is skipped, what is written and what is printed are the same
either way.

Idempotence across runs comes from the stores' own keys (never from an orchestrator's cache):
ingest is skipped when its inputs (the dataset files' sizes and times, the dataset and split
config) are those the catalog was built from and every catalog file is there; caption and embed
compute only items whose (input hash, model key) the store lacks, and rewrite CURRENT each run;
train is skipped when the run folder named by its inputs holds every file of a finished run
(metrics.json with its inputs record, vectors, id maps, config, per-user metrics, and for feature
models the item encoder; a finished run that lacks only per_user.parquet, one of an earlier
version, gets it computed from its saved vectors, not trained again); the training curves of the
[train] and [compare] runs are drawn when any of them was computed (or the picture is missing); rank when the run's candidates, index and rank record are there and newer than its
vectors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model.run import RunFolder, write_json
from pipeline.config import Config
from pipeline.store import StoreLayout

STAGES = ("ingest", "caption", "embed", "train", "rank")


@dataclass(frozen=True)
class StageResult:
    stage: str
    ran: bool  # False: everything was already up to date in the store
    summary: object  # the stage function's own summary (printable)
    run_dir: Path | None = None  # train and rank: the run folder
    runs: list[Path] = field(default_factory=list)  # train: every run folder (model + comparisons)
    search_table: Path | None = None  # train --search: the trials table (search.json)

    def __str__(self) -> str:
        return str(self.summary)


def parse_force(force: bool | list[str] | str | None) -> set[str]:
    """`force` as a set of stage names; accepts a list or a comma string (the CLI's `-p force=a,b`).

    A bare true means every stage (for single-stage flows: `-p force=true`).
    """
    if force is None or force is False:
        return set()
    if force is True:
        return set(STAGES)
    names = force.split(",") if isinstance(force, str) else list(force)
    stages = {name.strip() for name in names if name.strip()}
    if "all" in stages:
        return set(STAGES)
    unknown = sorted(stages - set(STAGES))
    if unknown:
        raise ValueError(
            f"force: unknown stage(s) {unknown}; expected any of {list(STAGES)} or 'all'"
        )
    return stages


def ingest_inputs_digest(config: Config) -> str:
    """A digest of what the catalog is built from: the dataset and split config and the source files."""
    dataset = config.dataset
    sources = [
        getattr(dataset, name)
        for name in ("path", "items", "interactions")
        if hasattr(dataset, name)
    ]
    digest = hashlib.sha256(dataset.model_dump_json().encode())
    digest.update(config.split.model_dump_json().encode())
    for source in sources:
        for path in sorted([source, *source.rglob("*")] if source.is_dir() else [source]):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def ingest_stage(config: Config, force: bool = False, progress: bool = False) -> StageResult:
    from pipeline.ingest import ingest

    layout = StoreLayout(config.store)
    digest = ingest_inputs_digest(config)
    outputs = (layout.items, layout.interactions, layout.ingest_summary, layout.ingest_inputs)
    if not force and all(path.exists() for path in outputs) and _imported_features_complete(layout):
        if json.loads(layout.ingest_inputs.read_text()).get("digest") == digest:
            return StageResult("ingest", False, f"ingest: catalog up to date ({layout.catalog})")
    summary = ingest(config, progress=progress)
    write_json(layout.ingest_inputs, {"digest": digest})
    return StageResult("ingest", True, summary)


def _imported_features_complete(layout: StoreLayout) -> bool:
    """Every feature store that ingest imported (MMRec .npy files) still holds all its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.store import PartStore

    for feature in json.loads(layout.ingest_summary.read_text()).get("features", []):
        parts = PartStore(Path(feature["store"]), schema=None).parts()
        try:
            rows = sum(pq.read_metadata(part).num_rows for part in parts)
        except (OSError, pa.ArrowException):  # a damaged part: importing again replaces it
            return False
        if rows != feature["rows"]:
            return False
    return True


def caption_stage(
    config: Config,
    force: bool = False,
    shard: tuple[int, int] = (0, 1),
    on_progress: Callable[[int, int], None] | None = None,
    progress: bool = True,
) -> StageResult:
    from pipeline.extract.caption import caption_store, image_roots

    if not any(modality.source == "caption" for modality in config.modalities.values()):
        return StageResult("caption", False, "caption: no modality reads captions (nothing to do)")
    summary = caption_store(config.caption, config.store, image_roots(config), force=force,
                            progress=progress, shard=shard, on_progress=on_progress)
    return StageResult("caption", summary.computed + summary.failed + summary.dropped > 0, summary)


def embed_stage(
    config: Config,
    force: bool = False,
    shard: tuple[int, int] = (0, 1),
    on_progress: Callable[[int, int], None] | None = None,
    progress: bool = True,
) -> StageResult:
    from pipeline.extract.embed import embed_store

    if all(modality.source == "imported" for modality in config.modalities.values()):
        return StageResult("embed", False, "embed: every modality is imported (nothing to embed)")
    summary = embed_store(config.embed, config.modalities, config.store, force=force,
                          progress=progress, shard=shard, on_progress=on_progress)
    return StageResult("embed", summary.computed + summary.failed + summary.dropped > 0, summary)


def train_stage(
    config: Config, force: bool = False, search: bool = False, log: Callable[[str], None] = print,
    world=None,
) -> StageResult:
    """Train the config's model and its [compare] runs; skip each run whose metrics exist.

    With `search`, the [search] study runs first (its missing trials within the budget, selected
    on VALID Recall@20) and the selected point, trained in full, replaces [train] for this call.
    With [scale] train_processes > 1 each run trains on that many processes of this machine;
    `world` (rank 0 of a torchrun launch, model.distributed.World) trains them on its ranks.
    """
    from pipeline import training

    if world is not None or config.scale.train_processes > 1:
        training.check_data_parallel(config.compare.train_configs(config.train),
                                     0 if world is not None else config.scale.train_processes)

    lines, search_table = [], None
    if search:
        table, selected, search_table = training.search(config, log=log)
        config = config.model_copy(update={"train": selected})
        lines.append(table)
    runs = training.current_runs(config)
    ran = False
    for train_config, run in zip(config.compare.train_configs(config.train), runs, strict=True):
        missing = training.missing_outputs(run, train_config)
        if not force and missing == [run.per_user.name]:
            log(f"{run.path}: {run.per_user.name} missing; computing it from the saved vectors")
            training.complete_per_user(config, train_config, run)
            ran = True
            lines.append(f"per-user metrics added to {run.path}")
        elif force or missing:
            if missing and run.metrics.exists():
                log(f"{run.path}: {', '.join(missing)} missing; training it again")
            training.train(config, train_config=train_config, resume=not force, log=log,
                           world=world)
            ran = True
            lines.append(f"trained {run.path}")
        else:
            lines.append(f"up to date {run.path}")
    if ran or not runs[0].training_curves.exists():
        from pipeline.report import write_training_curves

        write_training_curves([run.path for run in runs])
    return StageResult("train", ran, "\n".join(lines), run_dir=runs[0].path,
                       runs=[run.path for run in runs], search_table=search_table)


def rank_stage(config: Config, run_dir: Path, force: bool = False) -> StageResult:
    from pipeline.rank import rank

    run = RunFolder(run_dir)
    if not run.item_vectors.exists():
        raise FileNotFoundError(
            f"{run.item_vectors}: missing; train the run first (python -m pipeline train --config ...)"
        )
    outputs = (run.candidates, run.index, run.rank_record)
    if (
        not force
        and all(path.exists() for path in outputs)
        and min(path.stat().st_mtime_ns for path in outputs) >= run.item_vectors.stat().st_mtime_ns
    ):
        return StageResult("rank", False, f"rank: candidates up to date ({run.candidates})",
                           run.path)
    summary = rank(run.path, StoreLayout(config.store).interactions, config.rank)
    return StageResult("rank", True, summary, run.path)


def study_stage(
    config: Config,
    log: Callable[[str], None] = print,
    on_job: Callable[[int, int, object], None] | None = None,
) -> StageResult:
    """The config's [study]: every (arm, regime, seed) run not finished yet, then its table and
    plots (pipeline/study.py); `ran` is False when every run was reused."""
    from pipeline.study import run_study, study_layout

    summary = run_study(config, log=log, on_job=on_job)
    layout = study_layout(config)
    text = f"{layout.markdown.read_text()}study folder: {layout.root}"
    return StageResult("study", bool(summary.trained), text, run_dir=layout.root,
                       runs=[Path(p) for p in summary.run_dirs])
