"""Gates: elementwise piecewise-linear activations, frozen at the input's pattern.

At the pattern of x each gate is ``h = slope·z + offset`` (docs/ARCHITECTURE.md, Semantics):
ReLU slope ``[z>0]``; Clip(lo, hi) slope ``[lo<z<hi]`` and offset ``lo·[z≤lo] + hi·[z≥hi]``;
LeakyRelu/PRelu slope 1 or a; HardSigmoid(a, b) = clip(a·z + b, 0, 1) slope ``a·[0<h<1]`` and
offset ``b·[0<h<1] + [h≥1]``. A unit outside the pathway's mask passes nothing: its slope and
offset are multiplied by the mask. In the *scaled* variant the mask is a float per unit instead
(the per-unit gates of pruning baselines such as DGR): slope and offset are multiplied by it.

Each gate rule holds the whole of its op: the parameters it reads off the node (decoded here
and nowhere else), its frozen pattern as ONNX nodes (the dense adjoint and the frozen graph) and
in numpy (the sparse walk), and for ReLU the modified backward passes of
:mod:`pathonnx.ops.backward`.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import Rule, needs_constants, op_rule, sample_shape

#: LeakyRelu's slope below 0 when the node leaves ``alpha`` out (ONNX operator spec).
LEAKY_RELU_ALPHA = 0.01
#: HardSigmoid's ``alpha`` and ``beta`` when the node leaves them out (ONNX operator spec).
HARD_SIGMOID_ALPHA, HARD_SIGMOID_BETA = 0.2, 0.5


class GateRule(Rule):
    """A gate frozen at x. Gates whose slope is 0 or 1 (ReLU, Clip) are written as a boolean
    *pass* condition (and'ed with the mask); the transpose multiplies by it as 0/1 floats."""

    role = "gate"
    kind = ""

    def params(self, node: gs.Node) -> dict:
        """The gate's constant parameters (Clip bounds, LeakyRelu alpha, PRelu slope)."""
        return {}

    # -- the frozen pattern as ONNX nodes ---------------------------------------------------------

    def passes(self, node: gs.Node, cx):
        """Boolean per sample (N, *shape): the slope is 1 here (else 0); None if not 0/1."""
        return None

    def slope(self, node: gs.Node, cx):
        """The frozen slope as float, per sample, for gates whose slope is not 0/1."""
        raise NotImplementedError

    def offset(self, node: gs.Node, cx):
        """The frozen constant, per sample, or None when it is 0."""
        return None

    def _key(self, node: gs.Node, what: str):
        return (what, node.name, node.outputs[0].name)

    def keep(self, node: gs.Node, cx):
        """passes AND mask (bool), built once per gate and graph; None for non-0/1 slopes."""

        if cx.scaled:
            return None  # a float scale multiplies: see factor

        def make():
            passes, mask = self.passes(node, cx), cx.mask(node)
            if passes is None or mask is None:
                return passes
            return cx.em.op("And", [passes, mask], hint="keep", dtype=bool)

        return cx.em.cached(self._key(node, "keep"), make)

    def keep_float(self, node: gs.Node, cx):
        """:meth:`keep` as float 0/1, built once per gate and graph."""
        return cx.em.cached(self._key(node, "keep_float"),
                            lambda: _as_float(cx, self.keep(node, cx)))  # fmt: skip

    def factor(self, node: gs.Node, cx):
        """slope · mask (float) for gates whose slope is not 0/1, and for every gate when the
        mask is a float scale."""

        def make():
            em = cx.em
            if cx.scaled:
                passes, scale = self.passes(node, cx), cx.mask(node)
                if passes is not None:
                    return em.op("Where", [passes, scale, em.const(np.float32(0))], hint="factor")
                return em.op("Mul", [self.slope(node, cx), scale], hint="factor")
            slope, mask = self.slope(node, cx), cx.mask(node)
            if mask is None:
                return slope
            return cx.em.op("Where", [mask, slope, cx.em.const(np.float32(0))], hint="factor")

        return cx.em.cached(self._key(node, "factor"), make)

    def masked_offset(self, node: gs.Node, cx):
        def make():
            offset, mask = self.offset(node, cx), cx.mask(node)
            if offset is None or mask is None:
                return offset
            if cx.scaled:
                return cx.em.op("Mul", [offset, mask], hint="offset")
            return cx.em.op("Where", [mask, offset, cx.em.const(np.float32(0))], hint="offset")

        return cx.em.cached(self._key(node, "offset"), make)

    def transpose(self, node: gs.Node, ct, cx):
        """The frozen, masked gate's transpose applied to the output cotangent ``ct``."""
        shape = sample_shape(node.outputs[0])
        keep = self.keep(node, cx)
        if keep is not None:
            # Multiplying by the condition as 0/1 floats gives the same result (cotangents are
            # finite), and onnxruntime's Mul is about twice as fast as its Where here.
            return cx.rows_mul(ct, self.keep_float(node, cx), shape)
        return cx.rows_mul(ct, self.factor(node, cx), shape)

    def adjoint(self, node, ct, cx):
        return [self.transpose(node, ct[0], cx)] + [None] * (len(node.inputs) - 1)

    def bias(self, node, ct, cx):
        offset = self.masked_offset(node, cx)
        if offset is None:
            return None
        shape = sample_shape(node.outputs[0])
        return cx.em.sum_per_row(cx.rows_mul(ct[0], offset, shape), len(shape) + 1)

    def frozen(self, node, z, cx):
        """The frozen gate applied to a new input ``z`` (per sample)."""
        em = cx.em
        keep = self.keep(node, cx)
        if keep is not None:
            out = em.op("Where", [keep, z, em.const(np.float32(0))], hint="frozen")
        else:
            out = em.op("Mul", [z, self.factor(node, cx)], hint="frozen")
        offset = self.masked_offset(node, cx)
        return out if offset is None else em.op("Add", [out, offset], hint="frozen")

    # -- the frozen pattern in numpy (the sparse walk) --------------------------------------------

    def pattern(self, node: gs.Node, idx: np.ndarray, sx):
        """(slope, offset or None) as float32 at the flat positions ``idx`` of one sample."""
        raise NotImplementedError

    def walks_sparse(self, node):
        return True

    def sparse(self, node, idx, vals, sx):
        slope, offset = self.pattern(node, idx, sx)
        mask = sx.mask(node)
        if mask is not None:
            keep = mask[idx]
            slope = slope * keep
            offset = None if offset is None else offset * keep
        part = None
        if offset is not None:
            part = vals.astype(np.float64) @ offset.astype(np.float64)
        live = slope != 0
        return idx[live], (vals[:, live] * slope[live]).astype(np.float32), part


def _as_float(cx, boolean):
    return cx.em.op("Cast", [boolean], {"to": 1}, hint="as_float")


def _positive_slope(node, cx, below):
    """Slope 1 where the gate's input is positive, else ``below`` (LeakyRelu and PRelu)."""
    em = cx.em
    positive = em.op("Greater", [cx.preactivation(node), em.const(np.float32(0))], dtype=bool)
    return em.op("Where", [positive, em.const(np.float32(1)), em.const(below)], hint="slope")


@op_rule("Relu")
class Relu(GateRule):
    kind = "relu"

    def passes(self, node, cx):
        h = cx.activation(node)
        return cx.em.op("Greater", [h, cx.em.const(np.float32(0))], hint="passes", dtype=bool)

    def adjoint(self, node, ct, cx):
        # Guided backprop and DeconvNet change only what a ReLU passes back.
        return [cx.backward.relu(cx.em, ct[0], lambda: self.transpose(node, ct[0], cx))]

    def pattern(self, node, idx, sx):
        return (sx.activation(node)[idx] > 0).astype(np.float32), None


@op_rule("Clip")
class Clip(GateRule):
    kind = "clip"

    def check(self, node):
        return needs_constants(node, [1, 2], "Clip bound")

    def params(self, node):
        lo, hi = (float(np.asarray(t.values)) for t in node.inputs[1:3])
        return {"lo": lo, "hi": hi}

    def passes(self, node, cx):
        # lo < h < hi exactly when lo < z < hi (h = clamp(z, lo, hi)).
        em = cx.em
        h = cx.activation(node)
        bounds = self.params(node)
        above = em.op("Greater", [h, em.const(np.float32(bounds["lo"]))], dtype=bool)
        below = em.op("Less", [h, em.const(np.float32(bounds["hi"]))], dtype=bool)
        return em.op("And", [above, below], hint="passes", dtype=bool)

    def _saturations(self, node):
        """(bound, test of h) of each bound that adds a constant: finite and non-zero."""
        bounds = self.params(node)
        pairs = ((bounds["lo"], "LessOrEqual"), (bounds["hi"], "GreaterOrEqual"))
        return [(bound, test) for bound, test in pairs if np.isfinite(bound) and bound != 0.0]

    def offset(self, node, cx):
        em = cx.em
        h = cx.activation(node)
        terms = []
        for bound, test in self._saturations(node):
            hit = _as_float(cx, em.op(test, [h, em.const(np.float32(bound))], dtype=bool))
            terms.append(em.op("Mul", [hit, em.const(np.float32(bound))], hint="sat"))
        return em.add_all(terms)

    def pattern(self, node, idx, sx):
        bounds = self.params(node)
        h = sx.activation(node)[idx]
        slope = ((h > bounds["lo"]) & (h < bounds["hi"])).astype(np.float32)
        offset = np.zeros(len(idx), np.float32)
        for bound, test in self._saturations(node):
            hit = h <= bound if test == "LessOrEqual" else h >= bound
            offset += np.float32(bound) * hit
        return slope, offset


@op_rule("LeakyRelu")
class LeakyRelu(GateRule):
    kind = "leaky_relu"
    reads_input = True

    def params(self, node):
        return {"alpha": float(node.attrs.get("alpha", LEAKY_RELU_ALPHA))}

    def slope(self, node, cx):
        return _positive_slope(node, cx, np.float32(self.params(node)["alpha"]))

    def pattern(self, node, idx, sx):
        z = sx.preactivation(node)[idx]
        return np.where(z > 0, 1.0, self.params(node)["alpha"]).astype(np.float32), None


@op_rule("PRelu")
class PRelu(GateRule):
    kind = "prelu"
    reads_input = True

    def check(self, node):
        return needs_constants(node, [1], "PRelu slope")

    def params(self, node):
        return {"slope": np.asarray(node.inputs[1].values)}

    def slope(self, node, cx):
        # The slope broadcasts like the forward PRelu's.
        return _positive_slope(node, cx, np.asarray(self.params(node)["slope"], np.float32))

    def pattern(self, node, idx, sx):
        shape = sample_shape(node.outputs[0])
        # The slope broadcasts against the batched tensor: Keras exports write it (1, C, 1, 1).
        a = np.broadcast_to(sx.const(node.inputs[1]), (1, *shape)).reshape(-1)[idx]
        z = sx.preactivation(node)[idx]
        return np.where(z > 0, 1.0, a).astype(np.float32), None


@op_rule("HardSigmoid")
class HardSigmoid(GateRule):
    """``h = max(0, min(1, a·z + b))``: a Clip(0, 1) of an affine map of z (MobileNetV3's hard
    sigmoid, ``relu6(z + 3) / 6``, exports as a = 1/6, b = 1/2). On its linear region,
    ``0 < h < 1`` exactly when ``0 < a·z + b < 1``, the slope is ``a`` and the offset ``b``;
    saturated, the slope is 0 and the offset 0 or 1. The pattern reads h alone."""

    kind = "hard_sigmoid"

    def params(self, node):
        return {
            "alpha": float(node.attrs.get("alpha", HARD_SIGMOID_ALPHA)),
            "beta": float(node.attrs.get("beta", HARD_SIGMOID_BETA)),
        }

    def _inside(self, node, cx):
        def make():
            em = cx.em
            h = cx.activation(node)
            above = em.op("Greater", [h, em.const(np.float32(0))], dtype=bool)
            below = em.op("Less", [h, em.const(np.float32(1))], dtype=bool)
            return em.op("And", [above, below], hint="inside", dtype=bool)

        return cx.em.cached(self._key(node, "inside"), make)

    def slope(self, node, cx):
        alpha = np.float32(self.params(node)["alpha"])
        em = cx.em
        return em.op("Where", [self._inside(node, cx), em.const(alpha), em.const(np.float32(0))],
                     hint="slope")  # fmt: skip

    def offset(self, node, cx):
        em = cx.em
        beta = np.float32(self.params(node)["beta"])
        inside = em.op("Where", [self._inside(node, cx), em.const(beta), em.const(np.float32(0))],
                       hint="offset")  # fmt: skip
        top = em.op("GreaterOrEqual", [cx.activation(node), em.const(np.float32(1))], dtype=bool)
        return em.op("Add", [inside, _as_float(cx, top)], hint="offset")

    def pattern(self, node, idx, sx):
        params = self.params(node)
        h = sx.activation(node)[idx]
        inside = (h > 0) & (h < 1)
        slope = np.where(inside, params["alpha"], 0.0).astype(np.float32)
        offset = (np.where(inside, params["beta"], 0.0) + (h >= 1)).astype(np.float32)
        return slope, offset
