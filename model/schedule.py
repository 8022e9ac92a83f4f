"""The trainer's schedule: the learning rate of each step (batch rule, warmup), the batch clamp,
when to checkpoint within an epoch: functions of the TrainConfig (checkpoint_due reads the clock)."""

from __future__ import annotations

import time
from collections.abc import Callable

from model.config import TrainConfig


def learning_rate_at(config: TrainConfig, batch_size: int, step: int) -> float:
    """The learning rate of optimizer step `step` (0, 1, ... over the whole run): learning_rate
    scaled to `batch_size` by `lr_scaling` (relative to lr_reference_batch), ramped up linearly
    over the first `warmup_steps` steps ((step + 1) / warmup_steps of it)."""
    ratio = batch_size / config.lr_reference_batch
    rule = batch_rule(config.lr_scaling, batch_size, config.lr_reference_batch)
    scale = {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[rule]
    learning_rate = config.learning_rate * scale
    if step < config.warmup_steps:
        return learning_rate * (step + 1) / config.warmup_steps
    return learning_rate


def batch_rule(lr_scaling: str, batch_size: int, reference_batch: int) -> str:
    """The rule that runs: "auto" is "linear" above the reference batch and "none" at or below it
    (so the learning rate of configs at or under the reference batch is the one they give)."""
    if lr_scaling == "auto":
        return "linear" if batch_size > reference_batch else "none"
    return lr_scaling


def clamped_batch(config: TrainConfig, n_train: int, log: Callable[[str], None]) -> int:
    """`batch_size`, or the number of training pairs when that is smaller (with a warning)."""
    if config.batch_size <= n_train:
        return config.batch_size
    log(f"warning: train.batch_size {config.batch_size} is larger than the {n_train} training "
        f"pairs: each epoch is one step of {n_train} (the learning-rate rule uses {n_train})")
    return n_train


def checkpoint_due(config: TrainConfig, steps_done: int, last_checkpoint: float) -> bool:
    """Whether to checkpoint within the epoch after `steps_done` of its steps: every
    checkpoint_every_steps steps, or checkpoint_every_minutes after the last checkpoint."""
    every_steps, every_minutes = config.checkpoint_every_steps, config.checkpoint_every_minutes
    return bool(every_steps and steps_done % every_steps == 0) or bool(
        every_minutes and time.monotonic() - last_checkpoint >= 60 * every_minutes)
