"""Refusing early: the nodes that the graph as read shows cannot be explained.

Reading a large model's weights into the registry hashes them, and constant folding runs
onnxruntime on every constant subgraph: seconds on VGG-16 or on graphs whose weights are
computed. Neither can change a node whose input carries data (values computed from the model's
input): a Sigmoid there stays a Sigmoid, a Mul of two data tensors stays one, whatever the
passes do. :func:`screen` finds such nodes on the graph as read, running nothing, so that
:func:`~pathonnx.graph.load.load_model` refuses such a model before any of that work.

Only certain offenders count: nodes that no pass can bring into the vocabulary (the output's
trailing Softmax, which :func:`~.passes.strip_softmax` removes, and a Max/Min of data and a
constant, which :func:`~.passes.canonicalize_gates` makes a gate, are left to the full check),
and only nodes whose values reach the output. When the screen finds any, the refusal lists
those; a model it passes goes through the passes and the full check of
:func:`~pathonnx.graph.canonical.canonicalize`, which also judges what only folded constants
and inferred shapes tell (a Reshape over the batch axis, a Slice with a step).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..errors import UnsupportedModelError
from ..ops import Refusal, certain_reason
from ..ops.vocabulary import dependent_tensors, feeding_outputs
from .passes import may_become_gate, may_strip


def screen(graph: gs.Graph) -> list[tuple[gs.Node, str]]:
    """The nodes of ``graph`` (as read, before any pass) that no pass can make explainable,
    each with the reason, in execution order."""
    dependent, live = dependent_tensors(graph), feeding_outputs(graph)
    stripped = may_strip(graph)
    found = []
    for node in graph.nodes:
        outputs = [t.name for t in node.outputs if t.name]
        if not any(n in dependent for n in outputs) or not any(n in live for n in outputs):
            continue  # folded away, or removed as dead code
        data = [bool(t.name) and t.name in dependent for t in node.inputs]
        if node is stripped or may_become_gate(node, data):
            continue
        reason = certain_reason(node, data)
        if reason:
            found.append((node, reason))
    return found


def refusal_error(name: str, graph: gs.Graph, found: list[tuple[gs.Node, str]],
                  ops: dict[str, int] | None = None) -> UnsupportedModelError:  # fmt: skip
    """The error that refuses a model: its one-line summary, every node, the groups."""
    refusal = Refusal(graph, found)
    groups = [group.to_dict() for group in refusal.groups]
    return UnsupportedModelError(refusal.message(name), refusal.nodes, groups, ops)
