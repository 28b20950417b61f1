"""The adjoint and frozen graphs: the network's linear model at x, written as ONNX graphs.

Frozen at x's pattern (docs/ARCHITECTURE.md, Semantics), the network is one affine map. Its
transpose is written as an ONNX graph, the *adjoint graph*, built once per model from the per-op
rules of :mod:`pathonnx.ops` and run by the same runtime as the forward pass (CUDA when
available). The builders read graphsurgeon's IR of the canonical model and return ModelProtos:

    inputs   seed (rows, K)                  cotangent rows at the logits, sample-major
             h:<gate>, z:<gate>              the gate's output / input at x (the pattern)
             mask:<gate>                     1 keeps a unit, 0 removes it (broadcastable)
             scale:<gate>                    or, in the scaled variant, a float per unit
             argmax:<pool>                   each max-pool's argmax at x
    outputs  grad (rows, *input_shape)       seedᵀ·W, through the kept units only
             bias (rows,)                    seedᵀ·b, every constant met on the way down

The bias is accumulated along the same masked walk: each constant c met at a tensor t (conv and
Gemm biases, folded BatchNorm shifts, affine constants, Clip saturation, non-zero pads) adds
⟨cotangent at t, c⟩. The *frozen graph* evaluates the frozen, masked map at any input; tests
use it as a second route to b (the map at 0).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..graph import Emitter, live_tensors
from ..graph.weights import export_graph, import_graph
from ..ops import GRADIENT, Backward, rule_for, sample_shape

ADJOINT_OPSET = 17  # ScatterElements with reduction="add" needs 16


class BuildContext:
    """What the op rules read while a graph is built: the emitter and the pattern inputs.

    ``single_row``: one cotangent row per sample (rows = N), so per-sample tensors multiply
    cotangents directly. ``backward``: how ReLU gates pass cotangents back
    (:mod:`pathonnx.ops.backward`; the gradient by default). ``masked``: every gate takes a mask
    input (else no gate does); ``scaled``: that input is a float scale per unit
    (``scale:<gate>``) instead of a boolean.
    ``maxunpool``: max-pools with disjoint windows may be transposed by MaxUnpool, which
    onnxruntime's CPU provider runs fast and its CUDA provider does not have.
    """

    def __init__(
        self,
        em: Emitter,
        single_row: bool = False,
        masked: bool = True,
        backward: Backward = GRADIENT,
        scaled: bool = False,
        maxunpool: bool = True,
    ):
        self.em = em
        self.single_row = single_row
        self.masked = masked or scaled
        self.backward = backward
        self.scaled = scaled
        self.maxunpool = maxunpool

    def _pattern(self, prefix: str, tensor: gs.Tensor, dtype=np.float32):
        return self.em.input(f"{prefix}:{tensor.name}", dtype, ["N", *sample_shape(tensor)])

    def activation(self, node: gs.Node):
        return self._pattern("h", node.outputs[0])

    def preactivation(self, node: gs.Node):
        return self.em.input(
            f"z:{node.outputs[0].name}", np.float32, ["N", *sample_shape(node.inputs[0])]
        )

    def mask(self, node: gs.Node):
        if not self.masked:
            return None
        rank = len(sample_shape(node.outputs[0])) + 1
        name = f"{'scale' if self.scaled else 'mask'}:{node.outputs[0].name}"
        dtype = np.float32 if self.scaled else np.bool_
        return self.em.input(name, dtype, [f"{name}_{i}" for i in range(rank)])

    def argmax(self, node: gs.Node):
        return self._pattern("argmax", node.outputs[0], np.int64)

    def rows_mul(self, ct, per_sample, shape: tuple[int, ...]):
        """``ct`` (N·R, *shape) times a per-sample tensor (N, *shape), broadcast over rows."""
        em = self.em
        if self.single_row:
            return em.op("Mul", [ct, per_sample], hint="gated")
        samples = em.leading(per_sample, "samples")
        view = em.op(
            "Concat", [samples, em.ints([-1, *shape])], {"axis": 0}, hint="rows_view",
            dtype=np.int64,
        )  # fmt: skip
        grouped = em.op("Reshape", [ct, view], hint="by_sample")
        spread = em.op("Unsqueeze", [per_sample, em.ints([1])], hint="per_row",
                       dtype=per_sample.dtype)  # fmt: skip
        product = em.op("Mul", [grouped, spread], hint="gated")
        return em.reshape(product, [-1, *shape], "gated")


def build_adjoint(
    canonical,
    single_row: bool = False,
    masked: bool = True,
    start: int | None = None,
    stop: int = 0,
    backward: Backward = GRADIENT,
    scaled: bool = False,
    maxunpool: bool = True,
):
    """The adjoint graph of a canonical model (see the module docstring), or one stage of it.

    Specialized variants: ``single_row`` for one cotangent row per sample (rows = N), and
    ``masked=False`` for the unmasked map (no mask inputs); each skips work the general graph does.
    ``scaled``: float ``scale:<gate>`` inputs multiply each gate instead of boolean masks.
    ``maxunpool=False`` keeps every max-pool's transpose in ScatterElements (for CUDA).
    ``backward`` changes what ReLU gates pass back (guided backprop, DeconvNet).

    Stages: the walk over nodes ``[stop, start)`` (positions in node order, default the whole
    graph) takes the cotangents ``upstream:<name>`` of the tensors live at ``start`` and returns
    those live at ``stop`` as ``ct:<name>``, plus the bias met on the way. A selection that
    depends on the cotangent at a gate (the pathwise method) runs between stages cut right after
    that gate. The whole walk
    names its input ``seed`` (the logits) and its output ``grad`` (the model input).
    """
    graph = import_graph(canonical)  # a fresh copy: the builder reads it, never edits
    start = len(graph.nodes) if start is None else start
    em = Emitter(ADJOINT_OPSET)
    cx = BuildContext(em, single_row, masked, backward, scaled, maxunpool)
    top, bottom = start == len(graph.nodes), stop == 0
    cotangents: dict[str, list] = {}
    for tensor in live_tensors(graph, start):
        name = "seed" if top else f"upstream:{tensor.name}"
        cotangents[tensor.name] = [em.input(name, np.float32, ["rows", *sample_shape(tensor)])]
    first = next(iter(em.inputs.values()))
    bias_terms = []
    for node in reversed(graph.nodes[stop:start]):
        ct = [em.add_all(cotangents.pop(t.name, [])) if t.name else None for t in node.outputs]
        if all(c is None for c in ct):
            continue  # nothing downstream of this node reaches the logits
        rule = rule_for(node.op)
        for tensor, grad in zip(node.inputs, rule.adjoint(node, ct, cx)):
            if grad is not None:
                cotangents.setdefault(tensor.name, []).append(grad)
        bias_terms.append(rule.bias(node, ct, cx))
    rows = em.leading(first, "rows")
    outputs = []
    for tensor in live_tensors(graph, stop):
        shape = sample_shape(tensor)
        grad = em.add_all(cotangents.get(tensor.name, []))
        if grad is None:  # no path from the logits to this tensor
            size = em.op("Concat", [rows, em.ints(shape)], {"axis": 0}, hint="zeros_shape",
                         dtype=np.int64)  # fmt: skip
            grad = em.op("ConstantOfShape", [size], hint="no_path")
        out = em.op("Identity", [grad], hint="ct")
        out.name = "grad" if bottom else f"ct:{tensor.name}"
        outputs.append(out)
    bias = em.add_all(bias_terms)
    if bias is None:
        bias = em.op("ConstantOfShape", [rows], hint="no_bias")
    bias = em.op("Identity", [bias], hint="bias")
    bias.name = "bias"
    return em.graph([*outputs, bias], "pathonnx_adjoint")


def build_frozen(canonical):
    """The frozen, masked network as an ONNX graph: same inputs as the model plus the pattern.

    Every gate becomes ``z·slope·mask + offset·mask`` and every max-pool a gather at its frozen
    argmax; all other nodes are kept. Its output is the logits of the frozen map.
    """
    graph = import_graph(canonical)
    opset = max(graph.opset, 13)
    em = Emitter(opset)
    cx = BuildContext(em)
    x = graph.inputs[0]
    mapping = {x.name: em.input(x.name, np.float32, ["N", *sample_shape(x)])}
    for node in graph.nodes:
        rule = rule_for(node.op)
        inputs = [mapping.get(t.name, t) if t.name else t for t in node.inputs]
        if rule.role in ("gate", "selection"):
            outs = [rule.frozen(node, inputs[0], cx)]
        else:
            produced = em.op(node.op, inputs, node.attrs, hint=node.name or node.op,
                             outputs=len(node.outputs))  # fmt: skip
            outs = produced if isinstance(produced, list) else [produced]
        for tensor, new in zip(node.outputs, outs):
            mapping[tensor.name] = new
    logits = em.op("Identity", [mapping[graph.outputs[0].name]], hint="logits")
    logits.name = "logits"
    return em.graph([logits], "pathonnx_frozen")


def build_fused(
    canonical,
    single_row: bool = True,
    masked: bool = False,
    backward: Backward = GRADIENT,
    maxunpool: bool = True,
):
    """The forward pass and the adjoint walk as one graph: the pattern (gate outputs and
    inputs, max-pool argmaxes) flows from the one into the other inside onnxruntime, and never
    leaves the device. Inputs: the model's input, ``seed`` (rows, K) and, when ``masked``,
    ``mask:<gate>``; outputs: the logits, ``grad`` (rows, *input_shape) and ``bias`` (rows,).
    One call gives the linear model at x (``single_row``: one row per sample)."""
    forward = import_graph(canonical)
    adjoint = import_graph(build_adjoint(canonical, single_row, masked, backward=backward,
                                           maxunpool=maxunpool))  # fmt: skip
    made = {t.name: t for node in forward.nodes for t in node.outputs}
    made[forward.inputs[0].name] = forward.inputs[0]
    producer = {t.name: node for node in forward.nodes for t in node.outputs}
    pattern, kept = {}, []
    for tensor in adjoint.inputs:
        kind, _, name = tensor.name.partition(":")
        if kind == "h":
            pattern[tensor.name] = made[name]
        elif kind == "z":
            pattern[tensor.name] = producer[name].inputs[0]
        elif kind == "argmax":
            pattern[tensor.name] = producer[name].outputs[1]
        else:  # seed, masks
            kept.append(tensor)
    for node in adjoint.nodes:
        node.name = f"adjoint/{node.name}"
        for i, tensor in enumerate(node.inputs):
            if tensor.name in pattern:
                node.inputs[i] = pattern[tensor.name]
    outputs = [forward.outputs[0], *adjoint.outputs]  # logits, grad, bias
    own = {id(t) for t in forward.tensors().values()}
    for tensor in adjoint.tensors().values():
        if id(tensor) not in own and tensor not in kept and tensor not in adjoint.outputs:
            tensor.name = f"adjoint/{tensor.name}"  # apart from the forward's names
    fused = gs.Graph(nodes=[*forward.nodes, *adjoint.nodes], inputs=[forward.inputs[0], *kept],
                     outputs=outputs, opset=max(forward.opset, ADJOINT_OPSET),
                     name="pathonnx_fused")  # fmt: skip
    fused.cleanup()
    proto = export_graph(fused)
    proto.ir_version = max(8, min(canonical.ir_version, proto.ir_version))
    return proto
