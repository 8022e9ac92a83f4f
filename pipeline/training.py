"""Train stage: catalog + feature stores -> RecData -> model.train, in a run folder named by its inputs.

The run folder's files are named by model.run.RunFolder; this module writes the ones the pipeline
adds (ids, config snapshot, inputs record, per-user metrics) and leaves the rest to model.train.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extractors.redact import redact
from model.run import RunFolder, write_json, write_text
from pipeline import schemas
from pipeline.config import Config, config_from_snapshot
from pipeline.per_user import write_per_user
from pipeline.splits import catalog_order, codes_in
from pipeline.store import (
    PartStore,
    StoreError,
    StoreLayout,
    current_key,
    read_table,
    write_ids,
)

if TYPE_CHECKING:
    from model.config import TrainConfig


@dataclass(frozen=True)
class ModalityInput:
    """Where one modality's vectors came from, and how many items had none (filled, counted)."""

    name: str
    store: Path
    key: str
    dim: int
    provenance: dict
    missing_items: int  # items with no vector in the store: given the modality's mean vector


@dataclass(frozen=True)
class TrainInputs:
    data: object  # model.data.RecData (typed loosely so importing this module needs no torch)
    user_ids: np.ndarray
    item_ids: np.ndarray
    modalities: list[ModalityInput]

    def fingerprint(self) -> str:
        """Interactions with their split, feature values and the stores' keys (ARCHITECTURE "Stores")."""
        digest = hashlib.blake2b(self.data.fingerprint().encode(), digest_size=16)
        for modality in self.modalities:
            digest.update(f"{modality.name}={modality.key}".encode())
        return digest.hexdigest()


def modality_folder(config: Config, modality: str) -> tuple[Path, str]:
    """The embeddings folder a modality is read from, and its key."""
    layout = StoreLayout(config.store)
    if config.modalities[modality].source == "imported":
        key = "imported"
    else:
        key = current_key(layout.modality_embeddings(modality))
    return layout.embeddings(modality, key), key


def load_modality(
    config: Config, modality: str, item_ids: pa.Array
) -> tuple[np.ndarray, ModalityInput]:
    """The (n_items, dim) float32 matrix of one modality in catalog order; absent rows get the mean."""
    folder, key = modality_folder(config, modality)
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts and not folder.exists():
        raise StoreError(f"{folder}: no embeddings for modality {modality!r} (run the embed stage)")
    if not parts:  # the embed stage ran and found nothing to embed
        raise StoreError(_no_vector_message(config, modality, folder, None, item_ids))
    dim = schemas.embedding_dim(pq.read_schema(parts[-1]))
    store = PartStore(folder, schemas.embeddings(dim))
    stored = store.read(["item_id", "vector", "error"])
    table = stored.filter(pc.is_valid(stored.column("vector")))
    rows = codes_in(table.column("item_id"), item_ids)
    known = rows >= 0
    vectors = pc.list_flatten(table.column("vector").combine_chunks()).to_numpy()
    vectors = vectors.reshape(-1, dim)[known].astype(np.float32, copy=False)
    if len(vectors) == 0:
        raise StoreError(_no_vector_message(config, modality, folder, stored, item_ids))
    matrix = np.empty((len(item_ids), dim), dtype=np.float32)
    has_vector = np.zeros(len(item_ids), dtype=bool)
    matrix[rows[known]] = vectors
    has_vector[rows[known]] = True
    # An item with no vector (no image, a failed caption) still needs a row: the mean, counted.
    matrix[~has_vector] = vectors.mean(axis=0)
    info = ModalityInput(modality, folder, key, dim, store.provenance(), int((~has_vector).sum()))
    return matrix, info


def _no_vector_message(
    config: Config, modality: str, folder: Path, stored: pa.Table | None, item_ids: pa.Array
) -> str:
    """Why a modality has no vector for any catalog item: the counts, the first errors, the fix."""
    source = config.modalities[modality].source
    errors: list[tuple[str, str]] = []  # (item_id, error) of the catalog's items
    if stored is not None:
        in_catalog = stored.filter(pc.is_in(stored.column("item_id"), item_ids))
        errors = [
            (item_id, error)
            for item_id, error in zip(
                in_catalog.column("item_id").to_pylist(),
                in_catalog.column("error").to_pylist(),
                strict=True,
            )
            if error is not None
        ]
    no_input = [(item, error) for item, error in errors if error.startswith("no input")]
    failed = [(item, error) for item, error in errors if not error.startswith("no input")]
    without = len(item_ids) - len(errors)  # never embedded: no input when the embed stage ran
    from pipeline.extract.embed import first_caption_errors, no_vector_advice

    layout = StoreLayout(config.store)
    shown = [f"{item}: {error}" for item, error in (failed or no_input)[:3]]
    if source == "caption" and not failed:  # no caption to embed: why captioning failed
        shown = first_caption_errors(layout) or shown
    return (
        f"{folder}: modality {modality!r} has no usable vector for any of the {len(item_ids)} "
        f"catalog items: every input was empty or failed ({without + len(no_input)} without "
        f"{source}, {len(failed)} empty or failed); first errors: {'; '.join(shown) or 'none'}. "
        + no_vector_advice(layout, modality, source)
    )


def load_inputs(config: Config, with_features: bool = True) -> TrainInputs:
    """RecData from the catalog (and the configured modalities); users and items in catalog order."""
    from model.data import RecData

    layout = StoreLayout(config.store)
    items = read_table(layout.items, schemas.ITEMS, columns=["item_id"])
    interactions = read_table(
        layout.interactions, schemas.INTERACTIONS, columns=["user_id", "item_id", "split"]
    )
    item_ids = items.column("item_id").combine_chunks()
    user_ids = catalog_order(interactions.column("user_id").combine_chunks())
    user_index = codes_in(interactions.column("user_id"), user_ids)
    item_index = codes_in(interactions.column("item_id"), item_ids)
    if (item_index < 0).any():
        first = interactions.column("item_id")[int(np.flatnonzero(item_index < 0)[0])]
        raise StoreError(f"{layout.interactions}: item {first} is not in {layout.items}")
    split = interactions.column("split").to_numpy()
    pairs = np.stack([user_index, item_index], axis=1)
    features, modalities = {}, []
    for name in config.modalities if with_features else ():
        features[name], info = load_modality(config, name, item_ids)
        modalities.append(info)
    data = RecData(
        n_users=len(user_ids),
        n_items=len(item_ids),
        train=pairs[split == schemas.SPLIT_TRAIN],
        valid=pairs[split == schemas.SPLIT_VALID],
        test=pairs[split == schemas.SPLIT_TEST],
        features=features,
    )
    return TrainInputs(
        data,
        np.asarray(user_ids.to_pylist(), dtype=object),
        np.asarray(item_ids.to_pylist(), dtype=object),
        modalities,
    )


def run_folder(config: Config, train_config: TrainConfig, inputs: TrainInputs) -> RunFolder:
    """`runs/<model>-<hash of the train config and the inputs>`: the same inputs resume the same run."""
    from model.checkpoint import run_identity

    payload = json.dumps(run_identity(train_config), sort_keys=True, default=str)
    digest = hashlib.blake2b((payload + inputs.fingerprint()).encode(), digest_size=6).hexdigest()
    return StoreLayout(config.store).run(f"{train_config.model}-{digest}")


def train(config: Config, *, resume: bool = True, train_config: TrainConfig | None = None,
          log=print, world=None):
    """Train `train_config` (default: the config's [train]) and write the run folder it names.

    On [scale] train_processes processes of this machine (spawned for this call), or on `world`
    (model.distributed.World, rank 0 of a torchrun launch) when given.
    """
    from model import distributed
    from model.registry import uses_features

    train_config = train_config or config.train
    inputs = load_inputs(config, with_features=uses_features(train_config.model))
    run = run_folder(config, train_config, inputs)
    write_ids(run.user_ids, inputs.user_ids)
    write_ids(run.item_ids, inputs.item_ids)
    # the run's own train config (a [compare] run's, not [train]'s) inside the pipeline config
    snapshot = config.model_copy(update={"train": train_config})
    write_text(run.config, redact(snapshot.model_dump_json(indent=2)))  # no URL password
    write_json(run.inputs, _inputs_record(inputs))
    for modality in inputs.modalities:
        if modality.missing_items:
            log(
                f"modality {modality.name}: {modality.missing_items} item(s) have no vector; "
                "they get the modality's mean vector"
            )
    if world is None and config.scale.train_processes > 1:
        check_data_parallel([train_config], config.scale.train_processes)
        with distributed.local_world(config.scale.train_processes, train_config.device,
                                     config.scale.train_timeout_s) as world:
            result = distributed.train_everywhere(world, train_config, inputs.data, run.path,
                                                  resume=resume, log=log)
    elif world is not None:
        result = distributed.train_everywhere(world, train_config, inputs.data, run.path,
                                              resume=resume, log=log)
    else:
        from model.train import train as train_model

        result = train_model(train_config, inputs.data, run.path, resume=resume, log=log)
    write_per_user(run, result.per_user, inputs.user_ids, _per_user_provenance(result.metrics))
    _add_inputs_to_metrics(run, inputs)
    return result


def check_data_parallel(train_configs: list[TrainConfig], local_processes: int = 0) -> None:
    """Refuse, before anything trains, a model that cannot train on several processes exactly,
    and more `local_processes` (spawned on this machine) than its CPU cores (or GPUs)."""
    from model import distributed
    from model.registry import data_parallel

    for train_config in train_configs if local_processes > 1 else ():
        device = distributed.rank_device(train_config.device, 0)
        distributed.check_processes(local_processes, device)
    refused = sorted({c.model for c in train_configs if not data_parallel(c.model)})
    if refused:
        raise ValueError(
            f"[scale] train_processes > 1: {', '.join(refused)} cannot train on several processes "
            "(MMRec's EmbLoss is an unsquared norm of the whole batch's rows: no sum of the "
            "processes' slices gives the one-process gradient); train them with "
            "train_processes = 1 (a separate config) or leave them out of [compare]")


def complete_per_user(config: Config, train_config: TrainConfig, run: RunFolder) -> None:
    """per_user.parquet for a finished run trained before runs kept it: evaluated from its saved
    best-valid vectors on the split (the run folder is named by these inputs), no training."""
    from model.build import resolve_device
    from model.train import per_user_metrics

    inputs = load_inputs(config, with_features=False)  # the ranking needs only the vectors
    per_user = per_user_metrics(train_config, inputs.data, run, resolve_device(train_config.device))
    write_per_user(run, per_user, inputs.user_ids,
                   _per_user_provenance(run.read_json(run.metrics)))


def _per_user_provenance(metrics: dict) -> dict:
    return {"best_epoch": metrics["best_epoch"], "data_fingerprint": metrics["data_fingerprint"],
            "vectors": "best-valid epoch"}


def _inputs_record(inputs: TrainInputs) -> dict:
    return {
        "fingerprint": inputs.fingerprint(),
        "n_users": len(inputs.user_ids),
        "n_items": len(inputs.item_ids),
        "modalities": {
            m.name: {
                "key": m.key,
                "dim": m.dim,
                "store": str(m.store),
                "missing_items": m.missing_items,
                "provenance": m.provenance,
            }
            for m in inputs.modalities
        },
    }


def _add_inputs_to_metrics(run: RunFolder, inputs: TrainInputs) -> None:
    """metrics.json says which extractors produced the run's inputs (a descriptor is never an MLLM)."""
    metrics = run.read_json(run.metrics)
    metrics["inputs"] = _inputs_record(inputs)
    write_json(run.metrics, metrics)


def missing_outputs(run: RunFolder, train_config: TrainConfig) -> list[str]:
    """What a finished run of `train_config` lacks: missing files, or metrics.json without the
    inputs record (a run killed between the two writes of metrics.json). Empty when complete.
    per_user.parquet is listed last: a run of an earlier version lacks only it."""
    from model.registry import scores_new_items

    missing = [path.name for path in run.missing_outputs(scores_new_items(train_config.model))]
    if not missing and "inputs" not in run.read_json(run.metrics):
        missing.append(f"{run.metrics.name} (its inputs record)")
    if not run.per_user.exists():
        missing.append(run.per_user.name)
    return missing


def run_config(run_dir: Path) -> Config:
    """The config a run was trained with (its snapshot; paths already absolute). Its [train] is
    the run's own (for runs of earlier versions, a [compare] run's snapshot holds [train]'s)."""
    snapshot = RunFolder(run_dir).config
    if not snapshot.exists():
        raise FileNotFoundError(f"{snapshot}: not a run folder (no {snapshot.name})")
    return config_from_snapshot(snapshot.read_text())


def current_runs(config: Config) -> list[RunFolder]:
    """The run folders the config's current inputs name: [train] first, then its [compare] runs."""
    from model.registry import uses_features

    folders, inputs = [], {}
    for train_config in config.compare.train_configs(config.train):
        with_features = uses_features(train_config.model)
        if with_features not in inputs:
            inputs[with_features] = load_inputs(config, with_features=with_features)
        folders.append(run_folder(config, train_config, inputs[with_features]))
    return folders


def search(config: Config, log=print) -> tuple[str, TrainConfig, Path]:
    """The config's [search] study on its data (pipeline/search.py), chosen by VALID Recall@20.

    Returns the markdown table of every trial, the selected TrainConfig (the config's [train]
    with the best trial's params and its own `epochs`: max_epochs only bounds the trials) for
    `train(config, train_config=...)` to train in full, and the search's search.json.
    """
    if config.search is None:
        raise ValueError(f"{config.source}: --search needs a [search] section with a "
                         "[search.space.<field>] table")
    from model.registry import uses_features
    from pipeline.search import SearchFolder, digest, format_table, run_search, study_identity

    inputs = load_inputs(config, with_features=uses_features(config.train.model))
    fingerprint = inputs.fingerprint()
    name = digest(study_identity(config.train, config.search, fingerprint))[:12]
    folder = SearchFolder(StoreLayout(config.store).runs / f"search-{config.train.model}-{name}")
    result = run_search(config.train, config.search, inputs.data, folder.path,
                        data_fingerprint=fingerprint, log=log)
    selected = dataclasses.replace(config.train, **result.best["params"])
    table = (format_table(result) + f"\nselected trial {result.best_number} by valid recall@20 "
             f"(test shown, never used); trials under {folder.path}")
    return table, selected, folder.table
