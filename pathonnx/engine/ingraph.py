"""Explainers as one ONNX graph: the forward pass, the target and the backward walk in one file.

:func:`build_explainer` starts from the fused forward + adjoint graph (:func:`build_fused`: one
cotangent row per sample, no masks, the method's ReLU backward rule) and wires around it what
the Python methods do in numpy, so that a plain onnxruntime session, with no pathonnx code,
returns the prediction and its explanation:

    inputs   <model input> (N, *input_shape)   the model's own input and name, batch dynamic
             target (N,) int64                 optional; left out (or empty), the argmax
    outputs  logits (N, K)                     the model's logits at x
             attribution (N, *input_shape)     the method's map for the target

**The target.** ``target`` is optional by being an initializer as well as an input, an empty
int64 tensor (:func:`pathonnx.graph.with_default`); onnxruntime lists it among a session's
overridable initializers rather than its inputs, and feeds it by name. In the graph,
``If(Size(target) == 0)`` takes ``ArgMax(logits)`` or the target as fed, and a Reshape to (N,)
makes a target of any other length an error at run time rather than a broadcast. The seed is
``OneHot(target, K)``: as in OneHot, a target in [-K, 0) counts from the end, and one outside
[-K, K) gets a zero row, hence a zero attribution (pathonnx's Python API refuses both).

**Integrated gradients** unroll their path as one batch (a :class:`Recipe` with ``alphas``):
the points are ``[x, α_1·x, ..., α_m·x]`` stacked copy-major (row ``j·N + i``, the order of
:mod:`pathonnx.methods.baselines`). The first block is x itself: its logits are the output and
give the argmax, and its seed rows are zero. The attribution is ``x · Σ_j w_j ∂y/∂x(α_j·x)``,
the quadrature of the Python method, summed in float32 (Python sums in float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedModelError
from ..graph import Canonical, Emitter, with_default, with_metadata
from ..graph.weights import export_graph, import_graph
from ..ops import GRADIENT, Backward
from .adjoint import build_fused

#: The explainer's own input and outputs, beside the model's input.
TARGET, LOGITS, ATTRIBUTION = "target", "logits", "attribution"
#: Prefix of the tensors the explainer adds, and of model tensors renamed out of their way.
PREFIX = "explainer/"


class _Emitter(Emitter):
    """An emitter whose names all start with :data:`PREFIX`, apart from the model's own."""

    def fresh(self, hint: str) -> str:
        return super().fresh(PREFIX + hint)


@dataclass(frozen=True)
class Recipe:
    """What an exported explainer computes from the gradient of the target logit.

    ``backward``: how ReLU gates pass cotangents back (:mod:`pathonnx.ops.backward`).
    ``times_input``: the map is ``x ⊙ g`` rather than ``g``. ``alphas`` and ``weights``: a
    path integral, ``g = Σ_j weights[j] · ∂y/∂x(alphas[j]·x)`` (empty: one walk at x).
    """

    backward: Backward = GRADIENT
    times_input: bool = False
    alphas: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()

    @property
    def copies(self) -> int:
        """Rows per sample in the walk: x itself, then one per point of the path."""
        return 1 + len(self.alphas)


def build_explainer(graph: Canonical, recipe: Recipe, metadata: dict[str, str]):
    """The explainer of ``graph`` (a canonical model) by ``recipe``, as one self-contained
    ModelProto (weights inside) whose metadata_props are ``metadata`` (see the module
    docstring for its inputs and outputs)."""
    fused_proto = build_fused(graph.proto, single_row=True, masked=False,
                              backward=recipe.backward)  # fmt: skip
    fused = import_graph(fused_proto)
    x_model = fused.inputs[0]
    (seed,) = [t for t in fused.inputs if t.name == "seed"]
    if x_model.name in (TARGET, LOGITS, ATTRIBUTION):
        raise UnsupportedModelError(
            f"{graph.source}: the model's input is named {x_model.name!r}, a name the exported "
            f"graph's own target input and outputs take; rename the model's input"
        )
    _free_names(fused, {TARGET, LOGITS, ATTRIBUTION})
    em = _Emitter(fused.opset)
    shape = list(graph.input_shape)
    x = _model_input(em, x_model, recipe, shape)
    logits = _logits_at_x(em, fused.outputs[0], recipe, graph.num_outputs)
    target = _target(em, logits)
    _connect(em, _seed(em, target, recipe, graph.num_outputs), seed)
    attribution = _attribution(em, x, fused.outputs[1], recipe, shape)
    outputs = [_named(em, logits, LOGITS, ["N", graph.num_outputs]),
               _named(em, attribution, ATTRIBUTION, ["N", *shape])]  # fmt: skip
    inputs = [x, em.inputs[TARGET]]
    explainer = gs.Graph(nodes=[*fused.nodes, *em.nodes], inputs=inputs, outputs=outputs,
                         opset=fused.opset, name="pathonnx_explainer")  # fmt: skip
    explainer.cleanup().toposort()
    proto = export_graph(explainer)
    # The fused graph's IR version (the model's, at least 8), not the newest that the onnx
    # package writes: a runtime older than that package (onnxruntime-node) still loads the file.
    proto.ir_version = fused_proto.ir_version
    proto = with_default(proto, TARGET, np.zeros(0, np.int64))
    return graph.full(with_metadata(proto, metadata))


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


def _named(em: Emitter, value, name: str, shape: list) -> gs.Variable:
    out = em.op("Identity", [value], hint="{name}")
    out.name, out.shape = name, shape
    return out


def _scalar(em: Emitter, value, hint: str) -> gs.Constant:
    """A 0-d constant (:meth:`Emitter.const` makes arrays of at least one dimension)."""
    return gs.Constant(em.fresh(f"{hint}__k"), np.array(value))


def _column(values, rank: int, dtype=np.float32) -> np.ndarray:
    """``values`` (R,) shaped (R, 1, ..., 1) to scale blocks of rank ``rank``."""
    return np.asarray(values, dtype).reshape(-1, *[1] * (rank - 1))


def _model_input(em: Emitter, x_model: gs.Variable, recipe: Recipe, shape: list) -> gs.Variable:
    """The explainer's input x. With a path integral, the fused graph's input becomes the
    stacked points ``[x, α_1·x, ..., α_m·x]``; otherwise it is x itself."""
    if recipe.copies == 1:
        return x_model
    x = gs.Variable(x_model.name, np.float32, ["N", *shape])
    x_model.name = f"{PREFIX}points"
    scales = em.const(_column([1.0, *recipe.alphas], len(shape) + 2), "alphas")
    stacked = em.op("Unsqueeze", [x, em.ints([0])], hint="stack")
    scaled = em.op("Mul", [stacked, scales], hint="scaled")  # (copies, N, ...)
    _connect(em, em.reshape(scaled, [-1, *shape], "points"), x_model)
    return x


def _logits_at_x(em: Emitter, logits, recipe: Recipe, k: int):
    """The logits of x: the first block of the points' logits (all of them for one walk)."""
    if recipe.copies == 1:
        return logits
    blocks = em.reshape(logits, [recipe.copies, -1, k], "logit_blocks")
    return em.op("Gather", [blocks, _scalar(em, np.int64(0), "first")], {"axis": 0},
                 hint="logits_x")  # fmt: skip


def _target(em: Emitter, logits):
    """The target (N,) int64: the input ``target`` where fed with N entries, the argmax of
    ``logits`` where empty; any other length fails in the Reshape."""
    given = em.input(TARGET, np.int64, ["N"])
    count = em.op("Size", [given], hint="target_size", dtype=np.int64)
    empty = em.op("Equal", [count, _scalar(em, np.int64(0), "zero")],
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


def _seed(em: Emitter, target, recipe: Recipe, k: int):
    """Cotangent rows at the logits: one-hot targets, zero for the block at x of a path."""
    values = em.const(np.array([0.0, 1.0], np.float32), "onehot_values")
    onehot = em.op("OneHot", [target, _scalar(em, np.int64(k), "k"), values],
                   {"axis": -1}, hint="onehot")  # fmt: skip
    if recipe.copies == 1:
        return onehot
    use = em.const(_column([0.0] + [1.0] * len(recipe.alphas), 3), "seeded")
    stacked = em.op("Unsqueeze", [onehot, em.ints([0])], hint="seed_stack")
    rows = em.op("Mul", [stacked, use], hint="seed_blocks")
    return em.reshape(rows, [-1, k], "seed")


def _attribution(em: Emitter, x, grad, recipe: Recipe, shape: list):
    """The map: the gradient (or the path's weighted sum of gradients), times x if asked."""
    if recipe.copies > 1:
        blocks = em.reshape(grad, [recipe.copies, -1, *shape], "grad_blocks")
        weights = em.const(_column([0.0, *recipe.weights], len(shape) + 2), "weights")
        weighted = em.op("Mul", [blocks, weights], hint="weighted")
        grad = em.op("ReduceSum", [weighted, em.ints([0])], {"keepdims": 0},
                     hint="integral")  # fmt: skip
    if recipe.times_input:
        grad = em.op("Mul", [x, grad], hint="times_input")
    return grad
