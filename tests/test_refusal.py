"""Refusals that name what cannot be explained, decided from the graph alone, and the ops that
turned out to be explainable after all (HardSigmoid, dynamo's constant-index Gather)."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime
import pytest
import torch.nn.functional as F
import zoo
from click.testing import CliRunner
from helpers import make_model, rand
from oracle import TorchOracle
from torch import nn

import pathonnx
from pathonnx.graph import canonicalize, load_model
from pathonnx.graph.screen import screen
from pathonnx.graph.weights import Weights
from pathonnx_cli.main import main

HEADER = '<ir_version: 8, opset_import: ["" : 13]>'
LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
EXPORTS = [("legacy", 13), ("legacy", 17), ("dynamo", 18)]


def export(module: nn.Module, path: Path, exporter: str = "legacy", opset: int = 13,
           shape=(3, 8, 8)) -> Path:  # fmt: skip
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    with zoo.quiet_export():
        zoo.export_module(module.eval(), x, path, exporter, opset)
    return path


def refusal(source) -> pathonnx.UnsupportedModelError:
    with pytest.raises(pathonnx.UnsupportedModelError) as info:
        pathonnx.load(source, device="cpu")
    assert "\n" not in str(info.value)
    return info.value


def kinds(err: pathonnx.UnsupportedModelError) -> dict[str, int]:
    return {group["kind"]: group["count"] for group in err.groups}


# --- activations named in the refusal --------------------------------------------------------


class HandHardSwish(nn.Module):
    """MobileNetV3's HardSwish as its reference code writes it: x * relu6(x + 3) / 6."""

    def forward(self, x):
        return x * F.relu6(x + 3.0) / 6.0


class HardSigmoidProduct(nn.Module):
    def forward(self, x):
        return x * F.hardsigmoid(x)


def stack(make, count: int = 2) -> nn.Module:
    """Conv, activation, ``count`` times, then a linear head."""
    layers: list[nn.Module] = []
    for i in range(count):
        layers += [nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1), make()]
    return nn.Sequential(*layers, nn.Flatten(1), nn.Linear(4 * 64, 5))


ACTIVATIONS = {
    "SiLU": nn.SiLU,
    "GELU": nn.GELU,
    "GELU tanh": lambda: nn.GELU(approximate="tanh"),
    "HardSwish": nn.Hardswish,
    "HardSwish by hand": HandHardSwish,
    "HardSwish from HardSigmoid": HardSigmoidProduct,
    "Mish": nn.Mish,
}


@pytest.mark.parametrize("exporter, opset", EXPORTS, ids=lambda v: str(v))
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_patterns_are_named(name, exporter, opset, tmp_path):
    path = export(stack(ACTIVATIONS[name], 2), tmp_path / "m.onnx", exporter, opset)
    err = refusal(path)
    expected = name.split()[0]
    assert kinds(err) == {expected: 2}, err
    assert f"{expected} (" in str(err) and "×2" in str(err)
    assert str(err).count("kind of operation cannot be explained") == 1
    # every refused node says which activation it belongs to
    assert all(expected in reason for _, _, reason in err.nodes), err.nodes
    if expected == "HardSwish":
        assert "quadratic" in str(err)
    else:
        assert "smooth, not piecewise linear" in str(err)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)
        self.act, self.gate = nn.SiLU(), nn.Sigmoid()

    def forward(self, x):
        scale = self.gate(self.expand(self.act(self.reduce(F.adaptive_avg_pool2d(x, 1)))))
        return x * scale


class MBConv(nn.Module):
    """EfficientNet's block: expansion (SiLU), depthwise (SiLU), squeeze-excite, projection."""

    def __init__(self, cin: int, cout: int, expand: int):
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*zoo.conv_bn(cin, mid, 1), nn.SiLU()]
        layers += [*zoo.conv_bn(mid, mid, 3, groups=mid), nn.SiLU(), SqueezeExcite(mid, 2)]
        layers += zoo.conv_bn(mid, cout, 1)
        self.block, self.residual = nn.Sequential(*layers), cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


def efficientnet_like() -> nn.Module:
    return zoo.seeded(lambda: nn.Sequential(
        *zoo.conv_bn(3, 8, 3, 2), nn.SiLU(), MBConv(8, 8, 1), MBConv(8, 12, 4),
        MBConv(12, 12, 4), *zoo.conv_bn(12, 16, 1), nn.SiLU(), zoo.Head(16),
    ))()  # fmt: skip


@pytest.mark.parametrize("exporter, opset", [("legacy", 13), ("dynamo", 18)])
def test_efficientnet_names_silu_and_its_sigmoid_gates(exporter, opset, tmp_path):
    module = efficientnet_like()
    count = Counter(type(m).__name__ for m in module.modules())
    assert count["SiLU"] == 10 and count["Sigmoid"] == 3
    err = refusal(export(module, tmp_path / "m.onnx", exporter, opset, (3, 32, 32)))
    assert kinds(err) == {"SiLU": 10, "sigmoid gate": 3}
    assert [g["kind"] for g in err.groups] == ["SiLU", "sigmoid gate"]  # most frequent first
    message = str(err)
    assert "2 kinds of operation cannot be explained: SiLU (x·sigmoid(x)) ×10" in message
    assert "sigmoid gate (x·sigmoid(g), as in squeeze-and-excitation) ×3" in message
    assert len(err.nodes) == 26 and Counter(op for _, op, _ in err.nodes) == {
        "Sigmoid": 13, "Mul": 13}  # fmt: skip
    silu = next(g for g in err.groups if g["kind"] == "SiLU")
    assert len(silu["nodes"]) == 20 and silu["example"] in silu["nodes"]


def test_smooth_ops_inside_say_so():
    model = make_model(
        f"""{HEADER}
        g (float[N, 4] x, float[4, 4] w, float[4, 3] v) => (float[N, 3] y) {{
            a = Sigmoid(x)
            b = MatMul(a, w)
            c = Tanh(b)
            d = Softmax(c)
            y = MatMul(d, v)
        }}""",
        w=rand(4, 4), v=rand(4, 3, seed=1),
    )  # fmt: skip
    err = refusal(model)
    assert kinds(err) == {"Sigmoid": 1, "Tanh": 1, "Softmax": 1}
    reasons = {op: reason for _, op, reason in err.nodes}
    assert reasons["Sigmoid"] == reasons["Tanh"] == "smooth, not piecewise linear"
    assert "smooth" in reasons["Softmax"] and "trailing" in reasons["Softmax"]
    assert "3 kinds of operation cannot be explained" in str(err)


def test_unknown_op_is_not_called_a_nonlinearity():
    model = make_model(
        f"""{HEADER}
        g (float[N, 4] x) => (float[N, 4] y) {{
            y = Hardmax(x)
        }}"""
    )
    (node,) = refusal(model).nodes
    assert node[2] == "Hardmax is not in pathonnx's vocabulary (it has no rule)"


# --- early refusal: the graph alone --------------------------------------------------------------


@pytest.mark.parametrize("name", ["bvlc_alexnet", "zfnet512", "inception_v1"])
def test_lrn_models_are_refused_before_anything_runs(name, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the refusal ran something")

    # no onnxruntime session (constant folding), no weights registered, no hash
    monkeypatch.setattr(onnxruntime, "InferenceSession", boom)
    monkeypatch.setattr(Weights, "strip", boom)
    monkeypatch.setattr(hashlib, "sha256", boom)
    err = refusal(LIGHT / f"light_{name}.onnx")
    assert kinds(err) == {"LRN": 2} and err.ops["LRN"] == 2
    assert "local response normalization" in str(err)


def refused_models(tmp: Path) -> dict[str, object]:
    models: dict[str, object] = {
        name: LIGHT / f"light_{name}.onnx" for name in ("bvlc_alexnet", "zfnet512", "inception_v1")
    }
    models["efficientnet"] = export(efficientnet_like(), tmp / "eff.onnx", shape=(3, 32, 32))
    models["efficientnet_dynamo"] = export(efficientnet_like(), tmp / "effd.onnx", "dynamo", 18,
                                           (3, 32, 32))  # fmt: skip
    for name in ("GELU tanh", "HardSwish by hand"):
        models[name] = export(stack(ACTIVATIONS[name]), tmp / f"{name}.onnx")
    models["convnext_dynamo"] = export(convnext_like(), tmp / "cnx.onnx", "dynamo", 18,
                                       (3, 32, 32))  # fmt: skip
    return models


def test_early_refusal_lists_what_the_full_check_lists(tmp_path):
    """The screen, before folding, finds the same nodes and kinds as the check on the
    canonical graph, with the same message."""
    for name, source in refused_models(tmp_path).items():
        with pytest.raises(pathonnx.UnsupportedModelError) as early:
            load_model(source)
        with pytest.raises(pathonnx.UnsupportedModelError) as full:
            canonicalize(load_model(source, early=False), str(source))
        assert early.value.nodes == full.value.nodes, name
        assert early.value.groups == full.value.groups, name
        assert str(early.value) == str(full.value), name


def test_what_folding_or_a_pass_removes_is_not_refused_early():
    """A Sigmoid that computes a weight, one whose value only feeds a Shape, a trailing
    Softmax, and Max(x, constant) built by a Constant node all pass the screen, and the model
    is explained."""
    w = rand(4, 3)
    model = make_model(
        f"""{HEADER}
        g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {{
            sw = Sigmoid(w)
            h = MatMul(x, sw)
            dead = Sigmoid(h)
            shape = Shape(dead)
            zero = Constant <value = float {{0.0}}> ()
            r = Max(h, zero)
            flat = Reshape(r, shape)
            y = Softmax(flat)
        }}""",
        w=w,
    )  # fmt: skip
    loaded = pathonnx.load(model, device="cpu")
    assert [g.kind for g in loaded.gates] == ["relu"] and loaded.softmax_stripped
    x = rand(2, 4, seed=3)
    expected = np.maximum(x @ (1 / (1 + np.exp(-w))), 0)
    np.testing.assert_allclose(loaded.forward(x).logits, expected, rtol=1e-5, atol=1e-6)


def test_data_products_are_certain_before_folding():
    model = make_model(
        f"""{HEADER}
        g (float[N, 4] x, float[4, 4] w, float[4, 4] v) => (float[N, 4] y) {{
            h = MatMul(x, w)
            r = Relu(h)
            p = MatMul(r, v)
            q = Mul(r, p)
            y = Div(r, q)
        }}""",
        w=rand(4, 4), v=rand(4, 4, seed=1),
    )  # fmt: skip
    found = {node.op: reason for node, reason in screen(gs.import_onnx(model))}
    assert found == {
        "Mul": "Mul of two data tensors (not linear)",
        "Div": "Div by a data tensor (not linear); only division by a constant is",
    }
    err = refusal(model)
    assert kinds(err) == {"Mul": 1, "Div": 1}
    with pytest.raises(pathonnx.UnsupportedModelError) as full:
        canonicalize(load_model(model, early=False), "<ModelProto>")
    assert full.value.nodes == err.nodes


def test_self_gated_relu_is_not_called_hardswish():
    model = make_model(
        f"""{HEADER}
        g (float[N, 4] x, float[4, 4] w) => (float[N, 4] y) {{
            h = MatMul(x, w)
            r = Relu(h)
            y = Mul(h, r)
        }}""",
        w=rand(4, 4),
    )  # fmt: skip
    assert kinds(refusal(model)) == {"self-gated product": 1}


# --- the CLI -------------------------------------------------------------------------------------


def test_check_prints_the_kinds_then_every_node(tmp_path):
    path = export(efficientnet_like(), tmp_path / "eff.onnx", shape=(3, 32, 32))
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].endswith("NOT explainable: 26 unsupported node(s) of 2 kind(s)")
    assert lines[1].startswith("  SiLU (x·sigmoid(x)) ×10: smooth, not piecewise linear (e.g.")
    assert lines[2].startswith("  sigmoid gate (x·sigmoid(g), as in squeeze-and-excitation) ×3")
    assert lines[3] == "  nodes:" and sum(line.startswith("    ") for line in lines) == 26
    assert any(line.startswith("  ops (original):") for line in lines)
    (report,) = json.loads(CliRunner().invoke(main, ["check", "--json", str(path)]).stdout)
    assert [k["count"] for k in report["unsupported_kinds"]] == [10, 3]
    assert report["ops"]["Sigmoid"] == 13 and len(report["unsupported"]) == 26
    one_line = CliRunner().invoke(main, ["inspect", str(path)])
    assert one_line.exit_code == 1 and one_line.stderr.count("\n") == 1
    assert "SiLU (x·sigmoid(x)) ×10" in one_line.stderr


# --- HardSigmoid: a gate ------------------------------------------------------------------------


@pytest.mark.parametrize("exporter, opset", EXPORTS, ids=lambda v: str(v))
def test_hardsigmoid_is_a_gate_with_torchs_gradient(exporter, opset, exported):
    path, module = exported("hardsigmoid", exporter, opset)
    result = pathonnx.check_model(path, device="cpu")
    assert result.exit_code == 0, result.error
    assert result.gate_kinds == {"hard_sigmoid": 2, "relu": 1}
    assert result.completeness["relative_error"] < 1e-5
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("hardsigmoid", batch=2, seed=5)
    fwd = model.forward(x)
    for gate in model.gates[::2]:  # both saturations and the slope between are exercised
        h = fwd.activations[gate.name]
        assert (h == 0).any() and (h == 1).any() and ((h > 0) & (h < 1)).any()
        assert gate.params == pytest.approx({"alpha": 1 / 6, "beta": 0.5})
    linear = model.linearize(x, [1, 7])
    oracle = TorchOracle(module)
    grad = oracle.gradient(x, [1, 7])
    assert np.abs(linear.W - grad).max() <= 1e-5 * np.abs(grad).max()
    logits = oracle.logits(x)[np.arange(2), [1, 7]]
    assert np.abs(linear.output(x) - logits).max() <= 1e-5 * np.abs(oracle.logits(x)).max()


def test_hardsigmoid_units_can_be_removed(exported):
    path, module = exported("hardsigmoid")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("hardsigmoid", batch=2, seed=6)
    first = model.gates[0]
    mask = np.random.default_rng(0).random((2, *first.shape)) < 0.5
    linear = model.linearize(x, [1, 7], {first.name: mask})
    oracle = TorchOracle(module)
    masks = [mask, None, None]
    grad = oracle.gradient(x, [1, 7], masks)
    assert np.abs(linear.W - grad).max() <= 1e-5 * np.abs(grad).max()
    # a removed unit passes no offset either: b^p is the masked frozen map at 0
    at_zero = oracle.frozen(x, np.zeros_like(x), masks)[np.arange(2), [1, 7]]
    assert np.abs(linear.b - at_zero).max() <= 1e-5 * np.abs(oracle.logits(x)).max()
    everything = model.linearize(x, [1, 7])
    assert np.abs(linear.b - everything.b).max() > 1e-3  # the mask did remove offsets


# --- Gather at constant indices -----------------------------------------------------------------


class ChannelsLastBlock(nn.Module):
    """A Linear over channels (as ConvNeXt's blocks): its output is channels-last in memory,
    so dynamo writes the average pool after it with an ``as_strided`` Gather."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv, self.fc, self.relu = nn.Conv2d(channels, channels, 3, padding=1), \
            nn.Linear(channels, channels), nn.ReLU()  # fmt: skip

    def forward(self, x):
        y = self.relu(self.fc(self.conv(x).permute(0, 2, 3, 1)))
        return y.permute(0, 3, 1, 2)


def strided() -> nn.Module:
    return zoo.seeded(
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), ChannelsLastBlock(8), zoo.Head(8)
        )
    )()


def test_dynamo_strided_view_is_explained(tmp_path):
    module = strided()
    path = export(module, tmp_path / "strided.onnx", "dynamo", 18)
    assert "Gather" in {n.op_type for n in onnx.load(path).graph.node}
    model = pathonnx.load(path, device="cpu")
    report = next(r for r in model.reports if r.name == "per_sample_gather")
    assert report.changed and "Reshape" in report.changed[0]
    assert "Gather" not in model.op_histogram()
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x).logits, zoo.torch_logits64(module, x),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    linear = model.linearize(x, [0, 4, 9])
    grad = TorchOracle(module).gradient(x, [0, 4, 9])
    assert np.abs(linear.W - grad).max() <= 1e-5 * np.abs(grad).max()
    assert pathonnx.check_model(path, device="cpu").exit_code == 0


GATHERS = {
    "permutation": ([[2, 0], [1, 3]], 1, "Gather"),  # each entry once, every entry
    "subset": ([3, -4], 1, "Gather"),  # each entry once, some never (zero-filled)
    "repeated": ([2, 0, 2, 2], 1, "ScatterElements"),  # repeats add up
    "scalar": (1, 2, "Gather"),  # one index drops the axis
}


@pytest.mark.parametrize("case", GATHERS)
def test_gather_at_constant_indices_is_linear(case):
    indices, axis, transpose = GATHERS[case]
    idx = np.asarray(indices, np.int64)
    x = rand(2, 4, 3, seed=1)
    picked = np.take(x, idx, axis=axis)
    units = int(np.prod(picked.shape[1:]))
    w = rand(units, 5, seed=2)
    model = make_model(
        f"""{HEADER}
        g (float[N, 4, 3] x, int64{list(idx.shape) if idx.ndim else "[]"} idx,
           float[{units}, 5] w) => (float[N, 5] y) {{
            p = Gather <axis = {axis}> (x, idx)
            r = Relu(p)
            f = Flatten(r)
            y = MatMul(f, w)
        }}""".replace("int64[]", "int64"),
        idx=idx, w=w,
    )  # fmt: skip
    loaded = pathonnx.load(model, device="cpu")
    adjoint = {n.op_type for n in loaded.engine.adjoint_graph.graph.node}
    assert transpose in adjoint
    target = np.array([1, 3])
    linear = loaded.linearize(x, target)
    # numpy: the gradient flows back to the entry each output copied, adding over repeats
    upstream = (w[:, target].T.reshape(picked.shape) * (picked > 0)).astype(np.float64)
    expected = np.zeros(x.shape)
    moved = np.moveaxis(expected, axis, 0)
    flat = idx.reshape(-1) % x.shape[axis]
    ups = np.moveaxis(upstream.reshape(2, *x.shape[1:axis], len(flat), *x.shape[axis + 1 :]),
                      axis, 0)  # fmt: skip
    np.add.at(moved, flat, ups)
    np.testing.assert_allclose(linear.W, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(linear.output(x), loaded.forward(x).logits[[0, 1], target],
                               rtol=1e-5)  # fmt: skip
    # every target at once (rows > samples) equals one at a time
    fwd = loaded.forward(x)
    grad, _ = loaded.engine.vjp(fwd, np.broadcast_to(np.eye(5, dtype=np.float32), (2, 5, 5)))
    np.testing.assert_allclose(grad[np.arange(2), target], linear.W, rtol=1e-6, atol=1e-7)


def test_gather_refusals_say_why():
    def gather(body: str, **weights):
        return refusal(make_model(f"{HEADER}\n{body}", **weights)).nodes

    indexing = gather("""g (float[N, 4] x) => (float[N, 4] y) {
            i = Cast <to = 7> (x)
            y = Gather <axis = 1> (x, i)
        }""")  # fmt: skip
    assert any("data-dependent indexing" in reason for _, _, reason in indexing)
    lookup = gather("""g (float[N, 4] x, float[10, 3] table) => (float[N, 4, 3] y) {
            i = Cast <to = 7> (x)
            y = Gather <axis = 0> (table, i)
        }""", table=rand(10, 3))  # fmt: skip
    assert any("embedding lookup" in reason for _, _, reason in lookup)
    batch = gather("""g (float[N, 4] x, int64[1] i) => (float[1, 4] y) {
            y = Gather <axis = 0> (x, i)
        }""", i=np.array([0]))  # fmt: skip
    assert [reason for _, _, reason in batch] == ["Gather acts on the batch axis"]


def convnext_like() -> nn.Module:
    class Block(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.dw, self.norm = nn.Conv2d(c, c, 7, padding=3, groups=c), nn.LayerNorm(c)
            self.up, self.act, self.down = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)

        def forward(self, x):
            y = self.norm(self.dw(x).permute(0, 2, 3, 1))
            return x + self.down(self.act(self.up(y))).permute(0, 3, 1, 2)

    return zoo.seeded(lambda: nn.Sequential(
        nn.Conv2d(3, 8, 4, 4), Block(8), Block(8), zoo.Head(8)))()  # fmt: skip


def test_convnext_names_layernorm_and_gelu_not_its_gather(tmp_path):
    err = refusal(export(convnext_like(), tmp_path / "cnx.onnx", "dynamo", 18, (3, 32, 32)))
    assert kinds(err) == {"LayerNormalization": 2, "GELU": 2}
    assert "Gather" not in str(err)


STRIDED = f"""{HEADER}
g (float[1, 2, 3] x, int64[1] flat, int64{{shape}} idx, float[6, 4] w) => (float[1, 4] y) {{
    v = Reshape(x, flat)
    s = Gather <axis = 0> (v, idx)
    r = Relu(s)
    f = Flatten(r)
    y = MatMul(f, w)
}}"""


def test_strided_view_becomes_a_gather_per_sample():
    """dynamo's as_strided at batch 1: a Reshape of the whole tensor to one dimension, then a
    Gather at indices shaped (1, ...). Here a transposing view, which stays a Gather."""
    idx = np.arange(6).reshape(1, 2, 3).transpose(0, 2, 1)  # (1, 3, 2): x[0].T
    w = rand(6, 4)
    text = STRIDED.replace("{shape}", "[1, 3, 2]")
    model = make_model(text, flat=np.array([-1]), idx=np.ascontiguousarray(idx), w=w)
    loaded = pathonnx.load(model, device="cpu")
    (change,) = next(r for r in loaded.reports if r.name == "per_sample_gather").changed
    assert "a Gather along each flattened sample" in change
    x = rand(3, 2, 3, seed=4)  # a batch of 3, where the flattened batch would be wrong
    picked = x.transpose(0, 2, 1)
    expected = np.maximum(picked, 0).reshape(3, 6) @ w
    np.testing.assert_allclose(loaded.forward(x).logits, expected, rtol=1e-5, atol=1e-6)
    linear = loaded.linearize(x, 2)
    grad = (w[:, 2].reshape(3, 2) * (picked > 0)).transpose(0, 2, 1)
    np.testing.assert_allclose(linear.W, grad, rtol=1e-6, atol=1e-7)


def test_flattened_batch_without_a_batch_of_indices_is_refused():
    """The same Reshape and Gather with indices of shape (6,): not a view per sample, so the
    pass leaves them, and the check says why each is refused."""
    text = STRIDED.replace("{shape}", "[6]").replace("=> (float[1, 4] y)", "=> (float[6] y)")
    text = text.replace("f = Flatten(r)\n    y = MatMul(f, w)", "y = Identity(r)")
    model = make_model(text, flat=np.array([-1]), idx=np.arange(6)[::-1].copy(), w=rand(6, 4))
    with pytest.raises(pathonnx.UnsupportedModelError) as info:
        canonicalize(load_model(model, early=False))
    reasons = {op: reason for _, op, reason in info.value.nodes}
    assert reasons["Reshape"] == "Reshape to one dimension merges the batch axis with the others"
    assert reasons["Gather"] == "Gather acts on the batch axis"
