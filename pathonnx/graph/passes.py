"""The rewrite passes that bring any exported ReLU network into pathonnx's canonical form."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs
from onnx import shape_inference
from onnx_graphsurgeon.logger import G_LOGGER

from ..ops import role, rule_for
from ..ops.base import is_data
from .report import PassReport, constant_value, consumers, node_label, rewrite_pass
from .weights import export_graph, import_graph, materialized

# graphsurgeon warns about every constant it cannot fold; the pass reports list what matters.
# Its errors print to stdout before it raises them, and on a damaged model the exception
# becomes pathonnx's one-line error (.boundary): nothing of it is printed.
G_LOGGER.severity = G_LOGGER.CRITICAL + 10
# (onnxruntime's own log, which graphsurgeon's folding sessions write to, is quieted in
# pathonnx/engine/session.py.)

INF = float("inf")


def _insert_before(graph: gs.Graph, anchor: gs.Node, *new_nodes: gs.Node) -> None:
    """Insert nodes where ``anchor`` stands, keeping the graph's execution order."""
    index = graph.nodes.index(anchor)
    graph.nodes[index:index] = list(new_nodes)


def _histogram(graph: gs.Graph) -> Counter:
    return Counter(node.op for node in graph.nodes)


# --- constant folding ----------------------------------------------------------------------------


@rewrite_pass("fold_constants")
def fold_constants(graph: gs.Graph, report: PassReport) -> gs.Graph:
    """Fold constant subgraphs: exporters' Shape/Gather/Concat chains, computed pads, weights.

    Folding one Reshape's shape chain makes the shapes after it known, which lets the next
    chain fold: so fold, infer shapes again, and repeat until nothing changes.
    """
    before = _histogram(graph)
    for _ in range(16):
        count = len(graph.nodes)
        with materialized():  # onnxruntime runs the foldable part: it needs the data
            graph.fold_constants(error_ok=True).cleanup()
        if len(graph.nodes) == count:
            break
        proto = export_graph(graph)
        graph = import_graph(shape_inference.infer_shapes(proto, data_prop=True))
    gone = before - _histogram(graph)
    if gone:
        parts = ", ".join(f"{op}×{n}" for op, n in sorted(gone.items()))
        report.changed.append(f"folded {sum(gone.values())} node(s): {parts}")
    return graph


# --- Identity and Dropout ------------------------------------------------------------------------


@rewrite_pass("drop_identity")
def drop_identity(graph: gs.Graph, report: PassReport) -> None:
    """Remove Identity and inference-mode Dropout: both pass their input through."""
    for node in list(graph.nodes):
        if node.op not in ("Identity", "Dropout"):
            continue
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            report.skipped.append(f"{node_label(node)}: its mask output is used")
            continue
        source, target = node.inputs[0], node.outputs[0]
        label = node_label(node)
        if target in graph.outputs:
            # Keep the output's name: the producer of `source` writes `target` directly.
            if not is_data(source) or source in graph.inputs or source in graph.outputs:
                report.skipped.append(f"{node_label(node)}: feeds the output from an input")
                continue
            producer = source.inputs[0]
            producer.outputs[producer.outputs.index(source)] = target
            for reader in list(source.outputs):
                reader.inputs[reader.inputs.index(source)] = target
        else:
            for reader in list(target.outputs):
                for k, tensor in enumerate(reader.inputs):
                    if tensor is target:
                        reader.inputs[k] = source
        node.outputs.clear()
        node.inputs.clear()
        report.changed.append(f"removed {label}")
    graph.cleanup()


# --- trailing Softmax ----------------------------------------------------------------------------


_SHAPE_ONLY = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity")


def _class_axis_ok(node: gs.Node) -> bool:
    """Softmax over the class (channel) axis: the last one, or axis 1 (a classifier's
    (N, K, 1, 1), or a dense channels-first head's (N, C, H, W), softmax per position)."""
    shape = node.inputs[0].shape
    axis = int(node.attrs.get("axis", -1))
    if shape is None:
        return axis in (-1, 1)
    rank = len(shape)
    axis = axis + rank if axis < 0 else axis
    return axis in (1, rank - 1)


def _last_producer(graph: gs.Graph) -> tuple[gs.Node | None, list[gs.Node]]:
    """The node that writes the output's values, below shape-only ops, and those ops."""
    tensor, trail = graph.outputs[0], []
    while tensor.inputs and tensor.inputs[0].op in _SHAPE_ONLY:
        trail.append(tensor.inputs[0])
        tensor = tensor.inputs[0].inputs[0]
    return (tensor.inputs[0] if tensor.inputs else None), trail


def may_strip(graph: gs.Graph) -> gs.Node | None:
    """The Softmax/LogSoftmax that :func:`strip_softmax` may remove (the output's, below
    shape-only ops), else None: any other is refused whatever the passes do."""
    producer, _ = _last_producer(graph)
    return producer if producer is not None and producer.op in ("Softmax", "LogSoftmax") else None


@rewrite_pass("strip_softmax")
def strip_softmax(graph: gs.Graph, report: PassReport) -> None:
    """Make the logits the output: explanations are of the logits, not of probabilities.

    The Softmax/LogSoftmax may be followed by shape-only ops (Reshape, Flatten, Squeeze) before
    the output; those stay, reading the logits instead.
    """
    output = graph.outputs[0]
    producer, trail = _last_producer(graph)
    if producer is None or producer.op not in ("Softmax", "LogSoftmax"):
        found = producer.op if producer is not None else "the input"
        report.skipped.append(f"the output is produced by {found}, not Softmax/LogSoftmax")
        return
    if not _class_axis_ok(producer):
        report.skipped.append(f"{node_label(producer)}: its axis is not the class axis")
        return
    logits = producer.inputs[0]
    if consumers(logits, graph) > 1 or any(consumers(n.outputs[0], graph) > 1 for n in trail):
        report.skipped.append(f"{node_label(producer)}: its values feed other nodes too")
        return
    if trail:
        reader = trail[-1]
        reader.inputs[0] = logits
        # The output no longer holds probabilities: do not let it keep their name.
        output.name = f"{output.name}__logits"
    else:
        logits.dtype = logits.dtype or np.float32
        graph.outputs[0] = logits
    producer.inputs.clear()
    producer.outputs.clear()
    report.changed.append(
        f"removed trailing {producer.op}; the output is now {graph.outputs[0].name!r} (logits)"
    )


@rewrite_pass("flatten_logits")
def flatten_logits(graph: gs.Graph, report: PassReport) -> None:
    """Give the logits shape (N, K): fully-convolutional heads end in (N, K, 1, 1), dense heads
    in (N, H, W, C) or (N, C, H, W). Flatten keeps C order, so element ``i`` of the per-sample
    output (its own layout) is logit ``ravel_multi_index(i, shape)``: a dense target is one
    logit, a region a sum of logits (:meth:`pathonnx.graph.Canonical.readout`)."""
    output = graph.outputs[0]
    shape = output.shape
    if shape is None or len(shape) <= 2:
        return
    if not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        report.skipped.append(f"output {output.name!r} has shape {shape}, not a fixed size")
        return
    k = int(np.prod(shape[1:]))
    flat = gs.Variable(f"{output.name}__flat", dtype=output.dtype or np.float32)
    flat.shape = [shape[0], k]
    graph.nodes.append(gs.Node("Flatten", f"{output.name}__flatten", {"axis": 1}, [output], [flat]))
    graph.outputs[0] = flat
    report.changed.append(f"flattened the output {output.name!r} {list(shape)} -> (N, {k})")


# --- dynamo's strided views ----------------------------------------------------------------------


@rewrite_pass("per_sample_gather")
def per_sample_gather(graph: gs.Graph, report: PassReport) -> None:
    """Rewrite dynamo's ``as_strided`` views per sample.

    Dynamo writes some views (``aten.as_strided``, e.g. after an average pool of a channels-last
    tensor) as a Reshape of the whole tensor to one dimension, then a Gather along it at
    constant indices shaped ``(1, ...)``: right at the traced batch of 1, wrong at any other.
    Per sample it is a Gather along the flattened sample, which this pass writes instead; when
    it takes every element in order, only a Reshape remains. (Shapes still pin the batch to 1
    here; :func:`free_batch` frees the new Reshape.)
    """
    for node in list(graph.nodes):
        if node.op != "Gather" or int(node.attrs.get("axis", 0)) not in (0, -1):
            continue
        flat, indices = node.inputs[0], constant_value(node.inputs[1])
        reshape = flat.inputs[0] if flat.inputs else None
        if reshape is None or reshape.op != "Reshape" or indices is None:
            continue
        target = constant_value(reshape.inputs[1])
        if target is None or np.asarray(target).size != 1:
            continue
        label = node_label(node)
        source, indices = reshape.inputs[0], np.asarray(indices, np.int64)
        shape = source.shape
        if not shape or not all(isinstance(d, int) for d in shape) or shape[0] != 1:
            report.skipped.append(f"{label}: the flattened tensor has no known shape at batch 1")
            continue
        if indices.ndim == 0 or indices.shape[0] != 1:
            report.skipped.append(f"{label}: its indices do not start with a batch axis of 1")
            continue
        size = int(np.prod(shape))
        picked = indices[0] % size
        out, base = node.outputs[0], node.name or node.outputs[0].name
        if picked.size == size and np.array_equal(picked.reshape(-1), np.arange(size)):
            view = gs.Constant(f"{base}__view", np.array([1, *picked.shape], np.int64))
            new = [gs.Node("Reshape", f"{base}__view", inputs=[source, view], outputs=[out])]
            what = "a Reshape (it takes every element in order)"
        else:
            rows = gs.Variable(f"{base}__sample", dtype=np.float32, shape=[1, size])
            flat_shape = gs.Constant(f"{base}__sample_shape", np.array([1, size], np.int64))
            new = [
                gs.Node("Reshape", f"{base}__sample", inputs=[source, flat_shape], outputs=[rows]),
                gs.Node("Gather", base, {"axis": 1},
                        inputs=[rows, gs.Constant(f"{base}__indices", picked)], outputs=[out]),
            ]  # fmt: skip
            what = "a Gather along each flattened sample"
        _insert_before(graph, node, *new)
        node.inputs.clear()
        node.outputs.clear()
        report.changed.append(f"{label} on the flattened batch -> {what}")
    graph.cleanup()


# --- BatchNormalization --------------------------------------------------------------------------


def _bn_affine(node: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    values = [constant_value(t) for t in node.inputs[1:5]]
    if any(v is None for v in values):
        return None
    scale, bias, mean, var = (np.asarray(v, dtype=np.float64) for v in values)
    eps = float(node.attrs.get("epsilon", 1e-5))
    s = scale / np.sqrt(var + eps)
    return s, bias - mean * s


def _fold_reason(producer: gs.Node | None, x: gs.Tensor, graph: gs.Graph) -> str | None:
    if producer is None:
        return "its input is a graph input"
    if producer.op not in ("Conv", "Gemm"):
        return f"its input comes from {producer.op} {producer.name!r}, not Conv/Gemm"
    if consumers(x, graph) > 1:
        return f"{producer.op} {producer.name!r} feeds other nodes too"
    if producer.op == "Gemm" and producer.attrs.get("transA", 0):
        return "the Gemm transposes its data operand"
    for tensor in producer.inputs[1:]:
        if tensor.name and not isinstance(tensor, gs.Constant):
            return f"{producer.op} {producer.name!r} has non-constant weights"
        if isinstance(tensor, gs.Constant) and len(tensor.outputs) > 1:
            return f"{producer.op} {producer.name!r} shares its weight {tensor.name!r}"
    return None


def _fold_into(producer: gs.Node, s: np.ndarray, t: np.ndarray) -> None:
    weight = producer.inputs[1]
    w = np.asarray(weight.values, dtype=np.float64)
    has_bias = len(producer.inputs) > 2 and producer.inputs[2].name
    if producer.op == "Conv":
        new_w = w * s.reshape(-1, *[1] * (w.ndim - 1))
        bias = np.asarray(producer.inputs[2].values, np.float64) if has_bias else 0.0
        new_b = bias * s + t
    else:  # Gemm: Y = alpha·A·B' + beta·C, output channel j is a column of B'
        axis = 0 if producer.attrs.get("transB", 0) else 1
        new_w = w * (s.reshape(-1, 1) if axis == 0 else s.reshape(1, -1))
        beta = float(producer.attrs.get("beta", 1.0))
        bias = np.asarray(producer.inputs[2].values, np.float64) * beta if has_bias else 0.0
        new_b = np.broadcast_to(bias, s.shape) * s + t
        producer.attrs["beta"] = 1.0
    producer.inputs[1] = gs.Constant(weight.name + "_bnfold", new_w.astype(np.float32))
    bias_name = (producer.inputs[2].name if has_bias else f"{weight.name}_bias") + "_bnfold"
    bias_tensor = gs.Constant(bias_name, np.asarray(new_b, np.float32).reshape(-1))
    if has_bias:
        producer.inputs[2] = bias_tensor
    else:
        producer.inputs.append(bias_tensor)


@rewrite_pass("fold_batchnorm")
def fold_batchnorm(graph: gs.Graph, report: PassReport) -> None:
    """Fold BN into the Conv/Gemm before it; otherwise keep it as a per-channel Mul + Add."""
    for node in list(graph.nodes):
        if node.op != "BatchNormalization":
            continue
        label = node_label(node)
        affine = _bn_affine(node)
        if affine is None:
            report.skipped.append(f"{label}: parameters are not constants")
            continue
        s, t = affine
        x, y = node.inputs[0], node.outputs[0]
        producer = x.inputs[0] if x.inputs else None
        reason = _fold_reason(producer, x, graph)
        if reason is None:
            _fold_into(producer, s, t)
            producer.outputs[producer.outputs.index(x)] = y
            node.inputs.clear()
            node.outputs.clear()
            report.changed.append(f"folded {label} into {node_label(producer)}")
            continue
        rank = len(x.shape) if x.shape is not None else 4
        channel = (-1, *[1] * (rank - 2))
        scaled = gs.Variable(f"{y.name}__bn_scaled", dtype=np.float32)
        base = node.name or y.name
        mul = gs.Node(
            "Mul",
            f"{base}__scale",
            inputs=[x, gs.Constant(f"{base}__scale", s.astype(np.float32).reshape(channel))],
            outputs=[scaled],
        )
        add = gs.Node(
            "Add",
            f"{base}__shift",
            inputs=[scaled, gs.Constant(f"{base}__shift", t.astype(np.float32).reshape(channel))],
            outputs=[y],
        )
        _insert_before(graph, node, mul, add)
        node.inputs.clear()
        node.outputs.clear()
        report.changed.append(f"kept {label} as a per-channel affine Mul+Add")
        report.skipped.append(f"{label} not folded: {reason}")
    graph.cleanup()


# --- gates ---------------------------------------------------------------------------------------


def _scalar(tensor: gs.Tensor) -> float | None:
    value = constant_value(tensor)
    if value is None:
        return None
    value = np.asarray(value)
    if value.size != 1:
        return None
    return float(value.reshape(()))


def _bounds(node: gs.Node) -> tuple[gs.Tensor, float, float] | None:
    """``(data input, lo, hi)`` of a node that clamps its input to constant bounds, else None."""
    if node.op == "Relu":
        return node.inputs[0], 0.0, INF
    if node.op == "Clip":
        lo = node.attrs.get("min", -INF)
        hi = node.attrs.get("max", INF)
        for index in (1, 2):
            if index < len(node.inputs) and node.inputs[index].name:
                value = _scalar(node.inputs[index])
                if value is None:
                    return None
                if index == 1:
                    lo = value
                else:
                    hi = value
        return node.inputs[0], float(lo), float(hi)
    if node.op in ("Max", "Min") and len(node.inputs) == 2:
        data = [t for t in node.inputs if is_data(t)]
        consts = [_scalar(t) for t in node.inputs if not is_data(t)]
        if len(data) != 1 or len(consts) != 1 or consts[0] is None:
            return None
        if node.op == "Max":
            return data[0], consts[0], INF
        return data[0], -INF, consts[0]
    return None


def may_become_gate(node: gs.Node, data: list[bool]) -> bool:
    """Whether :func:`canonicalize_gates` may turn a Max/Min into a gate, given which of its
    inputs carry data: it does for one data input and one constant scalar (which constant
    folding may have to compute first)."""
    return node.op in ("Max", "Min") and len(data) == 2 and sum(data) == 1


def _make_clamp(graph: gs.Graph, anchor: gs.Node, x: gs.Tensor, lo: float, hi: float) -> gs.Node:
    y = anchor.outputs[0]
    name = anchor.name or y.name
    if lo == 0.0 and hi == INF:
        return gs.Node("Relu", name, inputs=[x], outputs=[y])
    bounds = [
        gs.Constant(f"{name}__lo", np.asarray(lo, np.float32)),
        gs.Constant(f"{name}__hi", np.asarray(hi, np.float32)),
    ]
    return gs.Node("Clip", name, inputs=[x, *bounds], outputs=[y])


@rewrite_pass("canonicalize_gates")
def canonicalize_gates(graph: gs.Graph, report: PassReport) -> None:
    """Write every gate in one form: Relu, Clip(x, lo, hi) with constant bounds, LeakyRelu, PRelu.

    ReLU6 arrives as Clip with attribute or input bounds, or as a Min/Max pair; Max(x, 0) is a
    ReLU. A Min/Max pair is fused into one Clip (one gate, named by the outer node's output).
    """
    for node in list(graph.nodes):
        label = node_label(node)
        if node.op == "LeakyRelu" and rule_for(node.op).params(node)["alpha"] == 0.0:
            _replace(graph, node, _make_clamp(graph, node, node.inputs[0], 0.0, INF))
            report.changed.append(f"{label} with alpha 0 -> Relu")
            continue
        bounds = _bounds(node)
        if bounds is None:
            if node.op in ("Clip", "Max", "Min"):
                report.skipped.append(f"{node_label(node)}: bounds are not constant scalars")
            continue
        x, lo, hi = bounds
        fused = None
        inner = x.inputs[0] if x.inputs else None
        if inner is not None and (node.op in ("Max", "Min") or inner.op in ("Max", "Min")):
            inner_bounds = _bounds(inner)
            if inner_bounds is not None:
                if consumers(x, graph) > 1:
                    report.skipped.append(
                        f"{node_label(node)} not fused with {node_label(inner)}: "
                        f"{x.name!r} feeds other nodes too"
                    )
                else:
                    x2, lo2, hi2 = inner_bounds
                    if max(lo, lo2) <= min(hi, hi2):
                        fused = inner
                        x, lo, hi = x2, max(lo, lo2), min(hi, hi2)
        if fused is None and node.op in ("Relu",):
            continue
        if fused is None and node.op == "Clip" and _is_canonical_clip(node, lo, hi):
            continue
        new = _make_clamp(graph, node, x, lo, hi)
        if fused is not None:
            report.changed.append(
                f"fused {node_label(fused)} and {label} into {new.op}({lo:g}, {hi:g})"
            )
            fused.inputs.clear()
            fused.outputs.clear()
        else:
            report.changed.append(f"{label} -> {new.op}({lo:g}, {hi:g})")
        _replace(graph, node, new)
    graph.cleanup()


def _is_canonical_clip(node: gs.Node, lo: float, hi: float) -> bool:
    if lo == 0.0 and hi == INF:
        return False  # it is a ReLU
    return (
        "min" not in node.attrs
        and "max" not in node.attrs
        and len(node.inputs) == 3
        and all(isinstance(t, gs.Constant) for t in node.inputs[1:])
    )


def _replace(graph: gs.Graph, old: gs.Node, new: gs.Node) -> None:
    _insert_before(graph, old, new)
    old.inputs.clear()
    old.outputs.clear()


# --- the batch axis ------------------------------------------------------------------------------


@rewrite_pass("free_batch")
def free_batch(graph: gs.Graph, report: PassReport) -> None:
    """Let the batch size vary: exporters (dynamo, or folded shape chains) hard-code batch 1."""
    for tensor in [*graph.inputs, *graph.outputs]:
        if tensor.shape:
            tensor.shape = ["N", *tensor.shape[1:]]
    for node in graph.nodes:
        if node.op == "Reshape":
            shape = constant_value(node.inputs[1])
            if shape is None or shape.size == 0 or int(shape[0]) != 1:
                continue
            new_shape = _batch_free_shape(node, np.asarray(shape, np.int64))
            if new_shape is None:
                report.skipped.append(f"{node_label(node)}: cannot tell which dim is the batch")
                continue
            node.inputs[1] = gs.Constant(f"{node.inputs[1].name}__nbatch", new_shape)
            report.changed.append(
                f"{node_label(node)}: target shape {shape.tolist()} -> {new_shape.tolist()}"
            )
        elif node.op == "Resize" and len(node.inputs) > 3 and node.inputs[3].name:
            sizes = constant_value(node.inputs[3])
            in_shape = node.inputs[0].shape
            if sizes is None or in_shape is None or not all(isinstance(d, int) for d in in_shape):
                continue
            scales = (np.asarray(sizes, np.float64) / np.asarray(in_shape)).astype(np.float32)
            scales[0] = 1.0
            node.inputs[2] = gs.Constant(f"{node.name or node.outputs[0].name}__scales", scales)
            node.inputs[3] = gs.Variable.empty()
            report.changed.append(f"{node_label(node)}: fixed sizes -> scales {scales.tolist()}")
    # Intermediate shapes were inferred at batch 1; forget them, shape inference runs again.
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor not in graph.inputs + graph.outputs:
            tensor.shape = None


def _batch_free_shape(node: gs.Node, shape: np.ndarray) -> np.ndarray | None:
    """A Reshape target equal to ``shape`` at batch 1 that follows the input's batch size.

    With the inferred (batch-1) output shape, write every other dim explicitly and let the batch
    be the one inferred dim (-1): this works whatever ``allowzero`` says (dynamo sets it to 1).
    """
    out = node.outputs[0].shape
    if out is not None and len(out) == len(shape) and all(isinstance(d, int) for d in out[1:]):
        return np.array([-1, *out[1:]], dtype=np.int64)
    if not node.attrs.get("allowzero", 0):
        return np.array([0, *shape[1:]], dtype=np.int64)  # 0 copies the input's batch size
    if -1 not in shape[1:].tolist():
        return np.array([-1, *shape[1:]], dtype=np.int64)
    return None


# --- exposing what the backward walk reads -------------------------------------------------------


def argmax_name(tensor_name: str) -> str:
    """Name of the exposed argmax (Indices) output of the max-pool that writes ``tensor_name``."""
    return f"{tensor_name}__argmax"


@rewrite_pass("expose_outputs")
def expose_outputs(graph: gs.Graph, report: PassReport) -> None:
    """Make every gate output, and every max-pool's argmax, a graph output (and the input of
    LeakyRelu/PRelu gates, whose slope cannot be read off their output when a slope is < 0).

    One onnxruntime run then yields the logits and the whole activation pattern. GlobalMaxPool
    has no Indices output, so it becomes a MaxPool whose kernel covers the whole map.
    """
    logits = graph.outputs[0]
    exposed = []
    for node in graph.nodes:
        if node.op == "GlobalMaxPool":
            spatial = node.inputs[0].shape[2:] if node.inputs[0].shape else None
            if not spatial or not all(isinstance(d, int) for d in spatial):
                report.skipped.append(f"{node_label(node)}: spatial size unknown")
                continue
            node.op = "MaxPool"
            node.attrs = {"kernel_shape": list(spatial)}
            report.changed.append(f"{node_label(node)}: GlobalMaxPool -> MaxPool{list(spatial)}")
        if node.op == "MaxPool":
            if len(node.outputs) < 2 or not node.outputs[1].name:
                indices = gs.Variable(argmax_name(node.outputs[0].name), dtype=np.int64)
                if len(node.outputs) > 1:
                    node.outputs[1] = indices
                else:
                    node.outputs.append(indices)
            node.outputs[1].dtype = np.int64
            exposed.append(node.outputs[1])
        elif role(node.op) == "gate":
            node.outputs[0].dtype = node.outputs[0].dtype or np.float32
            exposed.append(node.outputs[0])
            if rule_for(node.op).reads_input and node.inputs[0] not in graph.inputs:
                # h = a·z can have either sign when a < 0: the slope needs z itself.
                node.inputs[0].dtype = node.inputs[0].dtype or np.float32
                exposed.append(node.inputs[0])
    new = [t for t in exposed if t is not logits and t not in graph.outputs]
    graph.outputs = [logits, *new]
    if new:
        report.changed.append(f"exposed {len(new)} tensor(s) as outputs")


#: The canonical pipeline, in order.
PIPELINE = (
    fold_constants,
    drop_identity,
    per_sample_gather,
    strip_softmax,
    flatten_logits,
    fold_batchnorm,
    canonicalize_gates,
    expose_outputs,  # before free_batch: GlobalMaxPool needs the inferred spatial size
    free_batch,
)
