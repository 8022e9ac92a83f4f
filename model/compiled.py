"""The training step's forward pass, compiled by torch.compile (inductor) where that pays off.

Beyond its two wide feature products, a LIRDRec step is dozens of elementwise passes over the
(U+I) x S*d rows and the (I, 4d) encoder activations (normalise, concatenate, sum the layers,
attention, their gradients), each a separate kernel reading and writing memory in eager torch.
Inductor fuses them into a few generated C++ loops; the GEMMs and the sparse products
(model/graph.py's `csr_product` and gemm.py's oneDNN product, operators of their own) run as
before. The graph also holds the loss's batch-free part where the model splits its loss
(`batch_free_loss`, model/registry.py: LIRDRec's regulariser over all (U+I) vectors, whose
passes and gradients then fuse with the forward's; on a 2-core AMD EPYC (AVX2) a step 0.963x of
the same step with the regulariser eager, 20 ms less, in one process interleaved). The ranking
part over the batch's rows stays outside: its shapes change with the batch. What it buys on a
machine: `bench/bench_train_speed.py --compare-compile 6` times eager and compiled steps
interleaved in one process (README, Measured here).

`train.compile`: "off" runs eagerly; "on" compiles (a missing C++ compiler is an error);
"auto" (the default) compiles a model that declares `compiles` on the CPU, when a C++ compiler
is found and a step moves at least `MIN_ROWS_X_WIDTH` floats of propagated rows (below that
the compile time outweighs what it saves: once per process, 16-20 s of forward and 5-6 s of
backward on Amazon Baby with an empty cache on 2 Intel Xeon cores, 27.8 s of forward on 2 AMD
EPYC (AVX2) cores, 2-3 s from inductor's cache), and falls back to eager,
with the reason logged, if compiling fails. Only the training forward is compiled: evaluation
runs the model eagerly (no second compile for eval mode). Runs in one process (a search, a
study) reuse the graph of a model of the same shapes (parameters are the graph's inputs: measured,
no recompile and the earlier model is freed); past 8 differently shaped models, torch's
recompile limit (torch._dynamo.config.recompile_limit, 8) runs the rest eagerly, as torch
documents it (not tried here). Compiled and eager runs compute the
same function; floats may differ in the last bits (fused sums in another order).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

MIN_ROWS_X_WIDTH = 2**20  # (U+I) * S*d of a step below which "auto" stays eager


@dataclass(frozen=True)
class CompileChoice:
    """Whether the training forward is compiled, and why (metrics.json "compile")."""

    mode: str
    compiled: bool
    reason: str
    seconds: float | None = None  # the first compiled step's forward: tracing + code generation

    def summary(self) -> dict:
        return {"mode": self.mode, "compiled": self.compiled, "reason": self.reason,
                "first_forward_seconds": self.seconds}


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would use, or None when there is none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # noqa: BLE001 - InvalidCxxCompiler, or this torch lacks the helper
        return None


def choose_compile(mode: str, model: torch.nn.Module, device: torch.device) -> CompileChoice:
    """What `mode` means for this model on this device (nothing is compiled yet)."""
    if mode == "off":
        return CompileChoice(mode, False, "train.compile = off")
    if not getattr(type(model), "compiles", False):
        return CompileChoice(mode, False, f"{type(model).__name__} is not compiled")
    if mode == "on":
        if device.type == "cpu" and cpp_compiler() is None:
            raise RuntimeError(
                "train.compile = on: torch.compile needs a C++ compiler on the CPU and none was "
                "found (g++ or $CXX); install one (apt-get install g++) or set train.compile = "
                "\"auto\" or \"off\"")
        return CompileChoice(mode, True, "train.compile = on")
    if device.type != "cpu":
        return CompileChoice(mode, False, f"auto: measured on the CPU only, not on {device.type}")
    size = model.compile_size()
    if size < MIN_ROWS_X_WIDTH:
        return CompileChoice(mode, False, f"auto: {size:,} floats of rows a step, below "
                                          f"{MIN_ROWS_X_WIDTH:,}: compiling would cost more "
                                          "than it saves")
    compiler = cpp_compiler()
    if compiler is None:
        return CompileChoice(mode, False, "auto: no C++ compiler found (g++ or $CXX)")
    return CompileChoice(mode, True, f"auto: {size:,} floats of rows a step, {compiler}")


def splits_loss(model: torch.nn.Module) -> bool:
    """Whether the model's loss splits into a per-row and a batch-free part (model/registry.py)."""
    return hasattr(model, "batch_free_loss")


def training_outputs(model: torch.nn.Module
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A training step's forward pass: the (U, D) user and (I, D) item vectors, and the loss's
    batch-free part where the model splits its loss (in the same graph: its passes over all
    vectors and their gradients fuse with the forward's), else None."""
    user_vectors, item_vectors = model()
    return user_vectors, item_vectors, \
        model.batch_free_loss(user_vectors, item_vectors) if splits_loss(model) else None


class TrainingForward:
    """`forward()` = `training_outputs(model)` for a training step, compiled as `choice` says (an
    eager choice is logged at once). The first call compiles (timed into `choice.seconds`,
    logged); in "auto" a failure there is logged and the step runs eagerly from then on."""

    def __init__(self, model: torch.nn.Module, choice: CompileChoice,
                 log: Callable[[str], None] = print) -> None:
        self.model, self.choice, self.log = model, choice, log
        self._compiled = torch.compile(training_outputs) if choice.compiled else None
        self._first = choice.compiled
        if not choice.compiled:
            log(f"compile: eager ({choice.reason})")

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self._compiled is None:
            return training_outputs(self.model)
        if not self._first:
            return self._compiled(self.model)
        tick = time.perf_counter()
        try:
            with warnings.catch_warnings():  # "no code generation for complex operators" (the
                warnings.simplefilter("ignore", UserWarning)  # FFT of dct: it runs as before)
                result = self._compiled(self.model)
        except Exception as error:  # noqa: BLE001 - any failure to compile: eager, if "auto"
            if self.choice.mode == "on":
                raise RuntimeError(f"train.compile = on: compiling the training step failed: "
                                   f"{type(error).__name__}: {_first_line(error)}") from error
            self.choice = CompileChoice(self.choice.mode, False,
                                        f"auto: compiling failed, eager instead "
                                        f"({type(error).__name__}: {_first_line(error)})")
            self.log(f"compile: {self.choice.reason}")
            self._compiled, self._first = None, False
            return training_outputs(self.model)
        self._first = False
        self.choice = CompileChoice(self.choice.mode, True, self.choice.reason,
                                    round(time.perf_counter() - tick, 2))
        self.log(f"compile: training forward compiled in {self.choice.seconds:.1f}s "
                 f"({self.choice.reason})")
        return result


def step_loss(model: torch.nn.Module, outputs: tuple, users: torch.Tensor,
              positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """A single-process step's loss from `TrainingForward`'s outputs: batch_loss, or the ranking
    part plus the batch-free part already computed with the forward."""
    user_vectors, item_vectors, batch_free = outputs
    if batch_free is None:
        return model.batch_loss(user_vectors, item_vectors, users, positives, negatives)
    return model.ranking_loss(user_vectors, item_vectors, users, positives, negatives) + batch_free


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""
