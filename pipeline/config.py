"""The one typed run config, loaded from one TOML file; relative paths resolve against that file."""

from __future__ import annotations

import dataclasses
import datetime
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from extractors.config import (
    CAPTION_CONFIGS,
    EMBED_CONFIGS,
    CaptionConfig,
    EmbedConfig,
    ModalityConfig,
    OpenAICaptionConfig,
    OpenAIEmbedConfig,
    SentenceTransformersEmbedConfig,
    TransformersCaptionConfig,
    default_modalities,
)
from extractors.redact import register_key_variable, register_url
from model.config import SearchConfig, TrainConfig, check_space
from model.registry import MODELS


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

    concurrency: int = Field(8, ge=1, le=256)  # downloads in flight
    retries: int = Field(3, ge=0, le=20)  # retries of a failed download
    timeout_s: float = Field(30.0, gt=0)  # seconds per download
    max_bytes: int = Field(20 * 2**20, gt=0)  # larger answers are dropped and counted


class MovieLensDataset(_Section):
    """MovieLens-100k raw files (RecBole atomic files, posters/, movie_details.csv)."""

    kind: Literal["movielens"]  # this table's dataset kind
    path: ExistingPath  # the folder of the raw files
    min_rating: float | None = None  # every rating is an interaction unless a threshold is set


class MMRecDataset(_Section):
    """MMRec format: `<name>.inter` (x_label split) plus optional image_feat.npy / text_feat.npy."""

    kind: Literal["mmrec"]  # this table's dataset kind
    path: ExistingPath  # the folder holding <name>.inter and the .npy feature files
    name: str | None = None  # the .inter file's stem; defaults to the folder's name
    # feature file -> modality name its vectors are imported under (provenance "imported")
    features: dict[str, str] = Field(
        default_factory=lambda: {"image_feat.npy": "image", "text_feat.npy": "text"}
    )


class GenericDataset(_Section):
    """A catalog of your own: items and interactions as CSV or Parquet, column names given here."""

    kind: Literal["generic"]  # this table's dataset kind
    items: ExistingPath  # the items file (.csv or .parquet)
    interactions: ExistingPath  # the interactions file (.csv or .parquet)
    item_id_column: str = "item_id"  # the items' id column
    title_column: str | None = "title"  # "" = none
    text_columns: list[str] = Field(default_factory=lambda: ["text"])  # joined into the item text
    image_column: str | None = (
        "image"  # a file path (relative to image_root) or an http(s) URL; "" = none
    )
    image_root: ExistingPath | None = None  # image paths may not escape it; default: items' folder
    user_column: str = "user_id"  # the interactions' user column
    interaction_item_column: str = "item_id"  # the interactions' item column
    timestamp_column: str | None = None  # needed by split method "temporal"; "" = none
    rating_column: str | None = None  # "" = none
    min_rating: float | None = None  # interactions rated lower are dropped (needs rating_column)
    download: DownloadConfig = DownloadConfig()  # the [dataset.download] table

    @field_validator(
        "title_column", "image_column", "timestamp_column", "rating_column", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None  # TOML has no null: "" means the catalog has no such column


class SplitConfig(_Section):
    """How interactions become train/valid/test (SPEC-lirdrec.md section 7)."""

    # random: 8:1:1 per user (MMRec); temporal: chronological 8:1:1 per user; given: the source's own (MMRec x_label)
    method: Literal["random", "temporal", "given"] = "random"
    seed: int = 2024  # of the random split
    min_user_interactions: int = Field(1, ge=1)  # users with fewer are dropped (counted)
    cold_item_share: float = Field(0.0, ge=0.0, lt=1.0)  # items held out entirely, all to test
    cold_item_seed: int = 2024  # of the choice of cold items


class RankConfig(_Section):
    """The FAISS index over the final item vectors and each user's top-K candidates."""

    k: int = Field(20, ge=1)  # candidates per user
    index: Literal["exact", "ivf", "hnsw"] = "exact"  # exact: brute force ("flat" reads as exact)
    nlist: int = Field(1024, ge=1)  # IVF lists
    nprobe: int = Field(16, ge=1)  # IVF lists searched
    hnsw_m: int = Field(32, ge=4)  # HNSW links per node
    ef_search: int = Field(128, ge=1)  # HNSW search depth

    @field_validator("index", mode="before")
    @classmethod
    def _flat_is_exact(cls, value: object) -> object:
        return "exact" if value == "flat" else value  # the name of earlier versions


class ScaleConfig(_Section):
    """Fan-out: extraction as item shards (optionally on Dask), training as data-parallel processes."""

    shards: int = Field(1, ge=1, le=4096)  # caption/embed tasks per stage, over disjoint items
    dask_address: str | None = None  # tcp://host:8786 of a running Dask scheduler
    dask_local_workers: int = Field(0, ge=0)  # >0: a local Dask cluster of this many workers
    # processes the train stage trains each lirdrec run on, on this machine (torch.distributed,
    # gloo on CPU, NCCL on CUDA): at most its CPU cores or GPUs; under torchrun, torchrun's own
    train_processes: int = Field(1, ge=1)
    # seconds any rank waits in one collective (a step's all-reduce, joining, the next job)
    train_timeout_s: float = Field(1800.0, gt=0)


_TRAIN_TYPES = get_type_hints(TrainConfig)
# Some [train] fields, each with its [train] type: what a baseline may override.
TrainOverrides = TypedDict("TrainOverrides", _TRAIN_TYPES, total=False)  # type: ignore[misc]
TrainOverrides.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]


class CompareConfig(_Section):
    """Models trained beside [train] on the same data, and the seeds every model is repeated with."""

    # model name ("lightgcn", "bpr", "pop", "ease", "content_knn", "lirdrec") -> [train] fields
    # it overrides
    baselines: dict[str, TrainOverrides] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list)  # empty: the [train] seed alone

    def train_configs(self, train: TrainConfig) -> list[TrainConfig]:
        """[train] first, then each baseline; each once per seed."""
        models = [train] + [
            dataclasses.replace(train, **{"model": name, **overrides})
            for name, overrides in self.baselines.items()
        ]
        seeds = self.seeds or [train.seed]
        return [dataclasses.replace(model, seed=seed) for model in models for seed in seeds]


def _distinct(what: str, values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} is listed twice: {values}")
    return values


STUDY_MODELS = ("lirdrec", "ease", "lightgcn", "bpr", "pop", "content_knn")
_SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class StudyConfig(_Section):
    """A study: arms x train fractions x seeds, each arm tuned on valid or run at fixed settings,
    every arm against the best ID-only arm of its regime (pipeline/study.py).

    `preset = "quick"` is a first look at any study, whatever its other keys say: its first seed
    only, train fractions 1.0 and 0.2, at most 30 epochs a run and 4 trials a tuned arm's search.
    """

    # "full": the study as written; "quick": a first look (see above)
    preset: Literal["full", "quick"] = "full"

    # model arms, each with every modality (feature models) or none (ID-only models)
    models: list[str] = Field(default_factory=lambda: [m for m in STUDY_MODELS if m in MODELS])
    # LIRDRec on feature subsets; None = each modality alone (all of them together is the
    # "lirdrec" model arm); [] = no subset arms
    modality_subsets: list[list[str]] | None = None
    # LIRDRec with another captioner (name -> a [caption] table): its captions, embeddings of them
    caption_variants: dict[str, CaptionConfig] = Field(default_factory=dict)
    # LIRDRec with another text embedder (name -> an [embed] table) for every text modality
    embedder_variants: dict[str, EmbedConfig] = Field(default_factory=dict)
    train_fractions: list[float] = Field(default_factory=lambda: [1.0, 0.2, 0.1])  # in (0, 1]
    seeds: list[int] = Field(default_factory=lambda: [999, 1000, 1001])
    overrides: dict[str, TrainOverrides] = Field(default_factory=dict)  # model -> [train] fields
    max_epochs: int = Field(0, ge=0)  # every run's epochs at most; 0 = the arm's own `epochs`
    # model -> a [search] table: the model also runs as arm "<model>-tuned", searched on VALID
    # once per regime (at the first seed), then trained at every seed with the selected point;
    # every tuned arm gets the same budget (n_trials, timeout_s, max_epochs)
    tune: dict[str, SearchConfig] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _quick_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") != "quick":
            return data
        seeds = data.get("seeds") or [999]
        epochs = data.get("max_epochs") or 30
        data = {**data, "seeds": seeds[:1], "train_fractions": [1.0, 0.2],
                "max_epochs": min(epochs, 30) if isinstance(epochs, int) else epochs}
        data["tune"] = {model: {**search, "n_trials": min(search.get("n_trials", 4), 4),
                                "max_epochs": min(search.get("max_epochs") or 30, 30)}
                        if isinstance(search, dict) else search
                        for model, search in (data.get("tune") or {}).items()}
        return data

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: list[str]) -> list[str]:
        unknown = [m for m in models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; expected any of {list(MODELS)}")
        return _distinct("a model", models)

    @field_validator("train_fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        if not fractions:
            raise ValueError("at least one train fraction is needed (1.0: all the data)")
        bad = [f for f in fractions if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(f"train fractions must lie in (0, 1], got {bad}")
        return _distinct("a train fraction", fractions)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"expected one or more distinct seeds, got {seeds}")
        return seeds

    @field_validator("caption_variants", "embedder_variants")
    @classmethod
    def _variant_names(cls, variants: dict) -> dict:
        import re

        for name in variants:
            if not re.match(_SAFE_NAME, name):
                raise ValueError(f"variant name {name!r} may hold only letters, digits, "
                                 "'.', '_' and '-'")
        return variants


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
    study: StudyConfig | None = None  # `python -m pipeline study`, the study flow
    source: Path | None = None  # the file this config was loaded from (set by load_config)

    @model_validator(mode="after")
    def _baselines_build(self) -> Config:
        try:
            self.compare.train_configs(self.train)
        except (TypeError, ValueError) as error:
            raise ValueError(f"compare.baselines: {error}") from None
        return self

    @field_validator("search", mode="before")
    @classmethod
    def _no_grid_keys(cls, search: Any) -> Any:
        """The grid search's keys (before issue 10) say how to write them for the Optuna search."""
        moved = {
            "grid": 'each field as [search.space.<field>] kind = "categorical", choices = '
            "[its values] (or a float / int range)",
            "max_configs": "n_trials (the study's total of finished trials)",
            "sample_seed": "seed (the TPE sampler's seed)",
        }
        for key in moved:
            if isinstance(search, dict) and key in search:
                raise ValueError(f"{key}: removed with the grid search; write {moved[key]} "
                                 "(README: Hyper-parameter search)")
        return search

    @field_validator("search")
    @classmethod
    def _choices_are_typed(cls, search: SearchConfig | None, info: ValidationInfo
                           ) -> SearchConfig | None:
        """Each categorical choice must have its [train] field's type, strictly ("1e-3" is no
        number), and every edge of the space must be a valid [train] (before any trial trains)."""
        for name, param in (search.space if search else {}).items():
            adapter = TypeAdapter(_TRAIN_TYPES[name])
            for index, value in enumerate(param.choices or ()):
                try:
                    adapter.validate_json(json.dumps(value), strict=True)
                except ValidationError as error:
                    problem = error.errors()[0]
                    raise ValueError(
                        f"space.{name}.choices[{index}] = {value!r}: {problem['msg']}"
                    ) from None
        if search is not None and "train" in info.data:  # else [train]'s own error is reported
            check_space(info.data["train"], search.space)
        return search

    @model_validator(mode="after")
    def _study_fits_the_config(self) -> Config:
        study = self.study
        if study is None:
            return self
        if not study.models and not study.modality_subsets and not study.caption_variants \
                and not study.embedder_variants and not study.tune:
            raise ValueError("study: no arm: list models, modality_subsets, variants or tune")
        for index, subset in enumerate(study.modality_subsets or []):
            unknown = sorted(set(subset) - set(self.modalities))
            if not subset or unknown:
                raise ValueError(f"study.modality_subsets[{index}] = {subset}: "
                                 + (f"unknown modality {unknown}" if subset else "empty")
                                 + f"; the config's modalities are {sorted(self.modalities)}")
        unknown = sorted((set(study.overrides) | set(study.tune)) - set(MODELS))
        if unknown:
            raise ValueError(f"study.overrides / study.tune: unknown model(s) {unknown}")
        budgets = {model: (search.n_trials, search.timeout_s, search.max_epochs)
                   for model, search in study.tune.items()}
        if len(set(budgets.values())) > 1:
            raise ValueError("study.tune: the arms compared get equal budgets; (n_trials, "
                             f"timeout_s, max_epochs) differ: {budgets}")
        for model, search in study.tune.items():
            base = dataclasses.replace(self.train, model=model, **study.overrides.get(model, {}))
            try:
                check_space(base, search.space)
            except ValueError as error:
                raise ValueError(f"study.tune.{model}: {error}") from None
        for model, fields in study.overrides.items():
            try:
                dataclasses.replace(self.train, **{"model": model, **fields})
            except (TypeError, ValueError) as error:
                raise ValueError(f"study.overrides.{model}: {error}") from None
        if study.caption_variants and not any(m.source == "caption"
                                              for m in self.modalities.values()):
            raise ValueError("study.caption_variants: no modality has source = \"caption\"")
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
    """Load and validate `path`; every problem is reported as `file: key: message` in one ConfigError.

    Validation is strict, as TOML's own types are: a string is never read as a number ("3" is not
    an integer), although an integer may stand where a float is wanted.
    """
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
    dates = list(_dates(raw))
    if dates:
        raise ConfigError(
            "invalid config\n"
            + "\n".join(f"{path}: {key}: a TOML date/time is no config value" for key in dates)
        )
    try:
        # As JSON, so that strict mode takes arrays for tuples and strings for paths, as TOML has them.
        config = Config.model_validate_json(
            json.dumps(raw),
            strict=True,
            context={"base_dir": path.parent, "check_paths": check_paths},
        )
    except ValidationError as error:
        lines = [f"{path}: {_problem(e)}" for e in error.errors()]
        raise ConfigError("invalid config\n" + "\n".join(lines)) from None
    register_secrets(config)
    return config


def register_secrets(config: Config) -> None:
    """Every endpoint's key variable and URL password, for extractors.redact to keep out of output."""
    for backend in (
        config.caption,
        config.embed,
        *(m.embedder for m in config.modalities.values() if m.embedder is not None),
    ):
        if isinstance(backend, OpenAICaptionConfig | OpenAIEmbedConfig):
            register_key_variable(backend.api_key_env)
            register_url(backend.base_url)


def config_from_snapshot(text: str) -> Config:
    """A run folder's config snapshot (`Config.model_dump_json`), including those written before
    [caption] and [embed] became one table per backend: their keys of other backends are dropped."""
    data = json.loads(text)
    for section, configs in (("caption", CAPTION_CONFIGS), ("embed", EMBED_CONFIGS)):
        if isinstance(data.get(section), dict):
            data[section] = _backend_keys(data[section], configs)
    for modality in (data.get("modalities") or {}).values():
        if isinstance(modality, dict) and isinstance(modality.get("embedder"), dict):
            modality["embedder"] = _backend_keys(modality["embedder"], EMBED_CONFIGS)
    return Config.model_validate_json(json.dumps(data), context={"check_paths": False})


def _backend_keys(table: dict, configs: dict[str, type]) -> dict:
    backend = table.get("backend", next(iter(configs)))
    if backend not in configs:
        return table  # the validation names it
    keys = {field.name for field in dataclasses.fields(configs[backend])}
    return {name: value for name, value in table.items() if name in keys}


def _dates(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of TOML date/time values (JSON, and so the validation, has no such type)."""
    if isinstance(node, dict):
        return [key for name, value in node.items() for key in _dates(value, f"{prefix}{name}.")]
    if isinstance(node, list):
        return [key for index, value in enumerate(node) for key in _dates(value, f"{prefix[:-1]}[{index}].")]
    if isinstance(node, datetime.date | datetime.time):
        return [prefix[:-1]]
    return []


# The tables that are one of several classes, chosen by a tag key: where they sit in an error's
# location (pydantic puts the chosen class's tag right after them), their tag key, their classes.
_TAGGED = {
    "dataset": ("kind", {"movielens": MovieLensDataset, "mmrec": MMRecDataset, "generic": GenericDataset}),
    "caption": ("backend", CAPTION_CONFIGS),
    "embed": ("backend", EMBED_CONFIGS),
    "embedder": ("backend", EMBED_CONFIGS),  # modalities.<name>.embedder
}


def _problem(error: dict) -> str:
    """`key: message` for one pydantic error, in the config file's own terms."""
    loc = [str(part) for part in error["loc"]]
    chosen = None  # (tag key, tag, class) of the tagged table the key is in
    parts = []
    for index, part in enumerate(loc):
        tagged = _TAGGED.get(loc[index - 1]) if index else None
        depth_ok = index == 1 or (index == 3 and loc[0] == "modalities")
        if tagged and depth_ok and part in tagged[1]:
            chosen = (tagged[0], part, tagged[1][part])
            continue
        parts.append(part)
    key = ".".join(parts) or "(top level)"
    kind, message = error["type"], error["msg"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag_key, classes = _TAGGED[parts[-1]]
        key = f"{key}.{tag_key}"
        if kind == "union_tag_not_found":
            message = "Field required"
        else:
            message = f"{error['ctx']['tag']!r}: expected one of {', '.join(map(repr, classes))}"
    elif kind in ("extra_forbidden", "unexpected_keyword_argument") and chosen is not None:
        tag_key, tag, cls = chosen
        message = f"not a key of {tag_key} {tag!r} (its keys: {', '.join(_keys_of(cls))})"
    elif kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind.endswith("_type") and not isinstance(error["input"], dict | list):
        message = f"{message}, got {error['input']!r}"
    return f"{key}: {message}"


def _keys_of(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [field.name for field in dataclasses.fields(cls)]
    return list(cls.model_fields)


def _set_dotted(raw: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
