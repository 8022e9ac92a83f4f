"""feature_dtype: the pure auto/refusal rule on given rates, the start-up probe, and a run's record."""

import dataclasses
import json

import pytest
import torch

from model import dtype as feature_dtype
from model.build import build_model
from model.config import TrainConfig
from model.dtype import MatmulRates, choose_feature_dtype, measure_matmul_rates
from model.train import train
from tests.support.synthetic import planted_data

NATIVE = MatmulRates(device="cpu (AMX)", float32_gflops=90.0, bfloat16_gflops=400.0, seconds=0.01)
EMULATED = MatmulRates(device="cpu (AVX2)", float32_gflops=90.0, bfloat16_gflops=1.0, seconds=0.01)
SLOWER = MatmulRates(device="cpu (AVX512)", float32_gflops=90.0, bfloat16_gflops=60.0, seconds=0.01)
CONFIG = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=2, patience=2,
                     batch_size=128, device="cpu", topk=(5, 10, 20))


@pytest.fixture
def rates(monkeypatch):
    """Pretend the probe measured the given rates (and count how often it ran)."""
    calls = []

    def use(measured: MatmulRates):
        monkeypatch.setattr(feature_dtype, "_MEASURED", {})
        monkeypatch.setattr(feature_dtype, "measure_matmul_rates",
                            lambda device: calls.append(device) or measured)
        return calls
    return use


def test_auto_picks_bfloat16_only_where_it_runs_natively():
    assert choose_feature_dtype("auto", NATIVE).resolved == "bfloat16"
    assert choose_feature_dtype("auto", EMULATED).resolved == "float32"
    # native, if slower than float32 on the probe's small product: bf16 (a threshold near 1x
    # would flip with the machine's load, and so would the run folder's name)
    assert choose_feature_dtype("auto", SLOWER).resolved == "bfloat16"
    assert choose_feature_dtype("auto", NATIVE).torch_dtype == torch.bfloat16
    assert choose_feature_dtype("auto", EMULATED).torch_dtype == torch.float32


def test_float32_needs_no_measurement():
    choice = choose_feature_dtype("float32", None)
    assert (choice.resolved, choice.rates) == ("float32", None)


def test_explicit_bfloat16_is_refused_where_emulated_with_the_reason_and_the_way_out():
    with pytest.raises(ValueError) as refused:
        choose_feature_dtype("bfloat16", EMULATED)
    message = str(refused.value)
    assert "refused" in message and "natively" in message
    assert "90x slower" in message  # 90 GFLOP/s float32 against 1 GFLOP/s bf16
    assert "'auto'" in message and "'float32'" in message and "feature_dtype_force" in message


def test_explicit_bfloat16_runs_where_native_or_forced():
    assert choose_feature_dtype("bfloat16", NATIVE).resolved == "bfloat16"
    assert choose_feature_dtype("bfloat16", SLOWER).resolved == "bfloat16"  # native, 0.67x
    forced = choose_feature_dtype("bfloat16", EMULATED, force=True)
    assert forced.resolved == "bfloat16" and "forced" in forced.reason


def test_unknown_dtype_is_an_error_in_the_rule_and_the_config():
    with pytest.raises(ValueError, match="feature_dtype"):
        choose_feature_dtype("float16", NATIVE)
    with pytest.raises(ValueError, match="train.feature_dtype"):
        TrainConfig(feature_dtype="float16")
    with pytest.raises(ValueError, match="train.feature_dtype_force"):
        TrainConfig(feature_dtype_force="yes")
    assert TrainConfig().feature_dtype == "auto"


def test_probe_is_quick_measures_both_dtypes_and_leaves_rng_and_threads_alone():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    measured = measure_matmul_rates(torch.device("cpu"))
    assert measured.float32_gflops > 0 and measured.bfloat16_gflops > 0
    assert measured.seconds < 2.0  # milliseconds here; generous for a loaded machine
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    assert measured.device.startswith("cpu (")


def test_resolve_measures_once_per_device_and_logs_the_choice(rates):
    calls = rates(EMULATED)
    lines = []
    for _ in range(3):
        choice = feature_dtype.resolve_feature_dtype("auto", torch.device("cpu"), log=lines.append)
    assert choice.resolved == "float32" and len(calls) == 1
    assert lines[0].startswith("feature dtype float32: auto: bf16 is emulated here")


def test_build_refuses_emulated_bfloat16_and_honours_force(rates):
    rates(EMULATED)
    data = planted_data()
    config = dataclasses.replace(CONFIG, feature_dtype="bfloat16")
    with pytest.raises(ValueError, match="refused"):
        build_model(config, data, torch.device("cpu"), log=lambda _: None)
    forced = dataclasses.replace(config, feature_dtype_force=True)
    model = build_model(forced, data, torch.device("cpu"), log=lambda _: None)
    assert model.features_0.dtype == torch.bfloat16


def test_auto_on_native_hardware_builds_bfloat16_features(rates):
    rates(NATIVE)
    model = build_model(CONFIG, planted_data(), torch.device("cpu"), log=lambda _: None)
    assert model.features_0.dtype == torch.bfloat16


def test_run_metrics_record_the_resolved_dtype_and_rates(rates, tmp_path):
    rates(EMULATED)
    train(CONFIG, planted_data(), tmp_path, log=lambda _: None)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["feature_dtype_resolved"] == {"requested": "auto", "resolved": "float32"}
    probe = metrics["seconds"]["feature_dtype_probe"]  # measurements vary: beside the timings
    assert probe["rates"]["bfloat16_gflops"] == 1.0 and probe["rates"]["float32_gflops"] == 90.0
    assert probe["reason"].startswith("auto: bf16 is emulated here")
    assert metrics["config"]["feature_dtype"] == "auto"


def test_id_only_models_record_no_feature_dtype(tmp_path):
    config = dataclasses.replace(CONFIG, model="bpr")
    train(config, planted_data(), tmp_path, log=lambda _: None)
    assert json.loads((tmp_path / "metrics.json").read_text())["feature_dtype_resolved"] is None
