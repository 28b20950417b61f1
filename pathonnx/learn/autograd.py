"""The target network restricted by per-gate scales, as a torch autograd Function.

Forward: each gate's output is multiplied by its scale and the network runs on in onnxruntime
(:meth:`LinearEngine.scaled_forward`; gates above a scaled unit see its scaled value and
re-decide). Backward: the cotangent at every gate output of that scaled network, from
pathonnx's adjoint graph (:func:`pathonnx.engine.gate_cotangents`, seeded with the incoming
gradient at the logits), gives ``∂L/∂s = h ⊙ ∂L/∂(s ⊙ h)``, h the gate's output before its
scale, summed over a channel's positions where the scale is per channel. No torch copy of the
target model exists; torch sees logits and scales only.
"""

from __future__ import annotations

import numpy as np
import torch

from ..engine import gate_cotangents
from ..errors import InputError


def _scale_shape(gate, granularity: str) -> tuple[int, ...]:
    """A gate's scale per sample: one per channel (C,), or one per unit (gate.shape)."""
    return tuple(gate.shape[:1]) if granularity == "channel" else tuple(gate.shape)


def _broadcastable(value: np.ndarray, gate, granularity: str) -> np.ndarray:
    """A scale (N, C) per channel as (N, C, 1, ...), broadcastable to (N, *gate.shape)."""
    if granularity == "channel":
        return value.reshape(len(value), -1, *[1] * (len(gate.shape) - 1))
    return value


class PathwayNetwork(torch.autograd.Function):
    """``PathwayNetwork.apply(model, x, granularity, *scales)`` -> logits (N, K).

    ``model``: a :class:`pathonnx.Model`; ``x``: float32 (N, *input_shape), numpy (no
    gradient flows to it); ``granularity``: "channel" (each scale (N, C), C = gate.shape[0])
    or "unit" (each (N, *gate.shape)); ``scales``: one tensor per gate, in the model's gate
    order. The logits have the scales' dtype; their gradient flows back to every scale."""

    @staticmethod
    def forward(ctx, model, x, granularity, *scales):
        gates = model.gates
        if len(scales) != len(gates):
            raise InputError(f"{len(scales)} scales given for the model's {len(gates)} gates")
        n, shaped = len(x), {}
        for gate, scale in zip(gates, scales):
            want = (n, *_scale_shape(gate, granularity))
            if tuple(scale.shape) != want:
                raise InputError(f"the scale of gate {gate.name!r} has shape "
                                 f"{tuple(scale.shape)}, not {want}")  # fmt: skip
            value = scale.detach().cpu().numpy().astype(np.float32)
            shaped[gate.name] = np.ascontiguousarray(_broadcastable(value, gate, granularity))
        fwd = model.engine.scaled_forward(x, shaped)
        ctx.pathonnx = (model, fwd, shaped, granularity)
        dtype = scales[0].dtype if scales else torch.float32
        return torch.from_numpy(np.array(fwd.logits)).to(dtype)

    @staticmethod
    def backward(ctx, grad):
        model, fwd, shaped, granularity = ctx.pathonnx
        seeds = np.ascontiguousarray(grad.detach().cpu().numpy(), np.float32)
        cotangents = gate_cotangents(model, fwd, seeds=seeds, scales=shaped)
        n, grads = len(fwd.x), []
        for gate in model.gates:
            h = np.asarray(fwd.activations[gate.name], np.float64)
            product = h * cotangents[gate.name]  # ∂L/∂s = h ⊙ ∂L/∂(s ⊙ h)
            if granularity == "channel":
                product = product.reshape(n, gate.shape[0], -1).sum(axis=2)
            grads.append(torch.from_numpy(product).to(grad.dtype))
        return (None, None, None, *grads)


def pathway_logits(model, x: np.ndarray, scales, granularity: str = "channel") -> torch.Tensor:
    """The logits (N, K) of ``model`` at ``x`` with gate i's output multiplied by
    ``scales[i]`` (see :class:`PathwayNetwork`), differentiable with respect to the scales."""
    return PathwayNetwork.apply(model, x, granularity, *scales)
