"""The Model: a loaded, canonicalized network with its gates and its onnxruntime forward pass."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper

from .errors import InputError, UnsupportedModelError
from .forward import Forward, as_batch, make_session, providers_for
from .load import LoadedModel, load_model
from .ops import GATE_KINDS
from .rewrite import Canonical, PassReport, canonicalize


@dataclass(frozen=True)
class Gate:
    """One gate tensor. ``name`` is the ONNX tensor name of its output, ``shape`` is per sample
    (its units are the elements of that shape), ``params`` hold the constant bounds or slopes."""

    name: str
    kind: str
    shape: tuple[int, ...]
    node: str = ""
    params: dict = field(default_factory=dict, compare=False, repr=False)
    input: str = ""
    """The gate's input tensor (its pre-activation)."""

    @property
    def units(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def reads_input(self) -> bool:
        """Whether the frozen gate needs its input (LeakyRelu/PRelu: the slope's sign)."""
        return self.kind in ("leaky_relu", "prelu")


@dataclass(frozen=True)
class MaxPoolSite:
    """A max-pool whose argmax is frozen at the input: ``name`` its output tensor."""

    name: str
    argmax: str
    shape: tuple[int, ...]


class Model:
    """An explainable network: canonical ONNX graph, gates in execution order, forward pass.

    Build it with :func:`pathonnx.load`. ``input_shape`` is per sample; ``num_outputs`` is K.
    """

    def __init__(self, loaded: LoadedModel, canonical: Canonical, device: str = "auto"):
        self._loaded = loaded
        self._canonical = canonical
        self.source = loaded.source
        self.input_name = loaded.input_name
        self.input_shape: tuple[int, ...] = loaded.input_shape
        self.logits_name = canonical.logits_name
        self.reference_name = canonical.reference
        self.reports: list[PassReport] = canonical.reports
        self.providers = providers_for(device)
        self._session = None
        self._engine = None
        self._plain = None
        shapes = _static_shapes(canonical.proto)
        inits = {t.name: t for t in canonical.proto.graph.initializer}
        self.gates: list[Gate] = []
        self.maxpools: list[MaxPoolSite] = []
        for node in canonical.proto.graph.node:
            if node.op_type in GATE_KINDS:
                name = node.output[0]
                kind = GATE_KINDS[node.op_type]
                params = _params(node, inits)
                self.gates.append(Gate(name, kind, shapes[name], node.name, params, node.input[0]))
            elif node.op_type == "MaxPool":
                name = node.output[0]
                self.maxpools.append(MaxPoolSite(name, node.output[1], shapes[name]))
        logits_shape = shapes.get(self.logits_name)
        if logits_shape is None or len(logits_shape) != 1:
            shown = "?" if logits_shape is None else ", ".join(map(str, logits_shape))
            raise UnsupportedModelError(
                f"{self.source}: the output has per-sample shape ({shown}); pathonnx explains "
                "classifiers whose output is logits or probabilities of shape (N, K)"
            )
        self.num_outputs = int(logits_shape[0])

    # -- the graphs -------------------------------------------------------------------------------

    @property
    def original(self) -> onnx.ModelProto:
        """The model as read (opset upgraded if needed, batch pinned to 1, shapes inferred)."""
        return self._loaded.proto

    @property
    def canonical(self) -> onnx.ModelProto:
        """The rewritten model that pathonnx runs: outputs are the logits, then every gate."""
        return self._canonical.proto

    @property
    def softmax_stripped(self) -> bool:
        return any(r.name == "strip_softmax" and r.applied for r in self.reports)

    @property
    def opset_upgraded_from(self) -> int | None:
        return self._loaded.opset_upgraded_from

    def op_histogram(self, canonical: bool = True) -> Counter:
        graph = (self.canonical if canonical else self.original).graph
        return Counter(node.op_type for node in graph.node)

    def sha256(self) -> str:
        return hashlib.sha256(self.original.SerializeToString()).hexdigest()

    @property
    def metadata(self) -> dict[str, str]:
        return {p.key: p.value for p in self.original.metadata_props}

    # -- running ----------------------------------------------------------------------------------

    @property
    def session(self):
        if self._session is None:
            self._session = make_session(self.canonical, self.providers)
        return self._session

    def forward(self, x) -> Forward:
        """Run once: ``x`` float32 (N, *input_shape) -> logits (N, K), every gate's output, the
        inputs of LeakyRelu/PRelu gates and every max-pool's argmax (the frozen pattern)."""
        x = as_batch(x, self.input_shape)
        wanted = [g.input for g in self.gates if g.reads_input and g.input != self.input_name]
        names = [
            self.logits_name,
            *(g.name for g in self.gates),
            *(m.argmax for m in self.maxpools),
        ]
        names += [name for name in wanted if name not in names]
        values = dict(zip(names, self.session.run(names, {self.input_name: x})))
        return self.pattern(x, values)

    def pattern(self, x: np.ndarray, values: dict, read=None) -> Forward:
        """The :class:`Forward` of a run at ``x`` whose outputs are ``values`` (by tensor name).
        ``read(tensor name)`` gives a LeakyRelu/PRelu gate's input (default: from ``values``)."""
        values = {**values, self.input_name: x}
        read = read or values.__getitem__
        return Forward(
            x=x,
            logits=values[self.logits_name],
            activations={g.name: values[g.name] for g in self.gates},
            preactivations={g.name: read(g.input) for g in self.gates if g.reads_input},
            argmax={m.name: values[m.argmax] for m in self.maxpools},
        )

    def logits(self, x, batch: int = 64) -> np.ndarray:
        """Logits only, (N, K), ``batch`` samples per onnxruntime call: the canonical graph
        without the pattern outputs (the metrics' many forward passes need nothing else)."""
        x = as_batch(x, self.input_shape)
        if self._plain is None:
            self._plain = make_session(_plain(self.canonical), self.providers)
        step = max(1, int(batch))
        runs = [
            self._plain.run([self.logits_name], {self.input_name: x[i : i + step]})[0]
            for i in range(0, len(x), step)
        ]
        return np.concatenate(runs)

    @property
    def engine(self):
        """The linear engine (adjoint and frozen graphs), built on first use."""
        if self._engine is None:
            from .engine import LinearEngine  # the engine is the next stage of the pipeline

            self._engine = LinearEngine(self)
        return self._engine

    def linearize(self, x, target, masks: dict | None = None):
        """The exact linear model at ``x``: ``.W`` (shape of x) and ``.b`` (N,) for ``target``.

        ``target``: an int or one per sample. ``masks``: gate name -> bool array of shape
        ``gate.shape`` or ``(N, *gate.shape)``; units outside a mask are removed (they pass
        nothing), giving the pathway's ``W^p, b^p``. Without masks ``Σ W⊙x + b`` is the logit.
        """
        return self.engine.linearize(x, target, masks)

    def check_target(self, target, n: int) -> np.ndarray:
        """Targets as (N,) int64, from an int or one per sample; raises on out-of-range."""
        t = np.asarray(target)
        if t.dtype.kind not in "iu" and not (t.dtype.kind == "f" and np.all(t == np.round(t))):
            raise InputError(f"target {target!r} is not an integer class index")
        t = np.broadcast_to(t.astype(np.int64), (n,)) if t.ndim == 0 else t.astype(np.int64)
        if t.shape != (n,):
            raise InputError(f"target has shape {t.shape}; give an int or one per sample ({n})")
        bad = t[(t < 0) | (t >= self.num_outputs)]
        if bad.size:
            raise InputError(
                f"target {int(bad[0])} is out of range; the model has {self.num_outputs} "
                f"outputs (0..{self.num_outputs - 1})"
            )
        return t

    def save(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
        """Write the canonical model atomically (temp file, then rename), with ``metadata``
        added to its metadata_props (e.g. ``pathonnx.preprocess``, ``pathonnx.labels``). The
        file loads again with :func:`load`: its first output is the logits."""
        from .io import atomic_write_bytes
        from .load import CANONICAL_KEY

        proto = onnx.ModelProto()
        proto.CopyFrom(self.canonical)
        entries = {p.key: p.value for p in proto.metadata_props}
        entries[CANONICAL_KEY] = "first output: logits; the others expose gates and argmaxes"
        entries.update(metadata or {})
        del proto.metadata_props[:]
        for key, value in entries.items():
            proto.metadata_props.add(key=key, value=str(value))
        return atomic_write_bytes(Path(path), proto.SerializeToString())

    def __repr__(self) -> str:
        units = sum(g.units for g in self.gates)
        return (
            f"Model({self.source!r}, input={self.input_shape}, K={self.num_outputs}, "
            f"gates={len(self.gates)}, units/sample={units})"
        )


def _plain(canonical: onnx.ModelProto) -> onnx.ModelProto:
    """The canonical model with only the logits output and no unused max-pool Indices."""
    proto = onnx.ModelProto()
    proto.CopyFrom(canonical)
    del proto.graph.output[1:]
    read = {name for node in proto.graph.node for name in node.input}
    for node in proto.graph.node:
        if node.op_type == "MaxPool" and len(node.output) == 2 and node.output[1] not in read:
            del node.output[1]
    return proto


def _static_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of every tensor whose non-batch dims are known."""
    shapes = {}
    for info in [*proto.graph.value_info, *proto.graph.output, *proto.graph.input]:
        dims = info.type.tensor_type.shape.dim
        if not dims or not all(d.HasField("dim_value") for d in dims[1:]):
            continue
        shapes[info.name] = tuple(int(d.dim_value) for d in dims[1:])
    return shapes


def _params(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> dict:
    """Constant parameters of a canonical gate: Clip bounds, LeakyRelu alpha, PRelu slope."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "LeakyRelu":
        return {"alpha": float(attrs.get("alpha", 0.01))}
    if node.op_type == "Clip":
        lo, hi = (onnx.numpy_helper.to_array(inits[name]) for name in node.input[1:3])
        return {"lo": float(lo), "hi": float(hi)}
    if node.op_type == "PRelu":
        return {"slope": onnx.numpy_helper.to_array(inits[node.input[1]])}
    return {}


def load(
    path: str | os.PathLike | onnx.ModelProto | bytes,
    input_shape: tuple[int, ...] | None = None,
    device: str = "auto",
) -> Model:
    """Load and canonicalize an exported ReLU network.

    ``input_shape`` (per sample, e.g. ``(3, 224, 224)``) is needed only when the file leaves a
    non-batch input dimension dynamic. ``device``: "auto" (CUDA when available), "cpu", "cuda".
    Raises :class:`ModelLoadError` for unreadable files and :class:`UnsupportedModelError`,
    listing every offending node, for models outside the piecewise-linear vocabulary.
    """
    loaded = load_model(path, input_shape)
    name = Path(loaded.source).name if loaded.source[0] != "<" else loaded.source
    return Model(loaded, canonicalize(loaded, name), device)


__all__ = ["Gate", "MaxPoolSite", "Model", "load"]
