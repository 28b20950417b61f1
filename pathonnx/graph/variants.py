"""Graphs derived from the canonical model, for the engine's sessions and the checks.

Every function here takes ModelProtos and returns a new one (never edits its input). Above this
stage, graphs are opaque values handed to onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper, version_converter

from ..ops import rule_for, sample_shape
from .weights import export_graph, import_graph, values


def copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def live_tensors(graph: gs.Graph, cut: int) -> list[gs.Tensor]:
    """Data tensors that cross ``cut`` (a position in node order): made before it (or the input)
    and read at or after it (or the logits, at the end). A stage of the backward walk carries
    exactly their cotangents from one cut to the next."""
    x, logits = graph.inputs[0], graph.outputs[0]
    made = [x] + [t for node in graph.nodes[:cut] for t in node.outputs if t.name]
    read = {t.name for node in graph.nodes[cut:] for t in node.inputs if isinstance(t, gs.Variable)}
    if cut == len(graph.nodes):
        read.add(logits.name)
    return [t for t in made if t.name in read]


def logits_only(canonical: onnx.ModelProto) -> onnx.ModelProto:
    """The canonical model with only the logits output and no unused max-pool Indices."""
    proto = copy(canonical)
    del proto.graph.output[1:]
    read = {name for node in proto.graph.node for name in node.input}
    for node in proto.graph.node:
        if node.op_type == "MaxPool" and len(node.output) == 2 and node.output[1] not in read:
            del node.output[1]
    return proto


def with_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of the model that also outputs the named intermediate (float) tensors."""
    proto = copy(proto)
    have = {o.name for o in proto.graph.output}
    for name in names:
        if name not in have:
            proto.graph.output.add(name=name).type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return proto


def suffix(canonical: onnx.ModelProto, cut: int) -> onnx.ModelProto:
    """The network above ``cut``: its inputs are the tensors live there, its outputs the logits
    and the frozen pattern (gate outputs, LeakyRelu/PRelu inputs, argmaxes) made above it."""
    graph = import_graph(canonical)
    live = live_tensors(graph, cut)
    for tensor in live:
        tensor.shape = ["N", *sample_shape(tensor)]
        tensor.dtype = np.float32
    above = {t.name for node in graph.nodes[cut:] for t in node.outputs}
    outputs = [graph.outputs[0]] + [t for t in graph.outputs[1:] if t.name in above]
    part = gs.Graph(nodes=graph.nodes[cut:], inputs=live, outputs=outputs, opset=graph.opset)
    proto = export_graph(part)
    proto.ir_version = canonical.ir_version
    return proto


def scaled(canonical: onnx.ModelProto, gates: list[str]) -> onnx.ModelProto:
    """The network with each gate's output multiplied by a float input ``scale:<gate>``
    (broadcastable to (N, *gate.shape)) before anything reads it: the forward pass of pruning
    baselines, whose masks and gates change the activation pattern above them. It still outputs
    the pattern: each gate's own output (before its scale), the argmaxes, and the gate inputs
    (the scaled tensor, ``<gate>__scaled``, where a gate reads another gate)."""
    graph = import_graph(canonical)
    names, scaled_outputs = set(gates), {}
    for node in list(graph.nodes):
        out = node.outputs[0]
        if out.name not in names:
            continue
        rank = len(sample_shape(out)) + 1
        scale = gs.Variable(f"scale:{out.name}", np.float32, [f"s{i}" for i in range(rank)])
        graph.inputs.append(scale)
        scaled_outputs[out.name] = gs.Variable(f"{out.name}__scaled", np.float32, out.shape)
        readers = [n for n in graph.nodes if out in n.inputs]
        graph.nodes.append(gs.Node("Mul", f"{out.name}__scale", inputs=[out, scale],
                                   outputs=[scaled_outputs[out.name]]))  # fmt: skip
        for reader in readers:
            reader.inputs = [scaled_outputs[out.name] if t is out else t for t in reader.inputs]
    read = [n.inputs[0] for n in graph.nodes if getattr(rule_for(n.op), "reads_input", False)]
    graph.outputs += [t for t in scaled_outputs.values() if t in read]
    graph.toposort()
    proto = export_graph(graph)
    proto.ir_version = canonical.ir_version
    return proto


def with_output(original: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, str]:
    """The original model with the tensor ``name`` added as an output when its graph has it:
    (model, "logits"); else (a copy, "output"), to compare by its own output."""
    proto = copy(original)
    outputs = [o.name for o in proto.graph.output]
    if name in outputs:
        return proto, "logits"
    produced = {out for node in proto.graph.node for out in node.output}
    if name not in produced:
        return proto, "output"
    info = proto.graph.output.add()
    info.name = name
    info.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return proto, "logits"


def readout(proto: onnx.ModelProto, source: str, shape: tuple[int, ...], axis: int,
            weights: np.ndarray, name: str) -> onnx.ModelProto:  # fmt: skip
    """A copy of the model whose first output is ``name`` (N, C): for each channel c of the
    tensor ``source`` (per sample ``shape``, channels on ``axis``, flat or not),
    ``Σ_p weights[p] · source[c at p]``, positions p over the other axes in order.

    Linear nodes read ``source``: a Reshape to (N, A, C, B) (A, B: the sizes before and after
    the channel axis), a Transpose and Reshape to (N, C, A·B), a MatMul by the weights (A·B, 1)
    and a Flatten. The adjoint seeds ``weights`` on the channel's elements: exactly the linear
    combination. (A MatMul, not a ReduceSum: onnxruntime's sums over a middle axis can depend
    on the batch in the last bit.)"""
    out = copy(proto)
    before = int(np.prod(shape[:axis], dtype=np.int64))
    channels = int(shape[axis])
    after = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    w = np.asarray(weights, np.float32).reshape(before * after, 1)
    graph = out.graph
    graph.initializer.extend([
        numpy_helper.from_array(np.array([-1, before, channels, after], np.int64),
                                f"{name}:split_shape"),
        numpy_helper.from_array(np.array([-1, channels, before * after], np.int64),
                                f"{name}:rows_shape"),
        numpy_helper.from_array(w, f"{name}:weights"),
    ])  # fmt: skip
    graph.node.extend([
        helper.make_node("Reshape", [source, f"{name}:split_shape"], [f"{name}:split"],
                         f"{name}:split"),
        helper.make_node("Transpose", [f"{name}:split"], [f"{name}:channels_first"],
                         f"{name}:channels_first", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", [f"{name}:channels_first", f"{name}:rows_shape"],
                         [f"{name}:rows"], f"{name}:rows"),
        helper.make_node("MatMul", [f"{name}:rows", f"{name}:weights"], [f"{name}:summed"],
                         f"{name}:summed"),
        helper.make_node("Flatten", [f"{name}:summed"], [name], name, axis=1),
    ])  # fmt: skip
    info = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["N", channels])
    rest = list(graph.output)[1:]
    del graph.output[:]
    graph.output.extend([info, *rest])
    return out


#: The op types whose constant inputs are a layer's parameters (the MPRT cascade's layers).
PARAMETRIC = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def parametric_layers(proto: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """(node name, its initializer names) of the weighted layers, from the output backwards."""
    inits = {i.name for i in proto.graph.initializer}
    layers = []
    for index, node in enumerate(proto.graph.node):
        if node.op_type in PARAMETRIC:
            names = [t for t in node.input[1:] if t in inits]
            if names:
                layers.append((node.name or f"{node.op_type}_{index}", names))
    return layers[::-1]


def randomized(proto: onnx.ModelProto, upto: int, seed: int = 0) -> onnx.ModelProto:
    """A copy of ``proto`` with the top ``upto`` weighted layers' weights and biases drawn
    from N(0, 0.01) (σ = 0.1), as in Khakzar et al. 2021, App. C.1. Deterministic per seed."""
    out = copy(proto)
    chosen = {n for _, names in parametric_layers(proto)[:upto] for n in names}
    rng = np.random.default_rng(seed)
    for init in out.graph.initializer:
        if init.name in chosen:
            old = values(init)
            fresh = rng.normal(0.0, 0.1, old.shape).astype(old.dtype)
            init.CopyFrom(numpy_helper.from_array(fresh, init.name))
    return out


def with_metadata(proto: onnx.ModelProto, entries: dict[str, str]) -> onnx.ModelProto:
    """A copy whose metadata_props are the old ones updated with ``entries``."""
    proto = copy(proto)
    merged = {p.key: p.value for p in proto.metadata_props}
    merged.update(entries)
    del proto.metadata_props[:]
    for key, value in merged.items():
        proto.metadata_props.add(key=key, value=str(value))
    return proto


def with_default(proto: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    """A copy in which the graph input ``name`` has the default ``value``: an initializer of
    the same name, which a caller may feed or leave out (ONNX IR version 4 and later; in
    onnxruntime it is an *overridable initializer*, listed apart from the required inputs)."""
    if name not in {i.name for i in proto.graph.input}:
        raise ValueError(f"{name!r} is not an input of the graph")
    proto = copy(proto)
    proto.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return proto


def at_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``proto`` with its default domain at ``opset`` (onnx's version converter: e.g.
    ReduceMax's axes become an input at 18), or ``proto`` itself when it is there already."""
    if proto.opset_import[0].version == opset:
        return proto
    return version_converter.convert_version(proto, opset)
