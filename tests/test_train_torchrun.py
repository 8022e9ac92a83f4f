"""`torchrun --nproc-per-node 2 -m pipeline train`: the CLI joins torchrun's process group, rank 0
runs the train stage, and the run folder is complete and what one process trains."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.train import train
from pipeline import training
from pipeline.config import load_config
from pipeline.ingest import ingest
from tests.support.mmrec import write_planted_mmrec

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_torchrun_trains_the_run_one_process_trains(tmp_path):
    config = load_config(write_planted_mmrec(tmp_path))
    ingest(config)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "-m", "pipeline", "train", "--config", str(config.source)]
    done = subprocess.run(torchrun, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 of 2 processes" in done.stdout
    (run,) = training.current_runs(config)
    assert training.missing_outputs(run, config.train) == []
    inputs = training.load_inputs(config)
    one = train(config.train, inputs.data, tmp_path / "one", log=lambda _: None).metrics
    two = json.loads(run.metrics.read_text())
    assert (two["best_epoch"], two["valid"], two["test"]) == \
        (one["best_epoch"], one["valid"], pytest.approx(one["test"], abs=1e-9))


def test_under_torchrun_only_train_runs(tmp_path):
    from pipeline.__main__ import main

    env = {"RANK": "0", "WORLD_SIZE": "2"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(SystemExit):  # argparse's usage error
            main(["ingest", "--config", str(tmp_path / "none.toml")])
