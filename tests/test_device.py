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
    engine = linear.LinearEngine(graph, cuda)  # builds no session: no GPU needed
    assert (engine.memory_budget, engine.store_budget) == (20 << 30, 10 << 30)
    assert engine.rows_per_call(16) > 1000  # all K rows of a sweep in one call
    cpu = linear.LinearEngine(graph, ["CPUExecutionProvider"])
    assert (cpu.memory_budget, cpu.store_budget) == (1 << 30, linear._store_budget())
    assert 1 << 30 <= cpu.store_budget <= 5 << 30
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
    feeds = {model.input_name: x, "seed": seed}
    found = node_providers(proto, model.providers, feeds, model.graph.weights)
    assert {where for _, where in found} == {"CPUExecutionProvider"}
    ops = {op for op, _ in found}
    assert {"Conv", "ConvTranspose"} <= ops  # the forward's convolutions and their transposes
    assert sum(found.values()) >= len(proto.graph.node) // 2  # after onnxruntime's fusions
    assert model.engine.fallback_nodes(x) == {}


def test_the_sweep_keeps_gate_sized_arrays_on_the_device(monkeypatch):
    # The CUDA path on the CPU provider: no sparse walk in numpy, every run through IOBinding,
    # and every copy to numpy counted. Only the results come back: a mask per gate and W^p.
    from pathonnx.engine.linear import LinearEngine

    model = pathonnx.load(VGG, device="cpu")
    x = np.random.default_rng(1).standard_normal((2, *model.input_shape)).astype(np.float32)
    reference = pathonnx.pathwise(model, x, width=40)  # the CPU's own path (sparse walk)
    monkeypatch.setattr(LinearEngine, "walks_sparse", property(lambda self: False))

    def no_plain_run(*args, **kwargs):
        raise AssertionError("a session ran without IOBinding: its outputs went to numpy")

    monkeypatch.setattr(ort.InferenceSession, "run", no_plain_run)
    copies = []
    model.engine.dev.on_host = lambda array: copies.append(array.shape)
    for width in (40, None):
        copies.clear()
        pathonnx.pathwise(model, x, width=width)
        small = 2 * model.num_outputs  # logits, biases, counts: N·K values at most
        big = sorted(shape for shape in copies if np.prod(shape) > small)
        results = [(2, *g.shape) for g in model.gates if g.units > model.num_outputs]
        assert big == sorted([*results, (2, *model.input_shape)]), copies
    for run in (lambda: model.linearize(x, [0, 1]),  # W only: the fused graph
                lambda: pathonnx.attribute(model, x, [0, 1], method="saliency")):  # fmt: skip
        copies.clear()
        run()
        assert [s for s in copies if np.prod(s) > small] == [(2, *model.input_shape)], copies
    copies.clear()
    pathonnx.attribute(model, x, [0, 1], method="gradcam")  # the map comes back, not A or ∂y/∂A
    spatial = [g for g in model.gates if len(g.shape) >= 3][-1].shape[1:]
    assert [s for s in copies if np.prod(s) > small] == [(2, *spatial)], copies
    device = pathonnx.pathwise(model, x, width=40)
    for name, mask in reference.masks.items():
        np.testing.assert_array_equal(device.masks[name], mask)
    np.testing.assert_allclose(device.linear.W, reference.linear.W, rtol=1e-4, atol=1e-6)
    assert device.stats["units_kept"].keys() == reference.stats["units_kept"].keys()
    for key in ("units_kept", "dead_share"):
        for name, value in reference.stats[key].items():
            np.testing.assert_array_equal(device.stats[key][name], value)


@pytest.mark.parametrize("seed", range(12))
def test_the_device_choice_is_the_numpy_rule(seed):
    # Algorithm 1's choice as ONNX graphs (graph/choice.py) against the numpy statement
    # (tests/oracle.Importance, methods/selection.select_units), over chunks of rows, with and
    # without rows that do not count; and the scores of a few units alone equal theirs in the
    # whole gate (the sparse walk's choice relies on it).
    from oracle import Importance

    from pathonnx.engine import DeviceChoice
    from pathonnx.methods.selection import select_units

    rng = np.random.default_rng(seed)
    engine = pathonnx.load(VGG, device="cpu").engine
    n, r, shape = 2, int(rng.integers(2, 7)), [(64,), (4, 8, 8), (16, 16, 16)][seed % 3]
    units = int(np.prod(shape))
    h = np.maximum(rng.standard_normal((n, *shape)), 0).astype(np.float32)
    ct = rng.standard_normal((n, r, units)).astype(np.float32)
    ct[:, :, : units // 3] = 0  # units with no contribution score exactly 1/R
    row = rng.integers(0, r, n)
    valid = None if seed % 2 else rng.random((n, r)) < 0.7
    if valid is not None:
        valid[np.arange(n), row] = True
    step = int(rng.integers(1, r + 1))
    choice, score = DeviceChoice(engine, h, row, valid), Importance(h.reshape(n, -1), row, valid)
    for lo in range(0, r, step):
        part = np.ascontiguousarray(ct[:, lo : lo + step])
        choice.add(engine.dev.put(part.reshape(-1, *shape)), lo)
        score.add(part, lo)
    np.testing.assert_allclose(choice.scores(), score.result(), rtol=1e-6)
    width = int(rng.choice([1, 3, units // 2, units]))
    rows = r if valid is None else valid.sum(1)
    alpha = np.float32(1) / np.asarray(rows, np.float32) * np.ones(n, np.float32)
    mask, kept, dead = choice.choose(width, alpha)
    want = select_units(choice.scores(), width, alpha)
    got = engine.dev.host(mask).reshape(n, -1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(kept, want.sum(1))
    np.testing.assert_array_equal(dead, (want & (h.reshape(n, -1) <= 0)).sum(1))
    assert (want == select_units(score.result(), width, alpha)).mean() > 0.99  # ulps apart
    some = np.sort(rng.choice(units, 5, replace=False))
    alone = DeviceChoice(engine, np.ascontiguousarray(h[:1].reshape(1, -1)[:, some]), row[:1],
                         None if valid is None else valid[:1])  # fmt: skip
    alone.add(np.ascontiguousarray(ct[0][:, some]), 0)
    if step >= r:  # one chunk, as the sparse walk's
        np.testing.assert_array_equal(alone.scores()[0], choice.scores()[0, some])


@pytest.mark.parametrize("seed", range(8))
def test_the_network_wide_percentile_on_the_device_is_numpys(seed):
    # critical pathways rank every unit of every gate together: the device's rule (the k-th
    # largest score, engine.network_top) keeps exactly the units above numpy's percentile
    from pathonnx.engine import network_top

    rng = np.random.default_rng(seed)
    model = pathonnx.load(VGG, device="cpu")
    x = rng.standard_normal((2, *model.input_shape)).astype(np.float32)
    fwd = model.forward(x)
    scores = {g.name: np.abs(rng.standard_normal((2, *g.shape))).astype(np.float32)
              for g in model.gates}  # fmt: skip
    name = model.gates[seed % len(model.gates)].name
    scores[name][:, ::3] = 0.5  # ties, some of them at the threshold
    sparsity = [0.0, 0.5, 0.9, 0.99, 0.999, 0.12345, 0.95, 0.9999][seed]
    masks, kept, dead = network_top(model.engine, fwd, model.gates, sparsity, scores=scores)
    every = np.concatenate([s.reshape(2, -1) for s in scores.values()], axis=1)
    threshold = np.percentile(every, 100 * sparsity, axis=1)
    for gate in model.gates:
        want = scores[gate.name] > threshold.reshape(-1, *[1] * len(gate.shape))
        np.testing.assert_array_equal(model.engine.dev.host(masks[gate.name]), want)
        np.testing.assert_array_equal(kept[gate.name], want.reshape(2, -1).sum(1))
        inactive = ~(fwd.activations[gate.name] > 0)
        np.testing.assert_array_equal(dead[gate.name], (want & inactive).reshape(2, -1).sum(1))


def _watched(monkeypatch, seed: int):
    """shapes_vgg on the CPU with every session run bound (a plain run fails the test), a
    batch of 2, and the shapes of every array copied to numpy (Device.host)."""

    def no_plain_run(*args, **kwargs):
        raise AssertionError("a session ran without IOBinding: its outputs went to numpy")

    monkeypatch.setattr(ort.InferenceSession, "run", no_plain_run)
    model = pathonnx.load(VGG, device="cpu")
    x = np.random.default_rng(seed).standard_normal((2, *model.input_shape)).astype(np.float32)
    copies = []
    model.engine.dev.on_host = lambda array: copies.append(array.shape)
    return model, x, copies


@pytest.mark.parametrize("method", ["mct", "intgrad"])
def test_critical_pathways_keep_gate_sized_arrays_on_the_device(method, monkeypatch):
    model, x, copies = _watched(monkeypatch, 2)
    pathway = pathonnx.critical_pathway(model, x, method=method, sparsity=0.8, steps=5)
    # logits of the scaled copies (N·steps, K) come back; nothing the size of a gate but masks
    smallest = 2 * min(g.units for g in model.gates)
    big = sorted(shape for shape in copies if np.prod(shape) >= smallest)
    results = [(2, *g.shape) for g in model.gates]
    assert big == sorted([*results, (2, *model.input_shape)]), copies
    kept = sum(int(m.sum()) for m in pathway.masks.values())
    total = 2 * sum(g.units for g in model.gates)
    assert abs(kept - 0.2 * total) <= 2  # 20% of the units, up to ties at the threshold


def test_arrays_read_back_outlive_their_ortvalues():
    # On the CPU an OrtValue made from an array borrows its memory; what Device.host returns
    # must keep that memory alive after the OrtValue and every other reference are gone
    # (decompose's seeded masks came back as garbage before this held).
    import gc

    from pathonnx.engine import Device

    dev = Device("cpu")
    value = dev.put(np.arange(1 << 16, dtype=np.float32).reshape(4, -1)[:, ::2])  # a new array
    array = dev.host(value)
    del value
    gc.collect()
    junk = [np.full(1 << 14, -1, np.float32) for _ in range(64)]
    np.testing.assert_array_equal(
        array, np.arange(1 << 16, dtype=np.float32).reshape(4, -1)[:, ::2]
    )
    assert len(junk) == 64


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_a_cuda_provider_that_does_not_start_is_an_error_not_a_silent_cpu_run(with_cuda):
    # onnxruntime starts a session on the CPU when its CUDA provider cannot load (missing
    # libraries), with a warning only; pathonnx says so instead of running slow and unbound
    model = pathonnx.load(VGG, device="cuda")  # the provider list asks for CUDA
    x = np.zeros((1, *model.input_shape), np.float32)
    with pytest.raises(pathonnx.InputError, match="could not start its CUDAExecutionProvider"):
        model.forward(x)
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(VGG), "--device", "cuda"])
    assert result.exit_code == 2
    assert "could not start its CUDAExecutionProvider" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("method", "params"), [("greedy", {"rounds": 3}), ("dgr", {"steps": 3})])
def test_pruning_keeps_gate_sized_arrays_on_the_device(method, params, monkeypatch):
    # greedy's scores and removals and DGR's Adam steps run on the device: what comes back is
    # the masks, W^p and DGR's learned gates (its statistics), never a round's activations
    model, x, copies = _watched(monkeypatch, 3)
    pathway = pathonnx.pruned_pathway(model, x, method=method, sparsity=0.8, **params)
    smallest = 2 * min(g.units for g in model.gates)
    big = sorted(shape for shape in copies if np.prod(shape) >= smallest)
    results = [(2, *g.shape) for g in model.gates] + [(2, *model.input_shape)]
    if method == "dgr":
        results += [(2, g.units) for g in model.gates]  # stats["gates"], the learned λ
    assert big == sorted(results), copies
    kept = sum(int(m.sum()) for m in pathway.masks.values())
    assert kept <= 0.2 * 2 * sum(g.units for g in model.gates) + 2
