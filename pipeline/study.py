"""Studies: what each model, modality, captioner and embedder buys on this catalog, at several
data densities, against the best ID-only arm; tuned on valid, tested once, with significance.

A study is a grid of runs, arm x regime x seed:
- arms (`plan_arms`): the `[study] models` (feature models see every modality), LIRDRec on each
  modality subset, and LIRDRec with each caption or embedder variant. A variant's features come
  from its own store under <store>/studies/variants/<name>/ (ingest, caption, embed run there),
  so variants coexist and the main pipeline keeps reading what its own config says;
- regimes: train fractions (SPEC-lirdrec.md section 10): each user keeps max(1, round(f * n_u))
  of its training pairs, drawn with the (regime, seed)'s own generator, shared by every arm;
  valid and test are untouched;
- seeds: each (arm, regime) runs once per seed.
Every run is an ordinary run folder under <store>/studies/<name>/runs/, named by its train
config and its data (as the train stage names its runs): a rerun reuses each finished run, a
killed study resumes the run it was in, and none runs twice.

Outcome (`summarise`): per regime, the best ID-only arm by mean VALID NDCG@20 over seeds; for
every arm, mean +- std of each figure, the relative difference of mean test NDCG@20 to that arm,
and a two-sided Wilcoxon signed-rank test on the per-user test NDCG@20 (averaged over seeds),
paired over the same users. Test figures are reported, never used to choose anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.run import RunFolder, write_json
from pipeline.config import Config
from pipeline.store import StoreLayout

if TYPE_CHECKING:
    from model.config import SearchConfig, TrainConfig
    from model.data import RecData

FIGURES = (("recall", 20), ("ndcg", 20))  # what the table and the plots show
SIGNIFICANCE = "ndcg@20"  # the paired test's per-user figure (SPEC section 10)
SPLITS = ("valid", "test", "test_warm", "test_cold")


@dataclass(frozen=True)
class Arm:
    """One configuration compared in the study."""

    name: str  # "lirdrec", "ease", "lirdrec[text]", "lirdrec@caption:smolvlm", ...
    kind: str  # "model" | "modalities" | "caption" | "embedder"
    train: TrainConfig  # the arm's settings (its seed is replaced per run)
    modalities: tuple[str, ...] = ()  # the feature modalities it reads (none: ID-only)
    variant: str | None = None  # the caption/embedder variant whose features it reads
    search: SearchConfig | None = None  # tuned: searched on valid once per regime

    @property
    def id_only(self) -> bool:
        return not self.modalities

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in self.name)


def plan_arms(config: Config) -> list[Arm]:
    """The study's arms, in table order: models, modality subsets, caption and embedder variants."""
    from model.registry import uses_features

    study = config.study
    modalities = tuple(sorted(config.modalities))

    def settings(model: str) -> TrainConfig:
        fields = {"model": model, **study.overrides.get(model, {})}
        train = dataclasses.replace(config.train, **fields)
        if study.max_epochs:
            train = dataclasses.replace(train, epochs=min(train.epochs, study.max_epochs))
        return train

    arms = [Arm(model, "model", settings(model), modalities if uses_features(model) else ())
            for model in study.models]
    arms += [Arm(f"{model}-tuned", "model", settings(model),
                 modalities if uses_features(model) else (), search=search)
             for model, search in study.tune.items()]
    subsets = study.modality_subsets
    if subsets is None:  # each modality alone; all together is the "lirdrec" model arm
        subsets = [[name] for name in modalities] if len(modalities) > 1 else []
    lirdrec = settings("lirdrec")
    for subset in subsets:
        chosen = tuple(sorted(subset))
        arms.append(Arm(f"lirdrec[{'+'.join(chosen)}]", "modalities",
                        _weights_for(lirdrec, chosen), chosen))
    for kind, variants in (("caption", study.caption_variants),
                           ("embedder", study.embedder_variants)):
        for name in variants:
            arms.append(Arm(f"lirdrec@{kind}:{name}", kind, lirdrec, modalities, variant=name))
    return arms


def _weights_for(train: TrainConfig, modalities: tuple[str, ...]) -> TrainConfig:
    """`mm_weights` restricted to a subset of modalities, renormalised to sum to 1."""
    if not train.mm_weights:
        return train
    kept = {name: train.mm_weights[name] for name in modalities}
    total = sum(kept.values())
    weights = {name: (w / total if total else 1.0 / len(kept)) for name, w in kept.items()}
    return dataclasses.replace(train, mm_weights=weights)


def subsample_train(train: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Each user's max(1, round(fraction * n_u)) training pairs, drawn uniformly without
    replacement by a generator of (fraction, seed); the pairs keep their original order."""
    if fraction >= 1.0:
        return train
    rng = np.random.default_rng([seed, round(fraction * 1_000_000)])
    order = np.lexsort((rng.random(len(train)), train[:, 0]))  # (N,) by user, random within
    users, starts, counts = np.unique(train[order, 0], return_index=True, return_counts=True)
    keep_counts = np.maximum(1, np.round(fraction * counts).astype(np.int64))  # (U_train,)
    rank_in_user = np.arange(len(train)) - np.repeat(starts, counts)  # (N,) position within user
    kept = order[rank_in_user < np.repeat(keep_counts, counts)]
    return train[np.sort(kept)]


def arm_data(data: RecData, variant_features: dict[str, dict[str, np.ndarray]], arm: Arm,
             fraction: float, seed: int) -> RecData:
    """The RecData one run of `arm` trains on: the regime's subsample and the arm's features."""
    features = dict(data.features)
    if arm.variant is not None:
        features.update(variant_features[arm.variant])
    features = {name: features[name] for name in arm.modalities}
    return dataclasses.replace(data, train=subsample_train(data.train, fraction, seed),
                               features=features)


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyLayout:
    """Every path of one study: <store>/studies/<name>/."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def table(self) -> Path:
        return self.root / "study.parquet"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def markdown(self) -> Path:
        return self.root / "study.md"

    def plot(self, name: str) -> Path:
        return self.root / f"{name}.png"


def study_layout(config: Config) -> StudyLayout:
    return StudyLayout(StoreLayout(config.store).root / "studies" / config.name)


def variant_store(config: Config, variant: str) -> Path:
    return StoreLayout(config.store).root / "studies" / "variants" / variant


@dataclass(frozen=True)
class Job:
    arm: Arm
    fraction: float
    seed: int

    def describe(self) -> str:
        return f"{self.arm.name}, train fraction {self.fraction:g}, seed {self.seed}"


def plan_jobs(arms: list[Arm], fractions: list[float], seeds: list[int]) -> list[Job]:
    return [Job(arm, fraction, seed) for fraction in fractions for arm in arms for seed in seeds]


def run_folder(layout: StudyLayout, train: TrainConfig, data: RecData, arm: Arm) -> RunFolder:
    """runs/<arm>-<hash of the run's identity and data>: the same run resumes the same folder."""
    from model.checkpoint import run_identity

    payload = json.dumps(run_identity(train), sort_keys=True, default=str) + data.fingerprint()
    digest = hashlib.blake2b(payload.encode(), digest_size=6).hexdigest()
    return RunFolder(layout.runs / f"{arm.slug}-{digest}")


def run_study(config: Config, *, log: Callable[[str], None] = print,
              on_job: Callable[[int, int, Job], None] | None = None) -> StudySummary:
    """Train every (arm, regime, seed) not yet finished, then write study.parquet, the summary,
    the markdown table and the plots into the study folder."""
    from model.build import resolve_device
    from model.registry import scores_new_items
    from model.train import per_user_metrics, train
    from pipeline.per_user import write_per_user
    from pipeline.training import load_inputs

    study = config.study
    if study is None:
        raise ValueError(f"{config.source}: no [study] section")
    arms = plan_arms(config)
    inputs = load_inputs(config, with_features=any(not arm.id_only for arm in arms))
    check_limits(arms, inputs.data)
    variants = variant_features(config, arms, inputs, log)
    layout = study_layout(config)
    jobs = plan_jobs(arms, study.train_fractions, study.seeds)
    records, tuned, trained = [], {}, []
    for number, job in enumerate(jobs, start=1):
        if job.arm.search is not None:  # once per (arm, regime), on the first seed's subsample
            key = (job.arm.name, job.fraction)
            if key not in tuned:
                tuned[key] = tune(layout, job.arm, inputs.data, variants, job.fraction,
                                  study.seeds[0], log)
            job = dataclasses.replace(job, arm=dataclasses.replace(job.arm, train=tuned[key]))
        if on_job is not None:
            on_job(number - 1, len(jobs), job)
        data = arm_data(inputs.data, variants, job.arm, job.fraction, job.seed)
        settings = dataclasses.replace(job.arm.train, seed=job.seed)
        run = run_folder(layout, settings, data, job.arm)
        if run.metrics.exists() and not run.missing_outputs(scores_new_items(settings.model)):
            log(f"study {number}/{len(jobs)}: {job.describe()}: finished earlier ({run.path})")
            if not run.per_user.exists():  # killed between metrics.json and per_user.parquet
                per_user = per_user_metrics(settings, data, run, resolve_device(settings.device))
                write_per_user(run, per_user, inputs.user_ids, {"study": config.name})
        else:
            log(f"study {number}/{len(jobs)}: {job.describe()} -> {run.path}")
            _write_run_inputs(config, run, settings, job, data, inputs)
            started = time.perf_counter()
            result = train(settings, data, run.path, log=log)
            _note_seconds(run, time.perf_counter() - started)
            write_per_user(run, result.per_user, inputs.user_ids, {"study": config.name})
            trained.append(str(run.path))
        records.append((job, run))
    if on_job is not None and jobs:
        on_job(len(jobs), len(jobs), jobs[-1])
    rows = result_rows(records)
    summary = dataclasses.replace(summarise(rows, records), trained=trained)
    write_outputs(layout, rows, summary)
    return summary


def tune(layout: StudyLayout, arm: Arm, data: RecData, variants: dict, fraction: float,
         seed: int, log: Callable[[str], None]) -> TrainConfig:
    """The arm's settings with the point its search selects on VALID Recall@20 (pipeline/search.py:
    seeded TPE, pruning, resumable), searched on the regime's subsample at `seed`."""
    from pipeline.search import digest, run_search, study_identity

    base = dataclasses.replace(arm.train, seed=seed)
    regime = arm_data(data, variants, arm, fraction, seed)
    # named by the search's identity: another budget or space (a quick preset) is another search
    identity = digest(study_identity(base, arm.search, regime.fingerprint()))
    root = layout.root / "search" / f"{arm.slug}@f{fraction:g}-{identity}"
    log(f"study: tuning {arm.name} at train fraction {fraction:g} "
        f"({arm.search.n_trials} trials) in {root}")
    result = run_search(base, arm.search, regime, root, log=log)
    return dataclasses.replace(arm.train, **result.best["params"])


def check_limits(arms: list[Arm], data: RecData) -> None:
    """Refuse, before any training, an arm whose model cannot take this catalog (EASE's limit)."""
    from model.registry import model_class

    for arm in arms:
        check = getattr(model_class(arm.train.model), "check_fits", None)  # optional (registry)
        if check is not None:
            check(arm.train, data)


def variant_features(config: Config, arms: list[Arm], inputs,
                     log: Callable[[str], None]) -> dict[str, dict[str, np.ndarray]]:
    """Each variant's feature matrices (the modalities it changes), made in its own store."""
    from pipeline import stages
    from pipeline.training import load_modality

    study, out = config.study, {}
    item_ids = _as_arrow(inputs.item_ids)
    for arm in arms:
        if arm.variant is None or arm.variant in out:
            continue
        if arm.kind == "caption":
            changed = {n: m for n, m in config.modalities.items() if m.source == "caption"}
            update = {"caption": study.caption_variants[arm.variant]}
        else:
            changed = {n: m for n, m in config.modalities.items()
                       if m.source != "imported" and m.embedder is None}
            update = {"embed": study.embedder_variants[arm.variant]}
        variant = config.model_copy(update={**update, "modalities": changed, "study": None,
                                            "store": variant_store(config, arm.variant)})
        log(f"study: features of {arm.kind} variant {arm.variant!r} in {variant.store}")
        for stage in (stages.ingest_stage, stages.caption_stage, stages.embed_stage):
            log(str(stage(variant, progress=False)))
        out[arm.variant] = {name: load_modality(variant, name, item_ids)[0] for name in changed}
    return out


def _write_run_inputs(config: Config, run: RunFolder, settings: TrainConfig, job: Job,
                      data: RecData, inputs) -> None:
    """What makes a study run an ordinary run folder (ranked, recommended from): its id maps,
    its config snapshot and a record of its inputs."""
    from extractors.redact import redact
    from model.run import write_text
    from pipeline.store import write_ids

    run.path.mkdir(parents=True, exist_ok=True)
    write_ids(run.user_ids, inputs.user_ids)
    write_ids(run.item_ids, inputs.item_ids)
    snapshot = config.model_copy(update={"train": settings})
    write_text(run.config, redact(snapshot.model_dump_json(indent=2)))
    write_json(run.inputs, {"fingerprint": data.fingerprint(), "study": config.name,
                            "arm": job.arm.name, "train_fraction": job.fraction,
                            "seed": job.seed, "variant": job.arm.variant,
                            "modalities": list(job.arm.modalities),
                            "n_train_pairs": int(len(data.train))})


def _as_arrow(values: np.ndarray):
    import pyarrow as pa

    return pa.array(list(values), type=pa.string())


def _note_seconds(run: RunFolder, seconds: float) -> None:
    metrics = run.read_json(run.metrics)
    metrics.setdefault("seconds", {})["wall"] = round(seconds, 3)
    write_json(run.metrics, metrics)


# --- results ------------------------------------------------------------------------------


def tuning_note(arm: Arm) -> str:
    """How an arm's settings were chosen, for the table: its search budget, or "fixed"."""
    if arm.search is None:
        return "fixed"
    search = arm.search
    epochs = f"<= {search.max_epochs} epochs" if search.max_epochs else "full epochs"
    limit = f", <= {search.timeout_s:g} s" if search.timeout_s else ""
    return f"tuned on valid: {search.n_trials} trials, {epochs}{limit}"


def result_rows(records: list[tuple[Job, RunFolder]]) -> list[dict[str, Any]]:
    """One row per (arm, regime, seed, split, metric, k): the study.parquet rows."""
    rows = []
    for job, run in records:
        metrics = run.read_json(run.metrics)
        settings = json.dumps(metrics.get("config", {}), sort_keys=True, default=str)
        seconds = metrics.get("seconds", {}).get("wall")
        for split in SPLITS:
            for name, value in (metrics.get(split) or {}).items():
                metric, k = name.split("@")
                rows.append({
                    "arm": job.arm.name, "kind": job.arm.kind, "id_only": job.arm.id_only,
                    "tuning": tuning_note(job.arm),
                    "regime": float(job.fraction), "seed": int(job.seed), "split": split,
                    "metric": metric, "k": int(k), "value": float(value),
                    "best_epoch": int(metrics.get("best_epoch", 0)),
                    "seconds": None if seconds is None else float(seconds),
                    "settings": settings, "run_dir": str(run.path),
                })
    return rows


@dataclass(frozen=True)
class StudySummary:
    """Per regime: the best ID-only arm, and per arm its figures, delta and p-value."""

    regimes: dict[float, dict[str, Any]]
    arms: dict[str, str]  # arm -> kind, in table order
    tuning: dict[str, str]  # arm -> how its settings were chosen (tuning_note)
    has_cold: bool
    run_dirs: list[str]  # every run of the study, in job order
    trained: list[str]  # the runs this call trained (the others were reused)

    def to_json(self) -> dict:
        return {"arms": self.arms, "tuning": self.tuning, "has_cold": self.has_cold,
                "runs": self.run_dirs,
                "regimes": {f"{regime:g}": body for regime, body in self.regimes.items()}}


def summarise(rows: list[dict[str, Any]], records: list[tuple[Job, RunFolder]]) -> StudySummary:
    arms = {row["arm"]: row["kind"] for row in rows}
    tuning = {row["arm"]: row["tuning"] for row in rows}
    has_cold = any(row["split"] == "test_cold" for row in rows)
    regimes = {}
    for regime in sorted({row["regime"] for row in rows}, reverse=True):
        in_regime = [row for row in rows if row["regime"] == regime]
        figures = {arm: _figures([row for row in in_regime if row["arm"] == arm])
                   for arm in arms}
        id_only = [arm for arm in arms
                   if any(row["id_only"] for row in in_regime if row["arm"] == arm)]
        best = max(id_only, key=lambda arm: figures[arm]["valid ndcg@20"]["mean"]) \
            if id_only else None
        runs = {arm: [run for job, run in records if job.arm.name == arm
                      and job.fraction == regime] for arm in arms}
        for arm in arms:
            if best is None:
                continue
            reference = figures[best]["test ndcg@20"]["mean"]
            delta = figures[arm]["test ndcg@20"]["mean"] / reference - 1.0 if reference else None
            figures[arm]["delta_vs_best_id_only"] = delta
            figures[arm]["p_value"] = None if arm == best else paired_p_value(runs[arm],
                                                                              runs[best])
        cold = {run.read_json(run.metrics).get("n_cold_items", 0)
                for job, run in records if job.fraction == regime}
        regimes[regime] = {"best_id_only": best, "arms": figures,
                           "n_cold_items": [min(cold), max(cold)]}  # per seed's subsample
    return StudySummary(regimes, arms, tuning, has_cold, [str(run.path) for _, run in records], [])


def _figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in SPLITS:
        for metric, k in FIGURES:
            values = [row["value"] for row in rows if row["split"] == split
                      and row["metric"] == metric and row["k"] == k]
            if values:
                out[f"{split} {metric}@{k}"] = {"mean": float(np.mean(values)),
                                                "std": float(np.std(values)), "n": len(values)}
    seconds = [row["seconds"] for row in rows if row["seconds"] is not None
               and row["split"] == "test" and row["metric"] == "ndcg" and row["k"] == 20]
    out["seconds"] = float(np.mean(seconds)) if seconds else None
    out["best_epoch"] = [row["best_epoch"] for row in rows if row["split"] == "test"
                         and row["metric"] == "ndcg" and row["k"] == 20]
    return out


def seed_mean_per_user(runs: list[RunFolder], split: str = "test",
                       metric: str = SIGNIFICANCE) -> dict[int, float]:
    """{user index: the user's `metric` averaged over the runs (seeds)}; users all runs scored."""
    from pipeline.per_user import read_per_user

    tables = [read_per_user(run.path)[split] for run in runs]
    common = set(tables[0][0].tolist())
    for users, _ in tables[1:]:
        common &= set(users.tolist())
    sums: dict[int, float] = dict.fromkeys(common, 0.0)
    for users, values in tables:
        for user, value in zip(users.tolist(), values[metric].tolist(), strict=True):
            if user in sums:
                sums[user] += value
    return {user: total / len(tables) for user, total in sums.items()}


def paired_p_value(runs: list[RunFolder], reference: list[RunFolder]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of per-user test NDCG@20 (seed means), paired over
    the users both arms scored; 1.0 when every difference is zero, None with no common user."""
    from scipy.stats import wilcoxon

    ours, theirs = seed_mean_per_user(runs), seed_mean_per_user(reference)
    users = sorted(set(ours) & set(theirs))
    if not users:
        return None
    difference = np.array([ours[u] - theirs[u] for u in users])
    if not np.any(difference):
        return 1.0
    return float(wilcoxon(difference, alternative="two-sided").pvalue)


# --- outputs ------------------------------------------------------------------------------


def write_outputs(layout: StudyLayout, rows: list[dict[str, Any]], summary: StudySummary) -> None:
    import pyarrow as pa

    from pipeline import schemas
    from pipeline.plots import ablation_png, regimes_png
    from pipeline.store import write_table

    layout.root.mkdir(parents=True, exist_ok=True)
    write_table(layout.table, pa.Table.from_pylist(rows, schema=schemas.STUDY), schemas.STUDY)
    write_json(layout.summary, summary.to_json())
    layout.markdown.write_text(markdown_table(summary) + "\n")
    from model.run import write_atomically

    for name, png in (("regimes", regimes_png(summary)), ("ablation", ablation_png(summary))):
        if png is not None:
            write_atomically(layout.plot(name), lambda path, png=png: Path(path).write_bytes(png))


def markdown_table(summary: StudySummary) -> str:
    """Per regime, one row per arm: mean +- std, delta vs the best ID-only arm, p-value."""
    columns = [("valid ndcg@20", "valid N@20"), ("test recall@20", "test R@20"),
               ("test ndcg@20", "test N@20")]
    if summary.has_cold:
        columns += [("test_cold recall@20", "cold R@20"), ("test_cold ndcg@20", "cold N@20")]
    lines = []
    for regime, body in summary.regimes.items():
        best = body["best_id_only"]
        low, high = body["n_cold_items"]
        cold = f"{low}" if low == high else f"{low}-{high}"
        lines += [f"### train fraction {regime:g} (best ID-only arm on valid: {best or 'none'}; "
                  f"{cold} cold-start item(s), ranked among themselves)",
                  "", "| arm | settings | " + " | ".join(title for _, title in columns)
                  + " | Δ test N@20 vs best ID-only | p (Wilcoxon) | seconds/run |",
                  "|---" * (len(columns) + 5) + "|"]
        for arm, figures in body["arms"].items():
            cells = [_mean_std(figures.get(key)) for key, _ in columns]
            delta = figures.get("delta_vs_best_id_only")
            p = figures.get("p_value")
            seconds = figures["seconds"]
            mark = " (best ID-only)" if arm == best else ""
            lines.append(f"| {arm}{mark} | {summary.tuning[arm]} | " + " | ".join(cells)
                         + f" | {'' if delta is None else f'{100 * delta:+.1f}%'}"
                         + f" | {'' if p is None else f'{p:.3g}'}"
                         + f" | {'' if seconds is None else f'{seconds:.1f}'} |")
        lines.append("")
    return "\n".join(lines)


def table_rows(summary: dict) -> list[dict[str, Any]]:
    """The table artifact's rows from summary.json: one per regime and arm."""
    rows = []
    for regime, body in summary["regimes"].items():
        for arm, figures in body["arms"].items():
            row = {"train fraction": regime, "arm": arm, "kind": summary["arms"][arm],
                   "settings": summary["tuning"][arm], "best ID-only": arm == body["best_id_only"]}
            for split in SPLITS:
                for metric, k in FIGURES:
                    row[f"{split} {metric}@{k}"] = _mean_std(figures.get(f"{split} {metric}@{k}"))
            delta, p = figures.get("delta_vs_best_id_only"), figures.get("p_value")
            row["Δ test ndcg@20"] = "" if delta is None else f"{100 * delta:+.1f}%"
            row["p (Wilcoxon)"] = "" if p is None else f"{p:.3g}"
            row["seconds/run"] = "" if figures["seconds"] is None else f"{figures['seconds']:.1f}"
            rows.append(row)
    return rows


def _mean_std(figure: dict | None) -> str:
    if not figure:
        return ""
    return f"{figure['mean']:.4f} ± {figure['std']:.4f}"
