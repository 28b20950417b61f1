"""Stage 5, evaluation: faithfulness metrics (:mod:`.metrics`) and the evaluation of methods
over a set of inputs (:mod:`.evaluate`)."""

from __future__ import annotations

from . import metrics
from .evaluate import GROUPS, METRICS, Results, Settings, evaluate

__all__ = ["GROUPS", "METRICS", "Results", "Settings", "evaluate", "metrics"]
