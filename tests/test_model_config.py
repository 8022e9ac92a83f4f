"""TrainConfig / SearchConfig validation, and their embedding in a pydantic model."""

import pytest
from pydantic import BaseModel, ValidationError

from model.config import SearchConfig, SearchParam, TrainConfig, resolve_mm_weights


class RunConfig(BaseModel):
    train: TrainConfig = TrainConfig()
    search: SearchConfig | None = None


def test_defaults_are_the_reference_settings():
    config = TrainConfig()
    assert (config.embedding_size, config.n_ui_layers, config.n_mm_layers, config.knn_k) == \
        (64, 2, 1, 10)
    assert (config.reg_weight, config.decay_weight, config.decay_base, config.learning_rate) == \
        (1e-3, 0.9, 0.9, 1e-4)
    assert (config.batch_size, config.epochs, config.patience, config.seed) == (2048, 1000, 20, 999)
    assert config.topk == (5, 10, 20, 50)


@pytest.mark.parametrize("field, value, message", [
    ("model", "freedom", "train.model"),
    ("epochs", 0, "train.epochs"),
    ("embedding_size", 30, "train.embedding_size"),
    ("decay_weight", 1.5, "train.decay_weight"),
    ("learning_rate", float("nan"), "train.learning_rate"),
    ("topk", (10, 5), "train.topk"),
    ("topk", (5, 10), "must contain 20"),
    ("knn_method", "lsh", "train.knn_method"),
    ("device", "tpu", "train.device"),
    ("mm_weights", {"image": 0.3, "text": 0.3}, "sum to 1"),
])
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_pydantic_embedding_forbids_unknown_keys_and_coerces_lists():
    run = RunConfig.model_validate({"train": {"topk": [5, 10, 20], "mm_weights": {"a": 1.0}},
                                    "search": {"space": {"reg_weight": {
                                        "kind": "float", "low": 1e-4, "high": 1e-2, "log": True}}}})
    assert run.train.topk == (5, 10, 20)
    assert run.search.space == {"reg_weight": SearchParam("float", 1e-4, 1e-2, log=True)}
    with pytest.raises(ValidationError, match="search.space.reg_weight.high"):
        RunConfig.model_validate({"search": {"space": {"reg_weight": {"kind": "float", "low": 0}}}})
    with pytest.raises(ValidationError, match="knn"):
        RunConfig.model_validate({"train": {"knn": 5}})
    with pytest.raises(ValidationError, match="train.epochs"):
        RunConfig.model_validate({"train": {"epochs": -1}})


def test_search_space_keys_must_be_train_fields():  # the other range errors: tests/test_search.py
    with pytest.raises(ValueError, match="search.space.lr"):
        SearchConfig(space={"lr": SearchParam("categorical", choices=[1e-3])})
    with pytest.raises(ValueError, match="non-empty"):
        SearchConfig(space={"reg_weight": SearchParam("categorical", choices=[])})


def test_mm_weights_must_name_the_data_modalities():
    assert resolve_mm_weights(TrainConfig(), ["image", "text"]) == {"image": 0.5, "text": 0.5}
    config = TrainConfig(mm_weights={"image": 0.1, "text": 0.9})
    assert resolve_mm_weights(config, ["image", "text"]) == {"image": 0.1, "text": 0.9}
    with pytest.raises(ValueError, match=r"missing \['caption'\], unknown \['image'\]"):
        resolve_mm_weights(config, ["caption", "text"])
