"""One training function: BPR epochs, valid Recall@20 early stopping, exact resume, test at the best epoch.

Evaluation protocol (MMRec, SPEC-lirdrec.md section 7; metrics.py has the formulas): full ranking
over all items with the user's training items masked, every epoch on valid; test is scored ONCE,
after training, with the vectors saved at the best-valid epoch. Test is reported three ways:
- `test`: all test pairs, ranked over all items;
- `test_warm`: test pairs on warm items (items with a train or valid interaction), ranked over
  all items;
- `test_cold`: the usual cold-start protocol: test pairs on cold items (`RecData.cold_items`,
  items whose interactions are all in test), ranked over the cold items only, users with at least
  one cold test item. Empty ({}) when the split holds no cold item.

Run folder (model/run.py names its files): the resumable checkpoint, the best-valid weights with
the run's own config and data fingerprint, the history, the best-valid vectors, for models
that score new items the item encoder's catalog arrays, and metrics.json, written last. The
per-user metrics of valid, test, test_warm and test_cold (`TrainResult.per_user`, from the
best-valid vectors) are returned, not written: pipeline/training.py stores them as the run's
per_user.parquet.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.build import build_model, resolve_device
from model.checkpoint import load_checkpoint
from model.compiled import TrainingForward, choose_compile, step_loss
from model.config import SELECTION_METRIC, TrainConfig
from model.data import RecData
from model.distributed import World, check_same_buffers, data_parallel_backward, evaluate_shared
from model.dtype import run_feature_dtype
from model.gemm import GemmPlan
from model.metrics import UserMetrics, evaluate_splits, evaluate_splits_per_user
from model.registry import uses_features
from model.run import RunFolder, config_dict, read_torch, write_json, write_npz, write_torch
from model.sampling import NegativeSampler
from model.schedule import batch_rule, checkpoint_due, clamped_batch, learning_rate_at


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run reports; `metrics` is the content of run_dir/metrics.json."""

    run_dir: Path
    best_epoch: int
    epochs_run: int
    metrics: dict[str, Any]
    per_user: dict[str, UserMetrics] = dataclasses.field(default_factory=dict)  # split -> users


def train(config: TrainConfig, data: RecData, run_dir: Path, *, resume: bool = True,
          log: Callable[[str], None] = print,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None,
          world: World | None = None) -> TrainResult:
    """Train `config.model` on `data`, writing the run folder; resumes from its checkpoint.

    `on_epoch(epoch, valid_metrics)` is called after each evaluated epoch, once its checkpoint is
    written (a search's pruning hook). An exception it raises ends training there and leaves the
    folder resumable but unfinished: metrics.json is not written and test is never scored.
    With a `world` of several processes (model/distributed.py), every rank calls this with the
    same arguments and computes what one process would; rank 0 alone reads the checkpoint,
    writes the run folder, logs and scores test; the others return a TrainResult without metrics.
    """
    run = RunFolder(run_dir)
    writes = world is None or world.main
    if writes:
        run.path.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = world.device if world is not None else resolve_device(config.device)
    fingerprint = data.fingerprint()
    _log_data_notes(data, log)

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    build_config = config
    if world is not None and uses_features(config.model):  # rank 0's feature dtype everywhere
        dtype = world.broadcast(run_feature_dtype(config, device, None).resolved
                                if world.main else None)
        build_config = dataclasses.replace(config, feature_dtype=dtype, feature_dtype_force=True)
    model = build_model(build_config, data, device, log)
    build_seconds = time.perf_counter() - started
    log(f"{config.model}: {data.n_users} users, {data.n_items} items, {len(data.train)} train "
        f"pairs, {sum(p.numel() for p in model.parameters())} parameters, device {device}, "
        f"built in {build_seconds:.1f}s" + (f", rank 0 of {world.size} processes" if world else ""))
    if world is not None:
        if not type(model).data_parallel:
            raise ValueError(_NOT_DATA_PARALLEL.format(model=config.model))
        check_same_buffers(model, world)
    trainable = any(p.requires_grad for p in model.parameters())
    optimizer = adam(model, config.learning_rate, device) if trainable else None
    sampler = NegativeSampler(data.train, data.n_items) if trainable else None
    train_pairs = torch.as_tensor(data.train, device=device)  # (N, 2)
    batch_size = clamped_batch(config, len(data.train), log)
    steps_per_epoch = -(-len(data.train) // batch_size)
    if trainable and batch_size != config.lr_reference_batch:
        log(f"batch {batch_size}: learning rate {learning_rate_at(config, batch_size, 10**9):.3g} "
            f"(lr_scaling {batch_rule(config.lr_scaling, batch_size, config.lr_reference_batch)}"
            f" of {config.learning_rate:g} at batch {config.lr_reference_batch}"
            + (f", warmup {config.warmup_steps} steps)" if config.warmup_steps else ")"))

    epoch, best_epoch, best_score, bad_epochs, stopped = 0, 0, -1.0, 0, False
    position = None  # where a checkpoint written within an epoch stopped
    history: list[dict[str, Any]] = []
    state = _resume_state(run, config, fingerprint) if resume and writes else None
    resumed = state is not None
    if world is not None:  # every rank starts from rank 0's state (fresh or resumed)
        state = world.broadcast(state if resumed else _state(
            config, fingerprint, model, optimizer, rng, epoch, best_epoch, best_score,
            bad_epochs, stopped, world))
    if state is not None:
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        epoch, best_epoch, best_score = state["epoch"], state["best_epoch"], state["best_score"]
        bad_epochs, stopped = state["bad_epochs"], state["stopped"]
        position = state.get("position")
        if state.get("gemm"):  # the GEMM libraries the run started on (rank 0's): same rounding
            model.gemm_plans = [GemmPlan(**plan) for plan in state["gemm"]]
    if resumed:
        history = run.read_history(epoch)
        processes = state.get("processes", 1)
        within = f", step {position['step']} of epoch {epoch + 1}" if position else ""
        log(f"resumed {run.checkpoint} at epoch {epoch}{within} (best {best_epoch}, "
            f"{bad_epochs} evaluations without improvement)"
            + (f"; written by {processes} processes, resumed on {world.size if world else 1}: "
               "the same run (global batch, one RNG stream), floats may differ in the last bits"
               if processes != (world.size if world else 1) else ""))
    if writes:
        run.write_history(history)
    forward = TrainingForward(model, choose_compile(config.compile, model, device), log) \
        if trainable else None

    if not trainable and epoch == 0:  # nothing to learn: one evaluation as "epoch 0"
        model.eval()
        line = _evaluate_epoch(config, data, model, device, 0, None, 0.0, run, world, log)
        if writes:
            run.save_vectors(*line["_vectors"])
        line.pop("_vectors")
        history.append(line)
        best_epoch, best_score, stopped = 0, line["valid"][SELECTION_METRIC], True
        if on_epoch is not None:
            on_epoch(0, line["valid"])

    last_checkpoint = time.monotonic()
    while not stopped and epoch < config.epochs:
        epoch += 1
        model.train()
        if position is None:  # a new epoch
            model.start_epoch(epoch)
            epoch_rng = rng.bit_generator.state  # what the epoch's permutation is drawn from
            order, first_step, loss_sum, seconds_before = rng.permutation(len(data.train)), 0, 0.0, 0.0
        else:  # within the epoch a checkpoint stopped in: its permutation again, then on
            epoch_rng, now = position["epoch_rng"], rng.bit_generator.state
            rng.bit_generator.state = epoch_rng
            order = rng.permutation(len(data.train))
            rng.bit_generator.state = now
            first_step, loss_sum = position["step"], position["loss_sum"]
            seconds_before, position = position["train_seconds"], None
        tick = _clock(device)
        order = torch.as_tensor(order, device=device)
        starts = range(first_step * batch_size, len(order), batch_size)
        for step, start in enumerate(starts, start=first_step):
            learning_rate = learning_rate_at(config, batch_size,
                                             (epoch - 1) * steps_per_epoch + step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            batch = train_pairs[order[start:start + batch_size]]  # (B, 2)
            users, positives = batch[:, 0], batch[:, 1]
            negatives = torch.as_tensor(sampler.sample(users.cpu().numpy(), rng), device=device)
            outputs = forward()  # (U, D) user and (I, D) item vectors, the batch-free loss
            optimizer.zero_grad(set_to_none=True)
            if world is None:
                loss = step_loss(model, outputs, users, positives, negatives)
                loss.backward()
                batch_loss = loss.item()
                del loss
            else:  # this rank's slice of the batch; gradients summed over the ranks
                batch_loss = data_parallel_backward(model, world, outputs, users, positives,
                                                    negatives)
            optimizer.step()
            loss_sum += batch_loss * len(batch)
            del outputs  # free the vectors before the next forward or evaluation
            if writes and step + 1 < steps_per_epoch and checkpoint_due(
                    config, step + 1, last_checkpoint):
                write_torch(run.checkpoint, _state(
                    config, fingerprint, model, optimizer, rng, epoch - 1, best_epoch, best_score,
                    bad_epochs, stopped, world, position={
                        "epoch": epoch, "step": step + 1, "epoch_rng": epoch_rng,
                        "loss_sum": loss_sum,
                        "train_seconds": seconds_before + _clock(device) - tick}))
                last_checkpoint = time.monotonic()
                log(f"checkpoint: epoch {epoch} step {step + 1} of {steps_per_epoch}")
        mean_loss = loss_sum / len(order)
        if not np.isfinite(mean_loss):
            raise FloatingPointError(f"epoch {epoch}: training loss is {mean_loss}; "
                                     f"lower train.learning_rate or check the features")
        train_seconds = seconds_before + _clock(device) - tick

        if epoch % config.eval_every and epoch < config.epochs:  # not evaluated this epoch
            log(f"epoch {epoch:4d}  loss {mean_loss:.5f}  train {train_seconds:.1f}s")
        else:
            line = _evaluate_epoch(config, data, model, device, epoch, mean_loss, train_seconds,
                                   run, world, log)
            history.append(line)
            score = line["valid"][SELECTION_METRIC]
            improved = score > best_score  # strict, as MMRec's early stopping
            vectors = line.pop("_vectors")
            if improved:
                best_epoch, best_score, bad_epochs = epoch, score, 0
                if writes:
                    run.save_vectors(*vectors)
                    # the weights that made those vectors: the item encoder for new items needs them
                    write_torch(run.best_model, {
                        "config": config_dict(config), "data_fingerprint": fingerprint,
                        "epoch": epoch, "model": model.state_dict()})
            else:
                bad_epochs += 1
            del vectors
            stopped = bad_epochs > config.patience
            log(f"epoch {epoch:4d}  loss {mean_loss:.5f}  valid R@20 {score:.4f} "
                f"N@20 {line['valid']['ndcg@20']:.4f}  train {train_seconds:.1f}s "
                f"eval {line['eval_seconds']:.1f}s{'  *' if improved else ''}")
        if writes:
            write_torch(run.checkpoint, _state(config, fingerprint, model, optimizer, rng, epoch,
                                               best_epoch, best_score, bad_epochs, stopped, world))
            last_checkpoint = time.monotonic()
        if on_epoch is not None and history and history[-1]["epoch"] == epoch:
            on_epoch(epoch, history[-1]["valid"])
    if stopped and trainable:
        log(f"early stop: valid {SELECTION_METRIC} did not improve for {bad_epochs} evaluations")
    epochs_run = epoch if trainable else len(history)
    if not writes:
        return TrainResult(run_dir=run.path, best_epoch=best_epoch, epochs_run=epochs_run,
                           metrics={})

    if type(model).scores_new_items and run.best_model.exists():
        _save_item_encoder(model, data, run)
    per_user = per_user_metrics(config, data, run, device)
    metrics = _final_metrics(config, data, per_user, history, best_epoch, epoch, build_seconds,
                             device, fingerprint, model.fitted())
    metrics["gemm"] = [plan.summary() for plan in getattr(model, "gemm_plans", ())]  # gemm.py
    metrics["compile"] = forward.choice.summary() if forward is not None else None
    write_json(run.metrics, metrics)
    cold_note = (f"cold R@20 {metrics['test_cold']['recall@20']:.4f}, {metrics['n_cold_items']} cold "
                 "items ranked among themselves" if metrics["test_cold"] else "no cold items")
    log(f"best epoch {best_epoch}: test R@20 {metrics['test'].get('recall@20', float('nan')):.4f} "
        f"N@20 {metrics['test'].get('ndcg@20', float('nan')):.4f}  ({cold_note})")
    return TrainResult(run_dir=run.path, best_epoch=best_epoch, epochs_run=epochs_run,
                       metrics=metrics, per_user=per_user)


_NOT_DATA_PARALLEL = (
    "train.model = {model!r} cannot train on several processes: its loss is no sum over the "
    "batch's rows (MMRec's EmbLoss is an unsquared norm of the whole batch), so the processes' "
    "slices cannot add up to the one-process gradient; set [scale] train_processes = 1 for it")


def _state(config: TrainConfig, fingerprint: str, model: torch.nn.Module,
           optimizer: torch.optim.Optimizer | None, rng: np.random.Generator, epoch: int,
           best_epoch: int, best_score: float, bad_epochs: int, stopped: bool,
           world: World | None, position: dict | None = None) -> dict[str, Any]:
    """The resumable state (checkpoint.pt): `epoch` epochs done, and where within the next one a
    checkpoint written mid-epoch stopped (`position`: step, the epoch's RNG state, loss so far)."""
    state = {"config": config_dict(config), "data_fingerprint": fingerprint, "epoch": epoch,
             "best_epoch": best_epoch, "best_score": best_score, "bad_epochs": bad_epochs,
             "stopped": stopped, "model": model.state_dict(),
             "optimizer": optimizer.state_dict() if optimizer is not None else None,
             "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
             "gemm": [plan.summary() for plan in getattr(model, "gemm_plans", ())]}
    if world is not None:
        state["processes"] = world.size
    if position is not None:
        state["position"] = position
    return state


def _resume_state(run: RunFolder, config: TrainConfig, fingerprint: str) -> dict | None:
    """The checkpoint to resume from; None without one, or when the best epoch's weights and
    vectors it stands on were deleted (start over). A checkpoint within the first epoch stands on
    nothing else."""
    if not run.checkpoint.exists():
        return None
    if not run.resumable:
        state = read_torch(run.checkpoint)
        if state.get("best_epoch") != 0 or "position" not in state:
            return None
    return load_checkpoint(run.checkpoint, config, fingerprint)


def _evaluate_epoch(config: TrainConfig, data: RecData, model: torch.nn.Module,
                    device: torch.device, epoch: int, loss: float | None, train_seconds: float,
                    run: RunFolder, world: World | None,
                    log: Callable[[str], None] | None = None) -> dict:
    """Valid metrics (and test ones when asked) for the current weights, as one history line
    (appended to the run's history by rank 0); several processes share the users. `log` gets
    the scoring plan of a catalog ranked in several blocks, once per process."""
    model.eval()
    tick = _clock(device)
    with torch.no_grad():
        user_vectors, item_vectors = model()
    splits = {"valid": data.valid, **({"test": data.test} if config.eval_test_every_epoch else {})}
    if world is None:
        scored = evaluate_splits(user_vectors, item_vectors, splits, data.train, config.topk,
                                 user_chunk=config.eval_user_chunk, log=log,
                                 scoring=config.eval_scoring)  # one ranking for both
    else:
        scored = evaluate_shared(world, user_vectors, item_vectors, splits, data.train,
                                 config.topk, user_chunk=config.eval_user_chunk, log=log,
                                 scoring=config.eval_scoring)
    line: dict[str, Any] = {"epoch": epoch, "loss": loss,
                            **{name: metrics for name, (metrics, _) in scored.items()}}
    line["train_seconds"] = round(train_seconds, 4)
    line["eval_seconds"] = round(_clock(device) - tick, 4)
    if world is None or world.main:
        run.append_history(line)
    line["_vectors"] = (user_vectors, item_vectors)
    return line


def _save_item_encoder(model: torch.nn.Module, data: RecData, run: RunFolder) -> None:
    """The catalog arrays that scoring new items needs, from the best-valid weights."""
    from model.encode import catalog_encoder

    model.load_state_dict(read_torch(run.best_model)["model"])
    write_npz(run.item_encoder, catalog_encoder(model, data.features))


def per_user_metrics(config: TrainConfig, data: RecData, run: RunFolder,
                     device: torch.device) -> dict[str, UserMetrics]:
    """valid, test, test_warm and test_cold per user, from the saved best-valid vectors.

    valid, test and test_warm share one ranking over all items; test_cold ranks the cold items
    only (no user when the split holds no cold item). Needs only the vectors and the split:
    what a run of an earlier version, finished without per-user metrics, is completed with.
    """
    user_vectors, item_vectors = (torch.from_numpy(v).to(device) for v in run.load_vectors())
    cold = data.cold_items
    is_cold = np.zeros(data.n_items, dtype=bool)
    is_cold[cold] = True
    ks, chunk = config.topk, config.eval_user_chunk
    held_outs = {"valid": data.valid, "test": data.test,
                 "test_warm": data.test[~is_cold[data.test[:, 1]]]}
    scored = evaluate_splits_per_user(user_vectors, item_vectors, held_outs, data.train, ks,
                                      user_chunk=chunk, scoring=config.eval_scoring)
    scored.update(evaluate_splits_per_user(user_vectors, item_vectors, {"test_cold": data.test},
                                           data.train, ks, user_chunk=chunk,
                                           scoring=config.eval_scoring,
                                           candidate_items=cold))
    return scored


def _final_metrics(config: TrainConfig, data: RecData, per_user: dict[str, UserMetrics],
                   history: list[dict], best_epoch: int, epochs: int, build_seconds: float,
                   device: torch.device, fingerprint: str,
                   fitted: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: valid at the best epoch (its history line), test (all / warm / cold) as the
    means of the per-user metrics of the saved vectors, and what building the model chose on
    valid (`fitted`: EASE's l2; {} for the others)."""
    test, warm, cold_metrics = (per_user[name].means() for name in ("test", "test_warm",
                                                                     "test_cold"))
    n_test, n_warm, n_cold = (len(per_user[name].users) for name in ("test", "test_warm",
                                                                      "test_cold"))
    cold = data.cold_items
    best = next(line for line in history if line["epoch"] == best_epoch)
    trained = [line for line in history if line["loss"] is not None]
    feature_dtype = run_feature_dtype(config, device, log=None) \
        if uses_features(config.model) else None
    return {
        "model": config.model, "best_epoch": best_epoch, "epochs_run": epochs,
        "fitted": fitted, "valid": best["valid"], "test": test, "test_warm": warm,
        "test_cold": cold_metrics,
        "n_users": {"valid": _count_users(data.valid), "test": n_test, "test_warm": n_warm,
                    "test_cold": n_cold},
        "n_cold_items": int(len(cold)),
        "seconds": {
            "build": round(build_seconds, 3),
            "train_per_epoch_median": _median([line["train_seconds"] for line in trained]),
            "eval_per_epoch_median": _median([line["eval_seconds"] for line in history]),
            "feature_dtype_probe": feature_dtype.measurement() if feature_dtype else None,
        },
        "data_fingerprint": fingerprint, "config": config_dict(config),
        "feature_dtype_resolved": feature_dtype.provenance() if feature_dtype else None,
    }


def adam(model: torch.nn.Module, learning_rate: float, device: torch.device) -> torch.optim.Adam:
    """Adam; fused (one kernel a parameter instead of ~10 elementwise passes) where torch has it:
    the same update, floats may differ in the last bits."""
    fused = device.type in ("cpu", "cuda") or None
    return torch.optim.Adam(model.parameters(), lr=learning_rate, fused=fused)


def _log_data_notes(data: RecData, log: Callable[[str], None]) -> None:
    for name, count in data.zero_norm_rows.items():
        if count:
            log(f"note: modality {name!r} has {count} all-zero item rows (cosine 0 to every item)")
    if data.users_without_train:
        log(f"note: {data.users_without_train} users have no training interaction "
            f"(no edges; evaluated from their initial vectors)")


def _count_users(pairs: np.ndarray) -> int:
    return int(len(np.unique(pairs[:, 0])))


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
