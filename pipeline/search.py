"""Hyper-parameter search on Optuna: seeded TPE over typed TrainConfig ranges, median pruning on
valid Recall@20 at each epoch, the selection by VALID Recall@20 (never test), resumable from SQLite.

Why in pipeline/ and not model/: Optuna is orchestration (a sampler, a pruner, an SQLite study), as
Prefect is, and model/ imports torch, numpy, scipy and faiss only (STYLE rule 1). model/ knows
nothing of Optuna but `model.train.train`'s `on_epoch` hook, from which this module reports each
epoch and raises `optuna.TrialPruned`. model/config.py holds the typed space (`SearchConfig`).

The search folder (its files are named here and nowhere else):
  optuna.sqlite3   the study: every trial's params, state, per-epoch values and table figures
  search.lock      held while a process searches in this folder (a second one is refused)
  trial-NNNN/      trial NNNN's run folder (at most max_epochs); a pruned or failed trial's has no
                   metrics.json, so it is never taken for a finished run
  search.json      the trials table, the selection and what it was made on

Resume: `n_trials` is the study's TOTAL of finished trials (complete + pruned). A rerun first marks
the trials a killed process left RUNNING as failed, then runs only the missing ones. Failed trials
(a killed process, a diverged loss) do not count: they are re-done, with new proposals. The sampler
is seeded with `seed + the number of trials already in the study`: the same seed on the same study
proposes the same points, and a resumed study does not propose its random startup points twice.

The study's identity (space, the trials' train config, sampler and pruner settings, the data's
fingerprint; not the budgets n_trials and timeout_s) is stored in the study; a storage file made by
another identity is refused, naming the file and what differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from model.checkpoint import EXECUTION_FIELDS, run_identity
from model.config import SELECTION_METRIC, SearchConfig, SearchParam, TrainConfig, check_space
from model.data import RecData
from model.run import config_dict, write_json
from model.train import train

STUDY_NAME = "search"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards n_trials
STOPPED = "stopped before it finished"  # the note of a trial a killed search left RUNNING


@dataclasses.dataclass(frozen=True)
class SearchFolder:
    """The files of one search (the folder's name is chosen by pipeline/training.py)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def storage(self) -> Path:
        return self.path / "optuna.sqlite3"

    @property
    def lock(self) -> Path:
        return self.path / "search.lock"

    @property
    def table(self) -> Path:
        return self.path / "search.json"

    def trial(self, number: int) -> Path:
        return self.path / f"trial-{number:04d}"


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Every trial of the study as a row (in trial order) and the selected one's number."""

    rows: list[dict[str, Any]]
    best_number: int
    folder: SearchFolder

    @property
    def best(self) -> dict[str, Any]:
        return next(row for row in self.rows if row["number"] == self.best_number)


def trial_config(base: TrainConfig, search: SearchConfig, params: dict[str, Any]) -> TrainConfig:
    """`base` with a trial's params, at most `max_epochs` epochs (0: base's own)."""
    epochs = min(base.epochs, search.max_epochs) if search.max_epochs else base.epochs
    return dataclasses.replace(base, **params, epochs=epochs)


def study_identity(base: TrainConfig, search: SearchConfig, data_fingerprint: str) -> dict:
    """What a study's trials depend on: everything but the budgets (n_trials, timeout_s) and
    how the trials execute (model.checkpoint.EXECUTION_FIELDS)."""
    settings = {name: value for name, value in config_dict(search).items()
                if name not in ("n_trials", "timeout_s", "space")}
    train_identity = run_identity(trial_config(base, search, {}))  # as a run folder's name
    for name in EXECUTION_FIELDS:  # the device, threads... may change between reruns
        train_identity.pop(name, None)
    return {"space": config_dict(search)["space"], "settings": settings, "train": train_identity,
            "data": data_fingerprint}


def digest(identity: dict) -> str:
    return hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=8).hexdigest()


def propose(trial: Trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """One point of the space, asked of the trial (and so of the sampler) field by field."""
    params: dict[str, Any] = {}
    for name, param in space.items():
        if param.kind == "float":
            params[name] = trial.suggest_float(name, param.low, param.high, step=param.step,
                                               log=param.log)
        elif param.kind == "int":
            params[name] = trial.suggest_int(name, param.low, param.high, step=param.step or 1,
                                             log=param.log)
        else:
            params[name] = trial.suggest_categorical(name, param.choices)
    return params


def run_search(base: TrainConfig, search: SearchConfig, data: RecData, root: Path, *,
               data_fingerprint: str | None = None,
               log: Callable[[str], None] = print) -> SearchResult:
    """Run the study's missing trials in `root` within the budget; write and return the table.

    `data_fingerprint` names the data in the study's identity (default: `data.fingerprint()`;
    the pipeline passes its inputs' one, which also holds the feature stores' keys).
    """
    check_space(base, search.space)
    folder = SearchFolder(root)
    identity = study_identity(base, search, data_fingerprint or data.fingerprint())
    with _locked(folder):
        study = open_study(folder, identity, search)
        _fail_stale_trials(study, log)
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        missing = search.n_trials - done
        log(f"search {folder.path}: {done} of {search.n_trials} trials finished, "
            f"running {max(missing, 0)}" + (f" (at most {search.timeout_s:g}s)"
                                            if search.timeout_s and missing > 0 else ""))
        if missing > 0:
            study.optimize(_objective(base, search, data, folder, log), n_trials=missing,
                           timeout=search.timeout_s or None, catch=(FloatingPointError,))
        result = _result(study, folder)
    log(format_table(result))
    return result


def open_study(folder: SearchFolder, identity: dict, search: SearchConfig) -> optuna.Study:
    """The folder's study (created when new), refused when another identity made it."""
    folder.path.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log line per trial instead
    study = optuna.create_study(storage=f"sqlite:///{folder.storage}", study_name=STUDY_NAME,
                                direction="maximize", load_if_exists=True)
    stored = study.user_attrs.get("identity")
    if stored is None and not study.trials:
        study.set_user_attr("identity", identity)
        study.set_user_attr("digest", digest(identity))
    elif stored != identity:
        changed = sorted(key for key in identity if (stored or {}).get(key) != identity[key])
        raise ValueError(
            f"{folder.storage}: made by a different search (differs in: "
            f"{', '.join(changed) or 'unknown, no identity stored'}; stored digest "
            f"{study.user_attrs.get('digest')}, this config's {digest(identity)}). Delete "
            f"{folder.path} to start this search over, or restore the config it was made with.")
    study.sampler = optuna.samplers.TPESampler(seed=search.seed + len(study.trials),
                                               n_startup_trials=search.startup_trials)
    study.pruner = optuna.pruners.MedianPruner(
        n_startup_trials=search.prune_after_trials, n_warmup_steps=search.prune_from_epoch
    ) if search.prune else optuna.pruners.NopPruner()
    return study


def _objective(base: TrainConfig, search: SearchConfig, data: RecData, folder: SearchFolder,
               log: Callable[[str], None]) -> Callable[[Trial], float]:
    def objective(trial: Trial) -> float:
        params = propose(trial, search.space)
        run_dir = folder.trial(trial.number)
        shutil.rmtree(run_dir, ignore_errors=True)  # a new number: anything there is stale
        log(f"trial {trial.number}: {params} -> {run_dir}")
        best: dict[str, Any] = {}

        def on_epoch(epoch: int, valid: dict[str, float]) -> None:
            if not best or valid[SELECTION_METRIC] > best["valid"][SELECTION_METRIC]:
                best.update(epoch=epoch, valid=valid)
            trial.report(best["valid"][SELECTION_METRIC], epoch)  # the best so far, as the value
            if trial.should_prune():
                trial.set_user_attr("figures", {"best_epoch": best["epoch"], "epochs_run": epoch,
                                                "valid": best["valid"]})
                log(f"trial {trial.number}: pruned at epoch {epoch} (best valid "
                    f"{SELECTION_METRIC} {best['valid'][SELECTION_METRIC]:.4f} below the median)")
                raise optuna.TrialPruned(f"epoch {epoch}")

        try:
            result = train(trial_config(base, search, params), data, run_dir, resume=False,
                           log=log, on_epoch=on_epoch)
        except FloatingPointError as error:  # a diverged trial: failed, re-done on a rerun
            trial.set_user_attr("note", str(error))
            raise
        trial.set_user_attr("figures", {  # one attribute: one write to the storage
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "valid": result.metrics["valid"],
            "test": result.metrics["test"]})  # shown in the table, never used
        return result.metrics["valid"][SELECTION_METRIC]

    return objective


def _fail_stale_trials(study: optuna.Study, log: Callable[[str], None]) -> None:
    """Trials left RUNNING (the lock says no other process runs them) become FAIL, to be re-done."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        log(f"trial {trial.number}: left running by a stopped search; marked failed, re-done")


@contextlib.contextmanager
def _locked(folder: SearchFolder) -> Iterator[None]:
    folder.path.mkdir(parents=True, exist_ok=True)
    with folder.lock.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{folder.lock}: another process is running this search; wait for "
                             "it to end (or stop it) and run again") from None
        yield  # the lock ends with the file's handle, and with the process


def _row(trial: FrozenTrial, folder: SearchFolder) -> dict[str, Any]:
    figures = trial.user_attrs.get("figures", {})
    note = trial.user_attrs.get("note", "")
    seconds = round(trial.duration.total_seconds(), 2) if trial.duration else None
    if trial.state == TrialState.FAIL and not note:
        note = trial.system_attrs.get("fail_reason") or STOPPED
    if note == STOPPED:  # its end is when a rerun found it, not when it stopped
        seconds = None
    return {"number": trial.number, "state": trial.state.name, "params": trial.params,
            "best_epoch": figures.get("best_epoch"), "epochs_run": figures.get("epochs_run"),
            "valid": figures.get("valid", {}), "test": figures.get("test", {}),
            "value": trial.value, "seconds": seconds, "run_dir": str(folder.trial(trial.number)),
            "note": note}


def _result(study: optuna.Study, folder: SearchFolder) -> SearchResult:
    """The table of every trial, written to search.json; the selection is the complete trial with
    the best VALID Recall@20 (ties: the earlier trial). An error when no trial completed."""
    rows = [_row(trial, folder) for trial in study.get_trials(deepcopy=False)]
    complete = [row for row in rows if row["state"] == "COMPLETE"]
    best = max(complete, key=lambda row: (row["value"], -row["number"])) if complete else None
    write_json(folder.table, {
        "selection": f"the complete trial with the best valid {SELECTION_METRIC} (test is shown, "
                     "never used)",
        "best_number": best and best["number"], "best_params": best and best["params"],
        "storage": str(folder.storage), "rows": rows})
    if best is None:
        states = {state: sum(row["state"] == state for row in rows)
                  for state in ("PRUNED", "FAIL")}
        raise ValueError(f"{folder.storage}: no trial of the search completed ({states}); raise "
                         "search.n_trials or search.timeout_s, or prune later "
                         "(search.prune_from_epoch, search.prune_after_trials)")
    return SearchResult(rows=rows, best_number=best["number"], folder=folder)


def format_table(result: SearchResult) -> str:
    """A markdown table of every trial, the selected one marked; test figures are only shown."""
    lines = ["| trial | state | params | best epoch | valid R@20 | valid N@20 | test R@20 "
             "| test N@20 | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result.rows:
        mark = " (selected)" if row["number"] == result.best_number else ""
        figures = [_figure(row[part], name) for part in ("valid", "test")
                   for name in ("recall@20", "ndcg@20")]
        state = row["state"].lower() + (f": {row['note']}" if row["note"] else "")
        lines.append(f"| {row['number']}{mark} | {state} | {json.dumps(row['params'])} "
                     f"| {_cell(row['best_epoch'])} | {' | '.join(figures)} "
                     f"| {_cell(row['seconds'])} |")
    return "\n".join(lines)


def _figure(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else "-"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
