"""Build the configured model from a TrainConfig and RecData, on the device the config asks for."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from model.config import TrainConfig
from model.data import RecData
from model.registry import model_class


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when present, else cpu; an explicit cuda without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but no CUDA device is available")
    return torch.device(name)


def build_model(config: TrainConfig, data: RecData, device: torch.device,
                log: Callable[[str], None] = print) -> nn.Module:
    """The configured model (model/registry.py) on `device`, initialised from torch's RNG state."""
    return model_class(config.model).from_config(config, data, device, log)
