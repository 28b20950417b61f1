"""The Model: a loaded, canonicalized network, its gates, and its forward pass and linear engine."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from ..graph import Canonical, Gate, MaxPoolSite, PassReport, canonicalize, load_model
from ..io import atomic_write_bytes
from .forward import Forward, check_target
from .linear import Linear, LinearEngine
from .session import providers_for


class Model:
    """An explainable network: canonical ONNX graph, gates in execution order, forward pass.

    Build it with :func:`pathonnx.load`. ``input_shape`` is per sample; ``num_outputs`` is K.
    ``engine`` (:class:`LinearEngine`) runs every onnxruntime session of the model.
    """

    def __init__(self, graph: Canonical, device: str = "auto", precision: str = "exact"):
        self.graph = graph
        self.source = graph.source
        self.input_name = graph.input_name
        self.input_shape: tuple[int, ...] = graph.input_shape
        self.logits_name = graph.logits_name
        self.reference_name = graph.reference
        self.reports: list[PassReport] = graph.reports
        self.gates: list[Gate] = graph.gates
        self.maxpools: list[MaxPoolSite] = graph.maxpools
        self.num_outputs = graph.num_outputs
        self.providers = providers_for(device, precision)
        self.precision = precision
        self.engine = LinearEngine(graph, self.providers)

    @property
    def device(self) -> str:
        """ "cuda" or "cpu": where onnxruntime runs the model."""
        return self.engine.device

    # -- the graphs -------------------------------------------------------------------------------

    @property
    def original(self):
        """The model as read (opset upgraded if needed, batch pinned to 1, shapes inferred), a
        self-contained copy."""
        return self.graph.full(self.graph.original)

    @property
    def canonical(self):
        """The rewritten model that pathonnx runs: outputs are the logits, then every gate (a
        self-contained copy; internally its weights are shared by every session)."""
        return self.graph.full(self.graph.proto)

    @property
    def softmax_stripped(self) -> bool:
        return self.graph.softmax_stripped

    @property
    def opset_upgraded_from(self) -> int | None:
        return self.graph.opset_upgraded_from

    def op_histogram(self, canonical: bool = True) -> Counter:
        return self.graph.op_histogram(canonical)

    def sha256(self) -> str:
        return self.graph.sha256()

    @property
    def metadata(self) -> dict[str, str]:
        return self.graph.metadata

    # -- running ----------------------------------------------------------------------------------

    @property
    def session(self):
        return self.engine.session

    def forward(self, x) -> Forward:
        """Run once: ``x`` float32 (N, *input_shape) -> logits (N, K), every gate's output, the
        inputs of LeakyRelu/PRelu gates and every max-pool's argmax (the frozen pattern)."""
        return self.engine.forward(x)

    def logits(self, x, batch: int = 64) -> np.ndarray:
        """Logits only, (N, K), ``batch`` samples per onnxruntime call: the canonical graph
        without the pattern outputs (the metrics' many forward passes need nothing else)."""
        return self.engine.logits(x, batch)

    def linearize(self, x, target, masks: dict | None = None, fwd: Forward | None = None) -> Linear:
        """The exact linear model at ``x``: ``.W`` (shape of x) and ``.b`` (N,) for ``target``.

        ``target``: an int or one per sample. ``masks``: gate name -> bool array of shape
        ``gate.shape`` or ``(N, *gate.shape)``; units outside a mask are removed (they pass
        nothing), giving the pathway's ``W^p, b^p``. Without masks ``Σ W⊙x + b`` is the logit.
        ``fwd``: the forward pass at ``x`` when the caller has it already; without it, the
        forward pass and the walk back run as one onnxruntime call.
        """
        if fwd is None:
            return self.engine.linearize_at(x, target, masks)
        return self.engine.linearize(fwd, target, masks)

    def check_target(self, target, n: int) -> np.ndarray:
        """Targets as (N,) int64, from an int or one per sample; raises on out-of-range."""
        return check_target(target, n, self.num_outputs)

    def save(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
        """Write the canonical model atomically (temp file, then rename), with ``metadata``
        added to its metadata_props (e.g. ``pathonnx.preprocess``, ``pathonnx.labels``). The
        file loads again with :func:`load`: its first output is the logits."""
        return atomic_write_bytes(Path(path), self.graph.serialized(metadata))

    def __repr__(self) -> str:
        units = sum(g.units for g in self.gates)
        return (
            f"Model({self.source!r}, input={self.input_shape}, K={self.num_outputs}, "
            f"gates={len(self.gates)}, units/sample={units})"
        )


def load(
    path,
    input_shape: tuple[int, ...] | None = None,
    device: str = "auto",
    precision: str = "exact",
) -> Model:
    """Load and canonicalize an exported ReLU network.

    ``path``: a file path, serialized bytes or an ``onnx.ModelProto`` (copied, never modified).
    ``input_shape`` (per sample, e.g. ``(3, 224, 224)``) is needed only when the file leaves a
    non-batch input dimension dynamic. ``device``: "auto" (CUDA when available), "cpu", "cuda".
    ``precision``: "exact" (default) or "tf32", which lets CUDA round float32 products to TF32
    (faster; W·x + b then misses the logit by up to about 1e-2 relative; no effect on the CPU).
    Raises :class:`ModelLoadError` for unreadable files and :class:`UnsupportedModelError`,
    listing every offending node, for models outside the piecewise-linear vocabulary.
    """
    file = load_model(path, input_shape)
    name = Path(file.source).name if file.source[0] != "<" else file.source
    return Model(canonicalize(file, name), device, precision)


__all__ = ["Gate", "MaxPoolSite", "Model", "load"]
