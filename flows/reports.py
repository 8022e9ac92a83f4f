"""Publish a run's reports as Prefect artifacts (tables, markdown, links, progress) for the UI.

Every text an artifact holds goes through extractors.redact first (no key, no URL password).
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from extractors.redact import redact, redact_value
from model.run import RunFolder
from pipeline import report
from pipeline.config import Config
from pipeline.store import StoreLayout


def _key(config: Config, what: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes; a key groups one report across runs.
    slug = "".join(c if c.isalnum() else "-" for c in config.name.lower())
    return f"{slug}-{what}"


def dataset_summary(config: Config) -> None:
    create_markdown_artifact(
        redact_value(report.dataset_markdown(config)),
        key=_key(config, "dataset"),
        description="Catalog and drops",
    )


def sample_captions(config: Config) -> None:
    if not any(modality.source == "caption" for modality in config.modalities.values()):
        return  # the caption stage had nothing to do
    rows, captioner = report.caption_samples(config)
    description = f"Sample captions by {captioner}"
    if report.is_descriptor(captioner):
        description += " (descriptor captioner: NOT a multimodal LLM)"
        create_markdown_artifact(report.DESCRIPTOR_NOTE, key=_key(config, "captioner-note"))
    create_table_artifact(
        redact_value(rows), key=_key(config, "captions"), description=redact_value(description)
    )


def training(config: Config, runs: list[Path]) -> None:
    rows = redact_value(report.metrics_rows(runs))
    create_table_artifact(
        rows, key=_key(config, "metrics"), description="Valid / test / test cold-start, every run"
    )
    if len(rows) > 1:
        create_table_artifact(
            report.mean_std_rows(rows),
            key=_key(config, "metrics-mean-std"),
            description="Mean ± std over seeds, per model",
        )
    run = RunFolder(runs[0])
    history, n_epochs = report.history_rows(run.path)
    shown = (f"all {n_epochs} epochs" if len(history) == n_epochs else
             f"{len(history)} of its {n_epochs} epochs (evenly spaced, with the best)")
    create_table_artifact(
        redact_value(history),
        key=_key(config, "history"),
        description=redact(f"Per-epoch history of {run.name}: {shown}; every epoch is in "
                           f"{run.history}"),
    )
    # the PNG is no text to redact; the words around it are
    create_markdown_artifact(
        report.training_curves_markdown(run.training_curves, redact(
            f"Valid Recall@20 per epoch of every run (the best epoch starred) and each run's "
            f"training loss; saved as `{run.training_curves}`.")),
        key=_key(config, "training-curves"),
        description="Valid Recall@20 and training loss per epoch, every run",
    )
    create_markdown_artifact(
        redact_value(report.inputs_markdown(runs[0])),
        key=_key(config, "inputs"),
        description="Feature provenance",
    )


def search_trials(config: Config, search_table: Path) -> None:
    create_table_artifact(
        redact_value(report.search_rows(search_table)),
        key=_key(config, "search"),
        description="Search trials, selected by valid Recall@20 (test shown, never used)",
    )


def links(config: Config, run_dir: Path) -> None:
    layout = StoreLayout(config.store)
    for what, path in (
        ("store", layout.root),
        ("run", run_dir),
        ("candidates", RunFolder(run_dir).candidates),
        ("index", RunFolder(run_dir).index),
    ):
        create_link_artifact(
            path.resolve().as_uri(), link_text=str(path), key=_key(config, f"link-{what}")
        )


class Progress:
    """A progress artifact that a stage updates as it writes parts (done / total items), and a log
    line at every tenth of the work or every LOG_SECONDS (what `make demo` streams to the terminal)."""

    LOG_SECONDS = 15.0

    def __init__(self, description: str):
        self.description, self.artifact_id = description, None
        self.logged_at, self.logged_tenth = 0.0, -1

    def __enter__(self) -> Progress:
        self.artifact_id = create_progress_artifact(0.0, description=self.description)
        self.logged_at = time.monotonic()
        return self

    def update(self, done: int, total: int) -> None:
        if not total:
            return
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, progress=100.0 * done / total)
        tenth = 10 * done // total
        if tenth > self.logged_tenth or time.monotonic() - self.logged_at > self.LOG_SECONDS:
            get_run_logger().info("%s: %d/%d items", self.description, done, total)
            self.logged_at, self.logged_tenth = time.monotonic(), tenth

    def __exit__(self, *exc) -> None:
        if self.artifact_id is not None and exc[0] is None:
            update_progress_artifact(self.artifact_id, progress=100.0)


def study(config: Config, folder: Path) -> None:
    """The study's table (one row per regime and arm) and its plots, inlined as data: URIs."""
    import base64
    import json

    from pipeline.study import StudyLayout, table_rows

    layout = StudyLayout(folder)
    summary = json.loads(layout.summary.read_text())
    create_table_artifact(
        redact_value(table_rows(summary)), key=_key(config, "study"),
        description="Study: mean ± std over seeds; Δ and Wilcoxon p vs the best ID-only arm "
                    "(chosen on valid NDCG@20)",
    )
    images = []
    for name, title in (("regimes", "Recall@20 and NDCG@20 against the train fraction"),
                        ("ablation", "Modality and extractor ablation")):
        path = layout.plot(name)
        if path.exists():
            data = base64.b64encode(path.read_bytes()).decode()
            images.append(f"### {title}\n\n![{name}](data:image/png;base64,{data})\n")
    create_markdown_artifact(
        "\n".join(images) + "\n" + layout.markdown.read_text(), key=_key(config, "study-plots"),
        description=f"Study plots and table ({folder})",
    )


class StudyProgress:
    """The study's progress artifact: runs done out of all (arm x regime x seed), and a log line
    per run naming the arm, regime and seed (each epoch is logged by the trainer)."""

    def __init__(self, config: Config):
        self.description = f"Study {config.name}: runs done"
        self.artifact_id = None

    def __enter__(self) -> StudyProgress:
        self.artifact_id = create_progress_artifact(0.0, description=self.description)
        return self

    def update(self, done: int, total: int, job) -> None:
        if self.artifact_id is not None and total:
            update_progress_artifact(self.artifact_id, progress=100.0 * done / total)
        if done < total:
            get_run_logger().info("study: %d/%d runs done; now %s", done, total, job.describe())

    def __exit__(self, *exc) -> None:
        pass
