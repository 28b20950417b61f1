"""The backward walk below a narrow gate, on the few units that carry a cotangent.

When a pathway keeps few units of a gate (``width=64`` keeps at most 64 of VGG-16's millions),
the cotangent below that gate is zero almost everywhere: a dense adjoint stage would transpose
whole feature maps to move a few hundred numbers. :class:`SparseWalker` walks such a stage on
the nonzero entries only, per sample: ``idx`` (flat positions in the per-sample tensor) and
``vals`` (rows × positions). It covers the ops of a plain convolutional chain (gates, Conv,
MaxPool, Flatten/Reshape/Identity); :meth:`SparseWalker.can_walk` says when a stage is such a
chain, and the pathwise sweep runs every other stage dense, on onnxruntime. The rules are the
transposes of DESIGN §3's frozen, masked map, the same as the dense adjoint's, and accumulate
the same bias.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

SUPPORTED = {"Relu", "Clip", "LeakyRelu", "PRelu", "Conv", "Gemm", "MaxPool", "Flatten",
             "Reshape", "Identity"}  # fmt: skip


class TooDense(Exception):
    """A convolution's transpose would move more entries than :attr:`SparseWalker.limit`."""


class SparseWalker:
    """Sparse transposes of one model's canonical graph (see the module docstring)."""

    #: Most entries (rows × positions × kernel elements) one sparse convolution may spread;
    #: beyond it, the cotangent is dense enough that onnxruntime's dense walk is faster.
    limit = 1 << 24

    def __init__(self, model):
        from .model import _static_shapes

        proto: onnx.ModelProto = model.canonical
        self.model = model
        self.nodes = list(proto.graph.node)
        self.inits = {i.name: i for i in proto.graph.initializer}
        self.shapes = _static_shapes(proto)
        self.shapes[model.input_name] = tuple(model.input_shape)
        self.gates = {g.name: g for g in model.gates}
        self.pools = {m.name: m for m in model.maxpools}
        self._consts: dict[str, np.ndarray] = {}
        self._chains: dict[tuple, bool] = {}

    def const(self, name: str) -> np.ndarray:
        if name not in self._consts:
            self._consts[name] = numpy_helper.to_array(self.inits[name])
        return self._consts[name]

    def can_walk(self, start: int, stop: int) -> bool:
        """True when nodes ``[stop, start)`` form a chain of supported ops, each reading the
        previous one's output (the graph input for ``stop == 0``)."""
        key = (start, stop)
        if key not in self._chains:
            self._chains[key] = self._is_chain(start, stop)
        return self._chains[key]

    def _is_chain(self, start: int, stop: int) -> bool:
        nodes = self.nodes[stop:start]
        if not nodes or any(n.op_type not in SUPPORTED for n in nodes):
            return False
        below = self.model.input_name if stop == 0 else self.nodes[stop - 1].output[0]
        if self._live(start) != {nodes[-1].output[0]} or self._live(stop) != {below}:
            return False  # another tensor (a residual branch) crosses the stage
        previous = below
        for node in nodes:
            data = [t for t in node.input if t and t not in self.inits]
            if data != [previous]:
                return False
            readers = [n for n in self.nodes if previous in n.input]
            if readers != [node]:  # the chain's tensors feed nothing else
                return False
            previous = node.output[0]
        return True

    def _live(self, cut: int) -> set[str]:
        """Data tensors made before ``cut`` (or the input) and read at or after it."""
        made = {self.model.input_name} | {t for n in self.nodes[:cut] for t in n.output}
        read = {t for n in self.nodes[cut:] for t in n.input}
        if cut == len(self.nodes):
            read.add(self.model.logits_name)
        return (made & read) - set(self.inits)

    def walk(self, fwd, i: int, idx, vals, start: int, stop: int, masks: dict):
        """Cotangent entries at the output of node ``start - 1`` -> those at the input of node
        ``stop`` (the model input when 0), for sample ``i``; returns (idx, vals, bias (rows,))."""
        bias = np.zeros(len(vals), np.float64)
        for node in reversed(self.nodes[stop:start]):
            if len(idx) == 0:  # no cotangent left: nothing reaches below, no bias either
                break
            idx, vals, part = getattr(self, "_" + node.op_type.lower())(node, fwd, i, idx, vals,
                                                                        masks)  # fmt: skip
            if part is not None:
                bias += part
        return idx, vals, bias

    # -- rules ------------------------------------------------------------------------------------

    def _gate(self, node, fwd, i, idx, vals, masks, slope, offset=None):
        mask = masks.get(node.output[0])
        factor = slope
        if mask is not None:
            keep = mask[i if len(mask) > 1 else 0].reshape(-1)[idx]
            factor = factor * keep
        part = None
        if offset is not None:
            off = offset if mask is None else offset * keep
            part = vals.astype(np.float64) @ off.astype(np.float64)
        live = factor != 0
        return idx[live], (vals[:, live] * factor[live]).astype(np.float32), part

    def _relu(self, node, fwd, i, idx, vals, masks):
        h = fwd.activations[node.output[0]][i].reshape(-1)[idx]
        return self._gate(node, fwd, i, idx, vals, masks, (h > 0).astype(np.float32))

    def _clip(self, node, fwd, i, idx, vals, masks):
        lo, hi = (float(self.const(t)) for t in node.input[1:3])
        h = fwd.activations[node.output[0]][i].reshape(-1)[idx]
        slope = ((h > lo) & (h < hi)).astype(np.float32)
        offset = np.zeros(len(idx), np.float32)
        for bound, hit in ((lo, h <= lo), (hi, h >= hi)):
            if np.isfinite(bound) and bound != 0.0:
                offset += np.float32(bound) * hit
        return self._gate(node, fwd, i, idx, vals, masks, slope, offset)

    def _leakyrelu(self, node, fwd, i, idx, vals, masks):
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 0.01)
        z = fwd.preactivations[node.output[0]][i].reshape(-1)[idx]
        slope = np.where(z > 0, 1.0, alpha).astype(np.float32)
        return self._gate(node, fwd, i, idx, vals, masks, slope)

    def _prelu(self, node, fwd, i, idx, vals, masks):
        shape = self.shapes[node.output[0]]
        a = np.broadcast_to(self.const(node.input[1]), shape).reshape(-1)[idx]
        z = fwd.preactivations[node.output[0]][i].reshape(-1)[idx]
        return self._gate(node, fwd, i, idx, vals, masks, np.where(z > 0, 1.0, a).astype(
            np.float32))  # fmt: skip

    def _flatten(self, node, fwd, i, idx, vals, masks):
        return idx, vals, None  # C-order flat positions do not move

    _reshape = _identity = _flatten

    def _gemm(self, node, fwd, i, idx, vals, masks):
        # Y = alpha·A·B' + beta·C (A the data, untransposed)  =>  dA = alpha·dY·B'ᵀ, dense below
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        b = self.const(node.input[1])
        b = b.T if attrs.get("transB", 0) else b  # (in, out)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        grad = (alpha * vals.astype(np.float64)) @ b[:, idx].T.astype(np.float64)
        part = None
        if len(node.input) > 2 and node.input[2]:
            c = np.broadcast_to(self.const(node.input[2]), (b.shape[1],))
            part = vals.astype(np.float64) @ (beta * c[idx].astype(np.float64))
        return np.arange(b.shape[0]), grad.astype(np.float32), part

    def _maxpool(self, node, fwd, i, idx, vals, masks):
        pool = self.pools[node.output[0]]
        size = int(np.prod(self.shapes[node.input[0]]))
        source = fwd.argmax[pool.name][i].reshape(-1)[idx] - i * size  # onnxruntime: N·C·H·W
        return (*_merge(source, vals, size), None)

    def _conv(self, node, fwd, i, idx, vals, masks):
        w = self.const(node.input[1])
        m, cg, kh, kw = w.shape
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        sh, sw = attrs.get("strides", [1, 1])
        dh, dw = attrs.get("dilations", [1, 1])
        pads = attrs.get("pads", [0, 0, 0, 0])
        c, h, wd = self.shapes[node.input[0]]
        _, ho, wo = self.shapes[node.output[0]]
        if len(vals) * len(idx) * cg * kh * kw > self.limit:
            raise TooDense(node.name)
        co, yo, xo = np.unravel_index(idx, (m, ho, wo))
        ci = (co // (m // group))[:, None] * cg + np.arange(cg)[None]  # (P, cg)
        yi = yo[:, None] * sh - pads[0] + np.arange(kh)[None] * dh  # (P, kh)
        xi = xo[:, None] * sw - pads[1] + np.arange(kw)[None] * dw  # (P, kw)
        inside = ((yi >= 0) & (yi < h))[:, None, :, None] & ((xi >= 0) & (xi < wd))[:, None, None]
        target = (ci[:, :, None, None] * h + yi[:, None, :, None]) * wd + xi[:, None, None, :]
        weights = w[co]  # (P, cg, kh, kw)
        keep = np.broadcast_to(inside, weights.shape).reshape(-1)
        spread = (vals[:, :, None] * weights.reshape(len(idx), -1)[None]).reshape(len(vals), -1)
        part = None
        if len(node.input) > 2 and node.input[2]:
            part = vals.astype(np.float64) @ self.const(node.input[2])[co].astype(np.float64)
        return (*_merge(target.reshape(-1)[keep], spread[:, keep], c * h * wd), part)


def _merge(positions: np.ndarray, vals: np.ndarray, size: int):
    """Entries at repeated positions (in ``[0, size)``) summed: (unique positions, rows ×
    unique). A mark array of ``size`` finds the unique positions without sorting."""
    seen = np.zeros(size, bool)
    seen[positions] = True
    unique = np.flatnonzero(seen)
    slot = np.empty(size, np.int32)
    slot[unique] = np.arange(len(unique))
    inverse = slot[positions]
    out = np.empty((len(vals), len(unique)), np.float32)
    for row in range(len(vals)):
        out[row] = np.bincount(inverse, weights=vals[row], minlength=len(unique))
    return unique, out
