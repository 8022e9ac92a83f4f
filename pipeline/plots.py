"""Figures as PNG bytes (matplotlib, Agg backend): a study's regimes and ablation.

Each function is pure (data in, PNG out) and imports matplotlib inside, so importing this module
costs nothing; the Prefect artifacts embed the bytes as a data: URI (flows/reports.py).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.study import StudySummary

METRICS = (("test recall@20", "test Recall@20"), ("test ndcg@20", "test NDCG@20"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def regimes_png(summary: StudySummary) -> bytes | None:
    """Recall@20 and NDCG@20 against the train fraction, one line per arm, std as error bars."""
    regimes = sorted(summary.regimes)
    if not regimes:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.2), squeeze=False)
    for axis, (key, title) in zip(axes[0], METRICS, strict=True):
        for arm in summary.arms:
            points = [(r, summary.regimes[r]["arms"][arm].get(key)) for r in regimes]
            points = [(r, f) for r, f in points if f]
            if not points:
                continue
            x, figures = zip(*points, strict=True)
            axis.errorbar(x, [f["mean"] for f in figures], yerr=[f["std"] for f in figures],
                          marker="o", capsize=3, label=arm,
                          linestyle="--" if summary.arms[arm] != "model" else "-")
        if len(regimes) > 1:
            axis.set_xscale("log")
        axis.set_xticks(regimes, [f"{r:g}" for r in regimes])
        axis.minorticks_off()
        axis.set_xlabel("train fraction")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _png(figure)


def ablation_png(summary: StudySummary) -> bytes | None:
    """Test NDCG@20 per regime as bars: LIRDRec with all features, each modality subset, each
    caption/embedder variant, and the regime's best ID-only arm."""
    ablation = [arm for arm, kind in summary.arms.items() if kind != "model"]
    if not ablation:
        return None
    regimes = sorted(summary.regimes, reverse=True)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(regimes) * (len(ablation) + 2)), 4.2))
    bars = ["lirdrec", *ablation, "best ID-only"] if "lirdrec" in summary.arms \
        else [*ablation, "best ID-only"]
    width = 0.8 / len(bars)
    for index, bar in enumerate(bars):
        means, stds = [], []
        for regime in regimes:
            body = summary.regimes[regime]
            arm = body["best_id_only"] if bar == "best ID-only" else bar
            figure_of = body["arms"].get(arm, {}).get("test ndcg@20") if arm else None
            means.append(figure_of["mean"] if figure_of else 0.0)
            stds.append(figure_of["std"] if figure_of else 0.0)
        positions = [r + (index - (len(bars) - 1) / 2) * width for r in range(len(regimes))]
        axis.bar(positions, means, width, yerr=stds, capsize=2, label=bar)
    axis.set_xticks(range(len(regimes)),
                    [f"train fraction {r:g}\n(best ID-only: {summary.regimes[r]['best_id_only']})"
                     for r in regimes])
    axis.set_ylabel("test NDCG@20")
    axis.set_title("Ablation: modalities and extractors (mean ± std over seeds)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, ncols=2)
    return _png(figure)
