"""Each rewrite pass on tiny graphs: what it changed, that it is pure, and that outputs agree."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import make_model, ops, rand, run

import pathonnx
from pathonnx.graph import (
    PIPELINE,
    canonicalize_gates,
    drop_identity,
    fold_batchnorm,
    fold_constants,
    free_batch,
    strip_softmax,
)

HEADER = '<ir_version: 8, opset_import: ["" : 13]>'


def conv_bn(consumer: str = "o = Relu(b)") -> onnx.ModelProto:
    text = f"""{HEADER}
    g (float[N, 2, 5, 5] x, float[3, 2, 3, 3] w, float[3] cb, float[3] s, float[3] t,
       float[3] m, float[3] v) => (float[N, 75] y) {{
        c = Conv <pads = [1, 1, 1, 1]> (x, w, cb)
        b = BatchNormalization <epsilon = 0.001> (c, s, t, m, v)
        {consumer}
        y = Flatten(o)
    }}"""
    return make_model(
        text, w=rand(3, 2, 3, 3), cb=rand(3, seed=1), s=rand(3, seed=2),
        t=rand(3, seed=3), m=rand(3, seed=4), v=rand(3, seed=5, low=0.5),
    )  # fmt: skip


def assert_same_logits(
    model: onnx.ModelProto, batch: int = 3, atol: float = 1e-5
) -> pathonnx.Model:
    """The canonical model reproduces the original, sample by sample, at batch ``batch``."""
    loaded = pathonnx.load(model, device="cpu")
    x = rand(batch, *loaded.input_shape, seed=7)
    expected = np.concatenate([run(model, x[i : i + 1]) for i in range(batch)])
    if loaded.softmax_stripped:
        got = loaded.forward(x).logits
        got = np.exp(got - got.max(1, keepdims=True))
        got /= got.sum(1, keepdims=True)
    else:
        got = loaded.forward(x).logits
    np.testing.assert_allclose(got, expected.reshape(batch, -1), atol=atol, rtol=1e-5)
    return loaded


def through(rewrite, model: onnx.ModelProto):
    """Run one pass on a model (after the folding every later pass relies on)."""
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    if rewrite is not fold_constants:
        graph, _ = fold_constants(graph)
    new, report = rewrite(graph)
    return gs.export_onnx(new, do_type_check=False), report


@pytest.mark.parametrize("rewrite", PIPELINE, ids=lambda p: p.pass_name)
def test_every_pass_leaves_its_input_untouched(rewrite):
    model = conv_bn("r = Relu(b)\n f = Flatten(r)\n p = Softmax(f)\n o = Identity(p)")
    graph = gs.import_onnx(model)
    before = gs.export_onnx(graph.copy(), do_type_check=False).SerializeToString()
    rewrite(graph)
    assert gs.export_onnx(graph, do_type_check=False).SerializeToString() == before


def test_fold_constants_removes_shape_chains():
    model = make_model(f"""{HEADER}
    g (float[1, 2, 3, 3] x) => (float[1, 18] y) {{
        s = Shape(x)
        i = Constant <value = int64 {{0}}> ()
        n = Gather <axis = 0> (s, i)
        nu = Unsqueeze(n, zero)
        shape = Concat <axis = 0> (nu, minus)
        y = Reshape(x, shape)
    }}""".replace("float[1, 2, 3, 3] x)", "float[1, 2, 3, 3] x, int64[1] zero, int64[1] minus)"),
        zero=np.array([0], np.int64), minus=np.array([-1], np.int64))  # fmt: skip
    new, report = through(fold_constants, model)
    assert ops(new) == ["Reshape"]
    assert "Shape×1" in report.changed[0]
    assert_same_logits(model, batch=1)


def test_drop_identity_and_dropout_keeps_output_name():
    model = make_model(f"""{HEADER}
    g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {{
        a = Identity(x)
        h = MatMul(a, w)
        d = Dropout(h)
        r = Relu(d)
        y = Identity(r)
    }}""", w=rand(4, 3))  # fmt: skip
    new, report = through(drop_identity, model)
    assert ops(new) == ["MatMul", "Relu"]
    assert new.graph.output[0].name == "y"
    assert len(report.changed) == 3
    loaded = assert_same_logits(model)
    assert [g.name for g in loaded.gates] == ["y"]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_strip_trailing_softmax(op):
    model = make_model(f"""{HEADER}
    g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {{
        h = MatMul(x, w)
        y = {op}(h)
    }}""", w=rand(4, 3))  # fmt: skip
    new, report = through(strip_softmax, model)
    assert ops(new) == ["MatMul"] and new.graph.output[0].name == "h"
    assert report.applied
    loaded = pathonnx.load(model)
    x = rand(2, 4)
    np.testing.assert_allclose(loaded.forward(x).logits, x @ model_weight(model), rtol=1e-5)
    assert pathonnx.self_check(loaded).passed


def model_weight(model: onnx.ModelProto) -> np.ndarray:
    return onnx.numpy_helper.to_array(model.graph.initializer[0])


def test_strip_softmax_before_reshape_renames_output():
    model = make_model(f"""{HEADER}
    g (float[N, 4] x, float[4, 3] w, int64[4] shape) => (float[N, 3, 1, 1] y) {{
        h = MatMul(x, w)
        p = Softmax(h)
        y = Reshape(p, shape)
    }}""", w=rand(4, 3), shape=np.array([0, 3, 1, 1]))  # fmt: skip
    loaded = assert_same_logits(model)
    assert loaded.logits_name != "y" and loaded.reference_name == "h"
    assert loaded.num_outputs == 3


def test_softmax_on_wrong_axis_is_not_stripped():
    model = make_model(f"""{HEADER}
    g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {{
        h = MatMul(x, w)
        y = Softmax <axis = 0> (h)
    }}""", w=rand(4, 3))  # fmt: skip
    _, report = through(strip_softmax, model)
    assert not report.applied and "class axis" in report.skipped[0]
    with pytest.raises(pathonnx.UnsupportedModelError, match="Softmax"):
        pathonnx.load(model)


def test_fold_batchnorm_into_conv():
    model = conv_bn()
    new, report = through(fold_batchnorm, model)
    assert ops(new) == ["Conv", "Relu", "Flatten"]
    assert report.changed[0].startswith("folded")
    assert_same_logits(model)


def test_batchnorm_kept_affine_when_conv_output_is_shared():
    model = conv_bn("r = Relu(b)\n o = Add(r, c)")
    new, report = through(fold_batchnorm, model)
    assert ops(new) == ["Conv", "Mul", "Add", "Relu", "Add", "Flatten"]
    assert "feeds other nodes" in report.skipped[0]
    assert_same_logits(model)


def test_batchnorm_after_concat_is_kept_affine():
    text = f"""{HEADER}
    g (float[N, 2, 4, 4] x, float[4] s, float[4] t, float[4] m, float[4] v)
        => (float[N, 64] y) {{
        c = Concat <axis = 1> (x, x)
        b = BatchNormalization(c, s, t, m, v)
        r = Relu(b)
        y = Flatten(r)
    }}"""
    model = make_model(text, s=rand(4), t=rand(4, seed=1), m=rand(4, seed=2),
                       v=rand(4, seed=3, low=0.5))  # fmt: skip
    new, report = through(fold_batchnorm, model)
    assert "Concat" in report.skipped[0] and "BatchNormalization" not in ops(new)
    assert_same_logits(model)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_fold_batchnorm_into_gemm(trans_b):
    w = rand(3, 4) if trans_b else rand(4, 3)
    text = f"""{HEADER}
    g (float[N, 4] x, float[{w.shape[0]}, {w.shape[1]}] w, float[3] c, float[3] s, float[3] t,
       float[3] m, float[3] v) => (float[N, 3] y) {{
        h = Gemm <transB = {trans_b}, beta = 0.5> (x, w, c)
        y = BatchNormalization(h, s, t, m, v)
    }}"""
    model = make_model(text, w=w, c=rand(3, seed=1), s=rand(3, seed=2), t=rand(3, seed=3),
                       m=rand(3, seed=4), v=rand(3, seed=5, low=0.5))  # fmt: skip
    new, _ = through(fold_batchnorm, model)
    assert ops(new) == ["Gemm"]
    assert_same_logits(model)


RELU6_FORMS = {
    "clip_inputs": "y = Clip(h, zero, six)",
    "min_max": "a = Max(h, zero)\n y = Min(a, six)",
    "max_min": "a = Min(six, h)\n y = Max(a, zero)",
    "relu_min": "a = Relu(h)\n y = Min(a, six)",
}


@pytest.mark.parametrize("form", RELU6_FORMS)
def test_relu6_forms_become_one_clip_gate(form):
    text = f"""{HEADER}
    g (float[N, 4] x, float[4, 8] w, float zero, float six) => (float[N, 8] y) {{
        h = MatMul(x, w)
        {RELU6_FORMS[form]}
    }}"""
    model = make_model(text, w=3 * rand(4, 8), zero=np.float32(0), six=np.float32(6))
    new, _ = through(canonicalize_gates, model)
    assert ops(new) == ["MatMul", "Clip"]
    loaded = assert_same_logits(model)
    (gate,) = loaded.gates
    assert (gate.name, gate.kind, gate.params) == ("y", "clip", {"lo": 0.0, "hi": 6.0})


def test_clip_with_attribute_bounds_from_opset_6():
    model = make_model("""<ir_version: 7, opset_import: ["" : 6]>
    g (float[N, 4] x, float[4, 8] w) => (float[N, 8] y) {
        h = MatMul(x, w)
        y = Clip <min = 0.0, max = 6.0> (h)
    }""", w=3 * rand(4, 8))  # fmt: skip
    loaded = assert_same_logits(model)
    assert loaded.opset_upgraded_from == 6
    assert [(g.kind, g.params) for g in loaded.gates] == [("clip", {"lo": 0.0, "hi": 6.0})]


def test_max_zero_is_relu_and_leaky_prelu_stay():
    text = f"""{HEADER}
    g (float[N, 2, 3, 3] x, float zero, float[2, 1, 1] slope) => (float[N, 18] y) {{
        a = Max(x, zero)
        b = LeakyRelu <alpha = 0.2> (a)
        c = PRelu(b, slope)
        y = Flatten(c)
    }}"""
    model = make_model(text, zero=np.float32(0), slope=np.array([[[0.1]], [[-0.3]]], np.float32))
    loaded = assert_same_logits(model)
    assert [g.kind for g in loaded.gates] == ["relu", "leaky_relu", "prelu"]
    assert loaded.gates[1].params == {"alpha": pytest.approx(0.2)}


def test_min_max_pair_not_fused_when_inner_is_shared():
    text = f"""{HEADER}
    g (float[N, 4] x, float zero, float six) => (float[N, 4] y) {{
        a = Max(x, zero)
        b = Min(a, six)
        y = Add(a, b)
    }}"""
    model = make_model(text, zero=np.float32(0), six=np.float32(6))
    _, report = through(canonicalize_gates, model)
    assert any("feeds other nodes" in s for s in report.skipped)
    loaded = assert_same_logits(model)
    assert [(g.name, g.kind) for g in loaded.gates] == [("a", "relu"), ("b", "clip")]


def test_free_batch_rewrites_hard_coded_reshape():
    text = f"""{HEADER}
    g (float[1, 2, 3, 3] x, int64[2] shape, float[18, 4] w) => (float[1, 4] y) {{
        r = Relu(x)
        f = Reshape(r, shape)
        y = MatMul(f, w)
    }}"""
    model = make_model(text, shape=np.array([1, -1]), w=rand(18, 4))
    new, report = through(free_batch, model)
    assert report.changed and "Reshape" in report.changed[0]
    assert_same_logits(model, batch=4)


def test_expose_outputs_lists_gates_and_argmax():
    text = f"""{HEADER}
    g (float[N, 2, 4, 4] x) => (float[N, 2, 1, 1] y) {{
        r = Relu(x)
        p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r)
        q = Relu(p)
        y = GlobalMaxPool(q)
    }}"""
    loaded = assert_same_logits(make_model(text))
    outputs = [o.name for o in loaded.canonical.graph.output]
    assert outputs == [loaded.logits_name, "r", "p__argmax", "q", "y__argmax"]
    fwd = loaded.forward(rand(2, 2, 4, 4))
    assert set(fwd.activations) == {"r", "q"} and fwd.argmax["p"].dtype == np.int64


def test_gate_order_is_the_original_execution_order():
    # Two branches whose gates a level-based toposort would interleave differently.
    text = f"""{HEADER}
    g (float[N, 4] x, float[4, 4] w) => (float[N, 4] y) {{
        a = Relu(x)
        b = MatMul(a, w)
        c = Relu(b)
        d = Relu(x)
        y = Add(c, d)
    }}"""
    loaded = pathonnx.load(make_model(text, w=rand(4, 4)))
    assert [g.name for g in loaded.gates] == ["a", "c", "d"]
