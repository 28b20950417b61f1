"""Why a node cannot be explained, and what the refused nodes are together.

A node is outside the vocabulary when its op has no rule (:func:`reason_for` says why, e.g.
that Sigmoid is smooth), when its rule's :meth:`~pathonnx.ops.base.Rule.check` refuses it on
the canonical graph (:func:`offenders`), or, read off the graph alone before any pass runs,
when its rule's :meth:`~pathonnx.ops.base.Rule.data_reason` refuses which of its inputs carry
data (:func:`certain_reason`, for the early refusal of :mod:`pathonnx.graph.screen`).

Exporters write most activations as several nodes: SiLU as ``Mul(x, Sigmoid(x))``, GELU as
``Div, Erf, Add, Mul, Mul``, HardSwish as ``x * Clip(x + 3, 0, 6) / 6``. :class:`Refusal`
recognises such patterns among the refused nodes, names them, and groups the nodes into kinds
("SiLU at 49 places") for a one-line summary; the per-node list keeps every node.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from .base import registry

SMOOTH = "smooth, not piecewise linear"
PRODUCT = "a product of two data tensors, not piecewise linear"


@dataclass(frozen=True)
class Kind:
    """A named activation that exporters write as one op or as a pattern of several."""

    name: str
    formula: str
    why: str

    @property
    def label(self) -> str:
        return f"{self.name} ({self.formula})"


KINDS = {
    kind.name: kind
    for kind in (
        Kind("SiLU", "x·sigmoid(x)", SMOOTH),
        Kind("Swish", "x·sigmoid(βx)", SMOOTH),
        Kind("GELU", "x·Φ(x)", SMOOTH),
        Kind("Mish", "x·tanh(softplus(x))", SMOOTH),
        Kind("HardSwish", "x·hardsigmoid(x)", "quadratic between its kinks, not piecewise linear"),
        Kind("sigmoid gate", "x·sigmoid(g), as in squeeze-and-excitation", PRODUCT),
        Kind("hard-sigmoid gate", "x·hardsigmoid(g), as in squeeze-and-excitation", PRODUCT),
        Kind("self-gated product", "x·f(x)", PRODUCT),
    )
}

#: Ops that are one of the named activations by themselves (standard, and onnxruntime's
#: com.microsoft fusions).
_NAMED_OPS = {
    "HardSwish": "HardSwish",
    "Gelu": "GELU",
    "FastGelu": "GELU",
    "BiasGelu": "GELU",
    "QuickGelu": "GELU",
    "Mish": "Mish",
}

_SMOOTH_OPS = (
    "Sigmoid", "Tanh", "Erf", "Softplus", "Softsign", "Elu", "Selu", "Celu", "Exp", "Log",
    "Sqrt", "Reciprocal", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh",
    "Acosh", "Atanh",
)  # fmt: skip
_NORMALIZATIONS = (
    "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "MeanVarianceNormalization", "LpNormalization", "RMSNormalization",
)  # fmt: skip
_PIECEWISE_CONSTANT = ("Floor", "Ceil", "Round", "Sign")
_COMPARISONS = ("Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or")

#: Why an op without a rule cannot be explained (the rest: :func:`reason_for`'s default).
_NO_RULE: dict[str, str] = {
    "Pow": "a power of the data, not piecewise linear",
    "Softmax": "Softmax inside the network is smooth, not piecewise linear (only a trailing "
    "Softmax is removed)",
    "LogSoftmax": "LogSoftmax inside the network is smooth, not piecewise linear (only a "
    "trailing one is removed)",
    "LRN": "local response normalization divides by a power of a local sum of squares, not "
    "piecewise linear",
    "LpNormalization": "normalizes by the input's own norm, not piecewise linear",
    "Max": "Max of data tensors (only Max(x, constant) is a gate)",
    "Min": "Min of data tensors (only Min(x, constant) is a gate)",
    "Abs": "piecewise linear, but not a gate pathonnx knows (write it as Relu(x) + Relu(-x))",
    "ThresholdedRelu": "piecewise linear but discontinuous at alpha, not a gate pathonnx knows",
    "Where": "selects between tensors by a condition read from the data, not supported",
}
for _ops, _why in (
    (_SMOOTH_OPS, SMOOTH),
    (_NORMALIZATIONS, "normalizes by the input's own statistics, not piecewise linear"),
    (_PIECEWISE_CONSTANT, "piecewise constant: its jumps carry the decision, its gradient is 0"),
    (_COMPARISONS, "a comparison (boolean output), not a linear or piecewise-linear map"),
):
    for _op in _ops:
        _NO_RULE.setdefault(_op, _why)


def reason_for(node: gs.Node) -> str:
    """Why a node of an op without a rule cannot be explained."""
    kind = KINDS.get(_NAMED_OPS.get(node.op, ""))
    if kind is not None:
        return f"{kind.label}: {kind.why}"
    return _NO_RULE.get(node.op, f"{node.op} is not in pathonnx's vocabulary (it has no rule)")


def _standard(node: gs.Node) -> bool:
    return node.domain in ("", "ai.onnx", None)


def _custom(node: gs.Node) -> str:
    reason = f"custom op {node.domain}.{node.op}"
    kind = KINDS.get(_NAMED_OPS.get(node.op, ""))
    return f"{reason}: {kind.label}, {kind.why}" if kind else reason


def offenders(graph: gs.Graph) -> list[tuple[gs.Node, str]]:
    """Every node of a canonical graph that pathonnx cannot explain, with the reason."""
    found = []
    for node in graph.nodes:
        rule = registry().get(node.op) if _standard(node) else None
        if not _standard(node):
            reason = _custom(node)
        elif rule is None:
            reason = reason_for(node)
        else:
            reason = rule.check(node)
        if reason:
            found.append((node, reason))
    return found


def certain_reason(node: gs.Node, data: list[bool]) -> str | None:
    """Why a node cannot be explained whatever the passes do, when ``data[i]`` says whether its
    input ``i`` is computed from the model's input; None when the graph alone does not tell.
    (Ops that a pass may rewrite into the vocabulary are the caller's to leave out.)"""
    if not _standard(node):
        return _custom(node)
    rule = registry().get(node.op)
    if rule is None:
        return reason_for(node)
    return rule.data_reason(node, data)


# --- which values depend on the input ------------------------------------------------------------

#: Ops whose output depends on their input's shape, not on its values.
SHAPE_READERS = frozenset({"Shape", "Size", "EyeLike"})


def dependent_tensors(graph: gs.Graph) -> set[str]:
    """Names of the tensors whose values depend on the graph's inputs (not on its constants):
    constant folding can never turn them into constants. Nodes are in execution order."""
    dependent = {t.name for t in graph.inputs if isinstance(t, gs.Variable)}
    for node in graph.nodes:
        if node.op in SHAPE_READERS:
            continue
        if any(t.name in dependent for t in node.inputs if t.name):
            dependent.update(t.name for t in node.outputs if t.name)
    return dependent


def feeding_outputs(graph: gs.Graph) -> set[str]:
    """Names of the tensors whose values reach a graph output (not only through a Shape)."""
    live = {t.name for t in graph.outputs}
    for node in reversed(graph.nodes):
        if node.op in SHAPE_READERS or not any(t.name in live for t in node.outputs):
            continue
        live.update(t.name for t in node.inputs if t.name)
    return live


# --- patterns ------------------------------------------------------------------------------------

#: Ops an activation pattern is made of: elementwise, on data and constants.
_ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Neg", "Abs", "Identity", "Cast", "Sigmoid",
    "HardSigmoid", "Tanh", "Erf", "Softplus", "Softsign", "Exp", "Log", "Sqrt", "Reciprocal",
    "Clip", "Relu", "LeakyRelu", "Max", "Min", "Elu", "Selu", "Celu",
})  # fmt: skip
#: Ops that bound x from above too, as HardSwish's relu6(x + 3) / 6 does.
_CLAMPS = frozenset({"HardSigmoid", "Clip", "Min"})
#: Most nodes one pattern may hold (GELU's tanh form has 9).
_MOST = 24


@dataclass
class Match:
    """One place where a named activation was found: its last node and all of its nodes."""

    kind: Kind
    anchor: gs.Node
    nodes: list[gs.Node]


class _Patterns:
    """Recognises named activations in a graph, before or after constant folding: a tensor
    not computed from the input counts as a constant."""

    def __init__(self, graph: gs.Graph):
        self.dependent = dependent_tensors(graph)

    def data(self, tensor: gs.Tensor) -> bool:
        return bool(tensor.name) and tensor.name in self.dependent

    def root(self, tensor: gs.Tensor) -> gs.Tensor:
        """The tensor x that ``tensor`` scales (c·x, x·c, x / c), else ``tensor`` itself."""
        for _ in range(_MOST):
            node = tensor.inputs[0] if tensor.inputs else None
            if node is None or node.op not in ("Mul", "Div") or not _standard(node):
                return tensor
            data = [t for t in node.inputs if self.data(t)]
            if len(data) != 1 or (node.op == "Div" and node.inputs[0] is not data[0]):
                return tensor
            tensor = data[0]
        return tensor

    def branch(self, top: gs.Tensor, x: gs.Tensor) -> list[gs.Node] | None:
        """The nodes computing ``top`` elementwise from x (up to scalings) and constants;
        None when anything else flows in, or when x does not."""
        nodes, seen, stack, reached = [], set(), [top], False
        while stack:
            tensor = stack.pop()
            if not self.data(tensor):
                continue
            if self.root(tensor) is x:
                reached = True
                continue
            node = tensor.inputs[0] if tensor.inputs else None
            if node is None or node.op not in _ELEMENTWISE or not _standard(node):
                return None
            if id(node) in seen:
                continue
            seen.add(id(node))
            nodes.append(node)
            if len(nodes) > _MOST:
                return None
            stack.extend(t for t in node.inputs if t.name)
        return nodes if reached else None

    def product(self, node: gs.Node) -> Match | None:
        """A Mul of two data tensors that is a named activation: x·f(x), or x·sigmoid(g)."""
        if node.op != "Mul" or len(node.inputs) != 2 or not all(map(self.data, node.inputs)):
            return None
        a, b = node.inputs
        for x_side, f_side in ((a, b), (b, a)):
            x = self.root(x_side)
            nodes = self.branch(f_side, x)
            if nodes:
                return Match(self._self_gated(nodes, x), node, [*nodes, node])
        for side in (a, b):
            source = self.root(side)
            gate = source.inputs[0] if source.inputs else None
            if gate is not None and gate.op in ("Sigmoid", "HardSigmoid"):
                name = "sigmoid gate" if gate.op == "Sigmoid" else "hard-sigmoid gate"
                return Match(KINDS[name], node, [gate, node])
        return None

    @staticmethod
    def _self_gated(nodes: list[gs.Node], x: gs.Tensor) -> Kind:
        ops = {n.op for n in nodes}
        if "Erf" in ops:
            return KINDS["GELU"]
        if "Tanh" in ops:
            return KINDS["Mish" if "Softplus" in ops else "GELU"]  # GELU's tanh approximation
        if "Sigmoid" in ops:
            direct = any(n.op == "Sigmoid" and n.inputs[0] is x for n in nodes)
            return KINDS["SiLU" if direct else "Swish"]
        if ops & _CLAMPS:
            return KINDS["HardSwish"]
        return KINDS["self-gated product"]


# --- the refusal ---------------------------------------------------------------------------------


@dataclass
class Group:
    """The refused nodes of one kind: a named activation, else one op refused for one reason.
    ``count`` counts places (one per activation, whatever its number of nodes)."""

    label: str
    why: str
    count: int = 0
    example: str = ""
    nodes: list[str] = field(default_factory=list)
    name: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.name, "label": self.label, "why": self.why, "count": self.count,
                "example": self.example, "nodes": list(self.nodes)}  # fmt: skip

    def summary(self) -> str:
        return f"{self.label} ×{self.count} ({self.why}), e.g. node {self.example!r}"


def _name(node: gs.Node) -> str:
    return node.name or node.outputs[0].name


class Refusal:
    """The refused nodes of a graph, named and grouped.

    ``nodes``: every refused ``(node name, op type, reason)`` in execution order; a node that
    belongs to a named activation says so in its reason. ``groups``: the kinds, most frequent
    first. :meth:`message` is the one-line error.
    """

    #: Kinds named in the one-line message; the rest are counted.
    SHOWN = 6

    def __init__(self, graph: gs.Graph, found: Iterable[tuple[gs.Node, str]]):
        found = list(found)
        refused = {id(node) for node, _ in found}
        order = {id(node): i for i, node in enumerate(graph.nodes)}
        patterns = _Patterns(graph)
        claimed: dict[int, Match] = {}
        groups: dict = {}  # a kind's name, or (op, reason)
        # Outermost first: a GELU's last Mul claims the Muls of its cube before they are
        # looked at on their own. The example of a named kind is its first place.
        for node, _ in sorted(found, key=lambda pair: -order.get(id(pair[0]), 0)):
            if id(node) in claimed:
                continue
            match = patterns.product(node)
            if match is None and node.op in _NAMED_OPS:
                match = Match(KINDS[_NAMED_OPS[node.op]], node, [node])
            if match is None:
                continue
            kind = match.kind
            group = groups.setdefault(kind.name, Group(kind.label, kind.why, name=kind.name))
            group.count += 1
            group.example = _name(node)
            for member in match.nodes:
                if id(member) in refused:
                    claimed.setdefault(id(member), match)
        self.nodes: list[tuple[str, str, str]] = []
        first: dict[int, int] = {}  # the group's first node in execution order
        for node, reason in found:
            match = claimed.get(id(node))
            if match is not None:
                kind = match.kind
                group = groups[kind.name]
                if match.anchor is node:
                    reason = f"{kind.label}: {kind.why}"
                else:
                    end = f"{match.anchor.op} {_name(match.anchor)!r}"
                    reason = f"part of {kind.label} ending at {end}: {kind.why}"
            else:
                group = groups.setdefault((node.op, reason), Group(node.op, reason, name=node.op))
                group.count += 1
                group.example = group.example or _name(node)
            first.setdefault(id(group), len(self.nodes))
            group.nodes.append(_name(node))
            self.nodes.append((_name(node), node.op, reason))
        self.groups: list[Group] = sorted(groups.values(), key=lambda g: (-g.count, first[id(g)]))

    def __bool__(self) -> bool:
        return bool(self.nodes)

    def summary(self) -> str:
        shown = "; ".join(g.summary() for g in self.groups[: self.SHOWN])
        more = len(self.groups) - self.SHOWN
        if more > 0:
            shown += f"; and {more} more kind{'s' if more > 1 else ''}"
        count = len(self.groups)
        return f"{count} kind{'s' if count > 1 else ''} of operation cannot be explained: {shown}"

    def message(self, name: str) -> str:
        n = len(self.nodes)
        return (
            f"{name}: {self.summary()}; pathonnx explains piecewise-linear (ReLU-family) "
            f"networks ({n} node{'s' if n > 1 else ''} in all: `pathonnx check` lists them)"
        )
