"""Devices and precision: CUDA runs with TF32 off unless asked; the CPU is exact either way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import pathonnx
from pathonnx.engine import providers_for
from pathonnx.engine.session import provider_names
from pathonnx.evaluation import metrics as M
from pathonnx_cli.main import main

VGG = Path(__file__).resolve().parent.parent / "sample_models" / "shapes_vgg.onnx"


@pytest.fixture
def with_cuda(monkeypatch):
    """onnxruntime as it looks where onnxruntime-gpu sees a GPU."""
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)


def test_cuda_runs_exact_unless_tf32_is_asked_for(with_cuda):
    exact = providers_for("cuda")
    assert exact == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    assert providers_for("auto") == exact  # auto picks CUDA, exact too
    fast = providers_for("cuda", "tf32")
    assert fast[0] == ("CUDAExecutionProvider", {"use_tf32": "1"})
    assert provider_names(fast) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cpu", "tf32") == ["CPUExecutionProvider"]


def test_precision_is_checked_and_changes_nothing_on_the_cpu():
    with pytest.raises(pathonnx.InputError, match="unknown precision 'fp16'"):
        providers_for("cpu", "fp16")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(pathonnx.InputError, match="no CUDA provider"):
            pathonnx.load(VGG, device="cuda")
    exact = pathonnx.load(VGG, device="cpu")
    fast = pathonnx.load(VGG, device="cpu", precision="tf32")
    assert (exact.device, exact.precision, fast.precision) == ("cpu", "exact", "tf32")
    x = np.random.default_rng(0).standard_normal((2, *exact.input_shape)).astype(np.float32)
    a, b = exact.linearize(x, [0, 3]), fast.linearize(x, [0, 3])
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.b, b.b)
    # the MPRT cascade runs where, and as exactly as, the model it randomizes
    cascade = M.cascade_models(fast, layers=1)
    assert [(m.device, m.precision) for m in cascade] == [("cpu", "tf32")]


def test_reports_say_where_and_how_exactly_they_ran(tmp_path):
    runner = CliRunner()
    check = runner.invoke(main, ["check", str(VGG), "--device", "cpu", "--tf32", "--json"])
    assert check.exit_code == 0, check.output
    (report,) = json.loads(check.stdout)
    assert (report["device"], report["precision"]) == ("cpu", "tf32")
    assert report["completeness"]["passed"]
    explain = runner.invoke(main, ["explain", "--device", "cpu", "--json", "-o", str(tmp_path)])
    assert explain.exit_code == 0, explain.output
    data = json.loads(explain.stdout)
    assert (data["device"], data["precision"]) == ("cpu", "exact")
    assert data["completeness_error"] < 1e-4


def test_budgets_follow_the_gpus_free_memory(monkeypatch):
    from pathonnx.engine import linear

    graph = pathonnx.load(VGG, device="cpu").graph
    cuda = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    monkeypatch.setattr(linear, "device_memory", lambda: 40 << 30)
    monkeypatch.setattr(linear, "host_memory", lambda: 100 << 30)
    engine = linear.LinearEngine(graph, cuda)  # builds no session: no GPU needed
    assert (engine.memory_budget, engine.store_budget) == (20 << 30, 10 << 30)
    assert engine.rows_per_call(16) > 1000  # all K rows of a sweep in one call
    monkeypatch.setattr(linear, "host_memory", lambda: 8 << 30)
    assert linear.LinearEngine(graph, cuda).store_budget == 2 << 30  # the rows live on the host
    cpu = linear.LinearEngine(graph, ["CPUExecutionProvider"])
    assert (cpu.memory_budget, cpu.store_budget) == (1 << 30, 2 << 30)
    monkeypatch.setattr(linear, "device_memory", lambda: None)  # no driver to ask
    assert linear.LinearEngine(graph, cuda).memory_budget == 1 << 30


@pytest.mark.parametrize("arch", ["resnet", "vgg_bn", "leaky_prelu", "densenet", "pad_maxpool"])
def test_one_call_linearize_equals_the_two_step_walk(arch, exported):
    """The fused forward+adjoint graph (the pattern stays in the runtime) gives the same W, b
    as a forward pass to numpy followed by the adjoint, with masks and backward rules too."""
    import zoo

    from pathonnx.ops import GUIDED

    path, _ = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=3, seed=2)
    rng = np.random.default_rng(1)
    masks = {g.name: rng.random((3, *g.shape)) < 0.7 for g in model.gates}
    target = np.array([1, 4, 9])
    fwd = model.forward(x)
    for given in (None, masks):
        one = model.engine.linearize_at(x, target, given)
        two = model.engine.linearize(fwd, target, given)
        np.testing.assert_allclose(one.W, two.W, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(one.b, two.b, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(one.logits, fwd.logits)
    seeds = np.zeros((3, 1, model.num_outputs), np.float32)
    seeds[np.arange(3), 0, target] = 1.0
    guided, _ = model.engine.vjp(fwd, seeds, backward=GUIDED)
    np.testing.assert_allclose(model.engine.linearize_at(x, target, backward=GUIDED).W,
                               guided[:, 0], rtol=1e-6, atol=1e-7)  # fmt: skip


def test_hot_paths_return_no_gate_sized_array(exported, monkeypatch):
    """linearize and the one-pass and integrated-gradient baselines run forward and backward in
    the runtime: no forward pass to numpy, and nothing larger than the input comes back."""
    import zoo

    path, _ = exported("vgg_bn")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("vgg_bn", batch=2, seed=3)
    assert max(g.units for g in model.gates) > x[0].size  # gates larger than the input exist
    engine, returned = model.engine, []
    run_bound = engine._run_bound

    def recording(session, feeds, outputs):
        arrays = run_bound(session, feeds, outputs)
        returned.extend(a[0].size for a in arrays)  # per sample
        return arrays

    def forbidden(*args, **kwargs):
        raise AssertionError("a hot path copied the whole pattern to numpy")

    monkeypatch.setattr(engine, "_run_bound", recording)
    monkeypatch.setattr(engine, "forward", forbidden)
    monkeypatch.setattr(engine, "vjp", forbidden)
    model.linearize(x, [0, 1])
    for method in ("saliency", "input_x_gradient", "guided_backprop", "deconvnet"):
        pathonnx.attribute(model, x, [0, 1], method=method)
    pathonnx.attribute(model, x, [0, 1], method="integrated_gradients", steps=4)
    assert returned and max(returned) <= x[0].size


@pytest.mark.parametrize("arch", ["resnet", "vgg_bn"])
def test_many_rows_in_one_call_equal_the_two_step_walk(arch, exported):
    """vjp_at: K cotangent rows (all classes) with the forward pass in the same calls, chunked
    under the memory budget like vjp."""
    import zoo

    path, _ = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=6)
    rng = np.random.default_rng(2)
    masks = {g.name: rng.random((2, *g.shape)) < 0.8 for g in model.gates}
    seeds = np.broadcast_to(np.eye(10, dtype=np.float32), (2, 10, 10))
    for given in (None, masks):
        want_grad, want_bias = model.engine.vjp(model.forward(x), seeds, given)
        for budget in (1 << 30, 1):  # one fused call, or a forward pass and a call per row
            model.engine.memory_budget = budget
            grad, bias = model.engine.vjp_at(x, seeds, given)
            np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(bias, want_bias, rtol=1e-6, atol=1e-6)
        model.engine.memory_budget = 1 << 30


def test_the_profile_says_where_every_node_ran(exported):
    """node_providers reads onnxruntime's profile of one run; on the CPU every node of the
    fused graph runs on the CPU provider, so nothing fell back."""
    import zoo

    from pathonnx.engine.session import node_providers
    from pathonnx.ops import GRADIENT

    path, _ = exported("resnet")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("resnet", batch=1, seed=1)
    proto, _ = model.engine._fused_session(False, GRADIENT)
    seed = np.zeros((1, model.num_outputs), np.float32)
    found = node_providers(proto, model.providers, {model.input_name: x, "seed": seed})
    assert {where for _, where in found} == {"CPUExecutionProvider"}
    ops = {op for op, _ in found}
    assert {"Conv", "ConvTranspose"} <= ops  # the forward's convolutions and their transposes
    assert sum(found.values()) >= len(proto.graph.node) // 2  # after onnxruntime's fusions
    assert model.engine.fallback_nodes(x) == {}
