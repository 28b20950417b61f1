"""Stage 2, graph: read a model file, rewrite it into canonical form, derive graphs from it.

Protobuf stops here. Above this stage, code sees a :class:`Canonical` (gates, shapes, names)
and graphs as opaque values handed to onnxruntime; graphsurgeon's IR reaches only the engine's
graph builders.
"""

from __future__ import annotations

from .boundary import boundary
from .canonical import OUTPUT_KEY, Canonical, Gate, MaxPoolSite, Readout, canonicalize, channel_axis
from .emit import Emitter
from .load import CANONICAL_KEY, ModelFile, load_model
from .passes import (
    PIPELINE,
    argmax_name,
    canonicalize_gates,
    drop_identity,
    expose_outputs,
    flatten_logits,
    fold_batchnorm,
    fold_constants,
    free_batch,
    per_sample_gather,
    strip_softmax,
)
from .report import PassReport, rewrite_pass
from .screen import screen
from .variants import (
    at_opset,
    live_tensors,
    parametric_layers,
    randomized,
    with_default,
    with_metadata,
)

__all__ = [
    "at_opset",
    "CANONICAL_KEY",
    "OUTPUT_KEY",
    "PIPELINE",
    "Canonical",
    "Emitter",
    "Gate",
    "MaxPoolSite",
    "ModelFile",
    "PassReport",
    "Readout",
    "argmax_name",
    "boundary",
    "canonicalize",
    "canonicalize_gates",
    "channel_axis",
    "drop_identity",
    "expose_outputs",
    "flatten_logits",
    "fold_batchnorm",
    "fold_constants",
    "free_batch",
    "live_tensors",
    "load_model",
    "parametric_layers",
    "per_sample_gather",
    "randomized",
    "rewrite_pass",
    "screen",
    "strip_softmax",
    "with_default",
    "with_metadata",
]
