"""LIRDRec's wide feature products, x (I, D) W^T and their weight gradient G^T x, on the faster GEMM.

These two products are most of a training step's arithmetic (SPEC section 2; ~93% of Baby's
epoch FLOPs). On x86 CPUs torch runs float32 matmuls on MKL, and its CPU build also carries
oneDNN. Which is faster depends on the CPU, the thread count and the shape: on a 2-core AMD EPYC
(AVX2, 2 threads) oneDNN ran Baby's (7050 x 4096) x (4096 x 512) products at 112-123 GFLOP/s
against MKL's 82-124 (the rate drifting by tens of percent between calls), on one thread at 65
against 75, and the narrow text product's weight gradient (384 wide) at 47-81 against 109-124.
So the library is chosen per product by measuring both on its own shape, once per process
(`choose` on the first `ROWS` rows: 2.1 s for Baby's 4,096-d product on that EPYC, 0.13 s for
its 384-d one; a resumed run measures and then keeps its own),
and only for products large enough for the choice to matter (`MIN_FLOPS`); smaller ones, and
every non-float32 or non-CPU product, run through torch's default (F.linear). The two libraries
round differently (float32 sums in another order), so the choice is logged and recorded in the
run's metrics.json ("gemm").

x is a frozen input: `frozen_linear` differentiates only W (as F.linear does when x needs no
gradient), so the FLOPs are those of F.linear. oneDNN's weight gradient has two forms: on G^T
copied contiguous ("onednn"), or as (x^T G)^T reading G in place ("onednn-xt"). On a 2-core AMD
EPYC with AVX512-BF16 (one interleaved run, another job sharing the CPU) the first ran Baby's
4,096-d gradient at 312 GFLOP/s against 209, the second the 384-d ones at 320 against 202 (7,050
rows) and at 205 against 187 at 200,000 rows, where the copy of G is 400 MB; MKL ran all three at
147-153. All three are measured on ROWS rows, where a copy of G would be cache-resident: so the
copying form's copy is timed apart, on as many rows of the product's own width as the real
product has, up to COPY_BYTES (out of cache, as the real copy is at 10^5+ rows), and charged per
row. Measured on the slice alone, the copying form won at 200,000 rows (363 against 339 GFLOP/s)
and then spent 96 ms a call in the copy itself. Timing the copy adds to the measurement: on a 2-core Intel Xeon (AVX512, AMX)
0.34 -> 0.64 s for a 384-d product at 7,050 rows, 0.44 -> 1.90 s at 200,000 rows (one call each).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

MIN_FLOPS = 5e8  # a product (2 I D n) below this runs on torch's default: nothing to gain
ROWS = 2048  # rows of x that the measurement multiplies (its cost: ~4 x 2 x 2 ROWS D n FLOPs)
COPY_BYTES = 2**27  # the most of G whose copy is timed (128 MB: out of any cache)
MARGIN = 1.05  # oneDNN only when at least this much faster: near a tie, keep torch's default
ROUNDS = 3  # timed calls of each (library, part), interleaved
LIBRARIES = ("default", "onednn")
# the weight gradient has a third way: oneDNN on (x^T G)^T, which reads G in place instead of
# copying G^T (a 400 MB copy at 200,000 rows x 512); which of the two is faster depends on D
PARTS = {"forward": LIBRARIES, "weight_grad": (*LIBRARIES, "onednn-xt")}


@dataclass(frozen=True)
class GemmPlan:
    """Which library runs a product's forward and its weight gradient, and the rates measured."""

    forward: str = "default"
    weight_grad: str = "default"
    rates_gflops: dict | None = None  # {"forward": {library: rate}, "weight_grad": {...}}

    def summary(self) -> dict:
        return asdict(self)


DEFAULT = GemmPlan()
_PLANS: dict[tuple, GemmPlan] = {}  # per process: (rows, D, n, threads) -> plan


def frozen_linear(x: torch.Tensor, weight: torch.Tensor, plan: GemmPlan = DEFAULT) -> torch.Tensor:
    """x W^T, (I, D) x (n, D) -> (I, n), differentiable in `weight` only (x is frozen)."""
    if plan.forward == plan.weight_grad == "default":  # measured or not: torch's own path
        return F.linear(x, weight)
    return _FrozenLinear.apply(x, weight, plan)


def plan_for(x: torch.Tensor, n: int, log=None, *, backward: bool = True) -> GemmPlan:
    """The plan for products x (I, D) times (D, n) on this machine: measured at the first call for
    a float32 CPU product of at least MIN_FLOPS (and this thread count), else DEFAULT. Without
    `backward` only the forward product is measured (its weight gradient stays the default)."""
    flops = 2.0 * x.shape[0] * x.shape[1] * n
    if x.device.type != "cpu" or x.dtype != torch.float32 or flops < MIN_FLOPS \
            or not _onednn_available():
        return DEFAULT
    key = (_copy_rows(x.shape[0], n), x.shape[1], n, torch.get_num_threads(), backward)
    if key not in _PLANS:
        _PLANS[key] = choose(x[:ROWS], n, parts=tuple(PARTS) if backward else ("forward",),
                             rows=x.shape[0])
        if log is not None:
            plan = _PLANS[key]
            rates = "; ".join(f"{part} " + ", ".join(f"{lib} {rate:.0f}" for lib, rate in r.items())
                              for part, r in (plan.rates_gflops or {}).items())
            log(f"gemm for ({x.shape[0]} x {x.shape[1]}) x ({x.shape[1]} x {n}): forward "
                f"{plan.forward}, weight gradient {plan.weight_grad} (GFLOP/s {rates})")
    return _PLANS[key]


def choose(x: torch.Tensor, n: int, rounds: int = ROUNDS,
           parts: tuple[str, ...] = tuple(PARTS), rows: int | None = None) -> GemmPlan:
    """Time both libraries on x (m, D) times a random (D, n), forward and weight gradient (or the
    `parts` named); the faster of each, oneDNN only when faster by MARGIN. The calls interleave
    (one of each per round, after a warm-up round) and each keeps its best time: on a shared
    machine the rate drifts by tens of percent within seconds, and a slow spell then slows both
    alike. `rows` is the real product's row count (default m): the copying weight gradient's
    copy of G^T is timed on `_copy_rows(rows, n)` rows and charged per row (`_charged`).
    Leaves torch's global RNG untouched."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(n, x.shape[1], generator=generator)
    calls = {("forward", library): (lambda lib=library: _forward(lib, x, weight))
             for library in PARTS["forward"]}
    if "weight_grad" in parts:
        grad = torch.randn(x.shape[0], n, generator=generator)
        grad_t = grad.t().contiguous()  # "onednn" without its copy: the copy is timed below
        calls.update({("weight_grad", library): (lambda lib=library: _weight_grad(lib, grad, x))
                      for library in PARTS["weight_grad"] if library != "onednn"})
        calls["weight_grad", "onednn"] = lambda: _onednn(grad_t, x.t())
        copy_rows = _copy_rows(rows or x.shape[0], n)
        copied = torch.ones(copy_rows, n)
        calls["copy", copy_rows] = lambda: copied.t().contiguous()
    best = best_seconds(calls, rounds)
    if "weight_grad" in parts:
        best = _charged(best, x.shape[0])
    flops = 2.0 * x.shape[0] * x.shape[1] * n
    rates = {part: {lib: round(flops / max(best[part, lib], 1e-9) / 1e9, 1)
                    for lib in PARTS[part]} for part in parts}
    picks = {part: _faster(r) for part, r in rates.items()}
    return GemmPlan(picks["forward"], picks.get("weight_grad", "default"), rates)


def best_seconds(calls: dict, rounds: int = ROUNDS) -> dict:
    """Each call's best time (seconds) over `rounds` rounds that call each once in turn, after an
    untimed round (kernel choice, primitive cache): interleaved, so a slow spell of a shared
    machine slows every call alike."""
    best = dict.fromkeys(calls, math.inf)
    for round_ in range(rounds + 1):
        for key, call in calls.items():
            tick = time.perf_counter()
            call()
            if round_:
                best[key] = min(best[key], time.perf_counter() - tick)
    return best


def _charged(best: dict, rows: int) -> dict:
    """The copying weight gradient's time on `rows` rows: its GEMM on a ready G^T plus the copy
    timed on ("copy", copy_rows) rows, scaled per row. The other entries as they are."""
    (copy_key,) = [key for key in best if key[0] == "copy"]
    charged = {key: t for key, t in best.items() if key != copy_key}
    charged["weight_grad", "onednn"] += best[copy_key] * rows / copy_key[1]
    return charged


def _copy_rows(rows: int, n: int) -> int:
    """Rows of G (rows, n) whose copy is timed: all of them, up to COPY_BYTES of float32."""
    return min(rows, max(1, COPY_BYTES // (4 * n)))


def _faster(rates: dict[str, float]) -> str:
    """The fastest library, unless it beats torch's default by less than MARGIN."""
    fastest = max(rates, key=rates.get)
    return fastest if rates[fastest] >= MARGIN * rates["default"] else "default"


class _FrozenLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, plan: GemmPlan) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.plan = plan
        return _forward(plan.forward, x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return None, _weight_grad(ctx.plan.weight_grad, grad, x), None


def _forward(library: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x W^T: (I, D), (n, D) -> (I, n)."""
    if library == "onednn":
        return _onednn(x, weight.contiguous())
    return F.linear(x, weight)


def _weight_grad(library: str, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """G^T x: (I, n), (I, D) -> (n, D). oneDNN takes x^T as a strided view (no copy of x); as
    "onednn-xt" it computes (x^T G)^T with G^T a view too (no copy of G either)."""
    if library == "onednn":
        return _onednn(grad.t().contiguous(), x.t())
    if library == "onednn-xt":
        return _onednn(x.t(), grad.t()).t().contiguous()  # (n, D): small
    return grad.t() @ x


@torch.library.custom_op("lirdrec::onednn_mm", mutates_args=())
def _onednn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a b^T on oneDNN: (m, k), (n, k) -> (m, n). An operator of its own: torch.compile's
    inductor would otherwise rewrite the oneDNN call, which it supports only for a constant b."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


@_onednn.register_fake
def _onednn_shape(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.new_empty(a.shape[0], b.shape[0])


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
