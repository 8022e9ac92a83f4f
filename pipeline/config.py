"""The one typed run config, loaded from one TOML file; relative paths resolve against that file."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from extractors.config import (
    CaptionConfig,
    EmbedConfig,
    ModalityConfig,
    SentenceTransformersEmbedConfig,
    TransformersCaptionConfig,
    default_modalities,
)
from model.config import SearchConfig, TrainConfig


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and every bad key."""


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    path = path.expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return Path(path).resolve() if base is not None else path


def _must_exist(path: Path, info: ValidationInfo) -> Path:
    path = _resolve(path, info)
    if (info.context or {}).get("check_paths", True) and not path.exists():
        raise ValueError(f"path does not exist: {path}")
    return path


# A path in the config: relative to the config file's folder. ExistingPath must exist at load.
ConfigPath = Annotated[Path, AfterValidator(_resolve)]
ExistingPath = Annotated[Path, AfterValidator(_must_exist)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DownloadConfig(_Section):
    """How image URLs of a generic catalog are fetched into the store's image cache."""

    concurrency: int = Field(8, ge=1, le=256)
    retries: int = Field(3, ge=0, le=20)
    timeout_s: float = Field(30.0, gt=0)
    max_bytes: int = Field(20 * 2**20, gt=0)  # larger answers are dropped and counted


class MovieLensDataset(_Section):
    """MovieLens-100k raw files (RecBole atomic files, posters/, movie_details.csv)."""

    kind: Literal["movielens"]
    path: ExistingPath
    min_rating: float | None = None  # every rating is an interaction unless a threshold is set


class MMRecDataset(_Section):
    """MMRec format: `<name>.inter` (x_label split) plus optional image_feat.npy / text_feat.npy."""

    kind: Literal["mmrec"]
    path: ExistingPath
    name: str | None = None  # the .inter file's stem; defaults to the folder's name
    # feature file -> modality name its vectors are imported under (provenance "imported")
    features: dict[str, str] = Field(
        default_factory=lambda: {"image_feat.npy": "image", "text_feat.npy": "text"}
    )


class GenericDataset(_Section):
    """A catalog of your own: items and interactions as CSV or Parquet, column names given here."""

    kind: Literal["generic"]
    items: ExistingPath
    interactions: ExistingPath
    item_id_column: str = "item_id"
    title_column: str | None = "title"
    text_columns: list[str] = Field(default_factory=lambda: ["text"])
    image_column: str | None = (
        "image"  # a file path (relative to image_root) or an http(s) URL; "" = none
    )
    image_root: ExistingPath | None = None  # image paths may not escape it; default: items' folder
    user_column: str = "user_id"
    interaction_item_column: str = "item_id"
    timestamp_column: str | None = None
    rating_column: str | None = None
    min_rating: float | None = None
    download: DownloadConfig = DownloadConfig()

    @field_validator(
        "title_column", "image_column", "timestamp_column", "rating_column", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None  # TOML has no null: "" means the catalog has no such column


class SplitConfig(_Section):
    """How interactions become train/valid/test (SPEC-lirdrec.md section 7)."""

    method: Literal["random", "temporal", "given"] = "random"
    seed: int = 2024
    min_user_interactions: int = Field(1, ge=1)  # users with fewer are dropped (counted)
    cold_item_share: float = Field(0.0, ge=0.0, lt=1.0)  # items held out entirely, all to test
    cold_item_seed: int = 2024


class RankConfig(_Section):
    """The FAISS index over the final item vectors and each user's top-K candidates."""

    k: int = Field(20, ge=1)
    index: Literal["exact", "ivf", "hnsw"] = "exact"  # exact: brute force ("flat" reads as exact)
    nlist: int = Field(1024, ge=1)  # IVF lists
    nprobe: int = Field(16, ge=1)  # IVF lists searched
    hnsw_m: int = Field(32, ge=4)
    ef_search: int = Field(128, ge=1)

    @field_validator("index", mode="before")
    @classmethod
    def _flat_is_exact(cls, value: object) -> object:
        return "exact" if value == "flat" else value  # the name of earlier versions


class ScaleConfig(_Section):
    """Fan-out of the extraction stages: item shards as separate tasks, optionally on Dask."""

    shards: int = Field(1, ge=1, le=4096)  # caption/embed tasks per stage, over disjoint items
    dask_address: str | None = None  # tcp://host:8786 of a running Dask scheduler
    dask_local_workers: int = Field(0, ge=0)  # >0: a local Dask cluster of this many workers


class CompareConfig(_Section):
    """Models trained beside [train] on the same data, and the seeds every model is repeated with."""

    # model name ("lightgcn", "bpr", "pop", "lirdrec") -> [train] fields it overrides
    baselines: dict[str, dict] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list)  # empty: the [train] seed alone

    def train_configs(self, train: TrainConfig) -> list[TrainConfig]:
        """[train] first, then each baseline; each once per seed."""
        models = [train] + [
            dataclasses.replace(train, **{"model": name, **overrides})
            for name, overrides in self.baselines.items()
        ]
        seeds = self.seeds or [train.seed]
        return [dataclasses.replace(model, seed=seed) for model in models for seed in seeds]


Dataset = Annotated[MovieLensDataset | MMRecDataset | GenericDataset, Field(discriminator="kind")]


class Config(_Section):
    """A whole run: what data, where it is stored, how it is extracted, trained and ranked."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the Prefect deployment's name
    store: ConfigPath  # the store root (created on first write)
    dataset: Dataset
    split: SplitConfig = SplitConfig()
    caption: CaptionConfig = TransformersCaptionConfig()  # one table per backend (see below)
    embed: EmbedConfig = SentenceTransformersEmbedConfig()  # one table per backend (see below)
    modalities: dict[str, ModalityConfig] = Field(default_factory=default_modalities)
    train: TrainConfig = TrainConfig()
    search: SearchConfig | None = None
    rank: RankConfig = RankConfig()
    compare: CompareConfig = CompareConfig()
    scale: ScaleConfig = ScaleConfig()
    source: Path | None = None  # the file this config was loaded from (set by load_config)

    @model_validator(mode="after")
    def _baselines_build(self) -> Config:
        try:
            self.compare.train_configs(self.train)
        except (TypeError, ValueError) as error:
            raise ValueError(f"compare.baselines: {error}") from None
        return self

    @field_validator("modalities")
    @classmethod
    def _some_modality(cls, value: dict[str, ModalityConfig]) -> dict[str, ModalityConfig]:
        if not value:
            raise ValueError("at least one modality is needed")
        return value


def load_config(
    path: str | Path, *, check_paths: bool = True, overrides: dict | None = None
) -> Config:
    """Load and validate `path`; every problem is reported as `file: key: message` in one ConfigError."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    raw["source"] = str(path)
    try:
        return Config.model_validate(
            raw, context={"base_dir": path.parent, "check_paths": check_paths}
        )
    except ValidationError as error:
        lines = [f"{path}: {_key(e['loc'])}: {e['msg']}" for e in error.errors()]
        raise ConfigError("invalid config\n" + "\n".join(lines)) from None


def _key(loc: tuple) -> str:
    # pydantic puts the union member's tag in the location (dataset.movielens.path, caption.openai.x): drop it.
    parts = [
        str(p)
        for i, p in enumerate(loc)
        if not (i == 1 and loc[0] in ("dataset", "caption", "embed") or i == 3 and loc[2] == "embedder")
    ]
    return ".".join(parts) or "(top level)"


def _set_dotted(raw: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
