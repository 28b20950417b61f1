"""pathonnx: exact, pathway-based explanations of exported ReLU networks, straight from ONNX."""

from __future__ import annotations

from .attribution import METHODS, attribute
from .check import CheckResult, SelfCheck, check_model, self_check
from .engine import Linear
from .errors import InputError, ModelLoadError, PathonnxError, UnsupportedModelError
from .explanation import Explanation, explain
from .forward import Forward
from .model import Gate, MaxPoolSite, Model, load
from .pathways import Pathway, critical_pathway, decompose, jaccard, pathwise
from .pruning import pruned_pathway
from .rewrite import PassReport

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "CheckResult",
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
    "critical_pathway",
    "decompose",
    "explain",
    "jaccard",
    "load",
    "pathwise",
    "pruned_pathway",
    "self_check",
]
