"""Data-parallel training (gloo, 2 CPU processes): one process's gradients and results, rank 0
alone writing, resume at the same and at another process count, clear errors."""

import dataclasses
import shutil
import socket
import time

import numpy as np
import pytest
import torch

from model import distributed
from model.config import TrainConfig
from model.run import read_torch
from model.train import train
from tests.support import ddp
from tests.support.synthetic import planted_data

# 480 training pairs: batches of 127 leave an uneven last batch of 99 (ranks: 49 and 50 rows)
CONFIG = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=3, patience=20,
                     batch_size=127, device="cpu", topk=(5, 10, 20), checkpoint_every_steps=2,
                     feature_dtype="float32")  # bf16 products would round at bf16's precision
TIMEOUT_S = 60
QUIET = {"log": lambda _: None}


def without_timings(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "seconds"}


def test_gradients_of_the_first_steps_are_the_one_process_gradients():
    data = planted_data()
    # 480 pairs in batches of 241 and 239: both split unevenly (120 + 121 rows, 119 + 120), the
    # last batch is smaller; a visible regulariser share (reg_weight 1)
    config = dataclasses.replace(CONFIG, reg_weight=1.0, batch_size=241)
    with distributed.local_world(2, "cpu", TIMEOUT_S, target=ddp.sgd_gradients,
                                 args=(config, data, 2)) as world:
        two = ddp.sgd_gradients(world, config, data, 2)
    one = ddp.sgd_gradients(None, config, data, 2)
    assert len(one) == len(two) == 2
    for step, (single, shared) in enumerate(zip(one, two, strict=True)):
        scale = np.abs(single).max()
        np.testing.assert_allclose(shared, single, rtol=0, atol=1e-5 * scale,
                                   err_msg=f"step {step}")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """A 3-epoch run on 2 processes whose folder is copied as a kill right after the mid-epoch
    checkpoint of epoch 2 would leave it; the rank-1 run folder it was given; a 1-process run."""
    root = tmp_path_factory.mktemp("ddp")
    data = planted_data()
    lines = []

    def log(line: str) -> None:
        lines.append(line)
        if line == "checkpoint: epoch 2 step 2 of 4":
            shutil.copytree(root / "two", root / "killed")

    with distributed.local_world(2, "cpu", TIMEOUT_S, target=ddp.train_rank,
                                 args=(CONFIG, data, root / "rank1")) as world:
        two = train(CONFIG, data, root / "two", world=world, log=log)
    one = train(CONFIG, data, root / "one", **QUIET)
    return root, data, two, one, lines


def test_two_processes_train_what_one_does_and_rank_0_alone_writes(two_process_run):
    root, data, two, one, lines = two_process_run
    assert not (root / "rank1").exists()
    assert any("rank 0 of 2 processes" in line for line in lines)
    assert two.best_epoch == one.best_epoch and two.epochs_run == one.epochs_run == 3
    assert without_timings(two.metrics)["valid"] == pytest.approx(one.metrics["valid"], abs=1e-9)
    assert two.metrics["test"] == pytest.approx(one.metrics["test"], abs=1e-9)
    for name in ("user_vectors.npy", "item_vectors.npy"):
        np.testing.assert_allclose(np.load(root / "two" / name), np.load(root / "one" / name),
                                   atol=1e-5)


def assert_resumes_on_two_processes_to(data, folder, uninterrupted, uninterrupted_folder):
    """The same command again on 2 processes resumes `folder` from step 2 of epoch 2 and ends
    with the uninterrupted two-process run's metrics and vectors."""
    with distributed.local_world(2, "cpu", TIMEOUT_S) as world:  # ranks 1..: serve_jobs
        lines = []
        resumed = distributed.train_everywhere(world, CONFIG, data, folder, log=lines.append)
    assert any(line.startswith("resumed") and "step 2 of epoch 2" in line for line in lines)
    assert without_timings(resumed.metrics) == without_timings(uninterrupted.metrics)
    for name in ("user_vectors.npy", "item_vectors.npy"):
        np.testing.assert_array_equal(np.load(folder / name),
                                      np.load(uninterrupted_folder / name))


def test_a_kill_mid_epoch_resumes_on_two_processes_to_the_same_result(two_process_run):
    root, data, two, one, lines = two_process_run
    assert (root / "killed" / "checkpoint.pt").exists()
    assert_resumes_on_two_processes_to(data, root / "killed", two, root / "two")
    last, last_straight = (read_torch(root / run / "checkpoint.pt") for run in ("killed", "two"))
    for name, weights in last["model"].items():  # the last epoch's weights too
        torch.testing.assert_close(weights, last_straight["model"][name], rtol=0, atol=0)


def test_a_rank_killed_mid_epoch_is_named_and_the_rerun_resumes_to_the_same_result(
        two_process_run, tmp_path):
    root, data, two, one, lines = two_process_run
    lines_killed = []
    # rank 1 SIGKILLs itself at its 7th step (epoch 2, step 3 of 4): the last checkpoint is the
    # one after epoch 2's step 2
    with pytest.raises(distributed.DistributedError,
                       match=r"rank 1 \(pid \d+\) ended during training \(killed by signal 9\)"
                             r".*rerun to resume"):
        with distributed.local_world(2, "cpu", TIMEOUT_S, target=ddp.rank_killed_at_step,
                                     args=(CONFIG, data, tmp_path / "rank1", 7)) as world:
            train(CONFIG, data, tmp_path / "run", world=world, log=lines_killed.append)
    assert "checkpoint: epoch 2 step 2 of 4" in lines_killed
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert_resumes_on_two_processes_to(data, tmp_path / "run", two, root / "two")


def test_a_two_process_checkpoint_resumes_on_one_process(two_process_run, tmp_path):
    root, data, two, one, lines = two_process_run
    shutil.copytree(root / "killed", tmp_path / "run", ignore=shutil.ignore_patterns("metrics*"))
    resumed_lines = []
    # a copy of the folder as the kill left it, resumed in this one process
    resumed = train(CONFIG, data, tmp_path / "run", log=resumed_lines.append)
    assert any("written by 2 processes, resumed on 1" in line for line in resumed_lines)
    assert resumed.metrics["test"] == pytest.approx(two.metrics["test"], abs=1e-9)


def test_an_unreachable_rendezvous_is_a_clear_error_in_time():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens there
    started = time.monotonic()
    with pytest.raises(distributed.DistributedError, match=r"rank 1 of 2: no process group at "
                                                           r"tcp://127\.0\.0\.1:\d+ within 2 s"):
        distributed.join(1, 2, torch.device("cpu"), 2, f"tcp://127.0.0.1:{port}")
    assert time.monotonic() - started < 30
    # the same process joins a new group afterwards (the failed one took a group number)
    with distributed.local_world(2, "cpu", 20) as world:  # a failed join: DistributedError
        assert world.size == 2


def test_more_processes_than_cores_and_batch_norm_models_are_refused():
    from pipeline.training import check_data_parallel

    cores = distributed.cpu_cores()
    with pytest.raises(ValueError, match=rf"train_processes = {cores + 1} .* has {cores} CPU cores"):
        check_data_parallel([CONFIG], cores + 1)
    for model in ("bpr", "lightgcn"):
        with pytest.raises(ValueError, match=rf"{model} cannot train on several processes"):
            check_data_parallel([CONFIG, dataclasses.replace(CONFIG, model=model)], 1)
    check_data_parallel([CONFIG, dataclasses.replace(CONFIG, model="pop")], 1)


def test_a_data_parallel_step_needs_the_loss_split_into_its_two_parts():
    """A model that trains data-parallel must give the batch-free part of its loss with the
    forward (ranking_loss + batch_free_loss): without it the step is an error naming the model."""
    rows = torch.zeros(4, 2, requires_grad=True)
    batch = torch.arange(2), torch.arange(2), torch.arange(2, 4)

    class Unsplit(torch.nn.Module):
        pass

    with pytest.raises(TypeError, match="Unsplit trains data-parallel but does not split its loss"):
        distributed.data_parallel_backward(Unsplit(), None, (rows, rows, None), *batch)
