"""The dtype of LIRDRec's wide feature products: "auto" measures whether this device runs bf16 natively.

bfloat16 halves the feature memory and, where the hardware has it (CUDA GPUs with bf16, CPUs with
AVX512-BF16 or AMX), runs the (I, D) x (D, 8d) products faster than float32. Elsewhere torch
emulates it: on a 2-core AVX2 CPU a (7050 x 4096) x (4096 x 512) product takes 34 s in bf16
against 0.33 s in float32, so training would be ~100x slower. CPU flags alone do not settle it
(a build may lack the kernels, a VM may hide or fake flags), so the choice rests on a measured
micro-benchmark of both dtypes on the training device (`measure_matmul_rates`, milliseconds),
and a pure rule (`choose_feature_dtype`) that tests can drive with any rates:

  "float32"   float32, nothing measured;
  "auto"      bfloat16 where it measured as native (at least NATIVE_BF16_MIN_RATIO of float32's
              rate), else float32. Native against emulated is a 25x or wider gap (emulated runs
              at ~1-4% of float32; native at 50-400%), so the choice is the same in every run
              on a machine, loaded or not: a threshold near 1x would flip with the load, and
              with it the run's identity (its folder name). Native bf16 can still be a little
              slower than float32 for small products; on the wide feature products it is
              faster (a 7050 x 4096 x 512 product on a 2-core AMD EPYC with AVX512-BF16:
              0.08 s against 0.18 s);
  "bfloat16"  bfloat16; refused when it measured below NATIVE_BF16_MIN_RATIO of float32's rate
              (emulated), unless `force`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from model.config import FEATURE_DTYPES, TrainConfig

NATIVE_BF16_MIN_RATIO = 0.25  # below this share of float32's rate bf16 is emulated (~0.01)
PROBE_SHAPE = (64, 256, 128)  # (m, k, n): 4.2 MFLOP: ~0.1 ms in float32 on one core, ~5 ms emulated
PROBE_REPEATS = 10  # timed calls per dtype at most (at least 2), within PROBE_BUDGET_S
PROBE_BUDGET_S = 0.002


@dataclass(frozen=True)
class MatmulRates:
    """Measured matmul rates on one device, GFLOP/s, and what measuring them took."""

    device: str
    float32_gflops: float
    bfloat16_gflops: float
    seconds: float

    @property
    def bf16_ratio(self) -> float:
        return self.bfloat16_gflops / self.float32_gflops


@dataclass(frozen=True)
class FeatureDtype:
    """The resolved choice: what was asked, what runs, why, and the rates it rests on."""

    requested: str
    resolved: str  # "float32" | "bfloat16"
    reason: str
    rates: MatmulRates | None

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.resolved == "bfloat16" else torch.float32

    def provenance(self) -> dict:
        """What was asked and what ran (JSON; the same for every run of a config on a device)."""
        return {"requested": self.requested, "resolved": self.resolved}

    def measurement(self) -> dict:
        """Why, with the measured rates (JSON; timings: they vary from run to run)."""
        return {"reason": self.reason, "rates": asdict(self.rates) if self.rates else None}


def choose_feature_dtype(requested: str, rates: MatmulRates | None, *,
                         force: bool = False) -> FeatureDtype:
    """The dtype to run, from the request and the measured rates (pure: no measuring here).

    An explicit "bfloat16" on a device where bf16 measured as emulated raises ValueError saying
    why and what to use instead, unless `force`.
    """
    if requested not in FEATURE_DTYPES:
        raise ValueError(f"train.feature_dtype: expected one of {list(FEATURE_DTYPES)}, "
                         f"got {requested!r}")
    if requested == "float32":
        return FeatureDtype("float32", "float32", "float32 as configured", rates)
    if rates is None:
        raise ValueError(f"feature_dtype {requested!r} needs measured matmul rates")
    measured = (f"bf16 matmul {rates.bfloat16_gflops:.3g} GFLOP/s vs float32 "
                f"{rates.float32_gflops:.3g} GFLOP/s on {rates.device} "
                f"(x{rates.bf16_ratio:.3g})")
    if requested == "auto":
        if rates.bf16_ratio >= NATIVE_BF16_MIN_RATIO:
            return FeatureDtype("auto", "bfloat16", f"auto: bf16 is native here: {measured}",
                                rates)
        return FeatureDtype("auto", "float32", f"auto: bf16 is emulated here: {measured}",
                            rates)
    if rates.bf16_ratio >= NATIVE_BF16_MIN_RATIO:
        return FeatureDtype("bfloat16", "bfloat16", f"bfloat16 as configured: {measured}", rates)
    if force:
        return FeatureDtype("bfloat16", "bfloat16",
                            f"bfloat16 forced (feature_dtype_force) although emulated: {measured}",
                            rates)
    slower = 1.0 / max(rates.bf16_ratio, 1e-9)
    raise ValueError(
        f"train.feature_dtype = 'bfloat16' refused: {rates.device} does not run bf16 natively "
        f"({measured}), so the feature products would run about {slower:.0f}x slower than in "
        f"float32. Native bf16 needs a CUDA GPU with bf16 or a CPU with AVX512-BF16 or AMX. Use "
        f"feature_dtype = 'auto' (float32 here) or 'float32'; set feature_dtype_force = true to "
        f"run bf16 anyway.")


def measure_matmul_rates(device: torch.device, shape: tuple[int, int, int] = PROBE_SHAPE
                         ) -> MatmulRates:
    """Best-of-a-few rate of an (m, k) x (k, n) matmul in float32 and in bfloat16 on `device`.

    On the CPU it runs on one thread: a parallel region on a busy 2-core machine can wait a
    scheduler slice for its second thread, which would swamp a 0.1 ms product; one core's ratio
    of bf16 to float32 tells native from emulated as well. Leaves torch's global RNG untouched
    (the model's initial weights are drawn after this).
    """
    started = time.perf_counter()
    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(m, k, generator=generator).to(device)
    right = torch.randn(k, n, generator=generator).to(device)
    threads = torch.get_num_threads()
    rates = {}
    try:
        if device.type == "cpu":
            torch.set_num_threads(1)
        for dtype in (torch.float32, torch.bfloat16):
            a, b = left.to(dtype), right.to(dtype)
            _matmul_seconds(a, b, device)  # warm-up: kernel choice, library handles
            best, spent, repeats = math.inf, 0.0, 0
            while repeats < PROBE_REPEATS and (repeats < 2 or spent < PROBE_BUDGET_S):
                elapsed = _matmul_seconds(a, b, device)
                best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
            rates[dtype] = 2.0 * m * k * n / max(best, 1e-9) / 1e9
    finally:
        torch.set_num_threads(threads)
    return MatmulRates(device=_device_name(device), float32_gflops=rates[torch.float32],
                       bfloat16_gflops=rates[torch.bfloat16],
                       seconds=time.perf_counter() - started)


_MEASURED: dict[str, MatmulRates] = {}  # per process and device: measured once


def device_rates(device: torch.device) -> MatmulRates:
    """measure_matmul_rates of `device`, measured at its first use in this process."""
    key = str(device)
    if key not in _MEASURED:
        _MEASURED[key] = measure_matmul_rates(device)
    return _MEASURED[key]


def resolve_feature_dtype(requested: str, device: torch.device, *, force: bool = False,
                          log: Callable[[str], None] | None = print) -> FeatureDtype:
    """choose_feature_dtype on this device's rates, measured at its first use; logged."""
    rates = device_rates(device) if requested != "float32" else None
    choice = choose_feature_dtype(requested, rates, force=force)
    if log is not None:
        probe = f" (probe {rates.seconds * 1e3:.0f} ms)" if rates else ""
        log(f"feature dtype {choice.resolved}: {choice.reason}{probe}")
    return choice


def run_feature_dtype(config: TrainConfig, device: torch.device,
                      log: Callable[[str], None] | None = print) -> FeatureDtype:
    """The features' dtype for a run of `config` on `device` (what build_model uses, and what a
    run's metrics record: called again, it reuses the measurement)."""
    return resolve_feature_dtype(config.feature_dtype, device, force=config.feature_dtype_force,
                                 log=log)


def native_bf16_flags() -> dict[str, bool]:
    """What the CPU advertises (logged beside the measurement; the measurement decides)."""
    return {"avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
            "amx": bool(torch.cpu._is_amx_tile_supported())}


def _matmul_seconds(a: torch.Tensor, b: torch.Tensor, device: torch.device) -> float:
    tick = time.perf_counter()
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tick


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.backends.cpu.get_cpu_capability()})"
