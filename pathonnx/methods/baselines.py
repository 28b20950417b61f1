"""Baseline attributions, each returning an array shaped like x.

They follow Captum's definitions (docs/ARCHITECTURE.md, Semantics), computed with pathonnx's
engine on the ONNX file: saliency (the signed gradient, which on a ReLU network's linear region
is W), input × gradient, integrated gradients (zero baseline, Gauss–Legendre nodes like
Captum's default), SmoothGrad, guided backprop, DeconvNet, Grad-CAM. Guided backprop and
DeconvNet differ from saliency only in their backward rule (:mod:`pathonnx.ops.backward`).
"""

from __future__ import annotations

import numpy as np

from ..engine import device_value, gate_cotangents
from ..errors import InputError
from ..graph.choice import gradcam_graph
from ..ops import DECONVNET, GRADIENT, GUIDED, Backward
from .registry import BATCH, INTEGER, NUMBER, SEED, TEXT, Param, register


def _gradients(model, x: np.ndarray, target: np.ndarray, backward: Backward = GRADIENT):
    """∂logit[target]/∂x (or a modified backward pass), one row per sample: one onnxruntime
    call of the forward and backward graph, which returns only the gradient."""
    return model.engine.linearize_at(x, target, backward=backward).W


def _batched(model, points: np.ndarray, target: np.ndarray, batch: int) -> np.ndarray:
    """Gradients at many points (P, *input_shape) with their targets, ``batch`` at a time."""
    out = [
        _gradients(model, points[i : i + batch], target[i : i + batch])
        for i in range(0, len(points), batch)
    ]
    return np.concatenate(out)


def _one_pass(name: str, backward: Backward, times_input: bool, summary: str) -> None:
    """Register a method that is one backward walk from the target logit with ``backward``'s
    ReLU rule, times the input or not."""

    def run(model, x, target):
        grad = _gradients(model, x, target, backward)
        return x * grad if times_input else grad

    run.__doc__ = summary
    register(name, backward=backward)(run)


_one_pass("saliency", GRADIENT, False,
          "Signed gradient of the target logit (Captum Saliency(abs=False)).")  # fmt: skip
_one_pass("input_x_gradient", GRADIENT, True, "Input times gradient.")
_one_pass("guided_backprop", GUIDED, False,
          "Guided backprop: ReLU backward g·[z>0]·[g>0] (Springenberg et al. 2015).")  # fmt: skip
_one_pass("deconvnet", DECONVNET, False,
          "DeconvNet: ReLU backward g·[g>0] (Zeiler & Fergus 2014).")  # fmt: skip


@register("integrated_gradients", Param("steps", 50, INTEGER, "integration steps"), BATCH)
def integrated_gradients(model, x, target, steps, batch):
    """Integrated gradients from a zero baseline, Gauss–Legendre nodes (Captum's default)."""
    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    alphas, weights = 0.5 * (nodes + 1), 0.5 * weights
    points = (alphas[:, None, None] * x.reshape(1, len(x), -1)).astype(np.float32)
    points = points.reshape(-1, *x.shape[1:])
    grads = _batched(model, points, np.tile(target, len(alphas)), batch)
    grads = grads.reshape(len(alphas), *x.shape)
    return x * np.tensordot(weights, grads, axes=1).astype(np.float32)


@register(
    "smoothgrad", Param("samples", 25, INTEGER, "noisy copies"),
    Param("stdev", 0.15, NUMBER, "standard deviation of the noise"), SEED, BATCH,
)  # fmt: skip
def smoothgrad(model, x, target, samples, stdev, seed, batch):
    """SmoothGrad: the mean gradient over noisy copies, noise N(0, stdev²) (Smilkov et al. 2017)."""
    rng = np.random.default_rng(seed)
    noisy = (x[None] + rng.normal(0, stdev, (int(samples), *x.shape))).astype(np.float32)
    grads = _batched(model, noisy.reshape(-1, *x.shape[1:]), np.tile(target, int(samples)), batch)
    return grads.reshape(int(samples), *x.shape).mean(axis=0)


def last_spatial_gate(model):
    spatial = [g for g in model.gates if len(g.shape) >= 3]
    if not spatial:
        raise InputError("Grad-CAM needs a gate with spatial axes; this model has none")
    return spatial[-1]


def gradcam_map(model, x, target, gate=None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) at ``gate`` (default the last spatial gate):
    Σ_c mean(∂y/∂A_c) · A_c, shape (N, *spatial), without the final ReLU (Captum's default)."""
    gate = gate or last_spatial_gate(model)
    fwd = model.forward(x)
    upto = len(model.gates) - [g.name for g in model.gates].index(gate.name)  # walk no lower
    grads = gate_cotangents(model, fwd, target, upto, keep=True)[gate.name]
    feeds = {"h": device_value(fwd.activations, gate.name), "g": grads}
    (cam,) = model.engine.run_small(("gradcam",), gradcam_graph, feeds, ["cam"])
    return model.engine.dev.host(cam)


@register("gradcam", Param("gate", None, TEXT, "the gate's tensor name (default the last "
                                                 "spatial gate)"))  # fmt: skip
def gradcam(model, x, target, gate):
    """Grad-CAM at the last spatial gate, upsampled (nearest) to the input, on every channel."""
    chosen = None
    if gate is not None:
        chosen = next((g for g in model.gates if g.name == gate), None)
        if chosen is None:
            raise InputError(f"gate {gate!r} is not a gate of the model; see pathonnx inspect")
    cam = gradcam_map(model, x, target, chosen)
    size = x.shape[2:]
    index = [
        (np.arange(out) * cam.shape[1 + i] // out) for i, out in enumerate(size)
    ]  # nearest, as Captum's LayerAttribution.interpolate
    up = cam[(slice(None), *np.ix_(*index))]
    return np.broadcast_to(up[:, None], x.shape).astype(np.float32)
