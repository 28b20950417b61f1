"""Stage 4, the linear engine: the exact linear model ``W x + b`` of a network at x, by onnxruntime.

Frozen at x's pattern (DESIGN §3), the network is one affine map. Its transpose is written as an
ONNX graph, the *adjoint graph*, built once per model from the per-op rules of
:mod:`pathonnx.ops` and run by the same runtime as the forward pass (CUDA when available):

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

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .emit import Emitter
from .errors import InputError
from .forward import Forward, make_session
from .ops import rule_for
from .ops._base import sample_shape

ADJOINT_OPSET = 17  # ScatterElements with reduction="add" needs 16


class _Context:
    """What the op rules read while a graph is built: the emitter and the pattern inputs.

    ``single_row``: one cotangent row per sample (rows = N), so per-sample tensors multiply
    cotangents directly. ``masked``: every gate takes a mask input (else no gate does);
    ``scaled``: that input is a float scale per unit (``scale:<gate>``) instead of a boolean.
    ``maxunpool``: max-pools with disjoint windows may be transposed by MaxUnpool, which
    onnxruntime's CPU provider runs fast and its CUDA provider does not have.
    """

    def __init__(
        self,
        em: Emitter,
        single_row: bool = False,
        masked: bool = True,
        rule: str = "gradient",
        scaled: bool = False,
        maxunpool: bool = True,
    ):
        self.em = em
        self.single_row = single_row
        self.masked = masked or scaled
        self.rule = rule
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


def build_suffix(canonical: onnx.ModelProto, cut: int) -> onnx.ModelProto:
    """The network above ``cut``: its inputs are the tensors live there, its outputs the logits
    and the frozen pattern (gate outputs, LeakyRelu/PRelu inputs, argmaxes) made above it."""
    graph = gs.import_onnx(canonical)
    live = live_tensors(graph, cut)
    for tensor in live:
        tensor.shape = ["N", *sample_shape(tensor)]
        tensor.dtype = np.float32
    above = {t.name for node in graph.nodes[cut:] for t in node.outputs}
    outputs = [graph.outputs[0]] + [t for t in graph.outputs[1:] if t.name in above]
    suffix = gs.Graph(nodes=graph.nodes[cut:], inputs=live, outputs=outputs, opset=graph.opset)
    proto = gs.export_onnx(suffix, do_type_check=False)
    proto.ir_version = canonical.ir_version
    return proto


def with_outputs(canonical: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of the canonical model that also outputs the named intermediate tensors."""
    proto = onnx.ModelProto()
    proto.CopyFrom(canonical)
    have = {o.name for o in proto.graph.output}
    for name in names:
        if name not in have:
            proto.graph.output.add(name=name).type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return proto


def build_adjoint(
    canonical: onnx.ModelProto,
    single_row: bool = False,
    masked: bool = True,
    start: int | None = None,
    stop: int = 0,
    rule: str = "gradient",
    scaled: bool = False,
    maxunpool: bool = True,
) -> onnx.ModelProto:
    """The adjoint graph of a canonical model (see the module docstring), or one stage of it.

    Specialized variants: ``single_row`` for one cotangent row per sample (rows = N), and
    ``masked=False`` for the unmasked map (no mask inputs); each skips work the general graph does.
    ``scaled``: float ``scale:<gate>`` inputs multiply each gate instead of boolean masks.
    ``maxunpool=False`` keeps every max-pool's transpose in ScatterElements (for CUDA).

    Stages: the walk over nodes ``[stop, start)`` (positions in node order, default the whole
    graph) takes the cotangents ``upstream:<name>`` of the tensors live at ``start`` and returns
    those live at ``stop`` as ``ct:<name>``, plus the bias met on the way. A selection that
    depends on the cotangent at a gate (the pathwise method) runs between stages cut right after
    that gate. The whole walk
    names its input ``seed`` (the logits) and its output ``grad`` (the model input).
    """
    graph = gs.import_onnx(canonical)
    start = len(graph.nodes) if start is None else start
    em = Emitter(ADJOINT_OPSET)
    cx = _Context(em, single_row, masked, rule, scaled, maxunpool)
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


def build_scaled(canonical: onnx.ModelProto, gates: list[str]) -> onnx.ModelProto:
    """The network with each gate's output multiplied by a float input ``scale:<gate>``
    (broadcastable to (N, *gate.shape)) before anything reads it: the forward pass of pruning
    baselines, whose masks and gates change the activation pattern above them. It still outputs
    the pattern: each gate's own output (before its scale), the argmaxes, and the gate inputs
    (the scaled tensor where a gate reads another gate)."""
    graph = gs.import_onnx(canonical)
    names, scaled = set(gates), {}
    for node in list(graph.nodes):
        out = node.outputs[0]
        if out.name not in names:
            continue
        rank = len(sample_shape(out)) + 1
        scale = gs.Variable(f"scale:{out.name}", np.float32, [f"s{i}" for i in range(rank)])
        graph.inputs.append(scale)
        scaled[out.name] = gs.Variable(f"{out.name}__scaled", np.float32, out.shape)
        readers = [n for n in graph.nodes if out in n.inputs]
        graph.nodes.append(gs.Node("Mul", f"{out.name}__scale", inputs=[out, scale],
                                   outputs=[scaled[out.name]]))  # fmt: skip
        for reader in readers:
            reader.inputs = [scaled[out.name] if t is out else t for t in reader.inputs]
    pre = [n.inputs[0] for n in graph.nodes if n.op in ("LeakyRelu", "PRelu")]
    graph.outputs += [t for t in scaled.values() if t in pre]
    graph.toposort()
    proto = gs.export_onnx(graph, do_type_check=False)
    proto.ir_version = canonical.ir_version
    return proto


def build_frozen(canonical: onnx.ModelProto) -> onnx.ModelProto:
    """The frozen, masked network as an ONNX graph: same inputs as the model plus the pattern.

    Every gate becomes ``z·slope·mask + offset·mask`` and every max-pool a gather at its frozen
    argmax; all other nodes are kept. Its output is the logits of the frozen map.
    """
    graph = gs.import_onnx(canonical)
    opset = max(graph.opset, 13)
    em = Emitter(opset)
    cx = _Context(em)
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


@dataclass(frozen=True)
class Linear:
    """The linear model of the network at x for ``target``: ``W`` shaped like x, ``b`` (N,).

    With masks, these are the pathway's ``W^p`` and ``b^p``. ``logits`` are the model's own
    logits at x (N, K); ``(W * x).sum() + b`` equals ``logits[n, target[n]]`` without masks.
    """

    W: np.ndarray
    b: np.ndarray
    target: np.ndarray
    logits: np.ndarray

    def attribution(self, x: np.ndarray) -> np.ndarray:
        """``W ⊙ x`` (DESIGN §3)."""
        return self.W * x

    def output(self, x: np.ndarray) -> np.ndarray:
        """``Σ W ⊙ x + b`` per sample: the linear model evaluated at ``x``."""
        return (self.W * x).reshape(len(x), -1).sum(axis=1, dtype=np.float64) + self.b


def _scale_feed(scales: dict, info) -> np.ndarray:
    """The float32 feed of a ``scale:<gate>`` input: ``scales[gate]``, else 1 (broadcast)."""
    value = scales.get(info.name.partition(":")[2])
    return np.ascontiguousarray(np.ones((1,) * len(info.shape)) if value is None else value,
                                np.float32)  # fmt: skip


class LinearEngine:
    """Runs the adjoint and frozen graphs of one model; built once, sessions reused."""

    #: Bytes of activations a single adjoint call may hold; rows are chunked to stay below.
    memory_budget = 1 << 30
    #: Bytes of cotangent rows the pathwise sweep may keep between its stages (see
    #: :class:`pathonnx.pathways._RowStore`); beyond it, rows are recomputed instead of kept.
    store_budget = 2 << 30

    def __init__(self, model):
        self.model = model
        self._sessions: dict[tuple, tuple] = {}

    def _cached(self, key: tuple, build):
        """(graph, onnxruntime session) for ``key``, built by ``build()`` on first use."""
        if key not in self._sessions:
            proto = build()
            self._sessions[key] = (proto, make_session(proto, self.model.providers))
        return self._sessions[key]

    @property
    def adjoint_graph(self) -> onnx.ModelProto:
        """The general adjoint graph (any number of rows, every gate masked)."""
        return self._adjoint_session()[0]

    @property
    def frozen_graph(self) -> onnx.ModelProto:
        return self._frozen_session()[0]

    def _adjoint_session(
        self,
        single_row=False,
        masked=True,
        start=None,
        stop: int = 0,
        rule: str = "gradient",
        scaled: bool = False,
    ):
        canonical = self.model.canonical
        cpu = self.model.providers[0] == "CPUExecutionProvider"
        return self._cached(
            ("adjoint", single_row, masked, start, stop, rule, scaled),
            lambda: build_adjoint(canonical, single_row, masked, start, stop, rule, scaled, cpu),
        )

    def _frozen_session(self):
        return self._cached(("frozen",), lambda: build_frozen(self.model.canonical))

    def scaled_forward(self, x: np.ndarray, scales: dict[str, np.ndarray]) -> Forward:
        """The forward pass with each gate's output multiplied by ``scales[gate]`` (float,
        broadcastable to (N, *gate.shape); 1 where not given): logits and activation pattern of
        that network. The pattern's ``activations`` are the gate outputs before their scale."""
        model = self.model
        names = [g.name for g in model.gates]
        _, session = self._cached(("scaled",), lambda: build_scaled(model.canonical, names))
        x = np.ascontiguousarray(x, np.float32)
        feeds = {model.input_name: x}
        for info in session.get_inputs()[1:]:
            feeds[info.name] = _scale_feed(scales, info)
        outputs = [o.name for o in session.get_outputs()]
        values = dict(zip(outputs, session.run(outputs, feeds)))
        values[model.input_name] = x

        def read(name):  # a gate reading another gate reads it scaled
            return values.get(f"{name}__scaled", values.get(name))

        return model.pattern(x, values, read)

    @property
    def sparse_walker(self):
        """The sparse walk below narrow gates (:mod:`pathonnx.sparse`), built once."""
        if not hasattr(self, "_sparse"):
            from .sparse import SparseWalker

            self._sparse = SparseWalker(self.model)
        return self._sparse

    def suffix_session(self, cut: int):
        """Session of the network above ``cut`` (see :func:`build_suffix`), built once."""
        return self._cached(("suffix", cut), lambda: build_suffix(self.model.canonical, cut))[1]

    def values_session(self, names: tuple[str, ...]):
        """Session of the model that also outputs the named intermediate tensors, built once."""
        build = lambda: with_outputs(self.model.canonical, list(names))  # noqa: E731
        return self._cached(("values", names), build)[1]

    def gate_cuts(self) -> list[int]:
        """Positions in node order right after each gate: where a staged walk can stop to act
        on the cotangent at that gate's output (in the order of :attr:`Model.gates`)."""
        nodes = self.model.canonical.graph.node
        names = {g.name for g in self.model.gates}
        return [i + 1 for i, node in enumerate(nodes) if node.output[0] in names]

    def stage(
        self,
        fwd: Forward,
        cotangents: dict,
        start: int | None,
        stop: int,
        masks: dict | None = None,
        single_row: bool = False,
        scales: dict | None = None,
    ) -> tuple[dict, np.ndarray]:
        """Run the walk over nodes ``[stop, start)``: cotangents (rows, *shape) of the tensors live
        at ``start`` (the key ``"seed"`` for the logits) -> those live at ``stop`` (key ``"grad"``
        for the input), and the bias (rows,) met in between. ``scales`` (gate name -> float
        (N, *gate.shape)) multiply the gates instead of boolean ``masks``."""
        masks = self.masks(masks, len(fwd.x))
        scaled = scales is not None
        _, session = self._adjoint_session(single_row, True, start, stop, scaled=scaled)
        feeds = self._feeds(session, fwd, masks, scales)
        for key, value in cotangents.items():
            name = key if key == "seed" else key.replace("ct:", "upstream:", 1)
            feeds[name] = np.ascontiguousarray(value, np.float32)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, feeds)))
        return {k: v for k, v in values.items() if k != "bias"}, values["bias"]

    # -- inputs -----------------------------------------------------------------------------------

    def masks(self, masks: dict | None, n: int) -> dict[str, np.ndarray]:
        """Validate masks (gate name -> bool, shape gate.shape or (N, *gate.shape)) as float32."""
        gates = {g.name: g for g in self.model.gates}
        out = {}
        for name, mask in (masks or {}).items():
            if name not in gates:
                known = ", ".join(list(gates)[:8])
                raise InputError(f"mask for unknown gate {name!r}; gates are: {known}, ...")
            mask = np.asarray(mask)
            shape = gates[name].shape
            if mask.shape == shape:
                mask = mask[None]
            if mask.shape not in ((1, *shape), (n, *shape)):
                raise InputError(
                    f"mask for gate {name!r} has shape {mask.shape}; give {shape} or "
                    f"({n}, {', '.join(map(str, shape))})"
                )
            out[name] = mask.astype(bool)
        return out

    def _feeds(self, session, fwd: Forward, masks: dict[str, np.ndarray], scales=None) -> dict:
        feeds = {}
        for info in session.get_inputs():
            kind, _, name = info.name.partition(":")
            if kind == "h":
                feeds[info.name] = fwd.activations[name]
            elif kind == "z":
                feeds[info.name] = fwd.preactivations[name]
            elif kind == "argmax":
                feeds[info.name] = fwd.argmax[name]
            elif kind == "mask":
                rank = len(info.shape)
                feeds[info.name] = masks.get(name, np.ones((1,) * rank, bool))
            elif kind == "scale":
                feeds[info.name] = _scale_feed(scales or {}, info)
        return feeds

    # -- running ----------------------------------------------------------------------------------

    def rows_per_call(self, n: int) -> int:
        largest = max([int(np.prod(self.model.input_shape))] + [g.units for g in self.model.gates])
        # onnxruntime holds about a dozen tensors the size of the largest cotangent at once
        # (measured on VGG-16), 4 bytes each: 64 bytes per element and row.
        return max(1, int(self.memory_budget // (64 * largest * n)))

    def vjp(self, fwd: Forward, seeds: np.ndarray, masks: dict | None = None,
            rule: str = "gradient"):  # fmt: skip
        """Cotangent rows through the frozen, masked map.

        ``seeds`` (N, R, K) -> ``grad`` (N, R, *input_shape) = seedsᵀ·W, ``bias`` (N, R) =
        seedsᵀ·b. Rows are chunked to keep memory within :attr:`memory_budget`.
        """
        n, r, k = seeds.shape
        masks = self.masks(masks, n)
        chunk = self.rows_per_call(n)
        _, session = self._adjoint_session(r == 1 or chunk == 1, bool(masks), rule=rule)
        feeds = self._feeds(session, fwd, masks)
        grads, biases = [], []
        for start in range(0, r, chunk):
            part = np.ascontiguousarray(seeds[:, start : start + chunk], np.float32)
            feeds["seed"] = part.reshape(-1, k)
            grad, bias = session.run(["grad", "bias"], feeds)
            rows = part.shape[1]
            grads.append(grad.reshape(n, rows, *self.model.input_shape))
            biases.append(bias.reshape(n, rows))
        return np.concatenate(grads, axis=1), np.concatenate(biases, axis=1)

    def frozen_logits(self, fwd: Forward, x, masks: dict | None = None) -> np.ndarray:
        """Logits (N, K) of the map frozen at ``fwd``'s pattern (and masked), evaluated at ``x``."""
        x = np.ascontiguousarray(x, np.float32)
        masks = self.masks(masks, len(x))
        _, session = self._frozen_session()
        feeds = self._feeds(session, fwd, masks)
        feeds[self.model.input_name] = x
        return session.run(["logits"], feeds)[0]

    def linearize(self, x, target, masks: dict | None = None, fwd: Forward | None = None) -> Linear:
        fwd = fwd or self.model.forward(x)
        n = len(fwd.x)
        target = self.model.check_target(target, n)
        seeds = np.zeros((n, 1, self.model.num_outputs), np.float32)
        seeds[np.arange(n), 0, target] = 1.0
        grad, bias = self.vjp(fwd, seeds, masks)
        return Linear(
            W=grad[:, 0], b=bias[:, 0].astype(np.float64), target=target, logits=fwd.logits
        )
