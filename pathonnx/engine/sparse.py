"""The backward walk below a narrow gate, on the few units that carry a cotangent.

When a pathway keeps few units of a gate (``width=64`` keeps at most 64 of VGG-16's millions),
the cotangent below that gate is zero almost everywhere: a dense adjoint stage would transpose
whole feature maps to move a few hundred numbers. :class:`SparseWalker` walks such a stage on
the nonzero entries only, per sample: ``idx`` (flat positions in the per-sample tensor) and
``vals`` (rows × positions).

The walker is a driver: each op's sparse transpose is its rule's :meth:`~pathonnx.ops.base.Rule.
sparse`, next to its dense adjoint in :mod:`pathonnx.ops`. The ops that have one make up plain
convolutional chains (gates, 2-D Conv, Gemm, MaxPool, reshapes); :meth:`SparseWalker.can_walk`
says when a stage is such a chain, and every other stage runs dense, on onnxruntime. The rules
are the transposes of the frozen, masked map, the same as the dense adjoint's, and accumulate
the same bias.
"""

from __future__ import annotations

import numpy as np

from ..graph import Canonical, live_tensors
from ..ops import TooDense, rule_for
from ..ops.base import is_data

__all__ = ["SparseWalker", "TooDense"]


class _Sample:
    """What a rule's sparse transpose reads about one sample ``i`` of a forward pass: flat
    views of its pattern and masks, the model's constants, and the walk's ``limit``."""

    def __init__(self, walker: SparseWalker, fwd, i: int, masks: dict):
        self.walker, self.fwd, self.sample, self.masks = walker, fwd, i, masks
        self.limit = walker.limit

    def activation(self, node) -> np.ndarray:
        return self.fwd.activations[node.outputs[0].name][self.sample].reshape(-1)

    def preactivation(self, node) -> np.ndarray:
        return self.fwd.preactivations[node.outputs[0].name][self.sample].reshape(-1)

    def argmax(self, node) -> np.ndarray:
        return self.fwd.argmax[node.outputs[0].name][self.sample].reshape(-1)

    def mask(self, node) -> np.ndarray | None:
        mask = self.masks.get(node.outputs[0].name)
        if mask is None:
            return None
        return mask[self.sample if len(mask) > 1 else 0].reshape(-1)

    def const(self, tensor) -> np.ndarray:
        return self.walker.const(tensor)


class SparseWalker:
    """Sparse transposes over one canonical graph (see the module docstring)."""

    #: Most entries (rows × positions × kernel elements) one sparse convolution may spread;
    #: beyond it, the cotangent is dense enough that onnxruntime's dense walk is faster.
    limit = 1 << 24

    def __init__(self, graph: Canonical):
        self.input_name = graph.input_name
        self.ir = graph.ir()
        self.nodes = self.ir.nodes
        self._consts: dict[str, np.ndarray] = {}
        self._chains: dict[tuple, bool] = {}

    def const(self, tensor) -> np.ndarray:
        """A constant's values, read once (graphsurgeon loads them lazily on each access)."""
        if tensor.name not in self._consts:
            self._consts[tensor.name] = np.asarray(tensor.values)
        return self._consts[tensor.name]

    def can_walk(self, start: int, stop: int) -> bool:
        """True when nodes ``[stop, start)`` form a chain of ops with a sparse transpose, each
        reading the previous one's output (the graph input for ``stop == 0``)."""
        key = (start, stop)
        if key not in self._chains:
            self._chains[key] = self._is_chain(start, stop)
        return self._chains[key]

    def _is_chain(self, start: int, stop: int) -> bool:
        nodes = self.nodes[stop:start]
        if not nodes or not all(rule_for(n.op) and rule_for(n.op).walks_sparse(n) for n in nodes):
            return False
        below = self.input_name if stop == 0 else self.nodes[stop - 1].outputs[0].name
        crossing = ([t.name for t in live_tensors(self.ir, cut)] for cut in (start, stop))
        if list(crossing) != [[nodes[-1].outputs[0].name], [below]]:
            return False  # another tensor (a residual branch) crosses the stage
        previous = below
        for node in nodes:
            if [t.name for t in node.inputs if is_data(t)] != [previous]:
                return False
            readers = [n for n in self.nodes if previous in [t.name for t in n.inputs]]
            if readers != [node]:  # the chain's tensors feed nothing else
                return False
            previous = node.outputs[0].name
        return True

    def walk(self, fwd, i: int, idx, vals, start: int, stop: int, masks: dict):
        """Cotangent entries at the output of node ``start - 1`` -> those at the input of node
        ``stop`` (the model input when 0), for sample ``i``; returns (idx, vals, bias (rows,))."""
        sample = _Sample(self, fwd, i, masks)
        bias = np.zeros(len(vals), np.float64)
        for node in reversed(self.nodes[stop:start]):
            if len(idx) == 0:  # no cotangent left: nothing reaches below, no bias either
                break
            idx, vals, part = rule_for(node.op).sparse(node, idx, vals, sample)
            if part is not None:
                bias += part
        return idx, vals, bias
