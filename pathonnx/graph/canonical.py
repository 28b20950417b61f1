"""The canonical model: BN folded, gates in one form, batch free, every gate exposed.

:func:`canonicalize` runs the rewrite passes of :mod:`pathonnx.graph.passes` and checks every
node against the op registry. :class:`Canonical` is what the stages above read: the gates and
max-pools in execution order, names and shapes, and the graphs derived from the canonical one
(:mod:`pathonnx.graph.variants`), without handling protobuf themselves.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference

from ..errors import ModelLoadError, UnsupportedModelError
from ..images import image_layout
from ..ops import GATE_KINDS, offenders, rule_for, sample_shape
from . import variants
from .boundary import boundary
from .load import CANONICAL_KEY, ModelFile
from .passes import PIPELINE
from .report import PassReport
from .screen import refusal_error
from .weights import Weights, export_graph, import_graph


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
    reads_input: bool = field(default=False, compare=False, repr=False)
    """Whether the frozen gate needs its input (LeakyRelu/PRelu: the slope's sign)."""

    @property
    def units(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class MaxPoolSite:
    """A max-pool whose argmax is frozen at the input: ``name`` its output tensor."""

    name: str
    argmax: str
    shape: tuple[int, ...]


#: Metadata key of a canonical file whose logits flatten a dense output: the output's name,
#: per-sample shape and channel axis (a JSON object), so that it loads again as dense.
OUTPUT_KEY = "pathonnx.output"


@dataclass(frozen=True)
class Readout:
    """A linear readout of a dense output (:meth:`Canonical.readout`): per channel c, the sum
    of ``weights[p] · output[c at p]`` over the positions p (every axis but the channel axis,
    in order; ``weights`` has that shape). ``at`` is the position when it is one element."""

    weights: np.ndarray
    at: tuple[int, ...] | None = None

    @property
    def elements(self) -> int:
        """Positions with a non-zero weight."""
        return int(np.count_nonzero(self.weights))


def channel_axis(shape: tuple[int, ...], input_shape: tuple[int, ...]) -> int:
    """The channel (class) axis of a per-sample output ``shape``: the only axis longer than 1
    (a classifier in any layout: (K,), (K, 1, 1), (1, 1, K)); else axis 0 for a model with an
    NCHW image input, and the last axis otherwise (NHWC, or not an image)."""
    long = [i for i, d in enumerate(shape) if d != 1]
    if len(long) <= 1:
        return long[0] if long else len(shape) - 1
    return 0 if image_layout(input_shape) == "NCHW" else len(shape) - 1


class Canonical:
    """A model file and its canonical form, as the stages above the graph stage see them.

    ``proto`` (the canonical model) and ``original`` (the file as read) are opaque values to
    hand to onnxruntime, with their large initializers stubbed (:mod:`.weights`; ``weights``
    holds the arrays, :meth:`full` writes them back); everything else is read off here: the
    gates and max-pools in execution order, the input and logits, the pass reports, and
    derived graphs.
    """

    def __init__(self, file: ModelFile, proto: onnx.ModelProto, reports: list[PassReport],
                 reference: str, readout: Readout | None = None,
                 base: Canonical | None = None):  # fmt: skip
        self.file = file
        self.readout_of: Readout | None = readout
        """The readout of a dense output this graph ends in (:meth:`readout`), else None."""
        self.base = base
        """The canonical graph the readout was added to, else None."""
        self.weights: Weights = file.weights
        self.proto = self.weights.strip(proto)
        self.reports = reports
        self.reference = reference
        """The tensor of the original graph that holds the same values as the logits."""
        self.source = file.source
        self.input_name = file.input_name
        self.input_shape: tuple[int, ...] = file.input_shape
        self.logits_name = proto.graph.output[0].name
        graph = self._view = import_graph(proto)  # read here, never edited
        self.gates: list[Gate] = []
        self.maxpools: list[MaxPoolSite] = []
        for node in graph.nodes:
            out = node.outputs[0]
            if node.op in GATE_KINDS:
                rule = rule_for(node.op)
                self.gates.append(Gate(out.name, rule.kind, sample_shape(out), node.name,
                                       rule.params(node), node.inputs[0].name,
                                       rule.reads_input))  # fmt: skip
            elif node.op == "MaxPool":
                self.maxpools.append(MaxPoolSite(out.name, node.outputs[1].name, sample_shape(out)))
        gates = {g.name for g in self.gates}
        self.gate_cuts = [i + 1 for i, n in enumerate(graph.nodes) if n.outputs[0].name in gates]
        """Positions in node order right after each gate, in the order of :attr:`gates`."""
        logits = graph.outputs[0].shape
        if logits is None or len(logits) != 2 or not isinstance(logits[1], int):
            shown = "?" if logits is None else ", ".join(map(str, logits[1:]))
            raise UnsupportedModelError(
                f"{self.source}: the output has per-sample shape ({shown}), not a fixed size; "
                "pathonnx explains outputs of a fixed per-sample shape, flattened to logits "
                "(N, K) (give a fixed input size)"
            )
        self.num_outputs = int(logits[1])
        if self.num_outputs <= 0:
            raise ModelLoadError(
                f"{self.source}: output {file.output_name!r} has no elements per sample (shape "
                f"({', '.join(map(str, logits[1:]))})); nothing to explain: re-export the model"
            )
        self.output_name = file.output_name
        """The model's output that the logits are (before a trailing Softmax was removed)."""
        self.output_shape, self.channel_axis = self._output_layout(graph)
        """The chosen output's per-sample shape in its own layout, e.g. (19, 27, 2), whose
        elements are the logits in C order, and the axis of its channels (classes)."""

    def _output_layout(self, graph: gs.Graph) -> tuple[tuple[int, ...], int]:
        """(per-sample shape, channel axis) of the output whose C-order elements are the
        logits: the shape of the tensor the logits flatten (the reference, when it has the
        same number of elements), or what a canonical file recorded (:data:`OUTPUT_KEY`)."""
        k = self.num_outputs
        if self.readout_of is not None:
            return (k,), 0
        shape: tuple[int, ...] = (k,)
        tensor = graph.tensors().get(self.reference)
        if tensor is not None and tensor.shape is not None and len(tensor.shape) > 2:
            dims = tuple(tensor.shape[1:])
            if all(isinstance(d, int) for d in dims) and int(np.prod(dims)) == k:
                shape = tuple(int(d) for d in dims)
        recorded = self.metadata.get(OUTPUT_KEY)
        if shape == (k,) and recorded and CANONICAL_KEY in self.metadata:
            try:
                entry = json.loads(recorded)
                dims, axis = tuple(int(d) for d in entry["shape"]), int(entry["channel_axis"])
                if int(np.prod(dims)) == k and 0 <= axis < len(dims):
                    self.output_name = str(entry.get("name", self.output_name))
                    return dims, axis
            except (ValueError, KeyError, TypeError):
                pass
        return shape, channel_axis(shape, self.input_shape)

    @property
    def channels(self) -> int:
        """The number of channels (classes) at each position of the output."""
        return self.output_shape[self.channel_axis]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The output's shape without its channel axis: the positions (``()`` for (K,))."""
        return tuple(d for i, d in enumerate(self.output_shape) if i != self.channel_axis)

    def readout(self, weights: np.ndarray, at: tuple[int, ...] | None = None) -> Canonical:
        """This model with its logits replaced by a readout of the dense output: per channel,
        the sum of ``weights`` (shape :attr:`spatial_shape`) times the channel's elements
        (:class:`Readout`). One position with weight 1 (``at``) reads the C logits there; a
        0/1 region sums them over the region. A few linear nodes above every gate: the gates,
        their order and the rest of the graph are those of this model."""
        weights = np.asarray(weights, np.float32).reshape(self.spatial_shape)
        name = f"{self.output_name}__readout"
        with boundary(self.source, "add the readout to the graph"):
            proto = variants.readout(self.proto, self.logits_name, self.output_shape,
                                     self.channel_axis, weights, name)  # fmt: skip
            proto = shape_inference.infer_shapes(self.weights.strip(proto), strict_mode=False)
        report = PassReport("readout")
        where = (f"at {tuple(at)}" if at is not None
                 else f"weighted over {np.count_nonzero(weights)} positions")  # fmt: skip
        report.changed.append(
            f"logits: the {self.channels} channels of output {self.output_name!r} "
            f"{list(self.output_shape)} {where}"
        )
        return Canonical(self.file, proto, [*self.reports, report], name,
                         Readout(weights, None if at is None else tuple(at)), self)  # fmt: skip

    @property
    def original(self) -> onnx.ModelProto:
        return self.file.proto

    @property
    def opset_upgraded_from(self) -> int | None:
        return self.file.opset_upgraded_from

    @property
    def softmax_stripped(self) -> bool:
        return any(r.name == "strip_softmax" and r.applied for r in self.reports)

    @property
    def metadata(self) -> dict[str, str]:
        return {p.key: p.value for p in self.original.metadata_props}

    def op_histogram(self, canonical: bool = True) -> Counter:
        graph = (self.proto if canonical else self.original).graph
        return Counter(node.op_type for node in graph.node)

    def sha256(self) -> str:
        """The hash of the model file as given (its bytes)."""
        return self.file.sha256

    def full(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """A self-contained copy of one of this model's graphs, its weights written back."""
        return self.weights.inflate(proto)

    def ir(self) -> gs.Graph:
        """A fresh graphsurgeon copy of the canonical graph (node order kept)."""
        return import_graph(self.proto)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one sample's forward pass through the weighted layers (Conv,
        ConvTranspose, Gemm, MatMul): a backward walk of one row costs about as much."""
        total = 0
        for node in self._view.nodes:
            if node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.inputs) < 2:
                continue
            out, w = node.outputs[0], node.inputs[1]
            if out.shape is None or w.shape is None:
                continue
            outputs = int(np.prod(sample_shape(out), dtype=np.int64))
            if node.op == "Conv":
                total += outputs * int(np.prod(w.shape[1:], dtype=np.int64))
            elif node.op == "ConvTranspose":
                total += int(np.prod(sample_shape(node.inputs[0]), dtype=np.int64)) * int(
                    np.prod(w.shape[1:], dtype=np.int64))  # fmt: skip
            else:
                inner = w.shape[1] if node.attrs.get("transB", 0) else w.shape[0]
                total += outputs * int(inner)
        return total

    def tensor_bytes(self) -> list[int]:
        """Bytes per sample of every tensor that the forward pass computes (the input, every
        node's outputs), from the inferred shapes; tensors of unknown shape are left out.
        Python integers: a declared dim of 2^62 does not wrap around."""
        sizes = []
        for tensor in self._view.tensors().values():
            if not isinstance(tensor, gs.Variable) or tensor.shape is None:
                continue
            dims = tensor.shape[1:]
            if all(isinstance(d, int) and d >= 0 for d in dims):
                sizes.append(math.prod(int(d) for d in dims) * _itemsize(tensor.dtype))
        return sizes

    def live(self, cut: int) -> list[str]:
        """Names of the data tensors live at ``cut`` (see :func:`variants.live_tensors`)."""
        return [t.name for t in variants.live_tensors(self._view, cut)]

    def serialized(self, metadata: dict[str, str] | None = None) -> bytes:
        """The canonical model as file bytes, marked as canonical, with ``metadata`` added (and
        the dense output's layout, :data:`OUTPUT_KEY`, when the logits flatten one)."""
        marker = {CANONICAL_KEY: "first output: logits; the others expose gates and argmaxes"}
        if int(np.prod(self.spatial_shape, dtype=np.int64)) > 1:  # dense
            marker[OUTPUT_KEY] = json.dumps({"name": self.output_name,
                                             "shape": list(self.output_shape),
                                             "channel_axis": self.channel_axis})  # fmt: skip
        with boundary(self.source, "write the canonical model"):  # e.g. over protobuf's 2 GiB
            proto = variants.with_metadata(self.proto, {**marker, **(metadata or {})})
            return self.full(proto).SerializeToString()

    # derived graphs, each a new ModelProto
    def logits_only(self) -> onnx.ModelProto:
        return variants.logits_only(self.proto)

    def with_outputs(self, names: list[str]) -> onnx.ModelProto:
        return variants.with_outputs(self.proto, names)

    def suffix(self, cut: int) -> onnx.ModelProto:
        return variants.suffix(self.proto, cut)

    def scaled(self) -> onnx.ModelProto:
        return variants.scaled(self.proto, [g.name for g in self.gates])

    def original_with_logits(self) -> tuple[onnx.ModelProto, str]:
        if self.base is None:
            return variants.with_output(self.original, self.reference)
        proto, compared = self.base.original_with_logits()
        source = self.base.reference if compared == "logits" else proto.graph.output[0].name
        base = self.base
        readout = variants.readout(proto, source, base.output_shape, base.channel_axis,
                                   self.readout_of.weights, self.reference)  # fmt: skip
        return readout, compared

    def parametric_layers(self) -> list[tuple[str, list[str]]]:
        return variants.parametric_layers(self.original)

    def randomized(self, upto: int, seed: int = 0) -> onnx.ModelProto:
        return variants.randomized(self.original, upto, seed)


def canonicalize(loaded: ModelFile, name: str = "model") -> Canonical:
    """Run every pass of :data:`PIPELINE`, then check that every node is explainable.

    Raises :class:`UnsupportedModelError` naming every node outside the vocabulary, and the
    activations they make up (SiLU, GELU, ...). (:func:`~.load.load_model` has refused the
    models whose graph alone shows such nodes: see :mod:`.screen`.) What the libraries raise
    on the graph becomes a :class:`ModelLoadError` (:mod:`.boundary`).
    """
    with boundary(name, "rewrite the graph"):
        return _canonicalize(loaded, name)


def _canonicalize(loaded: ModelFile, name: str) -> Canonical:
    graph = import_graph(loaded.proto)
    reports = []
    for rewrite in PIPELINE:
        graph, report = rewrite(graph)
        reports.append(report)
    proto = loaded.weights.strip(export_graph(graph))
    proto.ir_version = loaded.proto.ir_version  # graphsurgeon keeps the file's, maybe older
    _carry_model_fields(loaded.proto, proto)
    del proto.graph.value_info[:]
    proto = shape_inference.infer_shapes(proto, strict_mode=False)
    # The vocabulary check reads ranks and sizes: check the graph with its shapes inferred.
    checked = import_graph(proto)
    found = offenders(checked)
    if found:
        raise refusal_error(name, checked, found)
    logits = proto.graph.output[0].name
    return Canonical(loaded, proto, reports, _reference(graph, loaded.proto) or logits)


def _itemsize(dtype) -> int:
    """Bytes per element of a graphsurgeon tensor's dtype (numpy or ONNX's; 4 if unknown)."""
    if isinstance(dtype, int):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(dtype) if dtype else None
    return 4 if dtype is None else np.dtype(dtype).itemsize


def _reference(graph: gs.Graph, original: onnx.ModelProto) -> str | None:
    """Walk back from the logits through shape-only ops to a tensor the original also has."""
    names = {out for node in original.graph.node for out in node.output}
    tensor = graph.outputs[0]
    while tensor.name not in names:
        if not tensor.inputs or tensor.inputs[0].op not in ("Flatten", "Reshape", "Squeeze"):
            return None
        tensor = tensor.inputs[0].inputs[0]
    return tensor.name


def _carry_model_fields(source: onnx.ModelProto, target: onnx.ModelProto) -> None:
    target.producer_name = source.producer_name
    target.producer_version = source.producer_version
    target.model_version = source.model_version
    target.doc_string = source.doc_string
    del target.metadata_props[:]
    target.metadata_props.extend(source.metadata_props)
