"""The model registry: every name builds its model through the one contract."""

import pytest
import torch

from model.build import build_model
from model.config import TrainConfig
from model.registry import MODELS, model_class, scores_new_items, uses_features


def test_every_registered_model_builds_and_scores(planted):
    for name in MODELS:
        torch.manual_seed(0)
        config = TrainConfig(model=name, embedding_size=8, knn_k=3, device="cpu")
        model = build_model(config, planted, torch.device("cpu"), log=lambda _: None)
        users, items = model()
        assert users.shape[0] == planted.n_users and items.shape[0] == planted.n_items
        assert users.shape[1] == items.shape[1]
        assert model_class(name).uses_features == (name in ("lirdrec", "content_knn"))
        assert uses_features(name) == (name in ("lirdrec", "content_knn"))
        assert scores_new_items(name) == (name == "lirdrec")
        assert model.fitted() == {} or name == "ease"


def test_an_unknown_model_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="train.model.*lirdrec"):
        TrainConfig(model="lirdrek")
    with pytest.raises(ValueError, match="unknown model 'lirdrek'"):
        model_class("lirdrek")
