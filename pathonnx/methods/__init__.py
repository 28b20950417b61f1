"""Stage 4, methods: the registry of attribution and pathway methods, and the methods.

- :mod:`.registry`: :class:`Method`, :class:`Param`, ``METHODS``, :func:`attribute`;
- :mod:`.pathway`: the :class:`Pathway` value;
- :mod:`.selection` and :mod:`.pathwise`: pathwise explanation (Algorithm 1) and decomposition;
- :mod:`.critical`: NeuronMCT and NeuronIntGrad critical pathways;
- :mod:`.pruning`: the pruning-objective baselines (greedy Taylor pruning, DGR);
- :mod:`.transfer`: class pathways aggregated from any pathway method's pathways (Lin et al.
  2023), their file, and the ``class_pathway`` method that explains with them;
- :mod:`.learned`: GEN-CNP's learned pathways, read from a generator (``pathonnx learn``);
- :mod:`.baselines`: saliency, input × gradient, integrated gradients, SmoothGrad, guided
  backprop, DeconvNet, Grad-CAM.

Importing this package registers every method.
"""

from __future__ import annotations

from .pathway import Pathway, jaccard
from .registry import METHODS, Method, Param, attribute, method_params

# Importing the method modules registers them, in the order --help lists them.
from . import pathwise, critical, pruning, transfer, learned, baselines  # noqa: E402,F401  isort: skip
from .critical import critical_pathway  # noqa: E402
from .pathwise import decompose  # noqa: E402
from .pruning import pruned_pathway  # noqa: E402
from .transfer import ClassPathways, class_pathways  # noqa: E402

__all__ = [
    "METHODS",
    "ClassPathways",
    "Method",
    "Param",
    "Pathway",
    "attribute",
    "class_pathways",
    "critical_pathway",
    "decompose",
    "jaccard",
    "method_params",
    "pruned_pathway",
]
