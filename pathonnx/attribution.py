"""Stage 6, attribution: one registry of named methods, each returning an array shaped like x.

Baselines follow Captum's definitions (DESIGN §3), computed with pathonnx's engine on the ONNX
file: saliency (the signed gradient, which on a ReLU network's linear region is W),
input × gradient, integrated gradients (zero baseline, Gauss–Legendre nodes like Captum's
default), SmoothGrad, guided backprop, DeconvNet, Grad-CAM. Pathway methods return their
pathway's attribution: ``W^p ⊙ x`` for pathwise, the pathway gradient ``W^p`` for critical
pathways (Khakzar et al. 2021).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .forward import as_batch
from .model import Model
from .pathways import critical_pathway, gate_cotangents, pathwise


@dataclass(frozen=True)
class Method:
    """A registered attribution method: ``run(model, x, target, **params)`` -> array like x.
    Pathway methods also have ``pathway(model, x, target, **params)`` -> :class:`Pathway`."""

    name: str
    kind: str
    run: Callable
    defaults: dict = field(default_factory=dict)
    summary: str = ""
    pathway: Callable | None = None
    from_pathway: Callable | None = None

    def with_pathway(self, model, x, target, **params) -> tuple[np.ndarray, object]:
        """(attribution, the Pathway behind it, or None for a baseline)."""
        if self.pathway is None:
            return self.run(model, x, target, **params), None
        pathway = self.pathway(model, x, target, **params)
        return self.from_pathway(pathway, x), pathway


METHODS: dict[str, Method] = {}


def register(name: str, kind: str = "baseline", **defaults):
    """Register ``run`` under ``name``; its docstring's first line is the summary."""

    def wrap(run: Callable) -> Callable:
        summary = (run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else ""
        METHODS[name] = Method(name, kind, run, defaults, summary)
        return run

    return wrap


def register_pathway(name: str, attribution: str, **defaults):
    """Register a pathway method: ``select`` returns its Pathway; its attribution is the
    pathway's ``W^p ⊙ x`` (``attribution="product"``) or its gradient ``W^p`` ("gradient")."""

    def wrap(select: Callable) -> Callable:
        def from_pathway(pathway, x):
            return pathway.attribution(x) if attribution == "product" else pathway.linear.W

        def run(model, x, target, **params):
            return from_pathway(select(model, x, target, **params), x)

        summary = (select.__doc__ or "").strip().splitlines()[0] if select.__doc__ else ""
        METHODS[name] = Method(name, "pathway", run, defaults, summary, select, from_pathway)
        return select

    return wrap


def method_params(method: str, params: dict) -> dict:
    """``params`` checked against ``method``'s, completed with its defaults."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    entry = METHODS[method]
    unknown = set(params) - set(entry.defaults)
    if unknown:
        raise InputError(
            f"method {method!r} takes no parameter {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(entry.defaults) or 'none'}"
        )
    return {**entry.defaults, **params}


def attribute(model: Model, x, target=None, method: str = "saliency", **params) -> np.ndarray:
    """Attribution of ``x`` (N, *input_shape) for ``target`` (default: the prediction) by any
    registered ``method`` (see ``pathonnx.METHODS``); returns an array shaped like x."""
    params = method_params(method, params)
    x = as_batch(x, model.input_shape)
    if target is None:
        target = model.forward(x).prediction
    target = model.check_target(target, len(x))
    return METHODS[method].run(model, x, target, **params)


def _gradients(model: Model, x: np.ndarray, target: np.ndarray, rule: str = "gradient"):
    """∂logit[target]/∂x (or a modified backward pass), one row per sample."""
    fwd = model.forward(x)
    seeds = np.zeros((len(x), 1, model.num_outputs), np.float32)
    seeds[np.arange(len(x)), 0, target] = 1.0
    grad, _ = model.engine.vjp(fwd, seeds, rule=rule)
    return grad[:, 0]


def _batched(model, points: np.ndarray, target: np.ndarray, batch: int) -> np.ndarray:
    """Gradients at many points (P, *input_shape) with their targets, ``batch`` at a time."""
    out = [
        _gradients(model, points[i : i + batch], target[i : i + batch])
        for i in range(0, len(points), batch)
    ]
    return np.concatenate(out)


@register("saliency")
def saliency(model, x, target):
    """Signed gradient of the target logit (Captum Saliency(abs=False))."""
    return _gradients(model, x, target)


@register("input_x_gradient")
def input_x_gradient(model, x, target):
    """Input times gradient."""
    return x * _gradients(model, x, target)


@register("integrated_gradients", steps=50, batch=16)
def integrated_gradients(model, x, target, steps, batch):
    """Integrated gradients from a zero baseline, Gauss–Legendre nodes (Captum's default)."""
    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    alphas, weights = 0.5 * (nodes + 1), 0.5 * weights
    points = (alphas[:, None, None] * x.reshape(1, len(x), -1)).astype(np.float32)
    points = points.reshape(-1, *x.shape[1:])
    grads = _batched(model, points, np.tile(target, len(alphas)), batch)
    grads = grads.reshape(len(alphas), *x.shape)
    return x * np.tensordot(weights, grads, axes=1).astype(np.float32)


@register("smoothgrad", samples=25, stdev=0.15, seed=0, batch=16)
def smoothgrad(model, x, target, samples, stdev, seed, batch):
    """Mean gradient over ``samples`` noisy copies, noise N(0, stdev²) (Smilkov et al. 2017)."""
    rng = np.random.default_rng(seed)
    noisy = (x[None] + rng.normal(0, stdev, (int(samples), *x.shape))).astype(np.float32)
    grads = _batched(model, noisy.reshape(-1, *x.shape[1:]), np.tile(target, int(samples)), batch)
    return grads.reshape(int(samples), *x.shape).mean(axis=0)


@register("guided_backprop")
def guided_backprop(model, x, target):
    """Guided backprop: ReLU backward g·[z>0]·[g>0] (Springenberg et al. 2015)."""
    return _gradients(model, x, target, rule="guided")


@register("deconvnet")
def deconvnet(model, x, target):
    """DeconvNet: ReLU backward g·[g>0] (Zeiler & Fergus 2014)."""
    return _gradients(model, x, target, rule="deconvnet")


def last_spatial_gate(model: Model):
    spatial = [g for g in model.gates if len(g.shape) >= 3]
    if not spatial:
        raise InputError("Grad-CAM needs a gate with spatial axes; this model has none")
    return spatial[-1]


def gradcam_map(model: Model, x, target, gate=None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) at ``gate`` (default the last spatial gate):
    Σ_c mean(∂y/∂A_c) · A_c, shape (N, *spatial), without the final ReLU (Captum's default)."""
    gate = gate or last_spatial_gate(model)
    fwd = model.forward(x)
    grads = gate_cotangents(model, fwd, target)[gate.name]
    spatial = tuple(range(2, grads.ndim))
    weights = grads.mean(axis=spatial, keepdims=True)
    return (weights * fwd.activations[gate.name]).sum(axis=1)


@register("gradcam", gate=None)
def gradcam(model, x, target, gate):
    """Grad-CAM at the last spatial gate, upsampled (nearest) to the input, on every channel."""
    chosen = None if gate is None else next(g for g in model.gates if g.name == gate)
    cam = gradcam_map(model, x, target, chosen)
    size = x.shape[2:]
    index = [
        (np.arange(out) * cam.shape[1 + i] // out) for i, out in enumerate(size)
    ]  # nearest, as Captum's LayerAttribution.interpolate
    up = cam[(slice(None), *np.ix_(*index))]
    return np.broadcast_to(up[:, None], x.shape).astype(np.float32)


@register_pathway("pathwise", "product", depth=None, width=None, alpha=None, classes=None)
def pathwise_pathway(model, x, target, depth, width, alpha, classes):
    """Pathwise explanation: the pathway's W^p ⊙ x (arXiv:2506.18037, Algorithm 1)."""
    return pathwise(model, x, target, depth, width, alpha, classes)


@register_pathway("mct", "gradient", sparsity=0.9)
def mct(model, x, target, sparsity):
    """NeuronMCT critical pathway: its pathway gradient W^p (Khakzar et al. 2021)."""
    return critical_pathway(model, x, target, "mct", sparsity)


@register_pathway("intgrad", "gradient", sparsity=0.9, steps=50)
def intgrad(model, x, target, sparsity, steps):
    """NeuronIntGrad critical pathway: its pathway gradient W^p (Khakzar et al. 2021)."""
    return critical_pathway(model, x, target, "intgrad", sparsity, steps)
