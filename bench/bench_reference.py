"""LIRDRec epoch speed side by side: the reference implementation and ours, same inputs, one machine.

Inputs: Amazon Baby's (or Clothing's) exact MMRec split, read in place from
../shared/data/amazon, with the synthetic N(0,1) 4,096-d image + 384-d text features that
bench/bench_train_speed.py builds (seed 0); the reference settings (d 64, 2 UI layers, knn_k 10,
image weight 0.1, reg 1e-3, decay 0.9, lr 1e-4, batch 2048); valid AND test evaluated every
epoch; 4 epochs. Each implementation runs in a child process of this one (its peak RSS comes from
wait4), one after the other; the table prints both per-epoch figures, the ratio of the medians of
epochs 2..N (train + eval) and the CPU (model, torch's capability, load before and after).

The reference (enoche/LIRDRec at ff7239c) is not part of this repository. Put it, and an
environment for it (it needs pandas and torch-dct, which this project does not), in the
git-ignored bench/reference/ once:

    git clone https://github.com/enoche/LIRDRec bench/reference/LIRDRec
    git -C bench/reference/LIRDRec checkout ff7239c
    python3 -m venv bench/reference/.venv
    bench/reference/.venv/bin/pip install torch==2.13.0 numpy scipy pandas pyyaml torch-dct

The reference's files are never edited: the child applies this compatibility patch at run time:
  1. CPU: use_gpu = False;
  2. one run: the reference settings above as one grid point, `--epochs` epochs (not the
     hyper-parameter grid for up to 1000 epochs);
  3. data: data_path is a temporary folder with a link to the .inter file and the synthetic
     features saved as image_feat.npy / text_feat.npy;
  4. modules imported but unused on this path (lmdb, PIL, torchvision, matplotlib: raw images and
     the loss plot) are stubs when not installed;
  5. names that newer libraries dropped are put back as what they were: scipy >= 1.12's
     dok_matrix._update (a plain dict update; the reference builds its adjacency with it) and
     numpy >= 1.24's np.float (the builtin float; its metrics use it);
  6. timers around Trainer._train_epoch and Trainer._valid_epoch (valid and test, as ours).
Usage:

    python bench/bench_reference.py                         # Baby
    python bench/bench_reference.py --dataset clothing
    python bench/bench_reference.py --reference-python /path/to/python --only reference
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT_TAG = "BENCH_RESULT "
REFERENCE_SETTINGS = {  # the reference's one grid point that matches our TrainConfig defaults
    "hyper_parameters": ["seed"], "seed": [999], "n_ui_layers": 2, "mm_image_weight": 0.1,
    "reg_weight": 1e-3, "decay_weight": 0.9, "learning_rate": 1e-4, "weight_decay": 0.0,
    "use_gpu": False, "train_batch_size": 2048,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["baby", "clothing"], default="baby")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--reference-dir", type=Path, default=HERE / "reference" / "LIRDRec")
    parser.add_argument("--reference-python", type=Path,
                        default=HERE / "reference" / ".venv" / "bin" / "python")
    parser.add_argument("--feature-dtype", default="float32", help="ours: float32 | auto | bfloat16")
    parser.add_argument("--only", choices=["both", "reference", "ours"], default="both")
    parser.add_argument("--logs", type=Path, default=ROOT / "artifacts" / "bench" / "reference")
    parser.add_argument("--reference-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_child:  # inside the reference's environment: stdlib and the reference only
        reference_child(args.reference_dir, args.reference_child, args.dataset, args.epochs)
        return

    source = args.reference_dir / "src" / "models" / "lirdrec.py"
    if args.only != "ours" and not source.exists():
        sys.exit(f"{source} is missing: clone the reference first (see this script's docstring)")
    args.logs.mkdir(parents=True, exist_ok=True)
    print(machine_line(), flush=True)
    results, load = {}, {"before": _loadavg()}
    with tempfile.TemporaryDirectory(prefix="lirdrec-bench-") as data_root:
        if args.only != "ours":
            write_reference_inputs(Path(data_root), args.dataset)
            results["reference"] = run_child("reference", [
                str(args.reference_python), str(Path(__file__).resolve()),
                "--reference-child", data_root, "--reference-dir", str(args.reference_dir),
                "--dataset", args.dataset, "--epochs", str(args.epochs)],
                args.logs / f"reference-{args.dataset}.log")
    if args.only != "reference":
        results["ours"] = run_child("ours", [
            sys.executable, str(HERE / "bench_train_speed.py"), "--dataset", args.dataset,
            "--epochs", str(args.epochs), "--feature-dtype", args.feature_dtype],
            args.logs / f"ours-{args.dataset}.log")
    load["after"] = _loadavg()
    print_table(args.dataset, results, load)


def machine_line() -> str:
    import torch

    from model.dtype import native_bf16_flags

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 "unknown CPU")
    flags = ", ".join(f"{name} {'yes' if value else 'no'}"
                      for name, value in native_bf16_flags().items())
    return (f"cpu: {model}, {os.cpu_count()} cores, torch {torch.__version__} capability "
            f"{torch.backends.cpu.get_cpu_capability()} ({flags}), "
            f"{torch.get_num_threads()} torch threads")


def write_reference_inputs(data_root: Path, dataset: str) -> None:
    """data_root/<dataset>/: a link to the shared .inter file and our synthetic features."""
    import numpy as np

    from bench.bench_train_speed import DIMS
    from bench.lirdrec_data import AMAZON, read_inter
    from tests.support.synthetic import gaussian_features

    inter = AMAZON / dataset / f"{dataset}.inter"
    _, n_items, _ = read_inter(inter)
    folder = data_root / dataset
    folder.mkdir()
    (folder / inter.name).symlink_to(inter)
    features = gaussian_features(n_items, DIMS, seed=0)  # what bench_train_speed trains on
    np.save(folder / "image_feat.npy", features["image"])
    np.save(folder / "text_feat.npy", features["text"])


def run_child(name: str, command: list[str], log_path: Path) -> dict:
    """Run one implementation; its output goes to log_path, its result line and peak RSS back."""
    print(f"{name}: {' '.join(command)}  (log: {log_path})", flush=True)
    started = time.perf_counter()
    with log_path.open("w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                 cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    lines = log_path.read_text().splitlines()
    if child.returncode:
        sys.exit(f"{name} failed ({child.returncode}):\n" + "\n".join(lines[-30:]))
    result = next(json.loads(line.removeprefix(RESULT_TAG)) for line in reversed(lines)
                  if line.startswith((RESULT_TAG, "{")))
    result["peak_rss_gb"] = usage.ru_maxrss / 2**20  # KiB on Linux: this child's own peak
    result["wall_seconds"] = time.perf_counter() - started
    return result


def print_table(dataset: str, results: dict[str, dict], load: dict[str, str]) -> None:
    names = list(results)
    epochs = max(len(r["train_seconds"]) for r in results.values())
    rows = [("", *names)]
    for epoch in range(epochs):
        rows.append((f"epoch {epoch + 1} train / eval (s)", *(
            f"{r['train_seconds'][epoch]:.1f} / {r['eval_seconds_valid_and_test'][epoch]:.1f}"
            for r in results.values())))
    medians = {name: _median_later(r) for name, r in results.items()}
    rows.append((f"median epochs 2-{epochs} train (s)", *(f"{m[0]:.1f}" for m in medians.values())))
    rows.append((f"median epochs 2-{epochs} eval (s)", *(f"{m[1]:.1f}" for m in medians.values())))
    rows.append((f"median epochs 2-{epochs} total (s)", *(f"{m[2]:.1f}" for m in medians.values())))
    rows.append(("build: data, graphs, model (s)",
                 *(f"{r['build_seconds']:.1f}" for r in results.values())))
    rows.append(("peak RSS (GB)", *(f"{r['peak_rss_gb']:.2f}" for r in results.values())))
    width = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"\n{dataset}, {epochs} epochs, synthetic 4,096-d + 384-d features (seed 0)")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width, strict=True)))
    if len(medians) == 2:
        ratio = medians["reference"][2] / medians["ours"][2]
        print(f"ratio reference / ours (median total per epoch): {ratio:.2f}x")
    ours = results.get("ours", {})
    if "bound_seconds" in ours:
        rates = ours["gemm_rates_before"], ours["gemm_rates_after"]
        print(f"ours against its arithmetic bound: float32 GEMM {rates[0]['float32_gflops']:.1f} / "
              f"{rates[1]['float32_gflops']:.1f} GFLOP/s (before / after), bf16 "
              f"{rates[0]['bfloat16_gflops']:.2f} GFLOP/s; epoch matmul FLOPs / rate "
              f"{ours['bound_seconds']:.1f}s; median epoch {ours['median_over_bound']:.2f}x that "
              f"({ours['median_over_bound_without_small_products']:.2f}x without the small "
              f"products); auto picks {ours['auto_feature_dtype']['resolved']}")
    print(f"load average before: {load['before']}; after: {load['after']}")
    print(json.dumps({"dataset": dataset, "results": results, "load": load}))


def _median_later(result: dict) -> tuple[float, float, float]:
    train, evals = result["train_seconds"], result["eval_seconds_valid_and_test"]
    later = slice(1, None) if len(train) > 1 else slice(None)
    totals = [t + e for t, e in zip(train, evals, strict=True)]
    return (statistics.median(train[later]), statistics.median(evals[later]),
            statistics.median(totals[later]))


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---- the child that runs the reference (its own interpreter: stdlib + the reference) ----

def reference_child(reference_dir: Path, data_root: Path, dataset: str, epochs: int) -> None:
    """Run the reference's quick_start with the compatibility patch of the module docstring."""
    src = (reference_dir / "src").resolve()
    os.chdir(src)  # the reference reads configs/ relative to the working directory
    sys.path.insert(0, str(src))
    _stub_unused_modules()
    import numpy
    import scipy.sparse
    import torch  # noqa: F401  (imported before the reference, as its main.py does)

    if not hasattr(scipy.sparse.dok_matrix, "_update"):
        scipy.sparse.dok_matrix._update = lambda self, entries: self._dict.update(entries)
    if "float" not in numpy.__dict__:
        numpy.float = float
    from common import trainer
    from utils.quick_start import quick_start

    timings: list[dict[str, float]] = []
    train_epoch, valid_epoch = trainer.Trainer._train_epoch, trainer.Trainer._valid_epoch
    started = time.perf_counter()

    def timed_train(self, *a, **k):
        if not timings:
            timings.append({"build": time.perf_counter() - started})
        tick = time.perf_counter()
        out = train_epoch(self, *a, **k)
        timings.append({"train": time.perf_counter() - tick, "eval": 0.0})
        return out

    def timed_valid(self, *a, **k):
        tick = time.perf_counter()
        out = valid_epoch(self, *a, **k)
        timings[-1]["eval"] += time.perf_counter() - tick
        return out

    trainer.Trainer._train_epoch, trainer.Trainer._valid_epoch = timed_train, timed_valid
    settings = {**REFERENCE_SETTINGS, "epochs": epochs, "data_path": f"{data_root}/"}
    quick_start(model="LIRDRec", dataset=dataset, config_dict=settings, save_model=False)
    epochs_run = timings[1:]
    print(RESULT_TAG + json.dumps({
        "implementation": "reference", "build_seconds": round(timings[0]["build"], 2),
        "train_seconds": [round(t["train"], 2) for t in epochs_run],
        "eval_seconds_valid_and_test": [round(t["eval"], 2) for t in epochs_run],
        "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability()}),
        flush=True)


def _stub_unused_modules() -> None:
    """Stand-ins for modules that the reference imports but does not use on this path."""
    import importlib.util
    import types

    def unused(*_args, **_kwargs):
        raise RuntimeError("stub of a module the benchmark does not install")

    class Stub(types.ModuleType):
        def __getattr__(self, name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return unused

    for top, children in (("lmdb", ()), ("PIL", ("Image",)), ("matplotlib", ("pyplot",)),
                           ("torchvision", ("transforms", "transforms.functional"))):
        if importlib.util.find_spec(top) is not None:
            continue
        sys.modules[top] = Stub(top)
        for child in children:
            parent, _, leaf = f"{top}.{child}".rpartition(".")
            sys.modules[f"{top}.{child}"] = Stub(f"{top}.{child}")
            setattr(sys.modules[parent], leaf, sys.modules[f"{top}.{child}"])
    image = sys.modules.get("PIL.Image")
    if isinstance(image, Stub):  # data_utils reads these constants at import
        for constant, value in (("NEAREST", 0), ("LANCZOS", 1), ("BILINEAR", 2),
                                ("BICUBIC", 3), ("BOX", 4), ("HAMMING", 5)):
            setattr(image, constant, value)


if __name__ == "__main__":
    if "--reference-child" not in sys.argv:
        sys.path.insert(0, str(ROOT))
    main()
