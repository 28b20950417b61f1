"""Stage 6, learn: training GEN-CNP pathway generators, the one stage that needs torch.

``pathonnx learn MODEL DATA -o GENERATOR.onnx`` trains, once per model, a generator that reads
the model's gate outputs at an input and returns its pathway (Lin, Bao, Yu and Kong, "On Model
Explanations with Transferable Neural Pathways", arXiv 2309.09887), and exports it to ONNX:
the method ``gencnp`` (:mod:`pathonnx.methods.learned`) then explains with it and needs only
onnxruntime. torch is the optional extra ``learn`` (``pip install 'pathonnx[learn]'``); the
rest of pathonnx imports without it (import-linter checks that only this stage imports torch).

There is no torch copy of the target model. The network restricted to a pathway runs in
onnxruntime (the model's scaled forward pass), and its gradient with respect to the pathway's
per-gate scales comes from pathonnx's own adjoint graph, wrapped as a torch autograd Function
(:mod:`.autograd`). Inside, in order of dependency:

- :mod:`.autograd`: :class:`PathwayNetwork`, the target network as a function of its scales;
- :mod:`.generator`: :class:`GenCNP`, the generator (RFE, PDN, RPD, DAQ);
- :mod:`.data`: :class:`Examples`, the training images and their labels, and the split;
- :mod:`.training`: :func:`train`, the loop (distillation, sparsity, checkpoints, early stop);
- :mod:`.export`: :func:`export_generator`, the generator as an ONNX file.
"""

from __future__ import annotations

from ..errors import InputError

try:
    import torch  # noqa: F401
except ImportError:  # the optional extra is not installed
    raise InputError(
        "pathonnx learn needs torch, which is not installed here; install it with "
        "pip install 'pathonnx[learn]'"
    ) from None

from .autograd import PathwayNetwork, pathway_logits  # noqa: E402
from .data import Examples  # noqa: E402
from .export import export_generator, write_class_pathways  # noqa: E402
from .generator import GenCNP, daq  # noqa: E402
from .training import Settings, Trained, train  # noqa: E402

__all__ = [
    "Examples",
    "GenCNP",
    "PathwayNetwork",
    "Settings",
    "Trained",
    "daq",
    "export_generator",
    "pathway_logits",
    "train",
    "write_class_pathways",
]
