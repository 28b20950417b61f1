"""Stage 3, engine: the Model, its onnxruntime sessions, and the exact linear model at x.

Inside, in order of dependency: ``session`` (providers, options) → ``forward`` (the pattern,
targets) → ``adjoint`` (the adjoint and frozen graphs, built from the op rules) → ``sparse``
(the sparse walk, a driver over the op rules) → ``linear`` (:class:`LinearEngine`) → ``sweep``
(staged walks, the row store) → ``model`` (:class:`Model`, :func:`load`).
"""

from __future__ import annotations

from .adjoint import build_adjoint, build_frozen
from .forward import Forward, as_batch, check_target, one_hot, softmax
from .linear import Linear, LinearEngine
from .model import Model, load
from .session import DEVICES, make_session, providers_for
from .sparse import SparseWalker, TooDense
from .sweep import RowStore, gate_cotangents

__all__ = [
    "DEVICES",
    "Forward",
    "Linear",
    "LinearEngine",
    "Model",
    "RowStore",
    "SparseWalker",
    "TooDense",
    "as_batch",
    "build_adjoint",
    "build_frozen",
    "check_target",
    "gate_cotangents",
    "load",
    "make_session",
    "one_hot",
    "providers_for",
    "softmax",
]
