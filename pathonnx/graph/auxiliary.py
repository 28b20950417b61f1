"""Auxiliary graphs: ONNX files that pathonnx runs beside a model but does not explain.

A pathway generator (``pathonnx learn``, :mod:`pathonnx.methods.learned`) is one: a small
network that reads the model's gate activations and returns masks. Here it is read safely
(a regular file under a size limit, recorded as an input of the running command), and
described by what the stages above need: its inputs' and outputs' names and shapes and its
metadata. Protobuf stays here; :class:`GraphFile` hands ``proto`` on as an opaque value to the
engine's session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..errors import InputError
from ..io import read_bytes

#: Most bytes of an auxiliary graph file: a generator for VGG-16's gates is tens of MiB.
MAX_AUXILIARY_BYTES = 1 << 30


@dataclass(frozen=True)
class GraphFile:
    """An auxiliary graph as read: ``proto`` (for the engine), the path it came from
    (``source``), the sha256 of its bytes, its metadata_props, and per input and output its
    name and dims (ints, or a name / None where free)."""

    proto: object = field(repr=False)
    source: str
    sha256: str
    metadata: dict[str, str]
    inputs: tuple[tuple[str, tuple], ...]
    outputs: tuple[tuple[str, tuple], ...]


def _dims(value_info) -> tuple:
    shape = value_info.type.tensor_type.shape
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim
    )


def read_graph_file(path, what: str) -> GraphFile:
    """Read the ONNX file ``path`` (``what`` it is, e.g. "the generator", for messages);
    raises :class:`InputError` naming the file when it is missing, not a file, too large
    or not an ONNX graph."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path of {what}")
    if not path.is_file():
        raise InputError(f"{path}: not a file; give {what} itself (.onnx)")
    data = read_bytes(path, what, MAX_AUXILIARY_BYTES)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # protobuf's DecodeError and its relatives
        proto = None
    if proto is None or not proto.graph.node:
        raise InputError(f"{path}: {what} is not an ONNX graph (corrupt, truncated or another "
                         "kind of file)")  # fmt: skip
    initializers = {init.name for init in proto.graph.initializer}
    return GraphFile(
        proto=proto,
        source=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        metadata={p.key: p.value for p in proto.metadata_props},
        inputs=tuple((i.name, _dims(i)) for i in proto.graph.input if i.name not in initializers),
        outputs=tuple((o.name, _dims(o)) for o in proto.graph.output),
    )


def stamp_metadata(data: bytes, entries: dict[str, str]) -> bytes:
    """The serialized ONNX model ``data`` (e.g. what ``torch.onnx.export`` wrote) with
    ``entries`` added to its metadata_props (a key present already is replaced), checked by
    onnx's checker."""
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        proto.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
