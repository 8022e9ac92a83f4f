"""Data-parallel training on torch.distributed: the process group, its launchers, the exact step.

What N processes ("ranks") compute is what one process computes (model/train.py):
- every rank builds the same model from the same RecData: the graphs are built on each rank from
  the same inputs rather than sent (exact kNN and the user-item graph are deterministic functions
  of the data; no graph serialisation is needed, and on separate machines the builds run side by
  side; on one machine they share its cores), and a checksum of
  every buffer (features, graphs) is compared across ranks before the first step, so a
  non-deterministic build (an approximate kNN index) is an error, not a silent divergence; rank
  0's weights, optimiser and RNG state are then broadcast (a fresh run's and a resumed one's);
- `batch_size` is the GLOBAL batch: every rank draws the epoch's permutation and each batch's
  negatives from the same seeded RNG (so the sampler's variable number of redraws stays in step)
  and takes its contiguous slice [B r / N, B (r + 1) / N) of the batch's B triples;
- `data_parallel_backward`: rank r's loss is (its rows / B) * its slice's mean BPR, plus the
  regulariser over all vectors on rank 0 only; the gradients (and the loss) are summed over the
  ranks in one all-reduce, which is the single-process gradient up to float summation order;
- `evaluate_shared`: the valid users are split into contiguous slices, each rank ranks its own,
  and every rank gathers all per-user values in user order: the means (np.mean of the same
  per-user values) and so the early-stopping decisions are the same on every rank and the same
  as one process's. The final test scoring (once, after training) runs on rank 0 alone.
Every collective runs under the process group's timeout ([scale] train_timeout_s); a peer that
dies closes its sockets, which fails the others' next collective at once.
Gloo on CPU; on CUDA, NCCL for the gradients (rank r on cuda:LOCAL_RANK) and a gloo group for
the Python objects (jobs, state, metrics).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


class DistributedError(ConnectionError):
    """A process group that cannot be formed or kept: the message names the address and the fix
    (no errno: the CLI prints it as it is)."""


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run: rank `rank` of `size`, on `device`."""

    rank: int
    size: int
    device: torch.device
    objects: Any = None  # the process group for Python objects (None: the default group)

    @property
    def main(self) -> bool:
        """Rank 0: the one that reads checkpoints, writes the run folder and logs."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's contiguous slice of n rows (sizes differ by at most one)."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (pickled)."""
        holder = [value]
        dist.broadcast_object_list(holder, src=0, group=self.objects)
        return holder[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value, group=self.objects)
        return values


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def check_processes(processes: int, device: torch.device) -> None:
    """Refuse more processes on this machine than it has GPUs (CUDA) or CPU cores (CPU)."""
    if device.type == "cuda":
        available, what = torch.cuda.device_count(), "CUDA devices"
    else:
        available, what = cpu_cores(), "CPU cores"
    if processes > available:
        raise ValueError(f"[scale] train_processes = {processes} (or torchrun --nproc-per-node) "
                         f"but this machine has {available} {what}: one process per "
                         f"{what[:-1]} at most (README: Scale-out training)")


def rank_device(device_name: str, local_rank: int) -> torch.device:
    """"auto" or "cuda": this machine's local_rank-th GPU when there are GPUs; else the CPU."""
    if device_name == "cpu" or (device_name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"train.device={device_name!r} but no CUDA device is available")
    return torch.device("cuda", local_rank)


def join(rank: int, size: int, device: torch.device, timeout_s: float,
         init_method: str = "env://") -> World:
    """Join the process group (gloo on CPU, NCCL on CUDA) or raise DistributedError in time."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:  # the ranks share the cores (torchrun sets OMP_NUM_THREADS=1; undo that)
        torch.set_num_threads(max(1, cpu_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", size))))
    timeout = datetime.timedelta(seconds=timeout_s)
    address = init_method if init_method != "env://" else \
        f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    _forget_failed_groups()
    try:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size,
                                timeout=timeout)
    except (RuntimeError, ValueError) as error:  # DistStoreError, DistNetworkError, a bad address
        raise DistributedError(
            f"rank {rank} of {size}: no process group at {address} within {timeout_s:g} s "
            f"({str(error).splitlines()[0]}); check that every rank was started, that the "
            "rendezvous address is reachable from this machine, or raise [scale] "
            "train_timeout_s") from None
    objects = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    return World(rank, size, device, objects)


def _forget_failed_groups() -> None:
    """torch numbers process groups per process, and a failed init_process_group has already
    taken its number: a later join in the same process (a rerun in a served flow, say) would
    name its group "1" while freshly started ranks name theirs "0", and each would wait for the
    other's keys until the time-out. With no group initialised, numbering starts again at 0."""
    world = getattr(dist.distributed_c10d, "_world", None)
    if not dist.is_initialized() and world is not None and hasattr(world, "group_count"):
        world.group_count = 0


def join_torchrun(device_name: str, timeout_s: float) -> World:
    """This process's World under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = rank_device(device_name, local_rank)
    check_processes(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), device)
    return join(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), device, timeout_s)


def leave(together: bool = False) -> None:
    """Destroy the process group. `together`: after a barrier, so that no rank tears its gloo
    connections down while a peer still uses them (a rank then aborted at exit, 'terminate called
    without an active exception'); only on the normal path, where every rank gets here: after an
    error the peers may never arrive, and a barrier would only wait out its time-out."""
    if dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def local_world(processes: int, device_name: str, timeout_s: float,
                target: Callable[..., None] | None = None, args: tuple = ()) -> Iterator[World]:
    """Rank 0 in this process, ranks 1..N-1 spawned on this machine running `target(world,
    *args)` (default: serve_jobs, what rank 0's `train_everywhere` calls feed).

    Spawned (torch.multiprocessing, "spawn"), not a torchrun subprocess: rank 0 stays the calling
    process, so the stage's log (a Prefect logger), the search's on_epoch hook and the returned
    TrainResult work unchanged, and only the train call is repeated on the other ranks, not the
    CLI with its config and store reads. The calling program's main module must be import-safe
    (an `if __name__ == "__main__":` guard), as for any spawned process. On leaving, rank 0
    releases the workers and waits for them; on an error it kills them.
    """
    device = rank_device(device_name, 0)
    check_processes(processes, device)
    threads = torch.get_num_threads()
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    context = torch.multiprocessing.get_context("spawn")
    started = [context.Event() for _ in range(1, processes)]
    workers = [context.Process(target=_worker, daemon=True,
                               args=(rank, processes, device_name, timeout_s, init_method,
                                     target or serve_jobs, args, started[rank - 1]))
               for rank in range(1, processes)]
    for worker in workers:
        worker.start()
    joined = False
    try:
        _wait_started(workers, started, timeout_s)
        world = join(0, processes, device, timeout_s, init_method)
        joined = True
        try:
            yield world
        except RuntimeError as error:  # a collective failed: a rank that died says why
            raise _lost_rank(workers, error) from error
        if target is None:
            world.broadcast(None)  # no more jobs
        leave(together=True)  # the workers' own leave(together=True) meets this barrier
        joined = False
        for worker in workers:
            worker.join(timeout_s)
        failed = {worker.pid: worker.exitcode for worker in workers if worker.exitcode != 0}
        if failed:
            raise DistributedError(f"training processes ended badly (pid: exit code) {failed}")
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
        if joined:
            leave()
        torch.set_num_threads(threads)


def _lost_rank(workers: list, error: RuntimeError, wait_s: float = 5.0) -> RuntimeError:
    """The error of a collective that failed because a spawned rank ended (killed, out of
    memory, an exception: its traceback is above), naming the rank, its pid and exit code; the
    error itself when every rank is still alive. The run folder keeps its last checkpoint (rank
    0 writes it before going on), so a rerun resumes from there."""
    deadline = time.monotonic() + wait_s  # a peer's socket can close just before its exit
    while all(w.is_alive() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    dead = [(rank, w) for rank, w in enumerate(workers, start=1) if not w.is_alive()]
    if not dead:
        return error
    rank, worker = dead[0]
    code = worker.exitcode
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return DistributedError(
        f"training process rank {rank} (pid {worker.pid}) ended during training ({how}); the "
        f"others stopped at their next collective ({str(error).splitlines()[0]}). The run "
        "folder keeps its last checkpoint: rerun to resume from it")


def _wait_started(workers: list, started: list, timeout_s: float) -> None:
    """Until every spawned worker has started (imported this module), failing at once when one
    died on the way (an exception while importing, a main module without a __main__ guard)."""
    deadline = time.monotonic() + timeout_s
    while not all(event.is_set() for event in started):
        dead = {w.pid: w.exitcode for w in workers if w.exitcode is not None}
        if dead or time.monotonic() > deadline:
            raise DistributedError(
                f"training processes did not start (pid: exit code {dead}, see their traceback "
                "above); a program that trains on several processes needs its main module "
                'import-safe (an `if __name__ == "__main__":` guard), as any spawned process does')
        time.sleep(0.05)


def _worker(rank: int, size: int, device_name: str, timeout_s: float, init_method: str,
            target: Callable[..., None], args: tuple, started) -> None:
    started.set()
    world = join(rank, size, rank_device(device_name, rank), timeout_s, init_method)
    try:
        target(world, *args)
    except BaseException:
        leave()
        raise
    leave(together=True)
    # Done, and rank 0 alone writes: end here, before the interpreter's teardown, where a gloo
    # thread still joinable at exit aborted a rank that had finished cleanly ('terminate called
    # without an active exception', exit -6: once in a CI run of the tests, after the barrier)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def serve_jobs(world: World) -> None:
    """Ranks 1..N-1: train what rank 0's `train_everywhere` sends, until it sends None."""
    from model.train import train

    while (job := world.broadcast(None)) is not None:
        train(job["config"], job["data"], job["run_dir"], resume=job["resume"], world=world,
              log=lambda _: None)


def train_everywhere(world: World, config, data, run_dir, *, resume: bool = True,
                     log: Callable[[str], None] = print, on_epoch=None):
    """Rank 0: `model.train.train` on every rank of `world` (the others wait in serve_jobs)."""
    from model.train import train

    world.broadcast({"config": config, "data": data, "run_dir": run_dir, "resume": resume})
    return train(config, data, run_dir, resume=resume, log=log, on_epoch=on_epoch, world=world)


def check_same_buffers(model: torch.nn.Module, world: World) -> None:
    """Every rank built the same features and graphs: their checksums agree."""
    sums = [_checksum(buffer) for buffer in model.buffers()]
    if len(set(map(tuple, world.gather(sums)))) > 1:
        raise DistributedError(
            "the ranks built different graphs or features from the same data (an approximate "
            "kNN index is not deterministic across processes?); use knn_method = \"exact\" or "
            "train on one process")


def _checksum(tensor: torch.Tensor) -> float:
    if tensor.layout == torch.sparse_csr:
        parts = (tensor.crow_indices(), tensor.col_indices(), tensor.values())
    else:
        parts = (tensor,)
    total = 0.0
    for part in parts:
        flat = part.detach().reshape(-1).double()
        weights = torch.arange(1, len(flat) + 1, dtype=torch.float64, device=flat.device)
        total += float((flat * weights.remainder(97)).sum())
    return total


def data_parallel_backward(model: torch.nn.Module, world: World, outputs: tuple,
                           users: torch.Tensor, positives: torch.Tensor,
                           negatives: torch.Tensor) -> float:
    """This rank's part of the global batch's loss, backward, then the gradients summed over the
    ranks: (rows / B) * the slice's mean ranking loss on every rank (none for an empty slice),
    the batch-free term on rank 0 only. `outputs` are model/compiled.py's TrainingForward's (user
    vectors, item vectors, batch-free term). Returns the global batch's loss (the single-process
    loss)."""
    user_vectors, item_vectors, batch_free = outputs
    if batch_free is None:
        raise TypeError(f"{type(model).__name__} trains data-parallel but does not split its loss "
                        "(ranking_loss + batch_free_loss, model/registry.py)")
    rows = world.rows(len(users))
    ranking = model.ranking_loss(user_vectors, item_vectors, users[rows], positives[rows],
                                 negatives[rows])
    share = (rows.stop - rows.start) / len(users)
    parts = ([batch_free] if world.main else []) + ([share * ranking] if share else [])
    loss = sum(parts[1:], parts[0]) if parts else None
    if loss is not None:
        loss.backward()
    return sum_gradients(model, world, float(loss.detach()) if loss is not None else 0.0)


def sum_gradients(model: torch.nn.Module, world: World, loss: float) -> float:
    """Each parameter's gradient (none: zeros) summed over the ranks in one all-reduce, with the
    ranks' loss parts; returns the summed loss."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in parameters]
                     + [torch.tensor([loss], dtype=parameters[0].dtype, device=world.device)])
    dist.all_reduce(flat)
    offset = 0
    for p in parameters:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return float(flat[-1])


def evaluate_shared(world: World, user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                    held_outs: dict[str, np.ndarray], train: np.ndarray, ks: tuple[int, ...],
                    user_chunk: int = 0, log: Callable[[str], None] | None = None,
                    scoring: str = "auto") -> dict[str, tuple[dict[str, float], int]]:
    """`metrics.evaluate_splits` with the users split over the ranks (the same numbers on every
    rank: each set's per-user values gathered in user order, then averaged)."""
    from model.metrics import UserMetrics, evaluate_splits_per_user

    users = np.unique(np.concatenate([pairs[:, 0] for pairs in held_outs.values()]))
    mine = users[world.rows(len(users))]
    own = {name: pairs[np.isin(pairs[:, 0], mine)] for name, pairs in held_outs.items()}
    scored = evaluate_splits_per_user(user_vectors, item_vectors, own, train, ks,
                                      user_chunk=user_chunk, log=log, scoring=scoring)
    pieces = world.gather(scored)
    results = {}
    for name in held_outs:
        parts = [piece[name] for piece in pieces]
        merged = UserMetrics(np.concatenate([part.users for part in parts]),
                             {metric: np.concatenate([part.values[metric] for part in parts])
                              for metric in parts[0].values})
        results[name] = (merged.means(), len(merged.users))
    return results


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
