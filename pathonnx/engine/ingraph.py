"""Explainers as one ONNX graph: the forward pass, the target and the backward walk in one file.

:func:`build_explainer` writes what the Python methods do between onnxruntime calls into one
graph, so that a plain onnxruntime session, with no pathonnx code, returns the prediction and
its explanation:

    inputs   <model input> (N, *input_shape)   the model's own input and name, batch dynamic
             target (N,) int64                 optional; left out (or empty), the argmax
    outputs  logits (N, K)                     the model's logits at x
             attribution (N, *input_shape)     the method's map for the target
             W (N, *input_shape), b (N,)       pathway methods: the pathway's linear model
             units_kept (N, G) int64           pathway methods: units kept per selected gate
             mask:<gate> (N, *gate) bool       pathway methods, when asked: the masks

The graph is assembled from the pieces the Python methods run one by one: the canonical
forward pass, stages of the adjoint walk (:func:`~pathonnx.engine.adjoint.build_adjoint`, cut
where a method acts on the cotangent at a gate) and the small graphs of
:mod:`pathonnx.graph.choice` and :mod:`pathonnx.graph.noise`. Each piece is inlined as it is
(:meth:`_Builder.inline`), so the exported graph computes the same floats as pathonnx does.

**The target.** ``target`` is optional by being an initializer as well as an input, an empty
int64 tensor (:func:`pathonnx.graph.with_default`); onnxruntime lists it among a session's
overridable initializers rather than its inputs, and feeds it by name. In the graph,
``If(Size(target) == 0)`` takes ``ArgMax(logits)`` or the target as fed, and a Reshape to (N,)
makes a target of any other length an error at run time rather than a broadcast. The seed is
``OneHot(target, K)``: as in OneHot, a target in [-K, 0) counts from the end, and one outside
[-K, K) gets a zero row, hence a zero attribution (pathonnx's Python API refuses both).

**Many points per sample** (integrated gradients, SmoothGrad: a :class:`Recipe` with
``alphas``) are one batch: the points are ``[x, p_1, ..., p_m]`` stacked copy-major (row
``j·N + i``, the order of :mod:`pathonnx.methods.baselines`), ``p_j = α_j·x`` or, with
``noise``, ``x + stdev·ε_j``. The first block is x itself: its logits are the output and give
the argmax, and its seed rows are zero. The attribution is ``Σ_j w_j ∂y/∂x(p_j)`` (times x for
integrated gradients), summed in float32 (Python sums in float64).

**Pathways.** :class:`Critical` (NeuronMCT) walks the target's row down with a cut after every
gate, ranks all units together (``network_top_graph``, its ``k`` fixed by the model's unit
count), and walks again through the chosen units for W^p, b^p. :class:`Pathwise` carries R
cotangent rows per sample (all K classes, or the top ``classes`` logits and the target) down
to each selected gate, scores and chooses there (``importance_graph``, ``choose_graph``), and
below the last selected gate walks the target's row only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedModelError
from ..graph import Canonical, Emitter, at_opset, with_default, with_metadata
from ..graph.choice import choose_graph, gradcam_graph, importance_graph, network_top_graph
from ..graph.noise import normal_rows
from ..graph.weights import export_graph, import_graph, stub_key
from ..ops import GRADIENT, Backward
from .adjoint import ADJOINT_OPSET, build_adjoint

#: The explainer's own input and outputs, beside the model's input.
TARGET, LOGITS, ATTRIBUTION = "target", "logits", "attribution"
W, B, UNITS_KEPT = "W", "b", "units_kept"
OWN = (TARGET, LOGITS, ATTRIBUTION, W, B, UNITS_KEPT)
#: Metadata key of a pathway explainer: the gates of units_kept's columns (JSON list).
GATES_KEY = "pathonnx.export.gates"
#: Prefix of the tensors the explainer adds, and of model tensors renamed out of their way.
PREFIX = "explainer/"
#: ONNX element types (TensorProto.FLOAT, INT64) for Cast.
_FLOAT, _INT64 = 1, 7


class _Emitter(Emitter):
    """An emitter whose names all start with :data:`PREFIX`, apart from the model's own."""

    def fresh(self, hint: str) -> str:
        return super().fresh(PREFIX + hint)


# -- recipes: what an exported explainer computes ------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """The gradient family: what an exported explainer computes from the target's gradient.

    ``backward``: how ReLU gates pass cotangents back (:mod:`pathonnx.ops.backward`).
    ``times_input``: the map is ``x ⊙ g`` rather than ``g``. ``alphas`` and ``weights``: many
    points per sample, ``g = Σ_j weights[j] · ∂y/∂x(p_j)``, ``p_j = alphas[j]·x`` (empty: one
    walk at x), or with ``noise = (stdev, seed)``, ``p_j = x + stdev·ε_j`` (SmoothGrad's
    noise, :mod:`pathonnx.graph.noise`).
    """

    backward: Backward = GRADIENT
    times_input: bool = False
    alphas: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()
    noise: tuple[float, int] | None = None

    @property
    def copies(self) -> int:
        """Rows per sample in the walk: x itself, then one per point of the path."""
        return 1 + len(self.alphas)

    def emit(self, b: _Builder) -> dict:
        x = b.points(self)
        logits = b.logits_at_x(self.copies)
        target = b.target(logits)
        seed = b.seed_rows(target, self.copies)
        cts, _ = b.walk({"seed": seed}, None, 0, backward=self.backward)
        return {LOGITS: logits, ATTRIBUTION: b.attribution(x, cts["grad"], self)}


@dataclass(frozen=True)
class GradCam:
    """Grad-CAM at ``gate`` (a spatial gate's name): ``Σ_c mean(∂y/∂A_c)·A_c``, no final ReLU,
    upsampled (nearest, Captum's) to the input and the same on every channel."""

    gate: str

    def emit(self, b: _Builder) -> dict:
        x, logits = b.x, b.logits_model
        target = b.target(logits)
        index = [g.name for g in b.graph.gates].index(self.gate)
        cts = b.gate_walk(b.onehot(target), upto=len(b.graph.gates) - index)
        h = b.made[self.gate]
        (cam,) = b.inline(gradcam_graph(), {"h": h, "g": cts[self.gate]}, ["cam"])
        spatial = b.graph.gates[index].shape[1:]
        size = b.shape[1:]
        for axis, (inside, out) in enumerate(zip(spatial, size)):
            nearest = np.arange(out) * inside // out  # as Captum's LayerAttribution.interpolate
            cam = b.em.op("Gather", [cam, b.em.const(nearest.astype(np.int64), "nearest")],
                          {"axis": 1 + axis}, hint="upsampled")  # fmt: skip
        channels = b.em.op("Unsqueeze", [cam, b.em.ints([1])], hint="channel")
        full = b.em.op("Concat", [b.em.leading(x, "n"), b.em.ints(b.shape)], {"axis": 0},
                       dtype=np.int64)  # fmt: skip
        return {LOGITS: logits, ATTRIBUTION: b.em.op("Expand", [channels, full], hint="cam")}


@dataclass(frozen=True)
class Critical:
    """NeuronMCT (Khakzar et al., CVPR 2021): every unit scored ``|h ⊙ ∂y/∂h|``, all gates
    ranked together, the units above the ``sparsity`` percentile kept; the map is W^p."""

    sparsity: float
    rank: int
    """How many of all the units rank at or above the percentile (``percentile_rank``)."""

    def emit(self, b: _Builder) -> dict:
        logits = b.logits_model
        target = b.target(logits)
        gates = b.graph.gates
        seed = b.onehot(target)
        cts = b.gate_walk(seed, upto=len(gates))
        feeds = {f"h{i}": b.made[g.name] for i, g in enumerate(gates)}
        feeds.update({f"g{i}": cts[g.name] for i, g in enumerate(gates)})
        feeds["k"] = b.em.ints([self.rank], "rank")
        names = [f"{kind}{i}" for kind in ("m", "kept") for i in range(len(gates))]
        found = dict(zip(names, b.inline(network_top_graph(len(gates), True), feeds, names)))
        masks = {g.name: found[f"m{i}"] for i, g in enumerate(gates)}
        b.masks = masks
        walked, bias = b.walk({"seed": seed}, None, 0, masks=masks)
        kept = [found[f"kept{i}"] for i in range(len(gates))]
        return b.pathway_outputs(logits, walked["grad"], bias, kept, times_input=False)


@dataclass(frozen=True)
class Pathwise:
    """Pathwise explanation (arXiv:2506.18037, Algorithm 1) at the ``depth`` top gates, with
    ``widths`` (units kept at most, per selected gate from the top), ``alpha`` (None: 1/R for
    the R classes of the softmax) and ``classes`` (None: all K; else the top ``classes``
    logits and the target). The map is W^p ⊙ x."""

    depth: int
    widths: tuple[int, ...]
    alpha: float | None
    classes: int | None

    def rows(self, k: int) -> int:
        """Cotangent rows per sample: all K classes, or the top ``classes`` and the target."""
        return k if self.classes is None or self.classes >= k else self.classes + 1

    def emit(self, b: _Builder) -> dict:
        em, gates = b.em, b.graph.gates
        logits = b.logits_model
        target = b.target(logits)
        seed, pick, valid, alpha, rows = self._rows(b, logits, target)
        cuts = b.graph.gate_cuts
        upstream, start, masks, bias, kept = {"seed": seed}, None, {}, None, []
        last = len(gates) - self.depth
        for width, index in zip(self.widths, range(len(gates) - 1, last - 1, -1)):
            gate = gates[index]
            upstream, part = b.walk(upstream, start, cuts[index], masks=masks, single_row=False)
            bias = part if bias is None else em.op("Add", [bias, part], hint="bias")
            start = cuts[index]
            feeds = {"h": b.made[gate.name], "ct": upstream[f"ct:{gate.name}"], "pick": pick}
            if valid is not None:
                feeds["valid"] = valid
            state = b.inline(importance_graph(True, valid is not None, rows), feeds,
                             ["top", "total", "mine"])  # fmt: skip
            feeds = dict(zip(("top", "total", "mine"), state), h=b.made[gate.name], alpha=alpha)
            limited = width < gate.units
            if limited:
                feeds["width"] = em.ints([width], "width")
            mask, count, _ = b.inline(choose_graph(limited), feeds, ["mask", "kept", "dead"])
            masks[gate.name] = mask
            kept.append(count)
        b.masks = masks
        # below the last selected gate only the target's row matters (Python's target_to_input)
        n = em.leading(b.x, "n")
        chosen = em.op("Add", [em.op("Mul", [self._range(em, n), em.ints([rows])],
                                     dtype=np.int64), b.row], dtype=np.int64)  # fmt: skip
        single = {name: em.op("Gather", [value, chosen], {"axis": 0}, hint="target_row")
                  for name, value in upstream.items()}  # fmt: skip
        walked, part = b.walk(single, start, 0, masks=masks)
        total = em.op("Add", [em.op("Gather", [bias, chosen], {"axis": 0}), part], hint="b_p")
        return b.pathway_outputs(logits, walked["grad"], total, kept, times_input=True)

    @staticmethod
    def _range(em: Emitter, n):
        return em.op("Range", [em.scalar(np.int64(0)),
                               em.op("Squeeze", [n, em.ints([0])], dtype=np.int64),
                               em.scalar(np.int64(1))], dtype=np.int64)  # fmt: skip

    def _rows(self, b: _Builder, logits, target):
        """The sweep's rows: seed (N·R, K), the target's row one-hot ``pick`` (N, R) bool,
        ``valid`` (N, R) bool or None, ``alpha`` (N or 1, 1) float32, and R (static); sets
        ``b.row`` (N,) int64, the target's row (Python's ``_rows``)."""
        em, k = b.em, b.k
        if self.classes is None or self.classes >= k:
            rows = k
            eye = em.const(np.eye(k, dtype=np.float32)[None], "classes")
            shape = em.op("Concat", [em.leading(logits, "n"), em.ints([k, k])], {"axis": 0},
                          dtype=np.int64)  # fmt: skip
            seed = em.reshape(em.op("Expand", [eye, shape]), [-1, k], "seed")
            b.row, valid = target, None
            alpha = em.const(np.full((1, 1), 1.0 / k if self.alpha is None else self.alpha,
                                     np.float32), "alpha")  # fmt: skip
        else:
            rows = self.classes + 1
            _, order = em.op("TopK", [logits, em.ints([self.classes])],
                             {"axis": 1, "largest": 1, "sorted": 1}, outputs=2)  # fmt: skip
            order.dtype = np.int64
            column = em.op("Unsqueeze", [target, em.ints([1])], dtype=np.int64)
            chosen = em.op("Concat", [order, column], {"axis": 1}, dtype=np.int64)  # (N, R)
            same = em.op("Equal", [order, column], dtype=bool)
            same_f = em.op("Cast", [same], {"to": _FLOAT})
            inside = em.op("ReduceMax", [same_f], {"axes": [1], "keepdims": 1})  # (N, 1)
            absent = em.op("Less", [inside, em.const(np.float32(0.5))], dtype=bool)
            ones = em.const(np.ones((1, self.classes), bool), "top_valid")
            shape = em.op("Concat", [em.leading(logits, "n"), em.ints([self.classes])],
                          {"axis": 0}, dtype=np.int64)  # fmt: skip
            valid = em.op("Concat", [em.op("Expand", [ones, shape], dtype=bool), absent],
                          {"axis": 1}, dtype=bool)  # fmt: skip
            position = em.op("ArgMax", [same_f], {"axis": 1, "keepdims": 0}, dtype=np.int64)
            b.row = em.op("Where", [em.op("Squeeze", [absent, em.ints([1])], dtype=bool),
                                    em.const(np.int64(self.classes), dtype=np.int64),
                                    position], dtype=np.int64)  # fmt: skip
            values = em.const(np.array([0.0, 1.0], np.float32), "onehot_values")
            onehot = em.op("OneHot", [chosen, em.scalar(np.int64(k), "k"), values],
                           {"axis": -1})  # fmt: skip
            weight = em.op("Unsqueeze", [em.op("Cast", [valid], {"to": _FLOAT}),
                                         em.ints([2])])  # fmt: skip
            seed = em.reshape(em.op("Mul", [onehot, weight]), [-1, k], "seed")
            if self.alpha is None:
                count = em.op("ReduceSum", [em.op("Cast", [valid], {"to": 1}), em.ints([1])],
                              {"keepdims": 1})  # fmt: skip
                alpha = em.op("Div", [em.const(np.float32(1)), count], hint="alpha")
            else:
                alpha = em.const(np.full((1, 1), self.alpha, np.float32), "alpha")
        values = em.const(np.array([0.0, 1.0], np.float32), "pick_values")
        pick_f = em.op("OneHot", [b.row, em.scalar(np.int64(rows), "r"), values], {"axis": -1})
        pick = em.op("Greater", [pick_f, em.const(np.float32(0.5))], dtype=bool, hint="pick")
        return seed, pick, valid, alpha, rows


# -- the builder --------------------------------------------------------------------------------


class _Builder:
    """The explainer under construction: the canonical forward pass, and what is added to it."""

    def __init__(self, graph: Canonical):
        self.graph = graph
        self.forward = import_graph(graph.proto)
        self.x = self.x_model = self.forward.inputs[0]
        if self.x.name in OWN:
            raise UnsupportedModelError(
                f"{graph.source}: the model's input is named {self.x.name!r}, a name the "
                f"exported graph's own target input and outputs take; rename the model's input"
            )
        _free_names(self.forward, set(OWN))
        self.opset = max(self.forward.opset, ADJOINT_OPSET)
        self.em = _Emitter(self.opset)
        self.nodes: list[gs.Node] = []
        self.made = {t.name: t for node in self.forward.nodes for t in node.outputs}
        self.made[self.x.name] = self.x
        self.producer = {t.name: node for node in self.forward.nodes for t in node.outputs}
        #: Constants by content: a piece's weights are the forward pass's own tensors, and
        #: its small constants one copy shared by all pieces.
        self.weights = {_content(t): t for t in self.forward.tensors().values()
                        if isinstance(t, gs.Constant)}  # fmt: skip
        self.shape = list(graph.input_shape)
        self.k = graph.num_outputs
        self.logits_model = self.forward.outputs[0]
        self.row = None
        #: A pathway method's masks, gate name -> (N, *gate) bool, in the order of units_kept.
        self.masks: dict = {}
        self._pieces = 0

    # -- inlining ------------------------------------------------------------------------------

    def inline(self, proto, feeds: dict, outputs: list[str]) -> list:
        """Add the nodes of ``proto`` (a pathonnx graph, converted to the explainer's opset),
        its inputs taken from ``feeds`` (name -> tensor), the model's pattern (``h:``, ``z:``,
        ``argmax:``) or, for a ``mask:`` input not fed, a constant True; returns its
        ``outputs``. Its weights are the model's own tensors, not copies."""
        piece = import_graph(at_opset(proto, self.opset))
        self._pieces += 1
        tag = f"{PREFIX}{self._pieces}/"
        found = {t.name: t for t in piece.outputs}
        bound = {t.name: self._source(t, feeds) for t in piece.inputs}
        for tensor in piece.tensors().values():
            if tensor.name not in bound:
                tensor.name = f"{tag}{tensor.name}"
        for node in piece.nodes:
            node.name = f"{tag}{node.name}"
            for i, tensor in enumerate(node.inputs):
                if tensor.name in bound:
                    node.inputs[i] = bound[tensor.name]
                elif isinstance(tensor, gs.Constant):
                    node.inputs[i] = self.weights.setdefault(_content(tensor), tensor)
        self.nodes.extend(piece.nodes)
        return [found[name] for name in outputs]

    def _source(self, tensor: gs.Variable, feeds: dict):
        name = tensor.name
        if name in feeds:
            return feeds[name]
        kind, _, of = name.partition(":")
        if kind == "h":
            return self.made[of]
        if kind == "z":
            return self.producer[of].inputs[0]
        if kind == "argmax":
            return self.producer[of].outputs[1]
        if kind == "mask":
            return self.em.const(np.ones((1,) * len(tensor.shape), bool), "whole")
        raise KeyError(f"no value for the input {name!r} of an inlined graph")

    def walk(self, upstream: dict, start: int | None, stop: int, backward=GRADIENT,
             masks: dict | None = None, single_row: bool = True):  # fmt: skip
        """One stage of the adjoint walk over nodes ``[stop, start)``, as
        :meth:`LinearEngine.stage` runs it: ``upstream`` the cotangents at ``start`` (``seed``
        for the logits, else ``ct:<name>``), ``masks`` gate name -> bool tensor. Returns the
        cotangents at ``stop`` (``ct:<name>``, ``grad`` at the input) and the bias."""
        proto = build_adjoint(self.graph.proto, single_row, True, start, stop, backward)
        inputs = {i.name for i in proto.graph.input}
        feeds = {}
        for key, value in upstream.items():
            name = key if key == "seed" else key.replace("ct:", "upstream:", 1)
            if name not in inputs and "seed" in inputs:
                name = "seed"  # a cut at the top: the logits are a gate's output
            feeds[name] = value
        feeds.update({f"mask:{name}": mask for name, mask in (masks or {}).items()})
        names = [o.name for o in proto.graph.output]
        found = dict(zip(names, self.inline(proto, feeds, names)))
        bias = found.pop("bias")
        return found, bias

    def gate_walk(self, seed, upto: int) -> dict:
        """The cotangents at the ``upto`` top gates' outputs (gate name -> tensor), walked
        with a cut after each (Python's ``gate_cotangents``)."""
        cotangents, start, out = {"seed": seed}, None, {}
        pairs = list(zip(reversed(self.graph.gates), reversed(self.graph.gate_cuts)))[:upto]
        for gate, cut in pairs:
            cotangents, _ = self.walk(cotangents, start, cut)
            out[gate.name], start = cotangents[f"ct:{gate.name}"], cut
        return out

    # -- the common parts ----------------------------------------------------------------------

    def points(self, recipe: Recipe):
        """The explainer's input x. With many points per sample, the forward pass's input
        becomes the stacked points ``[x, p_1, ..., p_m]``; otherwise it is x itself."""
        if recipe.copies == 1:
            return self.x
        em, shape = self.em, self.shape
        x = gs.Variable(self.x_model.name, np.float32, ["N", *shape])
        self.x_model.name = f"{PREFIX}points"
        stacked = em.op("Unsqueeze", [x, em.ints([0])], hint="stack")  # (1, N, ...)
        if recipe.noise is None:
            scales = em.const(_column([1.0, *recipe.alphas], len(shape) + 2), "alphas")
            scaled = em.op("Mul", [stacked, scales], hint="scaled")  # (copies, N, ...)
        else:
            stdev, seed = recipe.noise
            elements = int(np.prod(shape))
            n = em.leading(x, "n")
            copy = em.op("Range", [em.scalar(np.int64(0)),
                                   em.scalar(np.int64(recipe.copies - 1)),
                                   em.scalar(np.int64(1))], dtype=np.int64)  # fmt: skip
            noise = normal_rows(em, copy, em.ints([seed], "seed"), elements)  # (m, E)
            noise = em.op("Mul", [noise, em.const(np.float32(stdev), "stdev")], hint="noise")
            noise = em.op("Unsqueeze", [em.reshape(noise, [-1, *shape]), em.ints([1])])
            noisy = em.op("Add", [stacked, noise], hint="noisy")  # (m, N, ...)
            wide = em.op("Concat", [em.ints([recipe.copies - 1]), n, em.ints(shape)],
                         {"axis": 0}, dtype=np.int64)  # fmt: skip
            noisy = em.op("Expand", [noisy, wide], hint="noisy_all")
            scaled = em.op("Concat", [stacked, noisy], {"axis": 0}, hint="points")
        _connect(em, em.reshape(scaled, [-1, *shape], "points"), self.x_model)
        self.x = x
        return x

    def logits_at_x(self, copies: int):
        """The logits of x: the first block of the points' logits (all of them for one walk)."""
        if copies == 1:
            return self.logits_model
        em = self.em
        blocks = em.reshape(self.logits_model, [copies, -1, self.k], "logit_blocks")
        return em.op("Gather", [blocks, em.scalar(np.int64(0), "first")], {"axis": 0},
                     hint="logits_x")  # fmt: skip

    def target(self, logits):
        """The target (N,) int64: the input ``target`` where fed with N entries, the argmax of
        ``logits`` where empty; any other length fails in the Reshape."""
        em = self.em
        given = em.input(TARGET, np.int64, ["N"])
        count = em.op("Size", [given], hint="target_size", dtype=np.int64)
        empty = em.op("Equal", [count, em.scalar(np.int64(0), "zero")],
                      hint="no_target", dtype=np.bool_)  # fmt: skip
        argmax = gs.Variable(f"{PREFIX}argmax", np.int64, ["N"])
        then = gs.Graph(nodes=[gs.Node("ArgMax", f"{PREFIX}argmax", {"axis": 1, "keepdims": 0},
                                       [logits], [argmax])],
                        outputs=[argmax], name="prediction")  # fmt: skip
        fed = gs.Variable(f"{PREFIX}fed", np.int64, ["T"])
        other = gs.Graph(nodes=[gs.Node("Identity", f"{PREFIX}fed", {}, [given], [fed])],
                         outputs=[fed], name="given")  # fmt: skip
        chosen = em.op("If", [empty], {"then_branch": then, "else_branch": other},
                       hint="chosen", dtype=np.int64)  # fmt: skip
        return em.op("Reshape", [chosen, em.leading(logits, "n")],
                     hint="target", dtype=np.int64)  # fmt: skip

    def onehot(self, target):
        values = self.em.const(np.array([0.0, 1.0], np.float32), "onehot_values")
        return self.em.op("OneHot", [target, self.em.scalar(np.int64(self.k), "k"), values],
                          {"axis": -1}, hint="onehot")  # fmt: skip

    def seed_rows(self, target, copies: int):
        """Cotangent rows at the logits: one-hot targets, zero for the block at x of a path."""
        onehot = self.onehot(target)
        if copies == 1:
            return onehot
        em = self.em
        use = em.const(_column([0.0] + [1.0] * (copies - 1), 3), "seeded")
        stacked = em.op("Unsqueeze", [onehot, em.ints([0])], hint="seed_stack")
        rows = em.op("Mul", [stacked, use], hint="seed_blocks")
        return em.reshape(rows, [-1, self.k], "seed")

    def attribution(self, x, grad, recipe: Recipe):
        """The map: the gradient (or the points' weighted sum of gradients), times x if asked."""
        em, shape = self.em, self.shape
        if recipe.copies > 1:
            blocks = em.reshape(grad, [recipe.copies, -1, *shape], "grad_blocks")
            weights = em.const(_column([0.0, *recipe.weights], len(shape) + 2), "weights")
            weighted = em.op("Mul", [blocks, weights], hint="weighted")
            grad = em.op("ReduceSum", [weighted, em.ints([0])], {"keepdims": 0},
                         hint="integral")  # fmt: skip
        if recipe.times_input:
            grad = em.op("Mul", [x, grad], hint="times_input")
        return grad

    def pathway_outputs(self, logits, grad, bias, kept: list, times_input: bool) -> dict:
        em = self.em
        counts = [em.op("Unsqueeze", [c, em.ints([1])]) for c in kept]
        joined = counts[0] if len(counts) == 1 else em.op("Concat", counts, {"axis": 1})
        units = em.op("Cast", [joined], {"to": _INT64}, dtype=np.int64)
        attribution = em.op("Mul", [self.x, grad], hint="product") if times_input else grad
        return {LOGITS: logits, ATTRIBUTION: attribution, W: grad, B: bias, UNITS_KEPT: units}


def build_explainer(graph: Canonical, recipe, metadata: dict[str, str], masks: bool = False):
    """The explainer of ``graph`` (a canonical model) by ``recipe`` (a :class:`Recipe`,
    :class:`GradCam`, :class:`Critical` or :class:`Pathwise`), as one self-contained
    ModelProto (weights inside) whose metadata_props are ``metadata`` (see the module
    docstring for its inputs and outputs). A pathway method's graph also records in
    :data:`GATES_KEY` the gates of ``units_kept``'s columns, and with ``masks`` returns each
    gate's mask as ``mask:<gate>`` (N, *gate) bool."""
    b = _Builder(graph)
    found = recipe.emit(b)
    shapes = {LOGITS: ["N", b.k], ATTRIBUTION: ["N", *b.shape], W: ["N", *b.shape], B: ["N"],
              UNITS_KEPT: ["N", len(b.masks)]}  # fmt: skip
    dtypes = {UNITS_KEPT: np.int64}
    outputs = [_named(b.em, value, name, shapes[name], dtypes.get(name, np.float32))
               for name, value in found.items()]  # fmt: skip
    if b.masks:
        metadata = {**metadata, GATES_KEY: json.dumps(list(b.masks))}
    if masks and b.masks:
        shape_of = {g.name: list(g.shape) for g in graph.gates}
        outputs += [_named(b.em, mask, f"mask:{name}", ["N", *shape_of[name]], bool)
                    for name, mask in b.masks.items()]  # fmt: skip
    inputs = [b.x, b.em.inputs[TARGET]]
    explainer = gs.Graph(nodes=[*b.forward.nodes, *b.nodes, *b.em.nodes], inputs=inputs,
                         outputs=outputs, opset=b.opset, name="pathonnx_explainer")  # fmt: skip
    explainer.cleanup().toposort()
    proto = export_graph(explainer)
    # the model's IR version raised to what opset 17 needs (8), not the newest the onnx package
    # writes: a runtime older than that package (onnxruntime-node 1.30: IR ≤ 13) loads the file
    proto.ir_version = max(8, min(graph.proto.ir_version, proto.ir_version))
    proto = with_default(proto, TARGET, np.zeros(0, np.int64))
    return graph.full(with_metadata(proto, metadata))


def _content(tensor: gs.Constant) -> tuple:
    """What identifies a constant's value: a stubbed weight's registry key (its content
    hash), else its dtype, shape and bytes."""
    lazy = getattr(tensor, "_values", None)
    inner = getattr(lazy, "_stub", None)
    if inner is not None and stub_key(inner) is not None:
        return ("stub", stub_key(inner))
    values = np.ascontiguousarray(tensor.values)
    return (values.dtype.str, values.shape, hashlib.sha256(values.tobytes()).hexdigest())


def _free_names(graph: gs.Graph, names: set[str]) -> None:
    """Rename the graph's tensors called one of ``names`` (e.g. a model output named
    "logits") or starting with :data:`PREFIX`, so that the explainer's own can take them."""
    for tensor in graph.tensors().values():
        if tensor is graph.inputs[0]:
            continue  # the model's input keeps its name: callers feed it by that name
        if tensor.name in names or tensor.name.startswith(PREFIX):
            tensor.name = f"{PREFIX}model/{tensor.name}"


def _connect(em: Emitter, value, tensor: gs.Variable) -> None:
    """Make ``value`` flow into ``tensor``, an input of the fused graph that is computed here."""
    em.nodes.append(gs.Node("Identity", em.fresh(f"feed_{tensor.name}"), {}, [value], [tensor]))


def _named(em: Emitter, value, name: str, shape: list, dtype) -> gs.Variable:
    out = em.op("Identity", [value], hint=name, dtype=dtype)
    out.name, out.shape = name, shape
    return out


def _column(values, rank: int, dtype=np.float32) -> np.ndarray:
    """``values`` (R,) shaped (R, 1, ..., 1) to scale blocks of rank ``rank``."""
    return np.asarray(values, dtype).reshape(-1, *[1] * (rank - 1))
