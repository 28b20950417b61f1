"""The per-op registry: which ONNX ops pathonnx can explain, and under what conditions.

One entry per op type, registered with ``@op_rule``. The forward vocabulary check lives here; the
adjoint (transpose) rule of the linear engine is attached to the same entry, so adding an op is
one place. Roles: ``gate`` (elementwise piecewise-linear, its elements are units), ``linear``
(linear or affine in the data), ``selection`` (max pooling: frozen like a gate, not units).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

GATE_KINDS = {"Relu": "relu", "Clip": "clip", "LeakyRelu": "leaky_relu", "PRelu": "prelu"}


@dataclass(frozen=True)
class OpRule:
    op_type: str
    role: str
    check: Callable[[gs.Node], str | None]
    """Returns why a node of this type cannot be explained, or None when it can."""


RULES: dict[str, OpRule] = {}


def op_rule(*op_types: str, role: str):
    """Register the vocabulary check of one or more op types."""

    def register(check: Callable[[gs.Node], str | None]):
        for op_type in op_types:
            RULES[op_type] = OpRule(op_type, role, check)
        return check

    return register


# --- helpers -------------------------------------------------------------------------------------


def _is_data(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Variable) and bool(tensor.name)


def _data_inputs(node: gs.Node) -> list[gs.Tensor]:
    return [t for t in node.inputs if _is_data(t)]


def _const(node: gs.Node, index: int):
    """Value of optional constant input ``index``; None if absent; raises if it is data."""
    if index >= len(node.inputs) or not node.inputs[index].name:
        return None
    tensor = node.inputs[index]
    if not isinstance(tensor, gs.Constant):
        raise _DataOperand(index)
    return np.asarray(tensor.values)


class _DataOperand(Exception):
    def __init__(self, index: int):
        self.index = index


def _rank(tensor: gs.Tensor) -> int | None:
    return None if tensor.shape is None else len(tensor.shape)


def _axes_reason(axes, rank: int | None, what: str) -> str | None:
    if axes is None:
        return None
    axes = [int(a) for a in np.atleast_1d(axes)]
    if any(a == 0 or (rank is not None and a == -rank) for a in axes):
        return f"{what} acts on the batch axis"
    return None


def _needs_constants(node: gs.Node, indices: range | list[int], what: str) -> str | None:
    try:
        for index in indices:
            _const(node, index)
    except _DataOperand as operand:
        return f"{what} (input {operand.index}) is computed from data, not a constant"
    return None


# --- gates ---------------------------------------------------------------------------------------


@op_rule("Relu", "LeakyRelu", role="gate")
def _check_simple_gate(node: gs.Node) -> str | None:
    return None


@op_rule("Clip", role="gate")
def _check_clip(node: gs.Node) -> str | None:
    return _needs_constants(node, [1, 2], "Clip bound")


@op_rule("PRelu", role="gate")
def _check_prelu(node: gs.Node) -> str | None:
    return _needs_constants(node, [1], "PRelu slope")


# --- selections ----------------------------------------------------------------------------------


@op_rule("MaxPool", "GlobalMaxPool", role="selection")
def _check_maxpool(node: gs.Node) -> str | None:
    return None


# --- linear and affine ops -----------------------------------------------------------------------


@op_rule("Conv", "ConvTranspose", role="linear")
def _check_conv(node: gs.Node) -> str | None:
    return _needs_constants(node, [1, 2], f"{node.op} weight or bias")


@op_rule("Gemm", role="linear")
def _check_gemm(node: gs.Node) -> str | None:
    if not _is_data(node.inputs[0]) or node.attrs.get("transA", 0):
        return "Gemm whose data operand is not A (untransposed); only x·W + c is linear per sample"
    return _needs_constants(node, [1, 2], "Gemm B or C")


@op_rule("MatMul", role="linear")
def _check_matmul(node: gs.Node) -> str | None:
    data = [i for i, t in enumerate(node.inputs) if _is_data(t)]
    if len(data) != 1:
        return "MatMul of two data tensors (not linear)"
    if data[0] == 1 and (_rank(node.inputs[1]) or 0) < 3:
        return "MatMul W·x with a rank-2 data operand mixes the batch axis"
    return None


@op_rule("Add", "Sub", "Sum", role="linear")
def _check_add(node: gs.Node) -> str | None:
    if not _data_inputs(node):
        return f"{node.op} of constants only (should have been folded)"
    return None


@op_rule("Mul", role="linear")
def _check_mul(node: gs.Node) -> str | None:
    if len(_data_inputs(node)) != 1:
        return "Mul of two data tensors (not linear)"
    return None


@op_rule("Div", role="linear")
def _check_div(node: gs.Node) -> str | None:
    if not _is_data(node.inputs[0]) or _is_data(node.inputs[1]):
        return "Div by a data tensor (not linear); only division by a constant is"
    return None


@op_rule("BatchNormalization", role="linear")
def _check_batchnorm(node: gs.Node) -> str | None:
    if len([t for t in node.outputs if t.name]) > 1:
        return "BatchNormalization in training mode (running statistics outputs)"
    return _needs_constants(node, [1, 2, 3, 4], "BatchNormalization parameter")


@op_rule("AveragePool", "GlobalAveragePool", "Flatten", "Identity", "Dropout", role="linear")
def _check_shape_free(node: gs.Node) -> str | None:
    if node.op == "Flatten":
        axis = node.attrs.get("axis", 1)
        rank = _rank(node.inputs[0])
        if axis == 0 or (rank is not None and axis == -rank):
            return "Flatten with axis 0 merges the batch axis"
    return None


@op_rule("ReduceMean", "ReduceSum", role="linear")
def _check_reduce(node: gs.Node) -> str | None:
    reason = _needs_constants(node, [1], f"{node.op} axes")
    if reason:
        return reason
    axes = node.attrs.get("axes")
    if axes is None:
        axes = _const(node, 1)
    if axes is None or np.size(axes) == 0:
        if node.attrs.get("noop_with_empty_axes", 0):
            return None
        return f"{node.op} over all axes includes the batch axis"
    return _axes_reason(axes, _rank(node.inputs[0]), node.op)


@op_rule("Reshape", role="linear")
def _check_reshape(node: gs.Node) -> str | None:
    reason = _needs_constants(node, [1], "Reshape target shape")
    if reason:
        return reason
    shape = _const(node, 1)
    if shape is None or shape.size == 0 or int(shape[0]) not in (0, -1):
        return "Reshape whose target does not keep the batch axis first (shape[0] must be 0 or -1)"
    if int(shape[0]) == -1 and -1 in [int(s) for s in shape[1:]]:
        return "Reshape with two inferred dims"
    return None


@op_rule("Transpose", role="linear")
def _check_transpose(node: gs.Node) -> str | None:
    perm = node.attrs.get("perm")
    if perm is None or int(perm[0]) != 0:
        return "Transpose that moves the batch axis"
    return None


@op_rule("Squeeze", "Unsqueeze", role="linear")
def _check_squeeze(node: gs.Node) -> str | None:
    reason = _needs_constants(node, [1], f"{node.op} axes")
    if reason:
        return reason
    axes = node.attrs.get("axes")
    if axes is None:
        axes = _const(node, 1)
    if axes is None:
        return f"{node.op} without axes may drop the batch axis"
    rank = _rank(node.inputs[0])
    if node.op == "Unsqueeze" and rank is not None:
        rank += np.size(axes)
    return _axes_reason(axes, rank, node.op)


@op_rule("Concat", "Split", role="linear")
def _check_concat(node: gs.Node) -> str | None:
    if node.op == "Split":
        reason = _needs_constants(node, [1], "Split sizes")
        if reason:
            return reason
    rank = _rank(node.inputs[0])
    return _axes_reason(node.attrs.get("axis", 0), rank, node.op)


@op_rule("Slice", role="linear")
def _check_slice(node: gs.Node) -> str | None:
    reason = _needs_constants(node, [1, 2, 3, 4], "Slice starts/ends/axes/steps")
    if reason:
        return reason
    axes = _const(node, 3)
    if axes is None:  # default: axes 0..len(starts)-1, so the batch axis is sliced
        return "Slice over the batch axis (give axes that skip axis 0)"
    return _axes_reason(axes, _rank(node.inputs[0]), "Slice")


@op_rule("Pad", role="linear")
def _check_pad(node: gs.Node) -> str | None:
    mode = node.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "constant":
        return f"Pad mode {mode!r} (only constant padding is supported)"
    reason = _needs_constants(node, [1, 2, 3], "Pad pads/value/axes")
    if reason:
        return reason
    pads = _const(node, 1)
    axes = _const(node, 3)
    if pads is not None and axes is None:
        half = len(pads) // 2
        if pads[0] != 0 or pads[half] != 0:
            return "Pad on the batch axis"
    elif axes is not None:
        return _axes_reason(axes, _rank(node.inputs[0]), "Pad")
    return None


@op_rule("Resize", "Upsample", role="linear")
def _check_resize(node: gs.Node) -> str | None:
    mode = node.attrs.get("mode", "nearest")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "nearest":
        return f"{node.op} mode {mode!r} (only nearest resizing is supported)"
    return _needs_constants(node, range(1, len(node.inputs)), f"{node.op} roi/scales/sizes")


# --- the check -----------------------------------------------------------------------------------

_EXPLAINED_ELSEWHERE = {
    "Softmax": "Softmax inside the network (only a trailing Softmax is removed)",
    "LogSoftmax": "LogSoftmax inside the network (only a trailing one is removed)",
    "Max": "Max of data tensors (only Max(x, constant) is a gate)",
    "Min": "Min of data tensors (only Min(x, constant) is a gate)",
}


def unsupported_nodes(graph: gs.Graph) -> list[tuple[str, str, str]]:
    """Every node pathonnx cannot explain, as ``(node name, op type, reason)``."""
    found = []
    for node in graph.nodes:
        rule = RULES.get(node.op) if node.domain in ("", "ai.onnx", None) else None
        if rule is None:
            reason = _EXPLAINED_ELSEWHERE.get(node.op, f"{node.op} is not piecewise linear")
            if node.domain not in ("", "ai.onnx", None):
                reason = f"custom op {node.domain}.{node.op}"
        else:
            reason = rule.check(node)
        if reason:
            found.append((node.name or node.outputs[0].name, node.op, reason))
    return found


def role(op_type: str) -> str | None:
    rule = RULES.get(op_type)
    return rule.role if rule else None
