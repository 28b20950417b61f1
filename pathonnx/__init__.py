"""pathonnx: exact, pathway-based explanations of exported ReLU networks, straight from ONNX.

The package's folders are the pipeline's stages, each importing only from those before it
(docs/ARCHITECTURE.md): ``ops`` (one rule per op) → ``graph`` (load, rewrite) → ``engine``
(Model, sessions, the exact linear model) → ``methods`` (the registry, pathways, baselines)
→ ``evaluation`` (metrics) → the use cases here (``explanation``, ``check``, ``exporting``,
``pictures``) → ``learn`` (training GEN-CNP pathway generators; the one stage that needs
torch, the extra ``learn``; it is not imported here).
"""

from __future__ import annotations

import os

# Before onnxruntime's first import (in the stages below): its telemetry would otherwise write
# a device id under $HOME/.cache on every run, and warn in colour where HOME is not writable.
# A value the user set stays. The rest of its quieting is in engine/session.py.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .check import CheckResult, SelfCheck, check_model, self_check
from .engine import Forward, Linear, Model, load
from .errors import InputError, ModelLoadError, PathonnxError, UnsupportedModelError
from .explanation import Explanation, explain
from .exporting import export, exportable_methods
from .graph import Gate, MaxPoolSite, PassReport
from .methods import (
    METHODS,
    ClassPathways,
    Pathway,
    attribute,
    class_pathways,
    critical_pathway,
    decompose,
    jaccard,
    pruned_pathway,
)
from .methods.pathwise import pathwise
from .version import __version__  # noqa: F401  (pathonnx.__version__)

__all__ = [
    "METHODS",
    "CheckResult",
    "ClassPathways",
    "Explanation",
    "Forward",
    "Gate",
    "Linear",
    "InputError",
    "MaxPoolSite",
    "Model",
    "ModelLoadError",
    "PassReport",
    "PathonnxError",
    "Pathway",
    "SelfCheck",
    "UnsupportedModelError",
    "attribute",
    "check_model",
    "class_pathways",
    "critical_pathway",
    "decompose",
    "explain",
    "export",
    "exportable_methods",
    "jaccard",
    "load",
    "pathwise",
    "pruned_pathway",
    "self_check",
]
