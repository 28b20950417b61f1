"""The Model: a loaded, canonicalized network, its gates, and its forward pass and linear engine."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..graph import Canonical, Gate, MaxPoolSite, PassReport, canonicalize, load_model
from ..io import atomic_write_bytes
from .forward import Forward, check_target
from .linear import Linear, LinearEngine
from .session import providers_for


class Model:
    """An explainable network: canonical ONNX graph, gates in execution order, forward pass.

    Build it with :func:`pathonnx.load`. ``input_shape`` is per sample; ``num_outputs`` is K.
    ``engine`` (:class:`LinearEngine`) runs every onnxruntime session of the model.

    The logits are the chosen output's elements in C order: for a classifier (N, K) they are
    the output itself; a dense output of per-sample shape ``output_shape`` (e.g. (H, W, C))
    is flattened, and :meth:`flat_index` names the logit of one element. :meth:`readout`
    gives the model whose K logits are the C channels at one position, or summed over a
    region (docs/ARCHITECTURE.md, Semantics: targets).
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
        self.output_name: str = graph.output_name
        """The graph output explained (its name in the file)."""
        self.output_shape: tuple[int, ...] = graph.output_shape
        """Its per-sample shape in its own layout, e.g. (K,), (19, 27, 2) or (21, 64, 64)."""
        self.channel_axis: int = graph.channel_axis
        """The axis of ``output_shape`` that holds the channels (classes)."""
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

    # -- the output ---------------------------------------------------------------------------

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every output the model file declared (the one explained is :attr:`output_name`)."""
        return self.graph.file.outputs or (self.output_name,)

    @property
    def channels(self) -> int:
        """C: the channels (classes) at each position of the output (K for a classifier)."""
        return self.graph.channels

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The output's shape without its channel axis: ``()`` for (K,), (H, W) for dense."""
        return self.graph.spatial_shape

    @property
    def dense(self) -> bool:
        """Whether the output has more than one position: a target then needs one
        (:meth:`readout`), as a class index alone does not say where."""
        return int(np.prod(self.spatial_shape, dtype=np.int64)) > 1

    @property
    def readout_of(self):
        """The :class:`~pathonnx.graph.Readout` (position or region weights) this model's
        logits read off a dense output, or None."""
        return self.graph.readout_of

    def require_position(self) -> None:
        """Raise InputError when the output is dense and no position or region was chosen:
        explanations and metrics of one target need to know where it is."""
        if not self.dense or self.readout_of is not None:
            return
        shape = "x".join(map(str, self.output_shape))
        where = "x".join(map(str, self.spatial_shape))
        raise InputError(
            f"output {self.output_name!r} is dense ({shape} per sample, channels on axis "
            f"{self.channel_axis}): choose a position with --at Y,X (at=(y, x)), 0-based in "
            f"{where}, or a region with --target-mask FILE (mask=); --target is then a channel"
        )

    def position(self, at) -> tuple[int, ...]:
        """``at`` (e.g. (y, x)) checked as a position of the output; raises InputError."""
        spatial = self.spatial_shape
        try:
            at = tuple(int(v) for v in np.atleast_1d(at))
        except (TypeError, ValueError):
            raise InputError(f"position {at!r} is not a list of integers like (3, 4)") from None
        shown = "x".join(map(str, spatial))
        if len(at) != len(spatial):
            raise InputError(
                f"position {at} has {len(at)} coordinate(s) but output {self.output_name!r} "
                f"(per-sample {self._shape_text()}) has {len(spatial)} position axes ({shown}); "
                f"give {len(spatial)}"
            )
        if any(not 0 <= v < d for v, d in zip(at, spatial)):
            raise InputError(
                f"position {at} is outside output {self.output_name!r}, whose positions span "
                f"{shown} (0-based) at this input size"
            )
        return at

    def flat_index(self, channel: int, at=()) -> int:
        """The logit of one output element: channel ``channel`` at position ``at`` (the
        output's axes other than the channel axis, in order, e.g. (y, x)), i.e. its C-order
        index in :attr:`output_shape`. ``model.linearize(x, model.flat_index(c, (y, x)))``
        is the exact linear model of that element."""
        at = self.position(at)
        if not 0 <= int(channel) < self.channels:
            raise InputError(
                f"channel {channel} is out of range; output {self.output_name!r} has "
                f"{self.channels} channels (0..{self.channels - 1})"
            )
        index = list(at)
        index.insert(self.channel_axis, int(channel))
        return int(np.ravel_multi_index(index, self.output_shape))

    def readout(self, at=None, mask=None) -> Model:
        """The model whose logits are the C channels of the dense output at position ``at``
        (e.g. (y, x)), or each channel summed over the region ``mask`` (an array of
        :attr:`spatial_shape`: booleans, or weights of a linear combination). Its targets are
        channels; ``W·x + b`` is the element's value, or the region's sum; pathwise's softmax
        runs over the C channels there. The new model shares this one's gates and weights;
        its sessions are its own."""
        if self.readout_of is not None:
            raise InputError("this model already reads out a position or region; call readout "
                             "on the model it came from")  # fmt: skip
        if (at is None) == (mask is None):
            raise InputError("give a position at=(y, x) or a region mask=, one of the two")
        if not self.spatial_shape:
            raise InputError(
                f"output {self.output_name!r} has per-sample shape {self._shape_text()}, with no "
                "positions; a position or region (--at, --target-mask) applies to a dense "
                "output such as (H, W, C)"
            )
        if at is not None:
            at = self.position(at)
            weights = np.zeros(self.spatial_shape, np.float32)
            weights[at] = 1.0
        else:
            weights = self._region(mask)
        graph = self.graph.readout(weights, at)
        return Model(graph, self.device, self.precision)

    def _region(self, mask) -> np.ndarray:
        try:
            weights = np.asarray(mask)
        except Exception as err:
            raise InputError(f"the region mask cannot be read as an array ({err})") from None
        if weights.dtype.kind not in "biuf":
            raise InputError(f"the region mask has dtype {weights.dtype}; give booleans or numbers")
        spatial = self.spatial_shape
        if tuple(weights.shape) != spatial:
            want = "x".join(map(str, spatial))
            raise InputError(
                f"the region mask has shape {weights.shape} but output {self.output_name!r} has "
                f"{want} positions at this input size; give a mask of that size"
            )
        weights = weights.astype(np.float32)
        if not np.isfinite(weights).all():
            raise InputError("the region mask contains NaN or Inf")
        if not weights.any():
            raise InputError("the region mask selects no position; mark at least one")
        return weights

    def _shape_text(self) -> str:
        return str(tuple(self.output_shape))

    def describe_output(self) -> dict:
        """What the logits are, for reports: the output's name, per-sample shape and channel
        axis, and the position (``at``) or region (``region_positions``, ``region_weight``)
        read off it."""
        graph = self.graph.base or self.graph
        info = {
            "name": self.output_name,
            "shape": list(graph.output_shape),
            "channel_axis": graph.channel_axis,
            "outputs": list(self.outputs),
        }
        readout = self.readout_of
        if readout is not None:
            info["at"] = None if readout.at is None else list(readout.at)
            if readout.at is None:
                info["region_positions"] = readout.elements
                info["region_weight"] = float(readout.weights.sum(dtype=np.float64))
        return info

    @property
    def identity(self) -> str:
        """The file's hash, with the chosen output and readout when there is a choice: what
        caches of results on this model key on."""
        extra = {}
        if len(self.outputs) > 1:
            extra["output"] = self.output_name
        readout = self.readout_of
        if readout is not None:
            extra["readout"] = hashlib.sha256(np.ascontiguousarray(readout.weights)).hexdigest()
        if not extra:
            return self.sha256()
        return f"{self.sha256()}:{json.dumps(extra, sort_keys=True)}"

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

    def check_memory(self, batch: int = 1) -> None:
        """Raise :class:`InputError` when a run on ``batch`` samples is estimated, from the
        graph's shapes, to need more memory than the budget (:mod:`pathonnx.engine.memory`:
        the forward pass's tensors and one adjoint row per sample; 75% of the machine's
        memory, or ``PATHONNX_MEMORY_BUDGET``). The message says what to pass instead."""
        self.engine.check_memory(batch)

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
    output: str | None = None,
    size: tuple[int, int] | None = None,
) -> Model:
    """Load and canonicalize an exported ReLU network.

    ``path``: a file path, serialized bytes or an ``onnx.ModelProto`` (copied, never modified).
    ``input_shape`` (per sample, in the model's layout, e.g. ``(3, 224, 224)`` or
    ``(12, 12, 3)``) is needed only when the file leaves a non-batch input dimension dynamic;
    for an image input with dynamic height and width, ``size=(H, W)`` is enough.
    ``output``: the name of the graph output to explain, needed when the model has several
    (the others and their branches are dropped). ``device``: "auto" (CUDA when available),
    "cpu", "cuda".
    ``precision``: "exact" (default) or "tf32", which lets CUDA round float32 products to TF32
    (faster; W·x + b then misses the logit by up to about 1e-2 relative; no effect on the CPU).
    Raises :class:`ModelLoadError` for unreadable files and :class:`UnsupportedModelError`,
    listing every offending node, for models outside the piecewise-linear vocabulary.
    """
    file = load_model(path, input_shape, output, size)
    name = Path(file.source).name if file.source[0] != "<" else file.source
    return Model(canonicalize(file, name), device, precision)


__all__ = ["Gate", "MaxPoolSite", "Model", "load"]
