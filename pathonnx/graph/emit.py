"""A small helper for writing new ONNX graphs (adjoint and frozen graphs) with graphsurgeon."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .weights import export_graph

Tensor = gs.Tensor


class Emitter:
    """Collects nodes, inputs and constants of a graph under construction, with unique names.

    ``samples`` is the batch size N of per-sample inputs; rows of cotangents are laid out
    sample-major (row ``n * R + r``), so ``rows`` = N·R is the leading axis of every cotangent.
    """

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[gs.Node] = []
        self.inputs: dict[str, gs.Variable] = {}
        self._names: Counter = Counter()
        self._cache: dict = {}

    def fresh(self, hint: str) -> str:
        hint = hint.replace(":", "_") or "t"
        self._names[hint] += 1
        count = self._names[hint]
        return hint if count == 1 else f"{hint}_{count}"

    def input(self, name: str, dtype, shape: Sequence | None) -> gs.Variable:
        """A graph input, created on first use (``shape`` None: any rank)."""
        if name not in self.inputs:
            shape = None if shape is None else list(shape)
            self.inputs[name] = gs.Variable(name, dtype=dtype, shape=shape)
        return self.inputs[name]

    def const(self, value, hint: str = "c", dtype=None) -> gs.Constant:
        array = np.asarray(value, dtype=dtype)
        if dtype is None and array.dtype == np.float64:
            array = array.astype(np.float32)
        return gs.Constant(self.fresh(f"{hint}__k"), np.ascontiguousarray(array))

    def scalar(self, value, hint: str = "s") -> gs.Constant:
        """A 0-d constant (:meth:`const` makes arrays of at least one dimension), of
        ``value``'s numpy type (e.g. ``np.int64(0)``)."""
        return gs.Constant(self.fresh(f"{hint}__k"), np.array(value))

    def ints(self, values, hint: str = "i") -> gs.Constant:
        return self.const(np.asarray(list(values), dtype=np.int64), hint)

    def op(self, op_type: str, inputs: Sequence, attrs: dict | None = None, hint: str = "",
           outputs: int = 1, dtype=np.float32):  # fmt: skip
        """Append one node; returns its output (or the list of its ``outputs`` outputs)."""
        name = self.fresh(hint or op_type.lower())
        outs = [gs.Variable(self.fresh(f"{name}__o"), dtype=dtype) for _ in range(outputs)]
        self.nodes.append(gs.Node(op_type, name, dict(attrs or {}), list(inputs), outs))
        return outs[0] if outputs == 1 else outs

    def cached(self, key, make):
        """Build a value once per graph (e.g. a gate's slope, shared by several uses)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # -- frequent patterns ------------------------------------------------------------------------

    def add_all(self, terms: list, hint: str = "sum"):
        terms = [t for t in terms if t is not None]
        if not terms:
            return None
        if len(terms) == 1:
            return terms[0]
        return self.op("Sum", terms, hint=hint)

    def reshape(self, x, shape: Sequence[int], hint: str = "reshape", dtype=np.float32):
        return self.op("Reshape", [x, self.ints(shape, "shape")], hint=hint, dtype=dtype)

    def leading(self, x, hint: str = "lead"):
        """The leading dimension of ``x`` as an int64 tensor of shape (1,)."""
        shape = self.op("Shape", [x], hint=f"{hint}_shape", dtype=np.int64)
        return self.op("Slice", [shape, self.ints([0]), self.ints([1])], hint=hint, dtype=np.int64)

    def sum_per_row(self, x, rank: int, hint: str = "rowsum"):
        """Sum every axis but the first: (rows, ...) -> (rows,)."""
        if rank == 1:
            return x
        return self.op("ReduceSum", [x, self.ints(range(1, rank))], {"keepdims": 0}, hint=hint)

    def graph(self, outputs: Sequence[gs.Variable], name: str) -> onnx.ModelProto:
        graph = gs.Graph(
            nodes=self.nodes,
            inputs=list(self.inputs.values()),
            outputs=list(outputs),
            name=name,
            opset=self.opset,
        )
        graph.cleanup()
        model = export_graph(graph)
        model.ir_version = min(model.ir_version, 8)
        return model
