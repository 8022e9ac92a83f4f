"""The training-curve figure and the shortened history table, from history lines (no Prefect)."""

from __future__ import annotations

import math

import numpy as np

from pipeline.report import sampled_epochs, training_curves_figure, training_curves_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(epochs: int, peak: int) -> list[dict]:
    """History lines shaped as history.jsonl's: valid Recall@20 peaks at `peak`."""
    return [{"epoch": epoch, "loss": 0.7 / epoch,
             "valid": {"recall@20": 0.3 - 0.001 * abs(epoch - peak), "ndcg@20": 0.1}}
            for epoch in range(1, epochs + 1)]


HISTORIES = {
    "lirdrec": history(180, peak=150),
    "lightgcn": history(40, peak=30),
    "pop": [{"epoch": 0, "loss": None, "valid": {"recall@20": 0.05, "ndcg@20": 0.02}}],
}


def test_curves_are_a_png_with_one_recall_panel_and_a_loss_panel_per_run():
    png = training_curves_png(HISTORIES)
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    figure = training_curves_figure(HISTORIES)
    axes = figure.get_axes()
    assert len(axes) == 1 + len(HISTORIES)
    recall, *losses = axes
    assert recall.get_title() == "valid recall@20"
    assert [text.get_text() for text in recall.get_legend().get_texts()] == list(HISTORIES)
    assert [axis.get_title() for axis in losses] == [f"{name}: training loss" for name in HISTORIES]
    assert len(losses[0].get_lines()[0].get_xdata()) == 180  # every epoch is drawn
    assert "nothing to train" in losses[2].texts[0].get_text()


def test_one_run_is_two_panels():
    assert len(training_curves_figure({"lirdrec": history(5, peak=3)}).get_axes()) == 2


def test_the_history_table_keeps_the_first_best_last_and_evenly_spaced_epochs():
    epochs = list(range(1, 181))
    shown = sampled_epochs(epochs, best=151, max_rows=25)
    assert len(shown) <= 25 and {1, 151, 180} <= shown
    gaps = np.diff(sorted(shown - {151}))  # 151 is not one of the evenly spaced epochs
    assert gaps.max() - gaps.min() <= 1 and gaps.max() <= math.ceil(179 / 23)
    assert sampled_epochs(list(range(1, 11)), best=4, max_rows=25) == set(range(1, 11))
