"""Backward variants: how a ReLU gate passes a cotangent back (after Zennit's rules).

The linear engine builds the transpose of the frozen map, which gives the gradient. Some
attribution methods change only what a ReLU passes back; each such change is one object
here, handed to the engine by the method that uses it (``Method.backward`` in
:mod:`pathonnx.methods.registry`), and read by the ReLU rule in :mod:`pathonnx.ops.gates`.
"""

from __future__ import annotations


class Backward:
    """The frozen map's transpose: a ReLU passes ``g·[z>0]`` (and its mask). The gradient."""

    name = "gradient"

    def relu(self, em, ct, transposed):
        """The cotangent a ReLU passes down, given the one at its output ``ct`` and
        ``transposed()``, which builds the frozen, masked transpose of ``ct``."""
        return transposed()

    def __repr__(self) -> str:
        return f"<backward {self.name}>"


class GuidedBackprop(Backward):
    """Guided backprop (Springenberg et al. 2015): ``g·[z>0]·[g>0]``."""

    name = "guided"

    def relu(self, em, ct, transposed):
        return em.op("Relu", [transposed()], hint="guided")


class DeconvNet(Backward):
    """DeconvNet (Zeiler & Fergus 2014): ``g·[g>0]``, whatever the forward pattern."""

    name = "deconvnet"

    def relu(self, em, ct, transposed):
        return em.op("Relu", [ct], hint="deconv")


GRADIENT = Backward()
GUIDED = GuidedBackprop()
DECONVNET = DeconvNet()
