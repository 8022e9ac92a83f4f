"""The models a run can train, by the name `[train] model` gives, and the contract they keep.

Adding a model is its own file plus one line in MODELS. Names map to import paths so that
reading the registry (config validation) imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch

    from model.config import TrainConfig
    from model.data import RecData

MODELS: dict[str, str] = {
    "lirdrec": "model.lirdrec:LIRDRec",
    "lightgcn": "model.baselines:LightGCN",
    "bpr": "model.baselines:BPRMF",
    "pop": "model.baselines:Popularity",
    "ease": "model.ease:EASE",
    "content_knn": "model.content_knn:ContentKNN",
}


class Recommender(Protocol):
    """What the trainer, the evaluator and the rank stage use of a model (a torch nn.Module).

    A model without trainable parameters (pop, ease, content_knn) is evaluated once, as epoch 0;
    `start_epoch` and `batch_loss` are then never called.

    A model with `scores_new_items` can score items it never saw (SPEC section 8): it then
    provides `encoder_only(config, n_users, feature_dims)` and what model/encode.py calls
    (`item_streams`, `propagated_rows`, `n_mm_layers`, `item_item`), as LIRDRec does; its runs
    keep best_model.pt and item_encoder.npz. Only a `uses_features` model can.

    A trainable model may split `batch_loss` into `ranking_loss` (the mean over the batch's rows)
    plus `batch_free_loss` (a term that does not see the batch, such as a regulariser over all
    vectors). Then the trainer computes the second with the forward pass (inside the compiled graph
    where `train.compile` compiles it: model/compiled.py), and data-parallel ranks weight the first
    by their share of the rows and count the second once (model/distributed.py): a trainable
    model with `data_parallel` provides both.

    A model with `compiles` (a ClassVar, default False) may have its training forward compiled
    by `train.compile` (model/compiled.py); it provides `compile_size()`, the floats of rows a
    forward pass moves, which "auto" compares with its threshold.

    A model that cannot take some data may provide `check_fits(config, data)`, raising ValueError
    (EASE's item limit): a study calls it for every arm before training any.
    """

    uses_features: ClassVar[bool]  # reads the feature stores (else ID-only: no features loaded)
    scores_new_items: ClassVar[bool]  # `recommend --item-features` works on its runs
    # trains on several processes exactly (its loss splits into batch rows and a batch-free term)
    data_parallel: ClassVar[bool]

    @classmethod
    def from_config(cls, config: TrainConfig, data: RecData, device: torch.device,
                    log: Callable[[str], None]) -> Recommender:
        """The model on `device`, initialised from torch's current RNG state."""
        ...

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, D) user and (I, D) item vectors; a user's score for an item is their dot product."""
        ...

    def start_epoch(self, epoch: int) -> None:
        """Per-epoch schedule, called before epoch 1, 2, ..."""
        ...

    def batch_loss(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                   users: torch.Tensor, positives: torch.Tensor,
                   negatives: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch of (user, positive, negative) triples."""
        ...

    def fitted(self) -> dict[str, Any]:
        """What building the model chose from the data (EASE: its l2, on valid), for
        metrics.json's "fitted"; {} when it chose nothing."""
        ...

    def ranking_loss(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                     users: torch.Tensor, positives: torch.Tensor,
                     negatives: torch.Tensor) -> torch.Tensor:
        """The mean of batch_loss's per-row part over the batch's rows (a split loss only)."""
        ...

    def batch_free_loss(self, user_vectors: torch.Tensor,
                        item_vectors: torch.Tensor) -> torch.Tensor:
        """The rest of batch_loss, which does not see the batch (a split loss only)."""
        ...


def model_class(name: str) -> type[Recommender]:
    if name not in MODELS:
        raise ValueError(f"train.model: unknown model {name!r}; expected one of {list(MODELS)}")
    module, attribute = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def uses_features(name: str) -> bool:
    """Whether the model `name` reads item features (imports the model's module)."""
    return model_class(name).uses_features


def scores_new_items(name: str) -> bool:
    """Whether runs of the model `name` can score new items from their features."""
    return model_class(name).scores_new_items
def data_parallel(name: str) -> bool:
    """Whether the model `name` trains on several processes exactly (imports the model's module)."""
    return model_class(name).data_parallel
