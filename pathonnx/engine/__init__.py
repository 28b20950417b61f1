"""Stage 3, engine: the Model, its onnxruntime sessions, and the exact linear model at x.

Inside, in order of dependency: ``session`` (providers, options) → ``forward`` (the pattern,
targets) → ``adjoint`` (the adjoint and frozen graphs, built from the op rules) → ``sparse``
(the sparse walk, a driver over the op rules), ``ingraph`` (explainers as one ONNX graph,
for ``pathonnx export``) and ``auxiliary`` (graphs run beside the model, such as a pathway
generator) → ``linear`` (:class:`LinearEngine`) → ``sweep``
(staged walks, the row store) → ``model`` (:class:`Model`, :func:`load`).
"""

from __future__ import annotations

from .adjoint import build_adjoint, build_frozen
from .auxiliary import GraphRunner
from .forward import Forward, as_batch, check_target, one_hot, softmax
from .ingraph import Critical, GradCam, Pathwise, Recipe, build_explainer
from .linear import Linear, LinearEngine
from .model import Model, load
from .resident import Device, OnDevice, device_value, running
from .session import DEVICES, make_session, providers_for
from .sparse import SparseWalker, TooDense
from .sweep import (
    DeviceChoice,
    RowStore,
    gate_cotangents,
    masks_and_counts,
    network_top,
    percentile_rank,
    top_units,
)

__all__ = [
    "DEVICES",
    "Device",
    "DeviceChoice",
    "Forward",
    "GraphRunner",
    "Linear",
    "LinearEngine",
    "Model",
    "OnDevice",
    "Critical",
    "GradCam",
    "Pathwise",
    "Recipe",
    "RowStore",
    "SparseWalker",
    "TooDense",
    "as_batch",
    "build_adjoint",
    "build_explainer",
    "build_frozen",
    "check_target",
    "device_value",
    "gate_cotangents",
    "load",
    "make_session",
    "running",
    "masks_and_counts",
    "network_top",
    "one_hot",
    "percentile_rank",
    "providers_for",
    "softmax",
    "top_units",
]
