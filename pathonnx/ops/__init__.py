"""Stage 1, ops: which ONNX ops pathonnx can explain, and how the linear engine treats each.

One rule per op type, registered once with ``@op_rule``. A rule holds everything about its op:
the forward vocabulary check, the gate parameters it decodes, its dense adjoint (transpose) and
bias contribution as ONNX nodes, the frozen form of gates and max-pools, and the sparse
transpose that walks a few nonzero entries in numpy. Adding an op is one class in one file.

Roles: ``gate`` (elementwise piecewise-linear; its elements are units), ``linear`` (linear or
affine in the data), ``selection`` (max pooling: frozen like a gate, but not units).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .backward import DECONVNET, GRADIENT, GUIDED, Backward
from .base import Rule, TooDense, op_rule, registry, sample_shape

# Importing the families registers their rules.
from . import gates, linear, pooling, shapes  # noqa: E402,F401  isort: skip

GATE_KINDS = {op: rule.kind for op, rule in registry().items() if rule.role == "gate"}

_NOT_VOCABULARY = {
    "Softmax": "Softmax inside the network (only a trailing Softmax is removed)",
    "LogSoftmax": "LogSoftmax inside the network (only a trailing one is removed)",
    "Max": "Max of data tensors (only Max(x, constant) is a gate)",
    "Min": "Min of data tensors (only Min(x, constant) is a gate)",
}


def rule_for(op_type: str) -> Rule | None:
    return registry().get(op_type)


def role(op_type: str) -> str | None:
    rule = rule_for(op_type)
    return rule.role if rule else None


def unsupported_nodes(graph: gs.Graph) -> list[tuple[str, str, str]]:
    """Every node pathonnx cannot explain, as ``(node name, op type, reason)``."""
    found = []
    for node in graph.nodes:
        standard = node.domain in ("", "ai.onnx", None)
        rule = rule_for(node.op) if standard else None
        if rule is None:
            reason = _NOT_VOCABULARY.get(node.op, f"{node.op} is not piecewise linear")
            if not standard:
                reason = f"custom op {node.domain}.{node.op}"
        else:
            reason = rule.check(node)
        if reason:
            found.append((node.name or node.outputs[0].name, node.op, reason))
    return found


__all__ = [
    "DECONVNET",
    "GATE_KINDS",
    "GRADIENT",
    "GUIDED",
    "Backward",
    "Rule",
    "TooDense",
    "op_rule",
    "role",
    "rule_for",
    "sample_shape",
    "unsupported_nodes",
]
