"""Properties of the linear engine on random small graphs (hypothesis).

Completeness: Σ W⊙x + b is the logit. Per-gate decomposition (docs/ARCHITECTURE.md): split one
gate's units into parts; their contributions through that gate, W^p − W_¬g and b^p − b_¬g, sum
to the whole map's, W − W_¬g and b − b_¬g.
"""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import pathonnx

GATE_KINDS = ["relu", "clip", "hardtanh", "leaky", "leaky_negative", "prelu", "minmax"]


class GraphBuilder:
    """Builds a random ReLU-family CNN with onnx.helper, one layer at a time."""

    def __init__(self, rng: np.random.Generator, channels: int, size: int):
        self.rng = rng
        self.nodes, self.inits = [], []
        self.count = 0
        self.shape = (channels, size, size)
        self.tensor = "x"

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}{self.count}"

    def weight(self, array: np.ndarray) -> str:
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        self.tensor = out
        return out

    def conv(self, out_channels: int, kernel: int, stride: int) -> str:
        c, h, _ = self.shape
        pad = kernel // 2
        w = self.rng.standard_normal((out_channels, c, kernel, kernel)) / np.sqrt(c * kernel**2)
        b = 0.3 * self.rng.standard_normal(out_channels)
        self.node("Conv", [self.tensor, self.weight(w), self.weight(b)],
                  pads=[pad] * 4, strides=[stride] * 2)  # fmt: skip
        size = (h + 2 * pad - kernel) // stride + 1
        self.shape = (out_channels, size, size)
        return self.tensor

    def gate(self, kind: str) -> str:
        x = self.tensor
        if kind == "relu":
            return self.node("Relu", [x])
        if kind in ("clip", "hardtanh"):
            lo, hi = (0.0, 0.6) if kind == "clip" else (-0.4, 0.5)
            return self.node("Clip", [x, self.weight(np.float32(lo)), self.weight(np.float32(hi))])
        if kind == "leaky":
            return self.node("LeakyRelu", [x], alpha=0.1)
        if kind == "leaky_negative":
            return self.node("LeakyRelu", [x], alpha=-0.3)
        if kind == "prelu":
            slope = self.rng.uniform(-0.5, 0.5, (self.shape[0], 1, 1))
            return self.node("PRelu", [x, self.weight(slope)])
        upper = self.node("Max", [x, self.weight(np.float32(0.0))])  # minmax: ReLU6-like
        return self.node("Min", [upper, self.weight(np.float32(0.7))])

    def residual(self, kind: str) -> str:
        skip = self.tensor
        self.conv(self.shape[0], 3, 1)
        self.gate(kind)
        self.conv(self.shape[0], 3, 1)
        return self.node("Add", [self.tensor, skip])

    def maxpool(self) -> str:
        c, h, _ = self.shape
        self.shape = (c, h // 2, h // 2)
        return self.node("MaxPool", [self.tensor], kernel_shape=[2, 2], strides=[2, 2])

    def model(self, classes: int) -> onnx.ModelProto:
        self.node("Flatten", [self.tensor], axis=1)
        w = self.rng.standard_normal((classes, int(np.prod(self.shape)))) * 0.3
        bias = self.weight(self.rng.standard_normal(classes))
        self.node("Gemm", [self.tensor, self.weight(w), bias], transB=1)
        graph = helper.make_graph(
            self.nodes, "random",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *self.first_shape])],
            [helper.make_tensor_value_info(self.tensor, TensorProto.FLOAT, ["N", classes])],
            self.inits,
        )  # fmt: skip
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


layers = st.lists(
    st.tuples(st.sampled_from(["conv", "residual", "maxpool"]), st.sampled_from(GATE_KINDS)),
    min_size=1,
    max_size=4,
)


@st.composite
def random_networks(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    channels, size = draw(st.integers(1, 3)), draw(st.sampled_from([4, 6, 8]))
    builder = GraphBuilder(rng, channels, size)
    builder.first_shape = builder.shape
    # Always one gate at least, then random layers.
    for layer, kind in [("conv", draw(st.sampled_from(GATE_KINDS))), *draw(layers)]:
        if layer == "maxpool" and builder.shape[1] >= 2:
            builder.maxpool()
        elif layer == "residual":
            builder.residual(kind)
        else:
            builder.conv(draw(st.integers(1, 4)), draw(st.sampled_from([1, 3])), 1)
            builder.gate(kind)
    model = builder.model(classes=draw(st.integers(2, 5)))
    x = rng.standard_normal((2, *builder.first_shape)).astype(np.float32)
    return model, x, seed


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(random_networks())
def test_completeness(case):
    proto, x, _ = case
    model = pathonnx.load(proto, device="cpu")
    target = model.forward(x).logits.argmax(1)
    linear = model.linearize(x, target)
    logits = linear.logits[np.arange(2), target]
    scale = max(np.abs(linear.logits).max(), 1e-3)
    assert np.abs(linear.output(x) - logits).max() <= 1e-4 * scale


@SETTINGS
@given(random_networks(), st.integers(2, 4), st.data())
def test_partition_of_one_gate_sums_to_the_whole(case, parts, data):
    proto, x, seed = case
    model = pathonnx.load(proto, device="cpu")
    gate = data.draw(st.sampled_from(model.gates))
    target = data.draw(st.integers(0, model.num_outputs - 1))
    rng = np.random.default_rng(seed)
    label = rng.integers(0, parts, (2, *gate.shape))
    whole = model.linearize(x, target)
    bypass = model.linearize(x, target, {gate.name: np.zeros(gate.shape, bool)})
    pieces = [model.linearize(x, target, {gate.name: label == p}) for p in range(parts)]
    through_W = sum(p.W - bypass.W for p in pieces)
    through_b = sum(p.b - bypass.b for p in pieces)
    scale = max(np.abs(whole.W).max(), 1e-6)
    np.testing.assert_allclose(through_W, whole.W - bypass.W, atol=1e-5 * scale)
    bscale = max(np.abs(whole.b).max(), np.abs(whole.logits).max(), 1e-6)
    np.testing.assert_allclose(through_b, whole.b - bypass.b, atol=1e-5 * bscale)
