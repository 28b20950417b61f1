"""Gates: elementwise piecewise-linear activations, frozen at the input's pattern (DESIGN §3).

At the pattern of x each gate is ``h = slope·z + offset``: ReLU slope ``[z>0]``; Clip(lo, hi)
slope ``[lo<z<hi]`` and offset ``lo·[z≤lo] + hi·[z≥hi]``; LeakyRelu/PRelu slope 1 or a. A unit
outside the pathway's mask passes nothing: its slope and offset are multiplied by the mask.
In the *scaled* variant the mask is a float per unit instead (the per-unit gates of pruning
baselines such as DGR): slope and offset are multiplied by it.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ._base import Rule, needs_constants, op_rule, sample_shape


class Gate(Rule):
    """A gate frozen at x. Gates whose slope is 0 or 1 (ReLU, Clip) are written as a boolean
    *pass* condition (and'ed with the mask); the transpose multiplies by it as 0/1 floats."""

    role = "gate"
    kind = ""

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

    def adjoint(self, node, ct, cx):
        shape = sample_shape(node.outputs[0])
        keep = self.keep(node, cx)
        if self.kind == "relu" and cx.rule == "deconvnet":
            # DeconvNet (Zeiler & Fergus 2014) passes g·[g>0], whatever the forward pattern.
            grad = cx.em.op("Relu", [ct[0]], hint="deconv")
        elif keep is not None:
            # Multiplying by the condition as 0/1 floats gives the same result (cotangents are
            # finite), and onnxruntime's Mul is about twice as fast as its Where here.
            grad = cx.rows_mul(ct[0], self.keep_float(node, cx), shape)
            if self.kind == "relu" and cx.rule == "guided":
                # Guided backprop (Springenberg et al. 2015): g·[z>0]·[g>0].
                grad = cx.em.op("Relu", [grad], hint="guided")
        else:
            grad = cx.rows_mul(ct[0], self.factor(node, cx), shape)
        return [grad] + [None] * (len(node.inputs) - 1)

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


def _as_float(cx, boolean):
    return cx.em.op("Cast", [boolean], {"to": 1}, hint="as_float")


@op_rule("Relu")
class Relu(Gate):
    kind = "relu"

    def passes(self, node, cx):
        h = cx.activation(node)
        return cx.em.op("Greater", [h, cx.em.const(np.float32(0))], hint="passes", dtype=bool)


def _clip_bounds(node: gs.Node) -> tuple[float, float]:
    return tuple(float(np.asarray(t.values)) for t in node.inputs[1:3])


@op_rule("Clip")
class Clip(Gate):
    kind = "clip"

    def check(self, node):
        return needs_constants(node, [1, 2], "Clip bound")

    def passes(self, node, cx):
        # lo < h < hi exactly when lo < z < hi (h = clamp(z, lo, hi)).
        em = cx.em
        h = cx.activation(node)
        lo, hi = _clip_bounds(node)
        above = em.op("Greater", [h, em.const(np.float32(lo))], dtype=bool)
        below = em.op("Less", [h, em.const(np.float32(hi))], dtype=bool)
        return em.op("And", [above, below], hint="passes", dtype=bool)

    def offset(self, node, cx):
        em = cx.em
        h = cx.activation(node)
        terms = []
        for bound, test in zip(_clip_bounds(node), ("LessOrEqual", "GreaterOrEqual")):
            if np.isfinite(bound) and bound != 0.0:  # an infinite bound is never reached
                hit = _as_float(cx, em.op(test, [h, em.const(np.float32(bound))], dtype=bool))
                terms.append(em.op("Mul", [hit, em.const(np.float32(bound))], hint="sat"))
        return em.add_all(terms)


@op_rule("LeakyRelu")
class LeakyRelu(Gate):
    kind = "leaky_relu"

    def slope(self, node, cx):
        em = cx.em
        positive = em.op("Greater", [cx.preactivation(node), em.const(np.float32(0))], dtype=bool)
        alpha = np.float32(node.attrs.get("alpha", 0.01))
        return em.op("Where", [positive, em.const(np.float32(1)), em.const(alpha)], hint="slope")


@op_rule("PRelu")
class PRelu(Gate):
    kind = "prelu"

    def check(self, node):
        return needs_constants(node, [1], "PRelu slope")

    def slope(self, node, cx):
        em = cx.em
        positive = em.op("Greater", [cx.preactivation(node), em.const(np.float32(0))], dtype=bool)
        a = np.asarray(node.inputs[1].values, np.float32)  # broadcasts like the forward PRelu
        return em.op("Where", [positive, em.const(np.float32(1)), em.const(a)], hint="slope")
