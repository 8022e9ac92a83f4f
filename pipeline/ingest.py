"""The ingest stage: a dataset adapter, then dedupe, cold-item holdout, user filter and split, into the catalog."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model.run import write_json
from pipeline.datasets import DatasetError, Drop, ImportedFeature, SourceData, load_source
from pipeline.datasets.common import make_drop
from pipeline.datasets.mmrec import read_feature_rows
from pipeline.schemas import COLD_HOLDOUT, INTERACTIONS, ITEMS, SPLIT_TEST, embeddings
from pipeline.splits import (
    MIN_SPLIT_INTERACTIONS,
    catalog_order,
    codes_in,
    cold_item_holdout,
    random_split,
    temporal_split,
)
from pipeline.store import PartStore, StoreLayout, write_table

if TYPE_CHECKING:
    from pipeline.config import Config, SplitConfig

IMPORTED_KEY = "imported"  # the embedder key under which MMRec's ready-made features are stored
_FEATURE_PART_BYTES = 256 * 2**20  # imported matrices are written in parts of about this size


@dataclass
class IngestSummary:
    """What ingest read and wrote, the catalog's sizes, and every drop with its reason and count."""

    name: str
    dataset: str
    split_method: str
    n_items: int
    n_users: int
    n_interactions: int
    split_counts: dict[str, int]
    items_with_text: int
    items_with_image: int
    items_without_interactions: int
    cold_items: int
    drops: list[Drop]
    read: dict[str, str]
    written: dict[str, str]
    features: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        values = dict(self.__dict__)
        values["drops"] = [drop.to_dict() for drop in self.drops]
        return values

    def format(self) -> str:
        """A human-readable account, printed by the command line at the end of the stage."""
        counts = self.split_counts
        lines = [
            f"ingest {self.name!r} ({self.dataset}, split {self.split_method}) in {self.seconds:.1f} s",
            f"  items        {self.n_items:,} ({self.items_with_text:,} with text, {self.items_with_image:,} with an image, "
            f"{self.items_without_interactions:,} without interactions, {self.cold_items:,} held out cold)",
            f"  users        {self.n_users:,}",
            f"  interactions {self.n_interactions:,} (train {counts['train']:,} / valid {counts['valid']:,} / test {counts['test']:,})",
        ]
        lines += [f"  read    {role}: {path}" for role, path in self.read.items()]
        lines += [f"  wrote   {role}: {path}" for role, path in self.written.items()]
        lines += [
            f"  imported {f['modality']}: {f['rows']:,} x {f['dim']} from {f['file']}"
            for f in self.features
        ]
        if not self.drops:
            lines.append("  drops   none")
        for drop in self.drops:
            shown = f" e.g. {', '.join(drop.examples)}" if drop.examples else ""
            lines.append(
                f"  dropped {drop.count:,} {drop.kind}: {drop.reason} [{drop.file}]{shown}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def ingest(config: Config, progress: bool = False) -> IngestSummary:
    """Build `catalog/` under the config's store: items, split interactions, imported features, summary."""
    started = time.perf_counter()
    layout = StoreLayout(Path(config.store))
    with _steps(progress, 5) as step:
        step("read dataset")
        source = load_source(config.dataset, layout.image_cache, progress=progress)
        step("split")
        items = _items_in_catalog_order(source.items)
        split = _split_interactions(source, items.column("item_id").combine_chunks(), config.split)
        interactions = split.interactions
        is_cold = np.zeros(items.num_rows, dtype=bool)
        is_cold[split.cold_codes] = True
        items = items.append_column(COLD_HOLDOUT, pa.array(is_cold))
        step("write catalog")
        provenance = {
            "source": config.dataset.kind,
            "files": source.files,
            "split": config.split.model_dump(),
        }
        declared = [*ITEMS, COLD_HOLDOUT]
        items_schema = pa.schema(
            [*declared, *(f for f in items.schema if f.name not in {d.name for d in declared})]
        )
        write_table(layout.items, items, items_schema, provenance)
        write_table(layout.interactions, interactions, INTERACTIONS, provenance)
        step("import features")
        features = [_import_feature(feature, layout) for feature in source.features]
        step("summary")
        summary = _summary(config, source, items, split, layout, features)
        summary.seconds = time.perf_counter() - started
        write_json(layout.ingest_summary, summary.to_dict())
    return summary


def _items_in_catalog_order(items: pa.Table) -> pa.Table:
    ordered = catalog_order(items.column("item_id").combine_chunks())
    return items.take(pc.index_in(ordered, value_set=items.column("item_id")))


@dataclass
class _Split:
    """The catalog's interactions with their split, and what the summary counts from the codes."""

    interactions: pa.Table  # sorted by user, then item, in catalog order
    cold_codes: np.ndarray  # item codes held out entirely
    n_users: int
    n_items_interacted: int


def _split_interactions(source: SourceData, item_ids: pa.Array, split: SplitConfig) -> _Split:
    """Unknown items and repeated pairs out, cold items chosen, short users out, then the split."""
    table = source.interactions
    where = source.files.get("interactions")
    if split.method == "given" and not source.has_split:
        raise DatasetError(
            f"{where}: split.method = 'given' but this source carries no split; use 'random' or 'temporal'"
        )
    item_code = codes_in(table.column("item_id"), item_ids)
    unknown = np.flatnonzero(item_code < 0)
    source.add_drop(
        make_drop(
            "interactions",
            "item id not in the item catalog",
            table.column("item_id").take(pa.array(unknown)),
            where,
        )
    )
    users, user_code = _user_codes(table.column("user_id"))
    timestamp = table.column("timestamp").to_numpy(zero_copy_only=False)
    keep = _first_per_pair(user_code, item_code, timestamp, source, table, where)
    user_code, item_code = user_code[keep], item_code[keep]

    interacted = np.flatnonzero(np.bincount(item_code, minlength=len(item_ids)))
    cold_codes = cold_item_holdout(interacted, split.cold_item_share, split.cold_item_seed)
    cold_mask = np.zeros(len(item_ids), dtype=bool)
    cold_mask[cold_codes] = True
    is_cold = cold_mask[item_code]

    total = np.bincount(user_code, minlength=len(users))
    kept = _users_with_enough(total, total, split.min_user_interactions, "", users, where, source)
    if split.method != "given":
        warm_count = np.bincount(user_code[~is_cold], minlength=len(users))
        kept &= _users_with_enough(
            np.where(kept, warm_count, MIN_SPLIT_INTERACTIONS),
            total,
            MIN_SPLIT_INTERACTIONS,
            " outside the cold items (the 8:1:1 split's minimum)",
            users,
            where,
            source,
        )
    row_kept = kept[user_code]
    if not row_kept.all():
        keep, user_code, item_code = keep[row_kept], user_code[row_kept], item_code[row_kept]
        is_cold = is_cold[row_kept]
    if keep.size == 0:
        raise DatasetError(
            f"{where}: no interactions left after the drops: "
            + "; ".join(f"{d.count} {d.kind}: {d.reason}" for d in source.drops)
        )

    labels = np.full(keep.size, SPLIT_TEST, dtype=np.int8)
    warm = ~is_cold
    if split.method == "given":
        labels[warm] = table.column("split").to_numpy(zero_copy_only=False)[keep][warm]
    elif split.method == "random":
        labels[warm] = random_split(user_code[warm], item_code[warm], split.seed)
    else:
        warm_time = timestamp[keep][warm]
        missing = int(np.isnan(warm_time).sum()) if warm_time.dtype.kind == "f" else 0
        if missing:
            raise DatasetError(
                f"{where}: split.method = 'temporal' needs timestamps; {missing:,} interaction(s) have none"
            )
        labels[warm] = temporal_split(user_code[warm], warm_time, item_code[warm])
    out = table.take(pa.array(keep)).drop_columns(["split"])
    out = out.append_column(pa.field("split", pa.int8(), nullable=False), pa.array(labels))
    return _Split(out, cold_codes, int(kept.sum()), int(np.count_nonzero(np.bincount(item_code))))


def _user_codes(user_id: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """The distinct users in catalog order, and each row's position among them (one hashing pass)."""
    encoded = user_id.combine_chunks().dictionary_encode()
    users = catalog_order(encoded.dictionary)
    rank = codes_in(encoded.dictionary, users)
    return users, rank[encoded.indices.to_numpy()]


def _first_per_pair(
    user_code: np.ndarray,
    item_code: np.ndarray,
    timestamp: np.ndarray,
    source: SourceData,
    table: pa.Table,
    where: str | None,
) -> np.ndarray:
    """Rows to keep, sorted by (user, item): one per pair, the earliest (else the first in the file).

    Rows of unknown items (code -1) are left out.
    """
    known = np.flatnonzero(item_code >= 0)
    pair = user_code[known] * (int(item_code.max(initial=0)) + 1) + item_code[known]
    by_pair = np.argsort(pair, kind="stable")
    order = known[by_pair]
    sorted_pair = pair[by_pair]
    same = sorted_pair[1:] == sorted_pair[:-1]
    if not same.any():
        return order
    # Only rows of repeated pairs need reordering by time; unknown times (NaN) sort last and the
    # stable sort keeps file order among equal times.
    in_repeat = np.zeros(order.size, dtype=bool)
    in_repeat[1:] |= same
    in_repeat[:-1] |= same
    positions = np.flatnonzero(in_repeat)
    rows = order[positions]
    order[positions] = rows[np.lexsort((timestamp[rows], sorted_pair[positions]))]
    first = np.r_[True, ~same]
    source.add_drop(
        make_drop(
            "interactions",
            "repeated (user, item) pair (the earliest is kept)",
            table.column("user_id").take(pa.array(order[~first])),
            where,
        )
    )
    return order[first]


def _users_with_enough(
    counts: np.ndarray,
    total: np.ndarray,
    minimum: int,
    counted: str,
    users: pa.Array,
    file: str | None,
    source: SourceData,
) -> np.ndarray:
    """Mask over users whose `counts` reach `minimum`; the others are a drop (with their `total` rows)."""
    enough = counts >= minimum
    # Users whose every row went with another drop (unknown items) are not counted twice.
    short = np.flatnonzero(~enough & (total > 0))
    if short.size:
        reason = f"user has fewer than {minimum} interactions{counted}; removed with their {int(total[short].sum()):,} interactions"
        source.add_drop(make_drop("users", reason, users.take(pa.array(short)), file))
    return enough


def _import_feature(feature: ImportedFeature, layout: StoreLayout) -> dict:
    """Write a ready-made feature matrix as the embedding store `<modality>/imported`, replacing old parts."""
    rows, dim = len(feature.item_ids), feature.dim  # checked against the catalog by the adapter
    store = PartStore(layout.embeddings(feature.modality, IMPORTED_KEY), embeddings(dim))
    provenance = {"source": "imported", "file": str(feature.file), "dim": dim}
    step = max(1, _FEATURE_PART_BYTES // (4 * dim))
    with store.lock():
        old_parts = store.parts()
        for start in range(0, rows, step):
            matrix = read_feature_rows(feature.file, start, start + step)
            n = matrix.shape[0]
            vectors = pa.FixedSizeListArray.from_arrays(
                pa.array(matrix.reshape(-1), pa.float32()), dim
            )
            part = pa.table(
                {
                    "item_id": feature.item_ids[start : start + n],
                    "input_sha256": pa.nulls(n, pa.string()),
                    "vector": vectors,
                    "truncated": pa.nulls(n, pa.bool_()),
                    "error": pa.nulls(n, pa.string()),
                }
            )
            store.append(part, provenance)
        for part_path in old_parts:
            part_path.unlink(missing_ok=True)
    return {
        "modality": feature.modality,
        "file": str(feature.file),
        "rows": rows,
        "dim": dim,
        "store": str(store.root),
    }


def _summary(
    config: Config,
    source: SourceData,
    items: pa.Table,
    split: _Split,
    layout: StoreLayout,
    features: list[dict],
) -> IngestSummary:
    split_counts = np.bincount(split.interactions.column("split").to_numpy(), minlength=3)
    return IngestSummary(
        name=config.name,
        dataset=config.dataset.kind,
        split_method=config.split.method,
        n_items=items.num_rows,
        n_users=split.n_users,
        n_interactions=split.interactions.num_rows,
        split_counts={
            "train": int(split_counts[0]),
            "valid": int(split_counts[1]),
            "test": int(split_counts[2]),
        },
        items_with_text=items.num_rows - items.column("text").null_count,
        items_with_image=items.num_rows - items.column("image_path").null_count,
        items_without_interactions=items.num_rows - split.n_items_interacted,
        cold_items=len(split.cold_codes),
        drops=list(source.drops),
        read=dict(source.files),
        written={
            "items": str(layout.items),
            "interactions": str(layout.interactions),
            "summary": str(layout.ingest_summary),
        }
        | {f"embeddings.{f['modality']}": f["store"] for f in features},
        features=features,
    )


@contextmanager
def _steps(progress: bool, total: int) -> Iterator:
    """A callable that names the next step, shown as a progress bar when `progress` is set."""
    if not progress:
        yield lambda name: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc="ingest", unit="step") as bar:
        started = [False]

        def step(name: str) -> None:
            if started[0]:
                bar.update(1)
            started[0] = True
            bar.set_description(f"ingest: {name}")

        yield step
        bar.update(1)
