"""Exact resume: a training subprocess killed with SIGKILL mid-run, resumed, ends where an
uninterrupted run ends (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPT = """
import sys, time
from pathlib import Path
from model.config import TrainConfig
from model.data import hold_out_items
from tests.support.synthetic import planted_data
from model.train import train

data = hold_out_items(planted_data(n_users=60, seed=4), 0.1, seed=0)
config = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=10, patience=3,
                     batch_size=64, device="cpu", topk=(5, 10, 20))
def slow_log(line):  # each epoch takes at least this long, so the kill lands mid-run
    print(line, flush=True)
    time.sleep(0.3)
train(config, data, Path(sys.argv[1]), log=slow_log)
"""


def run_to_end(run_dir: Path) -> None:
    subprocess.run([sys.executable, "-c", SCRIPT, str(run_dir)], check=True,
                   capture_output=True, cwd=Path(__file__).parents[1], timeout=300)


def epochs_logged(run_dir: Path) -> int:
    history = run_dir / "history.jsonl"
    return len(history.read_text().splitlines()) if history.exists() else 0


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_result(tmp_path):
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(killed)],
                               cwd=Path(__file__).parents[1], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while epochs_logged(killed) < 4 and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists()

    run_to_end(killed)
    straight = tmp_path / "straight"
    run_to_end(straight)

    def result(run_dir: Path) -> dict:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics.pop("seconds")
        return metrics

    assert result(killed) == result(straight)
    assert result(killed)["test_cold"]  # the cold-start protocol ran too
    history = [json.loads(line) for line in (killed / "history.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in history] == list(range(1, len(history) + 1))
    for name in ("user_vectors.npy", "item_vectors.npy"):
        np.testing.assert_array_equal(np.load(killed / name), np.load(straight / name))


def test_a_torn_last_history_line_is_dropped_and_a_torn_middle_line_named(tmp_path):
    from model.run import RunFolder

    run = RunFolder(tmp_path)
    good = [json.dumps({"epoch": epoch, "loss": 0.5}) for epoch in (1, 2)]
    run.history.write_text("\n".join(good) + '\n{"epoch": 3, "lo')  # killed mid-append
    assert [line["epoch"] for line in run.read_history(up_to_epoch=2)] == [1, 2]
    assert [line["epoch"] for line in run.read_history()] == [1, 2]
    run.history.write_text(good[0] + '\n{"epoch": 2, "lo\n' + good[1] + "\n")
    with pytest.raises(ValueError, match=r"history\.jsonl: line 2 is not a JSON history line"):
        run.read_history()
