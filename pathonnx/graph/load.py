"""Reading a model file: safely, with old opsets upgraded, the input pinned, shapes inferred.

A model whose graph alone shows nodes that cannot be explained is refused right after reading,
before its weights are hashed and registered (:mod:`.screen`).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper, helper, shape_inference, version_converter

from ..errors import InputError, ModelLoadError, UnsupportedModelError
from .screen import refusal_error, screen
from .weights import Weights

#: Models below this opset are upgraded with onnx.version_converter (ops change form at 11 and 13:
#: Clip bounds become inputs, Split/Squeeze/ReduceSum axes become inputs).
MIN_OPSET = 13


@dataclass(frozen=True)
class ModelFile:
    """A model as read from its file: its graph with the batch pinned to 1 and shapes inferred.

    ``input_shape`` is the per-sample shape (no batch axis). ``opset_upgraded_from`` is the opset
    the file declared when it was below :data:`MIN_OPSET`, else ``None``.
    """

    proto: onnx.ModelProto
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    source: str
    opset_upgraded_from: int | None
    weights: Weights
    """The registered arrays of the graph's stubbed initializers (see :mod:`.weights`)."""
    sha256: str
    """The hash of the model as given: the file's bytes, or the serialized ModelProto."""

    def op_histogram(self) -> Counter:
        return Counter(node.op_type for node in self.proto.graph.node)


#: Metadata key of models that pathonnx wrote in canonical form: their first output is the
#: logits, the others expose gates and argmaxes (and are dropped when the file is loaded again).
CANONICAL_KEY = "pathonnx.canonical"


def read_model(
    source: str | os.PathLike | onnx.ModelProto | bytes,
) -> tuple[onnx.ModelProto, str, bytes]:
    """Read a model from a path, serialized bytes or a ModelProto (copied, never modified):
    (proto, its name for messages, the bytes given, whose sha256 identifies the model; hashing
    them waits until the model passes the screen)."""
    if isinstance(source, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        return proto, "<ModelProto>", proto.SerializeToString()
    if isinstance(source, bytes):
        return _parse(source, "<bytes>"), "<bytes>", source
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file; pass the .onnx file itself")
    data = path.read_bytes()
    if not data:
        raise ModelLoadError(f"{path}: the file is empty; re-export the model")
    proto = _parse(data, str(path))
    _load_external_data(proto, path)
    return proto, str(path), data


def _parse(data: bytes, name: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as err:  # protobuf raises DecodeError, or RuntimeWarning-like errors
        raise ModelLoadError(
            f"{name}: not a valid ONNX file (corrupt or truncated protobuf: {err}); "
            "re-export or re-download it"
        ) from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{name}: not an ONNX model (no graph found); check the file")
    return proto


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Load external tensors, refusing any location outside the model's folder."""
    folder = path.resolve().parent
    for tensor in external_data_helper._get_all_tensors(proto):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (folder / location).resolve()
        if (
            not location
            or os.path.isabs(location)
            or ".." in Path(location).parts
            or folder not in target.parents
        ):
            raise ModelLoadError(
                f"{path}: tensor {tensor.name!r} points to external data {location!r} outside the "
                "model's folder; keep external data files beside the model"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{path}: external data file {location!r} for tensor {tensor.name!r} is missing; "
                "copy it beside the model"
            )
    try:
        external_data_helper.load_external_data_for_model(proto, str(folder))
    except Exception as err:
        raise ModelLoadError(f"{path}: cannot read external data ({err}); re-export it") from None


def _opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise UnsupportedModelError("the model imports no standard ONNX opset; re-export it")


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    shape = value_info.type.tensor_type.shape
    dims: list[int | str | None] = []
    for dim in shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def _set_dims(value_info: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    shape = value_info.type.tensor_type.shape
    shape.ClearField("dim")
    for value in dims:
        dim = shape.dim.add()
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = int(value)


def _screen(proto: onnx.ModelProto, name: str) -> None:
    """Refuse the model if its graph alone shows nodes that cannot be explained."""
    try:
        graph = gs.import_onnx(proto)  # initializers stay lazy: nothing is copied
    except Exception:  # noqa: BLE001  the passes and the full check will say what is wrong
        return
    found = screen(graph)
    if found:
        ops = dict(Counter(node.op_type for node in proto.graph.node))
        raise refusal_error(name, graph, found, ops)


def data_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (older IRs list weights as inputs too)."""
    weights = {t.name for t in graph.initializer}
    return [vi for vi in graph.input if vi.name not in weights]


def load_model(
    source: str | os.PathLike | onnx.ModelProto | bytes,
    input_shape: tuple[int, ...] | None = None,
    early: bool = True,
) -> ModelFile:
    """Read, validate and prepare a model for rewriting.

    ``input_shape`` is the per-sample input shape, needed when the file leaves a non-batch
    dimension dynamic. The returned graph has batch 1 pinned so that exporters' shape chains fold.

    Raises :class:`UnsupportedModelError` as soon as the graph as read shows nodes that cannot
    be explained (:func:`~.screen.screen`), before its weights are hashed or anything runs;
    ``early=False`` leaves every verdict to :func:`~.canonical.canonicalize` (tests compare).
    """
    proto, name, given = read_model(source)
    if not proto.graph.node:
        raise UnsupportedModelError(f"{name}: the graph has no nodes; nothing to explain")
    inputs = data_inputs(proto.graph)
    if len(inputs) != 1:
        names = ", ".join(vi.name for vi in inputs) or "none"
        raise UnsupportedModelError(
            f"{name}: the model has {len(inputs)} data inputs ({names}); pathonnx explains "
            "models with exactly one image or feature input"
        )
    (data,) = inputs
    elem_type = data.type.tensor_type.elem_type
    if elem_type != onnx.TensorProto.FLOAT:
        type_name = onnx.TensorProto.DataType.Name(elem_type) if elem_type else "unknown"
        raise UnsupportedModelError(
            f"{name}: input {data.name!r} is {type_name}, not float32; pathonnx explains "
            "float32 inputs (export the model with a float input)"
        )
    marked = any(p.key == CANONICAL_KEY for p in proto.metadata_props)
    if marked and len(proto.graph.output) > 1:  # written by pathonnx: logits first
        del proto.graph.output[1:]
    if len(proto.graph.output) != 1:
        raise UnsupportedModelError(
            f"{name}: the model has {len(proto.graph.output)} outputs; pathonnx explains "
            "single-output classifiers (keep only the logits or probabilities output)"
        )

    opset = _opset(proto)
    upgraded_from = None
    if opset < MIN_OPSET:
        try:
            proto = version_converter.convert_version(proto, MIN_OPSET)
        except Exception as err:
            raise ModelLoadError(
                f"{name}: cannot upgrade opset {opset} to {MIN_OPSET} ({err}); re-export the "
                f"model at opset {MIN_OPSET} or newer"
            ) from None
        upgraded_from = opset
        data = data_inputs(proto.graph)[0]

    # onnx may stamp a newer IR version than onnxruntime reads (onnx.helper.make_model does),
    # and old files an older one than their (upgraded) opset needs: use the opsets' minimum.
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    if early:
        _screen(proto, name)
    digest = hashlib.sha256(given).hexdigest()
    del given

    dims = _dims(data)
    if not dims:
        raise UnsupportedModelError(
            f"{name}: input {data.name!r} has no batch axis (rank 0 or unknown rank); export it "
            "with a leading batch dimension"
        )
    sample = dims[1:]
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
        fixed = [d for d in sample if isinstance(d, int)]
        if len(input_shape) != len(sample) or any(
            isinstance(d, int) and d != s for d, s in zip(sample, input_shape)
        ):
            raise InputError(
                f"{name}: input_shape {input_shape} does not fit the model's input "
                f"{tuple(sample)} (fixed dims {fixed}); pass a shape of rank {len(sample)}"
            )
        sample = list(input_shape)
    if any(not isinstance(d, int) or d <= 0 for d in sample):
        shown = "x".join(str(d if d is not None else "?") for d in sample)
        raise InputError(
            f"{name}: input {data.name!r} has dynamic dims ({shown}); give the per-sample size, "
            "e.g. input_shape=(3, 224, 224) or --input-shape 3x224x224"
        )
    _set_dims(data, [1, *sample])
    weights = Weights()
    weights.strip(proto)  # from here on the graph work handles light protos
    try:
        proto = shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as err:
        raise ModelLoadError(f"{name}: shape inference failed ({err}); check the model") from None
    return ModelFile(
        proto=proto,
        input_name=data.name,
        input_shape=tuple(sample),
        output_name=proto.graph.output[0].name,
        source=name,
        opset_upgraded_from=upgraded_from,
        weights=weights,
        sha256=digest,
    )
