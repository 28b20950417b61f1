"""Stage 6, learn: training GEN-CNP pathway generators, the one stage that needs torch.

``pathonnx learn MODEL DATA -o GENERATOR.onnx`` trains, once per model, a generator that reads
the model's gate outputs at an input and returns its pathway (Lin, Bao, Yu and Kong, "On Model
Explanations with Transferable Neural Pathways", arXiv 2309.09887), and exports it to ONNX:
the method ``gencnp`` (:mod:`pathonnx.methods.learned`) then explains with it and needs only
onnxruntime. torch is the optional extra ``learn`` (``pip install 'pathonnx[learn]'``); the
rest of pathonnx imports without it (import-linter checks that only this stage imports torch).
This package imports without torch too (:class:`Settings` needs none); what needs torch is
loaded on first use, and without torch :func:`require_torch` says, in one line, what to
install.

There is no torch copy of the target model. The network restricted to a pathway runs in
onnxruntime (the model's scaled forward pass), and its gradient with respect to the pathway's
per-gate scales comes from pathonnx's own adjoint graph, wrapped as a torch autograd Function
(:mod:`.autograd`). Inside, in order of dependency:

- :mod:`.settings`: :class:`Settings`, how a generator is trained;
- :mod:`.autograd`: :class:`PathwayNetwork`, the target network as a function of its scales;
- :mod:`.generator`: :class:`GenCNP`, the generator (RFE, PDN, RPD, DAQ);
- :mod:`.data`: :class:`Examples`, the training images and their labels, and the split;
- :mod:`.training`: :func:`train`, the loop (distillation, sparsity, checkpoints, early stop);
- :mod:`.export`: :func:`export_generator`, the generator as an ONNX file.
"""

from __future__ import annotations

import importlib

from ..errors import InputError
from .settings import Settings, check_gates

#: What needs torch, and the module that has it.
_NEEDS_TORCH = {
    "PathwayNetwork": "autograd",
    "pathway_logits": "autograd",
    "GenCNP": "generator",
    "daq": "generator",
    "Examples": "data",
    "Trained": "training",
    "train": "training",
    "export_generator": "export",
    "write_class_pathways": "export",
}


def require_torch() -> None:
    """Raise a one-line :class:`InputError` naming the extra when torch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(
            "pathonnx learn needs torch, which is not installed here; install it with "
            "pip install 'pathonnx[learn]'"
        ) from None


def __getattr__(name: str):
    if name not in _NEEDS_TORCH:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_torch()
    return getattr(importlib.import_module(f".{_NEEDS_TORCH[name]}", __name__), name)


__all__ = ["Settings", "check_gates", "require_torch", *_NEEDS_TORCH]
