"""Stage 1, ops: which ONNX ops pathonnx can explain, and how the linear engine treats each.

One rule per op type, registered once with ``@op_rule``. A rule holds everything about its op:
the forward vocabulary check, the gate parameters it decodes, its dense adjoint (transpose) and
bias contribution as ONNX nodes, the frozen form of gates and max-pools, and the sparse
transpose that walks a few nonzero entries in numpy. Adding an op is one class in one file.

Roles: ``gate`` (elementwise piecewise-linear; its elements are units), ``linear`` (linear or
affine in the data), ``selection`` (max pooling: frozen like a gate, but not units).
:mod:`.vocabulary` says why the other nodes cannot be explained, and names the activations
that exporters write as several nodes (SiLU, GELU, HardSwish).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .backward import DECONVNET, GRADIENT, GUIDED, Backward
from .base import Rule, TooDense, op_rule, registry, sample_shape

# Importing the families registers their rules.
from . import gates, linear, pooling, shapes  # noqa: E402,F401  isort: skip
from .vocabulary import Refusal, certain_reason, offenders  # noqa: E402  isort: skip

GATE_KINDS = {op: rule.kind for op, rule in registry().items() if rule.role == "gate"}


def rule_for(op_type: str) -> Rule | None:
    return registry().get(op_type)


def role(op_type: str) -> str | None:
    rule = rule_for(op_type)
    return rule.role if rule else None


def unsupported_nodes(graph: gs.Graph) -> list[tuple[str, str, str]]:
    """Every node of a canonical graph that pathonnx cannot explain, as ``(node name, op type,
    reason)``; nodes of a named activation (SiLU, GELU, ...) say so in their reason."""
    return Refusal(graph, offenders(graph)).nodes


__all__ = [
    "DECONVNET",
    "GATE_KINDS",
    "GRADIENT",
    "GUIDED",
    "Backward",
    "Refusal",
    "Rule",
    "TooDense",
    "certain_reason",
    "offenders",
    "op_rule",
    "role",
    "rule_for",
    "sample_shape",
    "unsupported_nodes",
]
