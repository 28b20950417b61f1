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
from ..images import image_layout
from ..io import note_input, read_bytes
from .boundary import boundary, library_error
from .screen import refusal_error, screen
from .validate import check_graph, check_opset, check_text, check_weights
from .weights import Weights, values

#: Models below this opset are upgraded with onnx.version_converter (ops change form at 11 and 13:
#: Clip bounds become inputs, Split/Squeeze/ReduceSum axes become inputs).
MIN_OPSET = 13


@dataclass(frozen=True)
class ModelFile:
    """A model as read from its file: its graph with the batch pinned to 1 and shapes inferred.

    ``input_shape`` is the per-sample shape (no batch axis). ``opset_upgraded_from`` is the opset
    the file declared when it was below :data:`MIN_OPSET`, else ``None``. ``output_name`` is
    the one output kept; ``outputs`` names every output the file declared (more than one when
    ``output_name`` was chosen among them, the others and their branches dropped).
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
    outputs: tuple[str, ...] = ()

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
    data = read_bytes(path, "the input model", None, ModelLoadError)
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
        shown = _shown_location(location)
        target = _external_file(folder, location, f"{path}: tensor {tensor.name!r}")
        if (
            not location
            or os.path.isabs(location)
            or ".." in Path(location).parts
            or folder not in target.parents
        ):
            raise ModelLoadError(
                f"{path}: tensor {tensor.name!r} points to external data {shown} outside the "
                "model's folder; keep external data files beside the model"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{path}: external data file {shown} for tensor {tensor.name!r} is missing; "
                "copy it beside the model"
            )
        note_input(target, "an external-data file of the input model")
    try:
        external_data_helper.load_external_data_for_model(proto, str(folder))
    except Exception as err:
        raise ModelLoadError(f"{path}: cannot read external data ({err}); re-export it") from None


#: The longest external-data location quoted in a message.
SHOWN_LOCATION = 80


def _shown_location(location: str) -> str:
    """An external-data location as a message quotes it: repr, cut to :data:`SHOWN_LOCATION`."""
    if len(location) > SHOWN_LOCATION:
        return repr(location[:SHOWN_LOCATION]) + f"... ({len(location)} characters)"
    return repr(location)


def _external_file(folder: Path, location: str, what: str) -> Path:
    """The file an external-data ``location`` names, resolved (links followed) under
    ``folder``; raises :class:`ModelLoadError` for a location no file system path can be (a
    NUL byte, too long) or a link that loops."""
    if "\0" in location:
        raise ModelLoadError(
            f"{what} has an external-data location with a NUL byte ({_shown_location(location)}); "
            "the file is damaged: re-export the model"
        )
    try:
        target = (folder / location).resolve()
        target.is_file()  # a name too long for the file system raises only when used
    except (OSError, RuntimeError, ValueError) as err:  # RuntimeError: a symlink loop
        raise ModelLoadError(
            f"{what} has an external-data location that cannot be opened "
            f"({_shown_location(location)}: {library_error(err)}); keep external data files "
            "beside the model, under their own names"
        ) from None
    return target


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
    output: str | None = None,
    size: tuple[int, int] | None = None,
    early: bool = True,
) -> ModelFile:
    """Read, validate and prepare a model for rewriting.

    ``input_shape`` is the per-sample input shape, needed when the file leaves a non-batch
    dimension dynamic; for an image input whose height and width are dynamic, ``size``
    ``(H, W)`` is enough (the channels stay where the model has them). ``output`` names the
    graph output to explain, needed when the model has several (:func:`choose_output`). The
    returned graph has batch 1 pinned so that exporters' shape chains fold.

    Raises :class:`UnsupportedModelError` as soon as the graph as read (its chosen output's
    part) shows nodes that cannot be explained (:func:`~.screen.screen`), before its weights
    are hashed or anything runs; ``early=False`` leaves every verdict to
    :func:`~.canonical.canonicalize` (tests compare). Raises :class:`ModelLoadError` for a
    file that is not a valid model (:mod:`.validate`), and for whatever else the libraries
    raise on it (:mod:`.boundary`).
    """
    with boundary(source_name(source), "read the model"):
        return _load_model(source, input_shape, output, size, early)


def source_name(source) -> str:
    """A model source as messages name it: its path, or ``<bytes>``/``<ModelProto>``."""
    if isinstance(source, onnx.ModelProto):
        return "<ModelProto>"
    return "<bytes>" if isinstance(source, bytes) else str(source)


def _load_model(source, input_shape, output, size, early) -> ModelFile:
    proto, name, given = read_model(source)
    if not proto.graph.node:
        raise UnsupportedModelError(f"{name}: the graph has no nodes; nothing to explain")
    opset = check_opset(proto, name)
    check_text(proto, name)
    check_graph(proto, name)  # at the opset the file declares, before anything reads it
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
    declared = tuple(o.name for o in proto.graph.output)
    choose_output(proto, name, output)

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
    if input_shape is None and size is not None:  # only dynamic dims take it
        input_shape = _with_size(sample, _checked_size(size))
    if input_shape is not None:
        input_shape = _checked_shape(input_shape)
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
        raise InputError(f"{name}: input {data.name!r} {_dynamic_advice(sample)}")
    _set_dims(data, [1, *sample])
    weights = Weights()
    weights.strip(proto, digest, name)  # from here on the graph work handles light protos
    check_weights(proto, values, name)
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
        outputs=declared,
    )


def _shown(dims) -> str:
    return ", ".join(str(d) if isinstance(d, int) and d > 0 else (d or "?") for d in dims)


def choose_output(proto: onnx.ModelProto, name: str, output: str | None) -> None:
    """Keep one graph output of ``proto`` (in place): ``output``, or the only one. The others
    and the nodes that only they read are dropped, so the model as read (which the self-check
    runs and the sanity check re-initializes layer by layer) holds the chosen head alone."""
    outputs = list(proto.graph.output)
    listed = "; ".join(f"{o.name} ({_shown(_dims(o))})" for o in outputs)
    if output is None:
        if len(outputs) == 1:
            return
        if not outputs:
            raise UnsupportedModelError(f"{name}: the model has no outputs; re-export it")
        raise InputError(
            f"{name}: the model has {len(outputs)} outputs: {listed}; choose the one to explain "
            "with --output NAME (output=NAME in Python)"
        )
    if output not in {o.name for o in outputs}:
        raise InputError(
            f"{name}: the model has no output {output!r}; its outputs are: {listed}; pass one "
            "of those names to --output (output=)"
        )
    if len(outputs) == 1:
        return
    kept = onnx.ValueInfoProto()
    kept.CopyFrom(next(o for o in outputs if o.name == output))
    del proto.graph.output[:]
    proto.graph.output.append(kept)
    _drop_dead_nodes(proto.graph)


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    """Remove the nodes that no graph output needs, then the initializers nothing reads."""
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(name for name in node.input if name)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    unused = [t for t in graph.initializer if t.name not in needed]
    for tensor in unused:
        graph.initializer.remove(tensor)
    names = {t.name for t in unused}
    for info in [vi for vi in graph.input if vi.name in names]:  # weights listed as inputs
        graph.input.remove(info)


def _checked_size(size) -> tuple[int, int]:
    """``size`` as (height, width), two positive integers; raises :class:`InputError`."""
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size {size!r} is not a height and width like (224, 224)") from None
    if height <= 0 or width <= 0:
        raise InputError(f"size {size!r} must be two positive integers, height and width")
    return height, width


def _checked_shape(shape) -> tuple[int, ...]:
    """``input_shape`` as a tuple of integers; raises :class:`InputError`."""
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise InputError(f"input_shape {shape!r} is not a shape like (3, 224, 224)") from None


def _with_size(sample: list, size) -> list | None:
    """The per-sample shape of an image input whose dynamic height and width take ``size``
    (fixed dims stay as they are: a size that differs is the preprocessing's to refuse); None
    when nothing is dynamic or the input is not an image (the error below says what to give)."""
    height, width = (int(v) for v in size)
    layout = image_layout(sample)
    if layout is None or all(isinstance(d, int) and d > 0 for d in sample):
        return None
    spatial = (1, 2) if layout == "NCHW" else (0, 1)
    out = list(sample)
    for axis, value in zip(spatial, (height, width)):
        if not (isinstance(out[axis], int) and out[axis] > 0):
            out[axis] = value
    return out


def _dynamic_advice(sample: list) -> str:
    """What to say about an input with dynamic dims, in the model's own layout."""
    shown = "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in sample)
    layout = image_layout(sample)
    if layout is not None:
        c = sample[0] if layout == "NCHW" else sample[-1]
        fixed = [d if isinstance(d, int) and d > 0 else 224 for d in sample]
        example = tuple(fixed)
        h, w = (fixed[1], fixed[2]) if layout == "NCHW" else (fixed[0], fixed[1])
        return (
            f"has dynamic dims ({shown}, {layout}); give the image size with --size HxW (e.g. "
            f"--size {h}x{w}), or the per-sample shape as --input-shape "
            f"{'x'.join(map(str, example))} (input_shape={example} in Python; "
            f"{'CxHxW' if layout == 'NCHW' else 'HxWxC'} with C={c})"
        )
    example = tuple(d if isinstance(d, int) and d > 0 else 16 for d in sample)
    return (
        f"has dynamic dims ({shown}); give the per-sample size, e.g. input_shape={example} or "
        f"--input-shape {'x'.join(map(str, example))}"
    )
