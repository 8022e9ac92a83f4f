"""What a run produced, as plain tables and markdown (the flows publish them as Prefect artifacts)."""

from __future__ import annotations

import base64
import io
import json
import math
import statistics
from pathlib import Path

import pyarrow.compute as pc

from model.run import RunFolder, write_atomically
from pipeline import schemas
from pipeline.config import Config
from pipeline.store import PartStore, StoreError, StoreLayout, current_key, read_table

METRIC_COLUMNS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
CURVE_METRIC = "recall@20"  # the valid metric training selects on (model.config.SELECTION_METRIC)
HISTORY_ROWS = 25  # the history artifact's rows at most; history.jsonl keeps every epoch
DESCRIPTOR_NOTE = (
    "These captions come from the **descriptor captioner** (classical image analysis, no "
    "weights): they are NOT a multimodal LLM's output."
)


def dataset_markdown(config: Config) -> str:
    """Catalog counts, the split, and every drop with its reason and count (from ingest_summary.json)."""
    path = StoreLayout(config.store).ingest_summary
    if not path.exists():
        raise StoreError(f"{path}: missing (run the ingest stage)")
    summary = json.loads(path.read_text())
    split = summary["split_counts"]
    lines = [
        f"# Dataset `{summary['name']}` ({summary['dataset']}, split {summary['split_method']})",
        "",
        "| items | users | interactions | train | valid | test | items with image | cold items |",
        "|---|---|---|---|---|---|---|---|",
        f"| {summary['n_items']:,} | {summary['n_users']:,} | {summary['n_interactions']:,} | "
        f"{split['train']:,} | {split['valid']:,} | {split['test']:,} | "
        f"{summary['items_with_image']:,} | {summary['cold_items']:,} |",
        "",
        "## Drops",
    ]
    if not summary["drops"]:
        lines.append("None.")
    else:
        lines += ["| what | count | reason | file |", "|---|---|---|---|"]
        lines += [
            f"| {d['kind']} | {d['count']:,} | {d['reason']} | `{d['file']}` |"
            for d in summary["drops"]
        ]
    return "\n".join(lines)


def caption_samples(config: Config, n: int = 12) -> tuple[list[dict], str]:
    """Up to `n` captions beside their items' titles, and the captioner that made them."""
    layout = StoreLayout(config.store)
    key = current_key(layout.captions_root)
    store = PartStore(layout.captions(key), schemas.CAPTIONS)
    captions = store.read(["caption", "error"])
    captions = captions.filter(pc.is_valid(captions.column("caption"))).slice(0, n)
    items = read_table(layout.items, schemas.ITEMS, columns=["item_id", "title"])
    title = dict(
        zip(items.column("item_id").to_pylist(), items.column("title").to_pylist(), strict=True)
    )
    provenance = store.provenance()
    captioner = provenance.get("captioner_name") or key  # the caption stage writes captioner_name
    rows = [
        {
            "item_id": item_id,
            "title": title.get(item_id),
            "caption": caption,
            "captioner": captioner,
        }
        for item_id, caption in zip(
            captions.column("item_id").to_pylist(),
            captions.column("caption").to_pylist(),
            strict=True,
        )
    ]
    return rows, captioner


def is_descriptor(captioner: str) -> bool:
    return "descriptor" in captioner.lower()


def run_metrics(run_dir: Path) -> dict:
    run = RunFolder(run_dir)
    if not run.finished:
        raise StoreError(f"{run.metrics}: missing (the run has not finished)")
    return run.read_json(run.metrics)


def metrics_rows(runs: list[Path]) -> list[dict]:
    """One row per run: model, seed, best epoch, what it fitted on valid (EASE's l2), and
    valid/test/test-cold Recall and NDCG @10/@20."""
    rows = []
    for run_dir in runs:
        metrics = run_metrics(run_dir)
        seed = metrics.get("config", {}).get("seed")
        row = {"model": metrics["model"], "seed": seed, "best_epoch": metrics["best_epoch"],
               "fitted": fitted_text(metrics.get("fitted") or {})}
        for part in ("valid", "test", "test_cold"):
            for name in METRIC_COLUMNS:
                value = metrics.get(part, {}).get(name)
                row[f"{part} {name}"] = None if value is None else round(value, 4)
        rows.append(row)
    return rows


def fitted_text(fitted: dict) -> str | None:
    """metrics.json's "fitted" as `name=value` of its single values ("l2=300"); None when empty."""
    parts = [f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
             for name, value in fitted.items() if not isinstance(value, list | dict)]
    return ", ".join(parts) or None


def mean_std_rows(rows: list[dict]) -> list[dict]:
    """Rows grouped by model: each metric as "mean ± std" over the seeds (std 0 for one seed)."""
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    out = []
    for model, group in by_model.items():
        summary = {"model": model, "seeds": len(group)}
        for column in group[0]:
            if column in ("model", "seed", "best_epoch", "fitted"):
                continue
            values = [r[column] for r in group if r[column] is not None]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                summary[column] = f"{statistics.mean(values):.4f} ± {std:.4f}"
        out.append(summary)
    return out


def history_rows(run_dir: Path, max_rows: int = HISTORY_ROWS) -> tuple[list[dict], int]:
    """The per-epoch history of one run (loss, valid Recall/NDCG@20, seconds) at most `max_rows`
    epochs (evenly spaced, the first, the best and the last among them), and how many it has."""
    history = RunFolder(run_dir).read_history()
    best = run_metrics(run_dir)["best_epoch"]
    shown = sampled_epochs([entry["epoch"] for entry in history], best, max_rows)
    rows = [
        {
            "epoch": entry["epoch"],
            "best": entry["epoch"] == best,
            "loss": None if entry.get("loss") is None else round(entry["loss"], 5),
            "valid recall@20": round(entry["valid"]["recall@20"], 4),
            "valid ndcg@20": round(entry["valid"]["ndcg@20"], 4),
            "train s": entry.get("train_seconds"),
            "eval s": entry.get("eval_seconds"),
        }
        for entry in history if entry["epoch"] in shown
    ]
    return rows, len(history)


def sampled_epochs(epochs: list[int], best: int, max_rows: int) -> set[int]:
    """At most `max_rows` of `epochs` (max_rows >= 3): evenly spaced from the first to the last,
    and `best`."""
    if len(epochs) <= max_rows:
        return set(epochs)
    spaced = max_rows - 1  # one row kept for the best epoch
    picks = {epochs[round(i * (len(epochs) - 1) / (spaced - 1))] for i in range(spaced)}
    return picks | ({best} & set(epochs))


def run_histories(runs: list[Path]) -> dict[str, list[dict]]:
    """{label: history lines} of each run; a label is the model, with its seed when a model
    has several runs."""
    metrics = [run_metrics(run_dir) for run_dir in runs]
    models = [m["model"] for m in metrics]
    labels = [model if models.count(model) == 1 else f"{model} seed {m['config'].get('seed')}"
              for model, m in zip(models, metrics, strict=True)]
    return {label: RunFolder(run_dir).read_history()
            for label, run_dir in zip(labels, runs, strict=True)}


def training_curves_png(histories: dict[str, list[dict]]) -> bytes:
    """training_curves_figure as PNG bytes."""
    buffer = io.BytesIO()
    training_curves_figure(histories).savefig(buffer, format="png")
    return buffer.getvalue()


def training_curves_figure(histories: dict[str, list[dict]]):
    """A matplotlib Figure: the first panel holds every run's valid Recall@20 per epoch (one line
    per run, its best epoch marked); then one panel per run with its training loss per epoch.

    `histories` maps a run's label to its history.jsonl lines (epoch, loss, valid metrics); a
    model with nothing to train (one "epoch 0", loss null) gets a panel saying so.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, the Agg canvas for PNG

    panels = 1 + len(histories)
    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows), dpi=90, layout="constrained")
    recall = figure.add_subplot(rows, columns, 1)
    recall.set(title=f"valid {CURVE_METRIC}", xlabel="epoch", ylabel=CURVE_METRIC)
    for panel, (label, lines) in enumerate(histories.items(), start=2):
        epochs = [line["epoch"] for line in lines]
        values = [line["valid"].get(CURVE_METRIC) for line in lines]
        drawn = recall.plot(epochs, values, marker="." if len(epochs) < 30 else None,
                            label=label)[0]
        if lines:
            best = max(range(len(values)), key=lambda i: values[i])
            recall.plot([epochs[best]], [values[best]], "*", color=drawn.get_color(),
                        markersize=10)
        loss = figure.add_subplot(rows, columns, panel)
        loss.set(title=f"{label}: training loss", xlabel="epoch", ylabel="BPR loss")
        trained = [line for line in lines if line.get("loss") is not None]
        if trained:
            loss.plot([line["epoch"] for line in trained], [line["loss"] for line in trained],
                      color=drawn.get_color())
        else:
            loss.text(0.5, 0.5, "nothing to train\n(scored once)", ha="center", va="center",
                      transform=loss.transAxes)
            loss.set(xticks=[], yticks=[])
    if histories:
        recall.legend(fontsize="small")
    return figure


def write_training_curves(runs: list[Path]) -> Path:
    """The curves of `runs` as training_curves.png in the first run's folder (the [train] run)."""
    png = training_curves_png(run_histories(runs))
    return write_atomically(RunFolder(runs[0]).training_curves,
                            lambda temporary: temporary.write_bytes(png))


def training_curves_markdown(path: Path, description: str) -> str:
    """Markdown showing the PNG at `path` inline (a data: URL, which the Prefect UI renders)."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f"# Training curves\n\n{description}\n\n"
            f"![training curves](data:image/png;base64,{encoded})\n")


def search_rows(search_table: Path) -> list[dict]:
    """Every trial of a search (its search.json): state, params, best epoch, valid and test
    Recall/NDCG@20 (test shown, never used for the selection), seconds; the selected one marked."""
    table = json.loads(Path(search_table).read_text(encoding="utf-8"))
    rows = []
    for trial in table["rows"]:
        row = {"trial": trial["number"], "selected": trial["number"] == table["best_number"],
               "state": trial["state"], "params": json.dumps(trial["params"]),
               "best_epoch": trial["best_epoch"]}
        for part in ("valid", "test"):
            for name in ("recall@20", "ndcg@20"):
                value = trial[part].get(name)
                row[f"{part} {name}"] = None if value is None else round(value, 4)
        row["seconds"], row["note"] = trial["seconds"], trial["note"]
        rows.append(row)
    return rows


def inputs_markdown(run_dir: Path) -> str:
    """Which extractors produced the run's features (captioner and embedder keys, provenance)."""
    metrics = run_metrics(run_dir)
    modalities = metrics.get("inputs", {}).get("modalities", {})
    if not modalities:
        return "ID-only model: no item features."
    lines = [
        "| modality | store key | dim | items without a vector | made by |",
        "|---|---|---|---|---|",
    ]
    for name, info in modalities.items():
        provenance = info.get("provenance", {})
        # embedding stores record "embedder_name" (older ones only "model"); a caption modality
        # also records its "captioner_key"
        made_by = provenance.get("embedder_name") or provenance.get("model")
        if not made_by and provenance.get("source") == "imported":
            made_by = f"imported from {provenance.get('file')}"
        made_by = made_by or info["key"]
        captioner = provenance.get("captioner_name") or provenance.get("captioner_key")
        if captioner:
            made_by += f" (captions: {captioner})"
        lines.append(
            f"| {name} | `{info['key']}` | {info['dim']} | {info['missing_items']} | {made_by} |"
        )
    return "\n".join(lines)


def metrics_table(
    rows: list[dict],
    columns: tuple[str, ...] = (
        "valid recall@20",
        "test recall@20",
        "test ndcg@20",
        "test_cold recall@20",
        "test_cold ndcg@20",
    ),
) -> str:
    """A plain-text table of metrics_rows (one line per run) for a terminal."""
    header = ["model", "seed", "best epoch", *columns]
    lines = [header] + [
        [row["model"], str(row["seed"]), str(row["best_epoch"])]
        + ["-" if row.get(c) is None else f"{row[c]:.4f}" for c in columns]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    )
