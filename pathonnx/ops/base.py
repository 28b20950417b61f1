"""The rule base class, the registry, and helpers that every op family uses."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

_RULES: dict[str, Rule] = {}


class TooDense(Exception):
    """A sparse transpose would move more entries than the walk's ``limit`` allows."""


class Rule:
    """An op's vocabulary check and its rules in the linear engine, all in one place.

    - ``check(node)``: None when the op is explainable as written, else the reason.
    - ``adjoint(node, ct, cx)``: the dense transpose, as ONNX nodes. It gets the cotangents of
      the node's outputs (``None`` where no cotangent reaches an output), laid out
      (rows, *per-sample shape), and returns one cotangent per input (``None`` for constants).
    - ``bias(node, ct, cx)``: the node's constant term paired with its output cotangent, shape
      (rows,), or ``None`` when the op has no constant.
    - ``sparse(node, idx, vals, sx)``: the same transpose on one sample's nonzero entries, in
      numpy (``idx`` flat positions in the output, ``vals`` rows × positions); returns the
      entries at the data input and the bias (rows,) or None. Only ops of plain convolutional
      chains have it (:meth:`walks_sparse`); raises :class:`TooDense` past ``sx.limit``.

    ``cx`` is the engine's build context and ``sx`` its per-sample sparse context (see
    :mod:`pathonnx.engine.adjoint` and :mod:`pathonnx.engine.sparse`); rules only call them.
    """

    role = "linear"
    #: Whether the frozen op needs its input at x (LeakyRelu/PRelu: a slope below 0 can flip
    #: the sign, so the slope cannot be read off the output).
    reads_input = False
    #: The input positions that may carry data (values computed from the model's input); the
    #: others must be constants (weights, bounds, shapes). None: any position may.
    data_positions: tuple[int, ...] | None = (0,)
    #: How many inputs may carry data at once (None: no limit beyond ``data_positions``).
    most_data: int | None = None

    def check(self, node: gs.Node) -> str | None:
        return None

    def data_reason(self, node: gs.Node, data: list[bool]) -> str | None:
        """Why the node cannot be explained, read off the graph alone: ``data[i]`` says whether
        input ``i`` is computed from the model's input. Constant folding cannot change that, so
        a reason here is certain before any pass runs; None when the graph alone does not tell
        (:meth:`check` decides on the canonical graph)."""
        count = sum(data)
        if self.most_data is not None and count > self.most_data:
            return f"{node.op} of {count} data tensors (not linear)"
        if self.data_positions is not None:
            for index, flag in enumerate(data):
                if flag and index not in self.data_positions:
                    return f"{node.op} input {index} is computed from data, not a constant"
        return None

    def adjoint(self, node: gs.Node, ct: list, cx) -> list:
        raise NotImplementedError(f"{type(self).__name__} has no adjoint")

    def bias(self, node: gs.Node, ct: list, cx):
        return None

    def walks_sparse(self, node: gs.Node) -> bool:
        return False

    def sparse(self, node: gs.Node, idx: np.ndarray, vals: np.ndarray, sx):
        raise NotImplementedError(f"{type(self).__name__} has no sparse transpose")


def op_rule(*op_types: str):
    """Class decorator: register one instance of the rule under each op type."""

    def register(cls: type[Rule]) -> type[Rule]:
        instance = cls()
        for op_type in op_types:
            _RULES[op_type] = instance
        return cls

    return register


def registry() -> dict[str, Rule]:
    return _RULES


# --- helpers -------------------------------------------------------------------------------------


def is_data(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Variable) and bool(tensor.name)


def data_inputs(node: gs.Node) -> list[gs.Tensor]:
    return [t for t in node.inputs if is_data(t)]


class DataOperand(Exception):
    def __init__(self, index: int):
        self.index = index


def const(node: gs.Node, index: int):
    """Value of optional constant input ``index``; None if absent; raises if it is data."""
    if index >= len(node.inputs) or not node.inputs[index].name:
        return None
    tensor = node.inputs[index]
    if not isinstance(tensor, gs.Constant):
        raise DataOperand(index)
    return np.asarray(tensor.values)


def needs_constants(node: gs.Node, indices, what: str) -> str | None:
    try:
        for index in indices:
            const(node, index)
    except DataOperand as operand:
        return f"{what} (input {operand.index}) is computed from data, not a constant"
    return None


def rank(tensor: gs.Tensor) -> int | None:
    return None if tensor.shape is None else len(tensor.shape)


def sample_shape(tensor: gs.Tensor) -> tuple[int, ...]:
    """Per-sample static shape of a canonical tensor (its shape without the batch axis)."""
    if tensor.shape is None:
        raise ValueError(f"tensor {tensor.name!r} has no inferred shape")
    return tuple(int(d) for d in tensor.shape[1:])


def axes_of(node: gs.Node):
    """The ``axes`` of Squeeze/Unsqueeze/Reduce*: an attribute before opset 13 (18 for
    reductions), the constant input 1 after; None when absent."""
    axes = node.attrs.get("axes")
    return const(node, 1) if axes is None else axes


def constant_axes(node: gs.Node):
    """(reason, axes) of a node whose ``axes`` must be constant: the reason when they are
    computed from data (axes then None), else None and the axes (None when absent)."""
    reason = needs_constants(node, [1], f"{node.op} axes")
    return (reason, None) if reason else (None, axes_of(node))


def axes_reason(axes, rank_: int | None, what: str) -> str | None:
    if axes is None:
        return None
    axes = [int(a) for a in np.atleast_1d(axes)]
    if any(a == 0 or (rank_ is not None and a == -rank_) for a in axes):
        return f"{what} acts on the batch axis"
    return None


def attr_str(node: gs.Node, name: str, default: str) -> str:
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def spatial_pads(node: gs.Node, in_sp, out_sp, kernel, strides, dilations) -> list[int]:
    """Begin pads of a Conv/pool, explicit or from ``auto_pad`` (ONNX operator spec)."""
    mode = attr_str(node, "auto_pad", "NOTSET")
    nd = len(in_sp)
    if mode == "NOTSET":
        pads = node.attrs.get("pads", [0] * (2 * nd))
        return [int(p) for p in pads[:nd]]
    if mode == "VALID":
        return [0] * nd
    begins = []
    for i in range(nd):
        total = max((out_sp[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_sp[i], 0)
        begins.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
    return begins


def crop_or_pad(cx, ct, start: list[int], length: list[int], full: list[int], first_axis: int):
    """Take ``[start, start + length)`` of each axis from ``first_axis`` on; zero-fill beyond
    ``full`` (the axis' size) and before 0. Adjoint of zero-padding by ``start``."""
    em = cx.em
    axes = list(range(first_axis, first_axis + len(start)))
    lo = [max(s, 0) for s in start]
    hi = [min(s + n, f) for s, n, f in zip(start, length, full)]
    if lo != [0] * len(lo) or hi != list(full):
        ct = em.op("Slice", [ct, em.ints(lo), em.ints(hi), em.ints(axes)], hint="crop")
    before = [max(-s, 0) for s in start]
    after = [max(s + n - f, 0) for s, n, f in zip(start, length, full)]
    if any(before) or any(after):
        zeros = [0] * first_axis
        ct = em.op("Pad", [ct, em.ints(zeros + before + zeros + after)], hint="zero_fill")
    return ct


def merge_positions(positions: np.ndarray, vals: np.ndarray, size: int):
    """Sparse entries at repeated positions (in ``[0, size)``) summed: (unique positions, rows ×
    unique). A mark array of ``size`` finds the unique positions without sorting."""
    seen = np.zeros(size, bool)
    seen[positions] = True
    unique = np.flatnonzero(seen)
    slot = np.empty(size, np.int32)
    slot[unique] = np.arange(len(unique))
    inverse = slot[positions]
    out = np.empty((len(vals), len(unique)), np.float32)
    for row in range(len(vals)):
        out[row] = np.bincount(inverse, weights=vals[row], minlength=len(unique))
    return unique, out


def run_alone(node: gs.Node, xs: list[np.ndarray]) -> list[np.ndarray]:
    """What onnxruntime computes for ``node`` alone (its constant inputs kept, attributes as
    they are) on each array of ``xs`` given as its data input: the runtime's own arithmetic,
    read off directly (AveragePool's divisors, nearest Resize's index maps)."""
    names, initializers = ["x"], []
    for i, tensor in enumerate(node.inputs[1:], start=1):
        if not tensor.name:
            names.append("")
            continue
        initializers.append(onnx.numpy_helper.from_array(np.asarray(tensor.values), f"in{i}"))
        names.append(f"in{i}")
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(xs[0].shape))
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node(node.op, names, ["y"], **dict(node.attrs))], "alone", [x], [y],
        initializers,
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, {"x": np.ascontiguousarray(v, np.float32)})[0] for v in xs]
