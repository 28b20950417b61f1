"""What every rewrite pass shares: its report, and the wrapper that keeps passes pure."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs


@dataclass
class PassReport:
    """What one pass changed, and for each candidate it left alone, why."""

    name: str
    changed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return bool(self.changed)

    def to_dict(self) -> dict:
        return {"pass": self.name, "changed": self.changed, "skipped": self.skipped}

    def summary(self) -> str:
        if self.changed:
            head = f"{self.name}: {len(self.changed)} change(s)"
        else:
            head = f"{self.name}: nothing to do"
        lines = [head]
        lines += [f"  + {c}" for c in self.changed]
        lines += [f"  - {s}" for s in self.skipped]
        return "\n".join(lines)


RewritePass = Callable[[gs.Graph], tuple[gs.Graph, PassReport]]


PassBody = Callable[[gs.Graph, PassReport], "gs.Graph | None"]


def rewrite_pass(name: str) -> Callable[[PassBody], RewritePass]:
    """Turn ``body(graph, report)``, which edits a graph in place, into a pure pass.

    The wrapper hands the body a copy, so the caller's graph is never touched. Bodies must not
    write into the numpy arrays of constants either: they make new arrays. A body may return a
    different graph (e.g. one re-imported after shape inference) instead of editing its copy.
    """

    def wrap(body: PassBody) -> RewritePass:
        @functools.wraps(body)
        def run(graph: gs.Graph) -> tuple[gs.Graph, PassReport]:
            new = graph.copy()
            report = PassReport(name)
            new = body(new, report) or new
            # No toposort: passes put new nodes where the old ones stood, so the original
            # execution order (which `depth` counts gates in) survives every pass.
            new.cleanup()
            return new, report

        run.pass_name = name  # type: ignore[attr-defined]
        return run

    return wrap


def node_label(node: gs.Node) -> str:
    return f"{node.op} {node.name!r}" if node.name else f"{node.op} -> {node.outputs[0].name!r}"


def constant_value(tensor: gs.Tensor):
    """The numpy value of a constant tensor, or None for data (or an absent optional input)."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    return None


def consumers(tensor: gs.Tensor, graph: gs.Graph) -> int:
    """How many node inputs and graph outputs read this tensor."""
    return len(tensor.outputs) + sum(1 for out in graph.outputs if out is tensor)
