"""Baseline attributions, each returning an array shaped like x.

They follow Captum's definitions (docs/ARCHITECTURE.md, Semantics), computed with pathonnx's
engine on the ONNX file: saliency (the signed gradient, which on a ReLU network's linear region
is W), input × gradient, integrated gradients (zero baseline, Gauss–Legendre nodes like
Captum's default), SmoothGrad, guided backprop, DeconvNet, Grad-CAM. Guided backprop and
DeconvNet differ from saliency only in their backward rule (:mod:`pathonnx.ops.backward`).
"""

from __future__ import annotations

import numpy as np

from ..engine import GradCam, Recipe, device_value, gate_cotangents
from ..errors import InputError
from ..graph.choice import gradcam_graph
from ..graph.noise import PRIME, noise_graph
from ..ops import DECONVNET, GRADIENT, GUIDED, Backward
from .registry import BATCH, INTEGER, NUMBER, SEED, TEXT, Param, Range, at_least, register


def _gradients(model, x: np.ndarray, target: np.ndarray, backward: Backward = GRADIENT):
    """∂logit[target]/∂x (or a modified backward pass), one row per sample: one onnxruntime
    call of the forward and backward graph, which returns only the gradient."""
    return model.engine.linearize_at(x, target, backward=backward).W


def _column(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``values`` (R,) shaped to scale R samples shaped like x's (R, 1, 1, ...)."""
    return values.reshape(-1, *[1] * (x.ndim - 1))


def _weighted_gradients(model, x, target, copies, weights, batch: int) -> np.ndarray:
    """``Σ_j weights[j] · ∂logit[target]/∂x`` at copy j of the batch ``x`` (N, *input_shape).
    Row ``r = j·N + i`` of the points is copy j of sample i; ``copies(rows)`` makes the rows
    asked for (an index array, always in increasing order). Rows are made ``batch`` at a
    time, so memory holds one onnxruntime call's points, never all of them."""
    n, count = len(x), len(weights) * len(x)
    total = np.zeros(x.shape, np.float64)
    for lo in range(0, count, batch):
        rows = np.arange(lo, min(lo + batch, count))
        grads = _gradients(model, copies(rows), target[rows % n])
        np.add.at(total, rows % n, _column(weights[rows // n], x) * grads)
    return total.astype(np.float32)


def _one_pass(name: str, backward: Backward, times_input: bool, summary: str) -> None:
    """Register a method that is one backward walk from the target logit with ``backward``'s
    ReLU rule, times the input or not."""

    def run(model, x, target):
        grad = _gradients(model, x, target, backward)
        return x * grad if times_input else grad

    def export(model):
        return Recipe(backward, times_input)

    run.__doc__ = summary
    register(name, backward=backward, export=export)(run)


_one_pass("saliency", GRADIENT, False,
          "Signed gradient of the target logit (Captum Saliency(abs=False)).")  # fmt: skip
_one_pass("input_x_gradient", GRADIENT, True, "Input times gradient.")
_one_pass("guided_backprop", GUIDED, False,
          "Guided backprop: ReLU backward g·[z>0]·[g>0] (Springenberg et al. 2015).")  # fmt: skip
_one_pass("deconvnet", DECONVNET, False,
          "DeconvNet: ReLU backward g·[g>0] (Zeiler & Fergus 2014).")  # fmt: skip


def _path(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of integrated gradients' quadrature on [0, 1]: Gauss–Legendre nodes
    and weights (Captum's default), shared by the Python method and its exported graph."""
    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    return 0.5 * (nodes + 1), 0.5 * weights


def _export_integrated_gradients(model, steps, batch):
    """The exported graph walks every point of the path in one batch: ``batch`` has no use."""
    alphas, weights = _path(steps)
    return Recipe(GRADIENT, True, tuple(map(float, alphas)), tuple(map(float, weights)))


# Gauss–Legendre nodes come from an eigenproblem of size steps² (numpy's leggauss): past a
# thousand it costs more than the gradients, and adds nothing to a 50-node integral's accuracy.
@register("integrated_gradients", Param("steps", 50, INTEGER, "integration steps",
                                        Range(1, 1000)), BATCH,
          export=_export_integrated_gradients)  # fmt: skip
def integrated_gradients(model, x, target, steps, batch):
    """Integrated gradients from a zero baseline, Gauss–Legendre nodes (Captum's default)."""
    alphas, weights = _path(steps)
    n = len(x)

    def copies(rows):
        # in float32, as the exported graph scales x: points a rounding apart can cross a gate
        return _column(alphas[rows // n].astype(np.float32), x) * x[rows % n]

    return x * _weighted_gradients(model, x, target, copies, weights, int(batch))


def _export_smoothgrad(model, samples, stdev, seed, batch):
    """The exported graph adds the same noise (:mod:`pathonnx.graph.noise`) to copies walked
    in one batch: ``batch`` has no use."""
    weights = (1.0 / int(samples),) * int(samples)
    return Recipe(GRADIENT, False, (1.0,) * int(samples), weights,
                  noise=(float(stdev), int(seed) % PRIME))  # fmt: skip


@register(
    "smoothgrad", Param("samples", 25, INTEGER, "noisy copies", Range(1, 10_000)),
    Param("stdev", 0.15, NUMBER, "standard deviation of the noise", at_least(0)), SEED, BATCH,
    export=_export_smoothgrad,
)  # fmt: skip
def smoothgrad(model, x, target, samples, stdev, seed, batch):
    """SmoothGrad: the mean gradient over noisy copies, noise N(0, stdev²) (Smilkov et al. 2017).

    The noise of copy j at element e is a hash of (seed, j, e) (:mod:`pathonnx.graph.noise`),
    computed by onnxruntime: the same in an exported explainer, and the same for a sample
    whatever batch it is in."""
    n, elements = len(x), int(np.prod(x.shape[1:]))
    scale, key = np.float32(stdev), np.array([int(seed) % PRIME], np.int64)

    def copies(rows):
        feeds = {"copy": (rows // n).astype(np.int64), "seed": key}
        (noise,) = model.engine.run_small(("noise", elements), lambda: noise_graph(elements),
                                          feeds, ["noise"])  # fmt: skip
        noise = model.engine.dev.host(noise).reshape(len(rows), *x.shape[1:])
        return x[rows % n] + scale * noise

    weights = np.full(int(samples), 1.0 / int(samples))
    return _weighted_gradients(model, x, target, copies, weights, int(batch))


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


def _spatial_gate(model, name: str) -> str | None:
    """Why ``name`` is not a gate Grad-CAM can use in ``model`` (None if it is): it must be a
    gate with spatial axes. Names the last few such gates, and how to list them all."""
    spatial = [g.name for g in model.gates if len(g.shape) >= 3]
    if name in spatial:
        return None
    known = any(g.name == name for g in model.gates)
    what = "has no spatial axes" if known else "is not a gate of the model"
    if not spatial:
        return f"{what}, and the model has no gate with spatial axes for Grad-CAM"
    last = ", ".join(repr(s) for s in spatial[-3:])
    more = f" (pathonnx inspect MODEL lists all {len(spatial)})" if len(spatial) > 3 else ""
    return f"{what}; Grad-CAM takes a spatial gate, e.g. {last}{more}"


GATE = Param("gate", None, TEXT, "the gate's tensor name (default the last spatial gate)",
             fits=_spatial_gate)  # fmt: skip


def _export_gradcam(model, gate):
    return GradCam(gate or last_spatial_gate(model).name)


@register("gradcam", GATE, export=_export_gradcam)
def gradcam(model, x, target, gate):
    """Grad-CAM at the last spatial gate, upsampled (nearest) to the input, on every channel."""
    chosen = None
    if gate is not None:
        GATE.check_model(model, gate)
        chosen = next(g for g in model.gates if g.name == gate)
    cam = gradcam_map(model, x, target, chosen)
    size = x.shape[2:]
    index = [
        (np.arange(out) * cam.shape[1 + i] // out) for i, out in enumerate(size)
    ]  # nearest, as Captum's LayerAttribution.interpolate
    up = cam[(slice(None), *np.ix_(*index))]
    return np.broadcast_to(up[:, None], x.shape).astype(np.float32)
