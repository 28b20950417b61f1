"""Gates: elementwise piecewise-linear activations, frozen at the input's pattern (DESIGN §3).

At the pattern of x each gate is ``h = slope·z + offset``: ReLU slope ``[z>0]``; Clip(lo, hi)
slope ``[lo<z<hi]`` and offset ``lo·[z≤lo] + hi·[z≥hi]``; LeakyRelu/PRelu slope 1 or a. A unit
outside the pathway's mask passes nothing: its slope and offset are multiplied by the mask.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ._base import Rule, needs_constants, op_rule, sample_shape


class Gate(Rule):
    role = "gate"
    kind = ""

    def slope(self, node: gs.Node, cx):
        """The frozen slope, per sample (N, *shape), from the pattern inputs."""
        raise NotImplementedError

    def offset(self, node: gs.Node, cx):
        """The frozen constant, per sample, or None when it is 0."""
        return None

    def factor(self, node: gs.Node, cx):
        """slope · mask, built once per gate and graph."""

        def make():
            return cx.em.op("Mul", [self.slope(node, cx), cx.mask(node)], hint="factor")

        return cx.em.cached(("factor", node.name, node.outputs[0].name), make)

    def masked_offset(self, node: gs.Node, cx):
        def make():
            offset = self.offset(node, cx)
            if offset is None:
                return None
            return cx.em.op("Mul", [offset, cx.mask(node)], hint="offset")

        return cx.em.cached(("offset", node.name, node.outputs[0].name), make)

    def adjoint(self, node, ct, cx):
        shape = sample_shape(node.outputs[0])
        return [cx.rows_mul(ct[0], self.factor(node, cx), shape)] + [None] * (len(node.inputs) - 1)

    def bias(self, node, ct, cx):
        offset = self.masked_offset(node, cx)
        if offset is None:
            return None
        shape = sample_shape(node.outputs[0])
        return cx.em.sum_per_row(cx.rows_mul(ct[0], offset, shape), len(shape) + 1)

    def frozen(self, node, z, cx):
        """The frozen gate applied to a new input ``z`` (per sample)."""
        em = cx.em
        out = em.op("Mul", [z, self.factor(node, cx)], hint="frozen")
        offset = self.masked_offset(node, cx)
        return out if offset is None else em.op("Add", [out, offset], hint="frozen")


def _as_float(cx, boolean):
    return cx.em.op("Cast", [boolean], {"to": 1}, hint="slope")


@op_rule("Relu")
class Relu(Gate):
    kind = "relu"

    def slope(self, node, cx):
        h = cx.activation(node)
        return _as_float(cx, cx.em.op("Greater", [h, cx.em.const(np.float32(0))], dtype=bool))


def _clip_bounds(node: gs.Node) -> tuple[float, float]:
    return tuple(float(np.asarray(t.values)) for t in node.inputs[1:3])


@op_rule("Clip")
class Clip(Gate):
    kind = "clip"

    def check(self, node):
        return needs_constants(node, [1, 2], "Clip bound")

    def slope(self, node, cx):
        # lo < h < hi exactly when lo < z < hi (h = clamp(z, lo, hi)).
        em = cx.em
        h = cx.activation(node)
        lo, hi = _clip_bounds(node)
        above = em.op("Greater", [h, em.const(np.float32(lo))], dtype=bool)
        below = em.op("Less", [h, em.const(np.float32(hi))], dtype=bool)
        return _as_float(cx, em.op("And", [above, below], dtype=bool))

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
