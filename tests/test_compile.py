"""train.compile: when the training forward is compiled, that it computes what eager computes
(values and gradients, on either GEMM library), and what happens when compiling cannot work."""

import dataclasses
import json

import pytest
import torch

import model.compiled as compiled
from model.build import build_model
from model.compiled import CompileChoice, TrainingForward, choose_compile, step_loss
from model.config import TrainConfig
from model.gemm import GemmPlan
from model.lirdrec import vector_regulariser
from model.train import train
from tests.support.synthetic import planted_data

CONFIG = TrainConfig(embedding_size=8, knn_k=3, learning_rate=1e-2, epochs=2, patience=2,
                     batch_size=64, device="cpu", topk=(5, 10, 20), feature_dtype="float32")
CPU = torch.device("cpu")


def build(data, config=CONFIG, model="lirdrec"):
    torch.manual_seed(0)
    return build_model(dataclasses.replace(config, model=model), data, CPU, log=lambda _: None)


def test_auto_compiles_only_a_large_enough_lirdrec_on_the_cpu_with_a_compiler(monkeypatch):
    data = planted_data(dims={"image": 16, "text": 8})
    lirdrec = build(data)
    size = lirdrec.compile_size()
    assert size == (data.n_users + data.n_items) * 3 * 8
    small = choose_compile("auto", lirdrec, CPU)
    assert not small.compiled and f"{size:,} floats" in small.reason
    monkeypatch.setattr(compiled, "MIN_ROWS_X_WIDTH", size)
    assert choose_compile("auto", lirdrec, CPU).compiled
    assert not choose_compile("auto", lirdrec, torch.device("cuda")).compiled
    assert not choose_compile("off", lirdrec, CPU).compiled
    assert not choose_compile("auto", build(data, model="lightgcn"), CPU).compiled
    assert not choose_compile("on", build(data, model="lightgcn"), CPU).compiled
    monkeypatch.setattr(compiled, "cpp_compiler", lambda: None)
    missing = choose_compile("auto", lirdrec, CPU)
    assert not missing.compiled and "no C++ compiler" in missing.reason
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler.*g\\+\\+"):
        choose_compile("on", lirdrec, CPU)


def test_config_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile="yes")


@pytest.mark.parametrize("library", ["default", "onednn"])
def test_compiled_forward_and_gradients_match_eager(library):
    """Values and every parameter's gradient of one training step's loss, compiled against eager,
    on torch's default GEMM and on oneDNN (gemm.py's own autograd function inside the graph)."""
    if library == "onednn" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    data = planted_data(dims={"image": 40, "text": 12})
    results = []
    for choice in (CompileChoice("on", False, "eager"), CompileChoice("on", True, "test")):
        model = build(data)
        if library == "onednn":
            model.gemm_plans = [GemmPlan("onednn", "onednn")] * len(model.gemm_plans)
        model.train()
        forward = TrainingForward(model, choice, log=lambda _: None)
        users, items, regulariser = outputs = forward()
        batch = torch.arange(8), torch.arange(8), torch.arange(8, 16)
        loss = step_loss(model, outputs, *batch)  # the regulariser from inside the graph
        torch.testing.assert_close(regulariser, vector_regulariser(users, items, model.reg_weight))
        torch.testing.assert_close(loss, model.batch_loss(users, items, *batch))
        loss.backward()
        results.append((users.detach(), items.detach(), loss.detach(),
                        {name: p.grad.clone() for name, p in model.named_parameters()
                         if p.grad is not None}, model.last_attention.clone()))
        assert forward.choice.compiled == choice.compiled
    (u0, i0, l0, g0, a0), (u1, i1, l1, g1, a1) = results
    torch.testing.assert_close(u1, u0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(i1, i0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a1, a0, rtol=1e-5, atol=1e-6)  # PWC's copied attention
    assert sorted(g1) == sorted(g0) and len(g0) > 10
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_compiled_step_keeps_no_bool_mask_for_its_backward():
    """inductor's CPU code stores and loads a bool tensor ~100x slower than a float one (a bool
    mask of the PWC scorer's (19445, 16) layer on Amazon Baby: 1.45 ms a call against 0.014 ms):
    the compiled step saves none for its backward (its activations run in place, so their
    gradients read the outputs that the next layers keep anyway)."""
    data = planted_data(dims={"image": 40, "text": 12})
    model = build(data)
    model.train()
    forward = TrainingForward(model, CompileChoice("on", True, "test"), log=lambda _: None)
    saved: list[torch.dtype] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t,
                                                  lambda t: t):
        forward()
    assert torch.float32 in saved  # the hooks saw the graph's saved tensors
    assert torch.bool not in saved


def test_a_failed_compile_runs_eagerly_in_auto_and_is_an_error_when_on(monkeypatch):
    data = planted_data(dims={"text": 8})
    model = build(data)

    def broken(function):
        def call(*args):
            raise RuntimeError("inductor: compiler exploded\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    lines = []
    forward = TrainingForward(model, CompileChoice("auto", True, "auto: test"), log=lines.append)
    users, _, _ = forward()
    assert users.shape[0] == data.n_users
    assert not forward.choice.compiled
    assert "compiling failed, eager instead (RuntimeError: inductor: compiler exploded)" \
        in forward.choice.reason and lines == [f"compile: {forward.choice.reason}"]
    forward()  # eager from then on, no second attempt
    assert len(lines) == 1
    strict = TrainingForward(model, CompileChoice("on", True, "on"), log=lines.append)
    with pytest.raises(RuntimeError, match="train.compile = on: compiling the training step "
                                           "failed: RuntimeError: inductor: compiler exploded"):
        strict()


def test_a_compiled_run_trains_like_an_eager_one_and_says_so(tmp_path):
    data = planted_data(dims={"image": 16, "text": 8})
    runs = {}
    for mode in ("off", "on"):
        config = dataclasses.replace(CONFIG, compile=mode)
        result = train(config, data, tmp_path / mode, resume=False, log=lambda _: None)
        history = [json.loads(line) for line in
                   (tmp_path / mode / "history.jsonl").read_text().splitlines()]
        runs[mode] = result.metrics, [line["loss"] for line in history]
    (eager, eager_losses), (fused, fused_losses) = runs["off"], runs["on"]
    assert eager["compile"]["compiled"] is False and eager["compile"]["mode"] == "off"
    assert fused["compile"]["compiled"] is True and fused["compile"]["first_forward_seconds"] > 0
    assert fused_losses == pytest.approx(eager_losses, rel=1e-4)
    assert fused["valid"]["recall@20"] == pytest.approx(eager["valid"]["recall@20"], abs=0.02)


def test_a_second_model_reuses_the_graph_with_its_own_weights_and_frees_the_first():
    """A search or study trains many models in one process: a second model of the same shapes
    runs the compiled graph on its own parameters, and the first model is not kept alive."""
    import gc
    import weakref

    data = planted_data(dims={"text": 8})
    first = build(data)
    TrainingForward(first, CompileChoice("on", True, "test"), log=lambda _: None)()
    gone = weakref.ref(first)
    del first
    second = build(data)
    forward = TrainingForward(second, CompileChoice("on", True, "test"), log=lambda _: None)
    users, _, _ = forward()
    gc.collect()
    assert gone() is None
    torch.testing.assert_close(users, second()[0], rtol=1e-5, atol=1e-6)
    assert forward.choice.compiled


def test_two_processes_compile_and_train_what_one_compiled_process_does(tmp_path):
    """Data-parallel ranks each compile their forward (spawned gloo processes, one cache)."""
    from model import distributed

    data = planted_data()
    config = dataclasses.replace(CONFIG, compile="on", batch_size=127)
    with distributed.local_world(2, "cpu", 120.0) as world:
        two = distributed.train_everywhere(world, config, data, tmp_path / "two",
                                           log=lambda _: None)
    one = train(config, data, tmp_path / "one", log=lambda _: None)
    assert two.metrics["compile"]["compiled"] and one.metrics["compile"]["compiled"]
    assert two.metrics["valid"] == pytest.approx(one.metrics["valid"], abs=1e-6)
    assert two.metrics["test"] == pytest.approx(one.metrics["test"], abs=1e-6)
