"""Training and search configs: stdlib frozen dataclasses (no torch), embeddable in the pydantic run config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from model.registry import MODELS

KNN_METHODS = ("exact", "ivf", "hnsw")
FEATURE_DTYPES = ("auto", "float32", "bfloat16")  # model/dtype.py resolves "auto"
EVAL_SCORINGS = ("auto", "float32")  # model/metrics.py scoring_plan resolves "auto"
COMPILE_MODES = ("auto", "on", "off")  # model/compiled.py resolves "auto"
LR_SCALINGS = ("auto", "none", "linear", "sqrt")
SELECTION_METRIC = "recall@20"  # early stopping and search both select on VALID Recall@20


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the model, its hyper-parameters and the trainer's settings.

    Defaults are the LIRDRec reference settings (SPEC-lirdrec.md section 6). The baselines read
    the fields they need: `lightgcn` uses `n_ui_layers` as LightGCN's n_layers
    (layer MEAN, as in MMRec), `bpr` and `lightgcn` use `reg_weight` as MMRec's EmbLoss weight;
    `ease` chooses its l2 from `ease_l2_grid` by VALID Recall@20; `content_knn` fuses its
    modalities with `mm_weights`. Neither of those two trains (one evaluation, "epoch 0").
    """

    __pydantic_config__ = {"extra": "forbid"}

    # a name of model/registry.py: "lirdrec" | "lightgcn" | "bpr" | "pop" | "ease" | "content_knn"
    model: str = "lirdrec"
    embedding_size: int = 64  # d; LIRDRec vectors are (M+1)*d wide
    n_ui_layers: int = 2  # user-item propagation layers (LightGCN's n_layers for "lightgcn")
    n_mm_layers: int = 1  # item-item graph layers (L in h = r + A_mm^L r)
    knn_k: int = 10  # neighbours per item in each modality's kNN graph, the item itself included
    knn_method: str = "exact"  # "exact" | "ivf" | "hnsw" (approximate: recall is logged)
    knn_chunk: int = 4096  # query rows per FAISS search call (bounds memory)
    knn_nlist: int = 0  # IVF lists; 0 = 4 * sqrt(n_items)
    knn_nprobe: int = 32  # IVF lists searched per query
    knn_hnsw_m: int = 32  # HNSW links per node
    knn_ef_search: int = 128  # HNSW search depth
    mm_weights: dict[str, float] = field(default_factory=dict)  # modality -> weight; {} = equal
    reg_weight: float = 1e-3  # LIRDRec: weight of mean(U^2) + mean(I^2); baselines: EmbLoss
    decay_weight: float = 0.9  # PWC: initial w1 (w2 = 1 - w1)
    decay_base: float = 0.9  # PWC: w1 <- w1 * decay_base**epoch at each epoch start
    learning_rate: float = 1e-4  # Adam, at the reference batch (see lr_scaling)
    # (user, positive, negative) triples per optimizer step: the GLOBAL batch, split over the
    # processes of a data-parallel run; larger than the training pairs: clamped (a warning)
    batch_size: int = 2048
    # the learning rate's batch rule: "none" (learning_rate as given) | "linear" | "sqrt":
    # learning_rate * (batch_size / lr_reference_batch), or its square root | "auto": "linear"
    # above lr_reference_batch, "none" at or below it (measured: README section 9)
    lr_scaling: str = "auto"
    lr_reference_batch: int = 2048  # the batch that learning_rate is meant for (lr_scaling)
    warmup_steps: int = 0  # the learning rate ramps up linearly over the first N steps; 0 = off
    epochs: int = 1000  # at most; early stopping usually ends training sooner
    patience: int = 20  # stop when valid Recall@20 has not improved for `patience` evaluations (+1 fails)
    eval_every: int = 1  # evaluate valid every N epochs (and after the last epoch)
    seed: int = 999  # initial weights, epoch order and negative sampling
    device: str = "auto"  # "auto" (cuda when present) | "cpu" | "cuda" | "cuda:N"
    eval_user_chunk: int = 0  # users scored at once (x <= 16,384 items); 0 = auto (<= 2**23 scores)
    # "auto": a catalog ranked in several blocks is scored in bfloat16 where that measures faster
    # (native bf16), and the candidates float32's top K can be among are re-scored in float32
    # (the same ranking); "float32": every score in float32 (model/metrics.py)
    eval_scoring: str = "auto"
    topk: tuple[int, ...] = (5, 10, 20, 50)  # cut-offs of every metric; must contain 20
    # dtype of the wide feature products: "auto" = bfloat16 where a start-up micro-benchmark finds
    # it native (not emulated), else float32; an emulated "bfloat16" is refused unless
    # feature_dtype_force (model/dtype.py)
    feature_dtype: str = "auto"
    feature_dtype_force: bool = False
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    # torch.compile the training forward (fuses its elementwise passes): "auto" = on the CPU for a
    # large enough LIRDRec when a C++ compiler is found, eager if compiling fails | "on" | "off"
    # (model/compiled.py)
    compile: str = "auto"
    eval_test_every_epoch: bool = False  # also score test each epoch into history (costly)
    # EASE's l2 candidates; the one with the best VALID Recall@20 is kept (metrics.json "fitted")
    ease_l2_grid: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
    # EASE inverts a dense item x item matrix (float64, ~32 * n_items^2 bytes at peak): larger
    # catalogs are refused before anything is computed
    ease_max_items: int = 20000
    # also checkpoint within an epoch every N steps (0 = off: only at epoch ends); a resumed run
    # continues at that step with the same RNG stream, exactly
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 0.0  # also checkpoint within an epoch every M minutes; 0 = off

    def __post_init__(self) -> None:
        _one_of("model", self.model, tuple(MODELS))
        _one_of("knn_method", self.knn_method, KNN_METHODS)
        _one_of("feature_dtype", self.feature_dtype, FEATURE_DTYPES)
        _one_of("eval_scoring", self.eval_scoring, EVAL_SCORINGS)
        _one_of("compile", self.compile, COMPILE_MODES)
        _one_of("lr_scaling", self.lr_scaling, LR_SCALINGS)
        if not isinstance(self.feature_dtype_force, bool):
            raise ValueError(f"train.feature_dtype_force: expected true or false, "
                             f"got {self.feature_dtype_force!r}")
        for name in ("embedding_size", "knn_k", "knn_chunk", "knn_nprobe", "knn_hnsw_m",
                     "knn_ef_search", "batch_size", "epochs", "ease_max_items",
                     "lr_reference_batch", "eval_every"):
            _at_least(f"train.{name}", getattr(self, name), 1)
        for name in ("n_ui_layers", "n_mm_layers", "knn_nlist", "patience", "eval_user_chunk",
                     "num_threads", "warmup_steps", "checkpoint_every_steps"):
            _at_least(f"train.{name}", getattr(self, name), 0)
        if self.model == "lirdrec" and self.embedding_size % 4:
            raise ValueError(f"train.embedding_size: must be a multiple of 4 for lirdrec "
                             f"(the PWC scorers are d -> d/4 -> 1), got {self.embedding_size}")
        if self.model == "lightgcn" and self.n_ui_layers < 1:
            raise ValueError("train.n_ui_layers: lightgcn needs at least 1 layer")
        _finite_range("reg_weight", self.reg_weight, 0.0, math.inf)
        _finite_range("checkpoint_every_minutes", self.checkpoint_every_minutes, 0.0, math.inf)
        _finite_range("decay_weight", self.decay_weight, 0.0, 1.0)
        _finite_range("decay_base", self.decay_base, 0.0, 1.0)
        if self.decay_base == 0.0:
            raise ValueError("train.decay_base: must be > 0")
        _finite_range("learning_rate", self.learning_rate, 0.0, math.inf)
        if self.learning_rate == 0.0:
            raise ValueError("train.learning_rate: must be > 0")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', "
                             f"got {self.device!r}")
        topk = tuple(self.topk)
        if not topk or any(int(k) < 1 for k in topk) or list(topk) != sorted(set(topk)):
            raise ValueError(f"train.topk: expected increasing positive cut-offs, got {topk}")
        if 20 not in topk:
            raise ValueError(f"train.topk: must contain 20 (selection is on Recall@20), got {topk}")
        object.__setattr__(self, "topk", tuple(int(k) for k in topk))
        grid = tuple(self.ease_l2_grid)
        if not grid or any(isinstance(l2, bool) or not isinstance(l2, int | float)
                           or not math.isfinite(l2) or l2 <= 0 for l2 in grid):
            raise ValueError(f"train.ease_l2_grid: expected a non-empty list of finite numbers "
                             f"> 0, got {grid}")
        object.__setattr__(self, "ease_l2_grid", tuple(float(l2) for l2 in grid))
        for name, weight in self.mm_weights.items():
            _finite_range(f"mm_weights.{name}", weight, 0.0, 1.0)
        if self.mm_weights and abs(sum(self.mm_weights.values()) - 1.0) > 1e-6:
            raise ValueError(f"train.mm_weights: weights must sum to 1, got "
                             f"{dict(self.mm_weights)} (sum {sum(self.mm_weights.values()):.6g})")


def resolve_mm_weights(config: TrainConfig, modalities: list[str]) -> dict[str, float]:
    """The item-graph weight of each modality of the data; equal weights when none are given."""
    if not modalities:
        raise ValueError("no modalities: a feature model needs at least one feature matrix")
    if not config.mm_weights:
        return {name: 1.0 / len(modalities) for name in modalities}
    missing = sorted(set(modalities) - set(config.mm_weights))
    unknown = sorted(set(config.mm_weights) - set(modalities))
    if missing or unknown:
        raise ValueError(f"train.mm_weights: names must match the data's modalities "
                         f"{sorted(modalities)}; missing {missing}, unknown {unknown}")
    return {name: float(config.mm_weights[name]) for name in modalities}


SPACE_KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class SearchParam:
    """The range one TrainConfig field is searched over: a `[search.space.<field>]` table.

    `kind = "float"` or `"int"` takes `low`, `high` (both included), optional `step`, and `log`
    (a log-uniform range, low > 0); `kind = "categorical"` takes `choices` (numbers, strings or
    booleans).
    """

    __pydantic_config__ = {"extra": "forbid"}

    kind: str  # "float" | "int" | "categorical"
    low: int | float | None = None  # float and int: the smallest value
    high: int | float | None = None  # float and int: the largest value (included)
    log: bool = False  # float and int: sample log-uniformly (needs low > 0)
    step: int | float | None = None  # float and int: a grid step from low; unset = continuous (int: 1)
    choices: list[Any] | None = None  # categorical: the values


@dataclass(frozen=True)
class SearchConfig:
    """An Optuna search over TrainConfig fields (seeded TPE, median pruning), chosen by VALID
    Recall@20 (never test), within a budget of trials and seconds; resumable from its SQLite file.
    """

    __pydantic_config__ = {"extra": "forbid"}

    space: dict[str, SearchParam] = field(default_factory=dict)  # TrainConfig field -> its range
    n_trials: int = 10  # the study's total of finished (complete or pruned) trials; a rerun adds the missing ones
    timeout_s: float = 0.0  # stop starting trials after this many seconds of this call; 0 = no limit
    max_epochs: int = 0  # epochs per trial at most; 0 = the train config's `epochs` (the selected point retrains in full)
    seed: int = 0  # the TPE sampler's seed: the same seed on the same data proposes the same points
    startup_trials: int = 5  # random trials before TPE models the results
    prune: bool = True  # stop a trial whose best valid Recall@20 is below the median of earlier trials at the same epoch
    prune_after_trials: int = 3  # complete trials before any trial is pruned
    prune_from_epoch: int = 3  # the first epoch at which a trial may be pruned

    def __post_init__(self) -> None:
        if not self.space:
            raise ValueError("search.space: empty; add a [search.space.<train field>] table, e.g. "
                             '[search.space.learning_rate] kind = "float", low = 1e-4, high = 1e-2, '
                             "log = true")
        known = {f.name for f in fields(TrainConfig)}
        for name, param in self.space.items():
            if name not in known:
                raise ValueError(f"search.space.{name}: not a train config field "
                                 f"(known: {sorted(known)})")
            _check_param(f"search.space.{name}", param)
            field_type = next(f.type for f in fields(TrainConfig) if f.name == name)
            if param.kind in ("float", "int") and field_type not in ("float", "int") or \
                    param.kind == "float" and field_type == "int":
                raise ValueError(f"search.space.{name}: kind {param.kind!r} does not fit the "
                                 f"train field's type {field_type}"
                                 + ('; use kind = "int"' if field_type == "int" else
                                    '; use kind = "categorical" with choices'))
        _at_least("search.n_trials", self.n_trials, 1)
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float) \
                or not math.isfinite(self.timeout_s) or self.timeout_s < 0:
            raise ValueError(f"search.timeout_s: expected a number >= 0, got {self.timeout_s!r}")
        _at_least("search.max_epochs", self.max_epochs, 0)
        if not isinstance(self.prune, bool):
            raise ValueError(f"search.prune: expected true or false, got {self.prune!r}")
        _at_least("search.startup_trials", self.startup_trials, 0)
        _at_least("search.prune_after_trials", self.prune_after_trials, 0)
        _at_least("search.prune_from_epoch", self.prune_from_epoch, 0)


def _check_param(key: str, param: SearchParam) -> None:
    """A range's own consistency (the values' types and TrainConfig's limits: check_space)."""
    if param.kind not in SPACE_KINDS:
        raise ValueError(f"{key}.kind: expected one of {list(SPACE_KINDS)}, got {param.kind!r}")
    numeric = ("low", "high", "log", "step")
    if param.kind == "categorical":
        given = [name for name in numeric if getattr(param, name) not in (None, False)]
        if given:
            raise ValueError(f"{key}: {given} are not keys of kind \"categorical\" (it takes choices)")
        if not isinstance(param.choices, list | tuple) or not param.choices:
            raise ValueError(f"{key}.choices: expected a non-empty list of values")
        for value in param.choices:
            if value is not None and not isinstance(value, bool | int | float | str):
                raise ValueError(f"{key}.choices: {value!r}: a choice must be a number, a string "
                                 "or a boolean (Optuna stores choices as plain values)")
        return
    if param.choices is not None:
        raise ValueError(f"{key}.choices: not a key of kind {param.kind!r} (it takes low and high)")
    for name in ("low", "high") + (("step",) if param.step is not None else ()):
        value = getattr(param, name)
        wanted = int if param.kind == "int" else int | float
        if value is None or isinstance(value, bool) or not isinstance(value, wanted) \
                or not math.isfinite(value):
            raise ValueError(f"{key}.{name}: expected {'an integer' if param.kind == 'int' else 'a number'} "
                             f"for kind {param.kind!r}, got {value!r}")
    if param.low > param.high:
        raise ValueError(f"{key}: low = {param.low!r} > high = {param.high!r}")
    if param.log and param.low <= 0:
        raise ValueError(f"{key}: a log range needs low > 0, got low = {param.low!r}")
    if param.step is not None and param.step <= 0:
        raise ValueError(f"{key}.step: must be > 0, got {param.step!r}")
    if param.step is not None and param.log:
        raise ValueError(f"{key}: step and log = true cannot be combined (Optuna samples either)")


def space_values(space: dict[str, SearchParam]) -> dict[str, list[Any]]:
    """For each field, the values its range can reach at the edges: low and high, or every choice."""
    return {name: list(param.choices) if param.kind == "categorical" else [param.low, param.high]
            for name, param in space.items()}


def check_space(base: TrainConfig, space: dict[str, SearchParam]) -> None:
    """Every edge of the space makes a valid TrainConfig on `base`: a range that TrainConfig would
    refuse (decay_weight up to 1.5, an embedding size lirdrec cannot take) fails before training."""
    for name, values in space_values(space).items():
        for value in values:
            try:
                replace(base, **{name: value})
            except (TypeError, ValueError) as error:
                raise ValueError(f"search.space.{name}: {value!r} is not a valid value: {error}") \
                    from None


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"train.{name}: expected one of {list(allowed)}, got {value!r}")


def _at_least(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")


def _finite_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ValueError(f"train.{name}: expected a finite number in [{low}, {high}], got {value!r}")
