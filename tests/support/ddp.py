"""What the data-parallel tests run on each rank (importable by spawned processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.build import build_model
from model.compiled import step_loss, training_outputs
from model.config import TrainConfig
from model.data import RecData
from model.distributed import World, data_parallel_backward
from model.sampling import NegativeSampler
from model.train import train


def sgd_gradients(world: World | None, config: TrainConfig, data: RecData, steps: int,
                  learning_rate: float = 0.05) -> list[np.ndarray]:
    """The flat gradient of each of the first `steps` steps, drawn as model.train draws batches,
    with a plain SGD update between them (Adam would hide a uniformly scaled gradient)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_model(config, data, torch.device("cpu"), lambda _: None)
    model.train()
    sampler = NegativeSampler(data.train, data.n_items)
    pairs = torch.as_tensor(data.train)
    order = torch.as_tensor(rng.permutation(len(data.train)))
    gradients = []
    for start in list(range(0, len(order), config.batch_size))[:steps]:
        batch = pairs[order[start:start + config.batch_size]]
        users, positives = batch[:, 0], batch[:, 1]
        negatives = torch.as_tensor(sampler.sample(users.numpy(), rng))
        outputs = training_outputs(model)
        model.zero_grad(set_to_none=True)
        if world is None:
            step_loss(model, outputs, users, positives, negatives).backward()
        else:
            data_parallel_backward(model, world, outputs, users, positives, negatives)
        gradients.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy())
        with torch.no_grad():
            for p in model.parameters():
                p -= learning_rate * p.grad
    return gradients


def train_rank(world: World, config: TrainConfig, data: RecData, run_dir: Path) -> None:
    """A rank other than 0 trains with its own run folder: it must write nothing there."""
    train(config, data, run_dir, world=world, log=lambda _: None)


def rank_killed_at_step(world: World, config: TrainConfig, data: RecData, run_dir: Path,
                        step: int) -> None:
    """A rank other than 0 that trains until its `step`-th step, then SIGKILLs itself there."""
    import itertools
    import os
    import signal

    import model.train as trainer

    steps, backward = itertools.count(1), trainer.data_parallel_backward

    def dying(*args, **kwargs):
        if next(steps) == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return backward(*args, **kwargs)

    trainer.data_parallel_backward = dying
    train(config, data, run_dir, world=world, log=lambda _: None)
