"""Checks of a model's content, made as it is read, before anything runs.

- :func:`check_opset`: the file declares a standard ONNX opset that exists.
- :func:`check_text`: its names and metadata are text (UTF-8), as ONNX requires.
- :func:`check_graph`: onnx's own checker, on the graph as the file declares it (its opset):
  every node fits its op's schema at that opset (Clip with bound inputs is opset 11's form:
  invalid in a file that declares opset 9), nodes are in topological order (no cycle, no
  self-loop, every input defined before it is read), each tensor written once, and types agree
  (strict type inference: a float64 weight fed to a float MatMul is refused).
- :func:`check_weights`: every weight the graph reads holds data of its declared shape and
  type, and no NaN, nor an infinity except as a bound (Clip, Pad, Max, Min).

A failure of the first three is a damaged or invalid file (:class:`ModelLoadError`, exit 2);
non-finite weights make a model that reads fine but whose every explanation would be NaN
(:class:`UnsupportedModelError`, exit 1), refused naming the tensor.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

from ..errors import ModelLoadError, UnsupportedModelError
from .boundary import library_error

#: The domain that :func:`check_graph` gives nodes without a schema, which the checker skips:
#: an op outside ONNX is not invalid here, it is refused by name as not explainable.
UNKNOWN_DOMAIN = "pathonnx.unknown"
#: Initializers of at least this many bytes reach the checker as typed inputs, without data.
LIGHT_BELOW = 4096
#: Ops for which an infinite constant means "no bound" (Clip's bounds, Pad's value, Max, Min).
BOUNDS = frozenset({"Clip", "Pad", "Max", "Min"})
#: Elements of a weight checked at once (the masks of one chunk: 16 MiB).
CHUNK = 1 << 24


def check_opset(proto: onnx.ModelProto, name: str) -> int:
    """The standard opset the file declares; raises when there is none or it does not exist."""
    versions = [e.version for e in proto.opset_import if e.domain in ("", "ai.onnx")]
    if not versions:
        raise UnsupportedModelError(
            f"{name}: the model imports no standard ONNX opset; re-export it"
        )
    newest = defs.onnx_opset_version()
    if not 1 <= versions[0] <= newest:
        raise ModelLoadError(
            f"{name}: the file declares ONNX opset {versions[0]}, which does not exist (opsets "
            f"run from 1 to {newest}); the file is damaged: re-export the model"
        )
    return versions[0]


def check_text(proto: onnx.ModelProto, name: str) -> None:
    """Refuse names and metadata that are not UTF-8 text (protobuf hands them over as bytes,
    on which onnx and graphsurgeon fail far from the cause), naming the first one."""
    for what, value in _texts(proto):
        if not isinstance(value, str):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ModelLoadError(
                f"{name}: {what} {shown} is not UTF-8 text; the file is damaged: re-export the "
                "model"
            )


def _texts(proto: onnx.ModelProto):
    """(what, value) of every string field of the model that the graph work reads."""
    yield "the producer's name", proto.producer_name
    yield "the producer's version", proto.producer_version
    yield "the model's domain", proto.domain
    yield "the model's doc string", proto.doc_string
    for entry in proto.opset_import:
        yield "an opset domain", entry.domain
    for entry in proto.metadata_props:
        yield "a metadata key", entry.key
        yield f"metadata {entry.key!r}", entry.value
    graph = proto.graph
    yield "the graph's name", graph.name
    yield "the graph's doc string", graph.doc_string
    for info in [*graph.input, *graph.output, *graph.value_info]:
        yield "a value name", info.name
        for dim in info.type.tensor_type.shape.dim:
            yield f"a dim of {info.name!r}", dim.dim_param
    for tensor in graph.initializer:
        yield "an initializer's name", tensor.name
    for node in graph.node:
        yield "a node's name", node.name
        yield f"the op type of node {node.name!r}", node.op_type
        yield f"the domain of node {node.name!r}", node.domain
        for tensor in [*node.input, *node.output]:
            yield f"a tensor of node {node.name!r}", tensor
        for attr in node.attribute:
            yield f"an attribute of node {node.name!r}", attr.name


def check_graph(proto: onnx.ModelProto, name: str) -> None:
    """Run onnx's checker with strict type inference on a light view of ``proto`` (see
    :func:`checker_view`); raises :class:`ModelLoadError` with the checker's reason."""
    view = checker_view(proto)
    try:
        onnx.checker.check_model(view, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        opset = next((e.version for e in proto.opset_import if e.domain in ("", "ai.onnx")), "?")
        raise ModelLoadError(
            f"{name}: not a valid ONNX graph at its opset {opset} ({library_error(err)}); "
            "re-export the model"
        ) from None


def checker_view(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` for the checker, light and about the graph alone: initializers of
    :data:`LIGHT_BELOW` bytes or more become typed graph inputs (their data is checked by
    :func:`check_weights`), nodes without a schema move to :data:`UNKNOWN_DOMAIN`, which the
    checker skips."""
    view = onnx.ModelProto()
    # The file's IR version where this onnx knows it, at least what its opsets need, and 4 or
    # more: from IR 4 on, initializers need not be listed as graph inputs.
    least = helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    view.ir_version = max(4, least, min(proto.ir_version, onnx.IR_VERSION))
    view.opset_import.extend(proto.opset_import)
    view.opset_import.add(domain=UNKNOWN_DOMAIN, version=1)
    graph, source = view.graph, proto.graph
    graph.name = source.name or "graph"
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    listed = {i.name for i in source.input}
    for tensor in source.initializer:
        if _declared_bytes(tensor) < LIGHT_BELOW:
            graph.initializer.append(tensor)
        elif tensor.name not in listed:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                             list(tensor.dims)))  # fmt: skip
    graph.sparse_initializer.extend(source.sparse_initializer)
    versions = {e.domain or "": e.version for e in proto.opset_import}
    versions.setdefault("ai.onnx", versions.get("", 0))
    for node in source.node:
        copy = graph.node.add()
        copy.CopyFrom(node)
        if not _has_schema(node, versions):
            copy.domain = UNKNOWN_DOMAIN
    _shape_outputs(view)
    return view


def _shape_outputs(view: onnx.ModelProto) -> None:
    """Give the outputs the shapes inference finds (once, leniently): the checker wants a
    shape on every output, and a declared one that inference contradicts (a stale export, or
    none at all from graphsurgeon) is not what makes a graph invalid here; those inference
    cannot shape keep what they declare."""
    bare = onnx.ModelProto()
    bare.CopyFrom(view)
    for output in bare.graph.output:
        output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=False).graph
    except Exception:  # noqa: BLE001  the checker then says what is wrong
        return
    found = {i.name: i for i in inferred.output}
    for output in view.graph.output:
        info = found.get(output.name)
        if info is not None and info.type.tensor_type.HasField("shape"):
            output.type.tensor_type.shape.CopyFrom(info.type.tensor_type.shape)


def _has_schema(node: onnx.NodeProto, versions: dict[str, int]) -> bool:
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = versions.get(domain)
    if not version:
        return False
    try:
        defs.get_schema(node.op_type, version, domain)
    except defs.SchemaError:
        return False
    return True


def _declared_bytes(tensor: onnx.TensorProto) -> int:
    """The size of a tensor from its declared shape and type (0 for an unknown type)."""
    count = int(np.prod(tensor.dims, dtype=np.float64)) if len(tensor.dims) else 1
    try:
        return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 0


def check_weights(proto: onnx.ModelProto, values, name: str) -> None:
    """Refuse the weights the graph reads (initializers and Constant nodes) that hold NaN, or
    an infinity other than a bound (:data:`BOUNDS`), naming the first one and counting them.
    ``values(tensor)``: an initializer's array (:func:`.weights.values`: a stub's from the
    registry)."""
    readers = _readers(proto.graph)
    found = []
    for tensor in proto.graph.initializer:
        if tensor.name in readers:
            array = tensor_array(tensor, values, name)
            found += _non_finite(tensor.name, array, readers[tensor.name])
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    array = tensor_array(attr.t, numpy_helper.to_array, name)
                    found += _non_finite(node.output[0], array, readers.get(node.output[0], set()))
    if found:
        first, count, size = found[0]
        more = f" and {len(found) - 1} more tensor(s)" if len(found) > 1 else ""
        raise UnsupportedModelError(
            f"{name}: weight {first!r} holds {count} NaN or infinite value(s) of {size}{more}; "
            "every output and explanation would be NaN: fix the weights and export the model "
            "again"
        )


def tensor_array(tensor: onnx.TensorProto, values, name: str) -> np.ndarray:
    """``values(tensor)``, raising :class:`ModelLoadError` when the tensor's data does not
    fit its declared shape and type (a short ``raw_data``, an unknown data type); ``name``:
    the model, for the message."""
    try:
        return np.asarray(values(tensor))
    except ModelLoadError:
        raise
    except Exception as err:
        shape = "x".join(map(str, tensor.dims)) or "scalar"
        raise ModelLoadError(
            f"{name}: tensor {tensor.name!r} (shape {shape}, data type {tensor.data_type}) does "
            f"not hold data of its declared shape and type ({library_error(err)}); the file is "
            "damaged: re-export the model"
        ) from None


def _readers(graph: onnx.GraphProto) -> dict[str, set[str]]:
    """Tensor name -> the op types of the nodes that read it."""
    readers: dict[str, set[str]] = defaultdict(set)
    for node in graph.node:
        for tensor in node.input:
            if tensor:
                readers[tensor].add(node.op_type)
    return readers


def _non_finite(label: str, array: np.ndarray, readers: set[str]) -> list[tuple[str, int, int]]:
    """[(label, count of bad values, size)] when ``array`` holds NaN, or an infinity that is
    not a bound (:data:`BOUNDS` read it, and nothing else); else []."""
    if array.dtype.kind not in "fc" or not array.size:
        return []
    bounds = bool(readers) and readers <= BOUNDS
    flat, bad = array.reshape(-1), 0
    for start in range(0, flat.size, CHUNK):  # the masks of a chunk, not of the whole array
        part = flat[start : start + CHUNK]
        bad += int(np.count_nonzero(np.isnan(part) if bounds else ~np.isfinite(part)))
    return [(label, bad, int(array.size))] if bad else []
