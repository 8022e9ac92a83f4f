"""The wide products' GEMM library (model/gemm.py): both libraries compute x W^T and G^T x, the
choice is measured only where it matters, and a run keeps the libraries it started on."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import gemm
from model.config import TrainConfig
from model.data import hold_out_items
from model.gemm import DEFAULT, GemmPlan, choose, frozen_linear, plan_for
from model.run import read_torch
from model.train import train
from tests.support.synthetic import planted_data

needs_onednn = pytest.mark.skipif(not gemm._onednn_available(), reason="torch without oneDNN")


@needs_onednn
@pytest.mark.parametrize("forward", gemm.LIBRARIES)
@pytest.mark.parametrize("weight_grad", gemm.PARTS["weight_grad"])
def test_every_plan_gives_f_linear_output_and_weight_gradient(forward, weight_grad):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(37, 53, generator=generator)
    weight = torch.randn(24, 53, generator=generator, requires_grad=True)
    upstream = torch.randn(37, 24, generator=generator)

    expected = F.linear(x, weight)
    (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), weight)
    out = frozen_linear(x, weight, GemmPlan(forward, weight_grad))
    (grad,) = torch.autograd.grad((out * upstream).sum(), weight)

    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)
    # the weight gradient is G^T x, exactly what it must be (not, say, x^T G transposed wrong)
    torch.testing.assert_close(grad, upstream.t() @ x, rtol=1e-5, atol=1e-5)


def test_small_bf16_and_gpu_products_are_not_measured(monkeypatch):
    monkeypatch.setattr(gemm, "choose", lambda *a: pytest.fail("measured a product it must not"))
    assert plan_for(torch.zeros(100, 64), 512) is DEFAULT  # 6.6 MFLOP < MIN_FLOPS
    assert plan_for(torch.zeros(8000, 4096, dtype=torch.bfloat16), 512) is DEFAULT


@needs_onednn
def test_choose_measures_both_libraries_and_picks_the_faster_by_the_margin(monkeypatch):
    plan = choose(torch.randn(256, 512), 64, rounds=1)
    assert set(plan.rates_gflops) == {"forward", "weight_grad"}
    for part, rates in plan.rates_gflops.items():
        assert set(rates) == set(gemm.PARTS[part]) and all(rate > 0 for rate in rates.values())
        fastest = max(rates, key=rates.get)
        faster = rates[fastest] >= gemm.MARGIN * rates["default"]
        assert getattr(plan, part) == (fastest if faster else "default")
    assert GemmPlan(**plan.summary()) == plan  # what checkpoints and metrics.json keep


def test_the_copying_weight_gradient_is_charged_its_copy_per_row_of_the_real_product():
    best = {("forward", "default"): 1.0, ("weight_grad", "default"): 2.0,
            ("weight_grad", "onednn"): 0.5, ("copy", 1000): 0.3}
    # 2,048 measured rows: the GEMM's 0.5 s plus 2,048 rows of copy at 0.3 ms a row
    assert gemm._charged(best, 2048) == {("forward", "default"): 1.0,
                                         ("weight_grad", "default"): 2.0,
                                         ("weight_grad", "onednn"): pytest.approx(0.5 + 0.6144)}


@needs_onednn
def test_the_copy_is_timed_on_the_real_products_rows_up_to_the_byte_cap(monkeypatch):
    charged = []
    real = gemm._charged
    monkeypatch.setattr(gemm, "_charged", lambda best, rows: charged.append(
        ([key for key in best if key[0] == "copy"], rows)) or real(best, rows))
    x = torch.randn(256, 512)
    choose(x, 64, rounds=1)
    choose(x, 64, rounds=1, rows=10**6)  # G at 10^6 x 64 is 256 MB: timed on 128 MB of it
    assert charged == [([("copy", 256)], 256), ([("copy", gemm.COPY_BYTES // (4 * 64))], 256)]


@needs_onednn
def test_a_forward_only_plan_measures_no_weight_gradient():
    plan = choose(torch.randn(256, 512), 64, rounds=1, parts=("forward",))
    assert set(plan.rates_gflops) == {"forward"} and plan.weight_grad == "default"


@needs_onednn
def test_evaluation_scores_on_the_measured_library_with_the_same_metrics(monkeypatch):
    # the scoring tiles on oneDNN (forced) rank as torch's default does
    from model.metrics import evaluate

    rng = np.random.default_rng(0)
    users, items = torch.randn(50, 16), torch.randn(300, 16)
    pairs = np.unique(np.stack([rng.integers(50, size=2000), rng.integers(300, size=2000)], 1),
                      axis=0)
    train_pairs, held_out = pairs[::2], pairs[1::2]
    expected, _ = evaluate(users, items, held_out, train_pairs, (5, 20), item_block=64)
    monkeypatch.setattr(gemm, "MIN_FLOPS", 0.0)
    monkeypatch.setattr(gemm, "_PLANS", {})
    calls = []

    def forced(x, n, **kwargs):
        calls.append(kwargs)
        return GemmPlan("onednn", "default", {"forward": {}})

    monkeypatch.setattr(gemm, "choose", forced)
    assert evaluate(users, items, held_out, train_pairs, (5, 20), item_block=64)[0] \
        == pytest.approx(expected, rel=1e-12)
    assert [call["parts"] for call in calls] == [("forward",)]  # measured once, forward only


@needs_onednn
def test_a_run_records_its_plans_and_a_resumed_run_keeps_them(tmp_path, monkeypatch):
    data = hold_out_items(planted_data(n_users=40, seed=2), 0.1, seed=0)
    config = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=2, patience=2,
                         batch_size=64, device="cpu", feature_dtype="float32", topk=(10, 20))
    forced = GemmPlan("onednn", "onednn", {"forward": {}, "weight_grad": {}})
    monkeypatch.setattr(gemm, "MIN_FLOPS", 0.0)
    monkeypatch.setattr(gemm, "choose", lambda x, n, **_: forced)
    monkeypatch.setattr(gemm, "_PLANS", {})
    run_dir = tmp_path / "run"

    class Stop(Exception):
        pass

    def stop_after_first(epoch, _valid):
        raise Stop

    with pytest.raises(Stop):  # ends after epoch 1, resumable
        train(config, data, run_dir, log=lambda _: None, on_epoch=stop_after_first)
    saved = read_torch(run_dir / "checkpoint.pt")["gemm"]
    assert saved == [forced.summary()] * len(data.modalities)

    # resumed where this machine now measures otherwise: it keeps the libraries it started on
    monkeypatch.setattr(gemm, "choose", lambda x, n, **_: GemmPlan())
    monkeypatch.setattr(gemm, "_PLANS", {})
    result = train(config, data, run_dir, log=lambda _: None)
    assert result.epochs_run == 2
    assert result.metrics["gemm"] == [forced.summary()] * len(data.modalities)


def test_checkpoints_of_models_without_wide_products_hold_no_plans(tmp_path):
    data = hold_out_items(planted_data(n_users=30, seed=1), 0.1, seed=0)
    config = TrainConfig(model="bpr", embedding_size=8, epochs=1, batch_size=64, device="cpu",
                         topk=(10, 20))
    train(config, data, Path(tmp_path), log=lambda _: None)
    assert read_torch(Path(tmp_path) / "checkpoint.pt")["gemm"] == []
