"""Large constant tensors, held once per process and kept out of every graph proto.

A model's weights are most of its file (VGG-16-BN: 0.55 GB), and pathonnx derives many graphs
from it: the canonical graph, the forward pass, the adjoint and fused graphs, the stages of a
sweep. Each used to carry its own copy, serialized into each onnxruntime session, which copied
them again. Here a tensor of at least :data:`SMALLEST` bytes leaves the proto when the graph
is made (:meth:`Weights.strip`): the proto keeps a *stub*, an initializer marked as external
data at the location :data:`MARK` with its content hash as checksum, and the array lives in
one content-addressed registry. Sessions receive the arrays through onnxruntime's
``add_initializer`` (:meth:`Weights.bind`), which reads them in place: every session of a
model shares one copy (``add_external_initializers`` copies them into each session).

Graph code reads stubbed constants through graphsurgeon as before (:func:`import_graph` gives
them lazily loaded values from the registry), and :func:`export_graph` writes an untouched
registered array back as its stub. Small tensors (shape constants, scalars) stay in the proto:
shape inference and data propagation read them.

A :class:`Weights` object keeps its model's arrays alive; the registry only finds them.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import hashlib
import os
import shutil
import tempfile
import weakref

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

from ..errors import ModelLoadError
from .validate import tensor_array

#: The external-data location of a stubbed initializer.
MARK = "pathonnx-weights"
#: Tensors at least this large (bytes) leave the proto; smaller ones stay (shape constants).
SMALLEST = 4096
#: Models with at least this many bytes of weights share them between sessions. Sharing turns
#: off onnxruntime's pre-packing and layout optimizations, which makes results depend on the
#: batch size in the last float bits; smaller models keep them, and one copy per session.
SHARE_ABOVE = 16 << 20


class Pooled(np.ndarray):
    """A registered array (read-only): ``key`` is its content hash. Views and results of
    arithmetic on it are plain data again (no ``key``)."""

    key: str


_REGISTRY: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def has_stubs(proto: onnx.ModelProto) -> bool:
    return any(stub_key(t) is not None for t in proto.graph.initializer)


def stub_key(tensor: onnx.TensorProto) -> str | None:
    """The registry key of a stubbed initializer, None for a tensor that holds its data."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    info = {entry.key: entry.value for entry in tensor.external_data}
    return info.get("checksum") if info.get("location") == MARK else None


def _stub(name: str, array: Pooled) -> onnx.TensorProto:
    tensor = onnx.TensorProto(name=name, dims=array.shape)
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    _mark(tensor, array.key)
    return tensor


def _mark(tensor: onnx.TensorProto, key: str) -> None:
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=MARK)
    tensor.external_data.add(key="checksum", value=key)


def registered(key: str) -> Pooled:
    """The array of ``key``; raises when no live model holds it any more."""
    found = _REGISTRY.get(key)
    if found is None:
        raise ModelLoadError(
            "a graph refers to weights that are no longer in memory (its model was freed); "
            "load the model again"
        )
    return found


def values(tensor: onnx.TensorProto) -> np.ndarray:
    """An initializer's values, whether it holds them or is a stub."""
    key = stub_key(tensor)
    return numpy_helper.to_array(tensor) if key is None else registered(key)


_FULL: contextvars.ContextVar[bool] = contextvars.ContextVar("pathonnx_full", default=False)


@contextlib.contextmanager
def materialized():
    """Within it (in this thread or task), graphsurgeon exports stubbed constants with their
    data: for its constant folding, which runs the foldable part of a graph in onnxruntime."""
    token = _FULL.set(True)
    try:
        yield
    finally:
        _FULL.reset(token)


class _Lazy(LazyValues):
    """graphsurgeon's lazily loaded values, read from the registry for a stub."""

    @property
    def tensor(self) -> onnx.TensorProto:  # what graphsurgeon's exporter writes
        if _FULL.get():
            return numpy_helper.from_array(np.asarray(self.load()), self._stub.name)
        return self._stub

    @tensor.setter
    def tensor(self, value: onnx.TensorProto) -> None:
        self._stub = value

    def load(self):
        return registered(stub_key(self._stub))


def import_graph(proto: onnx.ModelProto) -> gs.Graph:
    """``gs.import_onnx`` for graphs with stubs: their constants load from the registry."""
    graph = gs.import_onnx(proto)
    for tensor in graph.tensors().values():
        lazy = getattr(tensor, "_values", None)
        if isinstance(lazy, LazyValues) and stub_key(lazy.tensor) is not None:
            copy = onnx.TensorProto()
            copy.CopyFrom(lazy.tensor)  # exporting renames it: never the source proto's
            tensor._values = _Lazy(copy)
    return graph


def export_graph(graph: gs.Graph, **kwargs) -> onnx.ModelProto:
    """``gs.export_onnx`` that writes a registered array, read but unchanged, as its stub
    (graphsurgeon replaces lazy values by the array once code reads them)."""
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and isinstance(tensor._values, Pooled):
            tensor._values = _Lazy(_stub(tensor.name, tensor._values))
    return gs.export_onnx(graph, do_type_check=False, **kwargs)


class Weights:
    """The registered arrays of one model's graphs: kept alive here, bound to its sessions."""

    def __init__(self):
        self.arrays: dict[str, Pooled] = {}
        self._ort: dict[str, object] = {}

    def add(self, array: np.ndarray, name: str | None = None) -> Pooled:
        """Register ``array`` and hold it. Its key is its content's hash (equal arrays share
        one copy), or ``name`` hashed: a name that fixes the content, such as the model file's
        hash and the tensor's name in it (which saves hashing the weights a second time)."""
        array = np.ascontiguousarray(array)
        digest = hashlib.sha256(array.data if name is None else name.encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        key = digest.hexdigest()
        found = _REGISTRY.get(key)
        if found is None:
            found = array.view(Pooled)
            found.flags.writeable = False
            found.key = key
            _REGISTRY[key] = found
        self.arrays[key] = found
        return found

    def strip(self, proto: onnx.ModelProto, source: str | None = None,
              name: str = "model") -> onnx.ModelProto:  # fmt: skip
        """Move ``proto``'s large initializers into the registry, in place, leaving stubs;
        the stubs it has already are held too. ``source``: the hash of the file ``proto`` was
        read from, which with a tensor's name fixes its content (see :meth:`add`). Returns
        ``proto``. Raises :class:`ModelLoadError` for a tensor whose data does not fit its
        shape (``name``: the model, for the message)."""
        for tensor in proto.graph.initializer:
            key = stub_key(tensor)
            if key is not None:
                self.arrays[key] = registered(key)
            elif tensor.data_location != onnx.TensorProto.EXTERNAL and _nbytes(tensor) >= SMALLEST:
                array = tensor_array(tensor, numpy_helper.to_array, name)
                if array.dtype.kind not in "fiub":
                    continue
                pooled = self.add(array, None if source is None else f"{source}:{tensor.name}")
                for field in ("raw_data", "float_data", "int32_data", "int64_data",
                              "double_data", "uint64_data"):  # fmt: skip
                    tensor.ClearField(field)
                _mark(tensor, pooled.key)
        return proto

    def inflate(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of ``proto`` with every stub's data written back: a self-contained model."""
        out = onnx.ModelProto()
        out.CopyFrom(proto)
        for tensor in out.graph.initializer:
            key = stub_key(tensor)
            if key is not None:
                tensor.CopyFrom(numpy_helper.from_array(np.asarray(registered(key)), tensor.name))
        return out

    def bind(self, proto: onnx.ModelProto, options, device: str = "cpu") -> bool:
        """Give onnxruntime ``options`` the arrays of ``proto``'s stubs, shared by every
        session that gets them (``add_initializer``: read in place, never copied); False when
        ``proto`` has no stubs or the model's weights are below :data:`SHARE_ABOVE` (the
        session then gets :meth:`inflate`). On ``device`` "cuda" the arrays are put on the GPU
        once.

        The stubs point to an empty placeholder file, which onnxruntime checks exists; graph
        optimizations that would read a weight's data are off (basic level, no pre-packing,
        measured as fast on VGG-16), and a session that still needs one is built from
        :meth:`inflate` instead (:func:`pathonnx.engine.session.make_session`)."""
        import onnxruntime as ort

        stubs = [(t.name, stub_key(t)) for t in proto.graph.initializer if stub_key(t)]
        if not stubs or self.nbytes < SHARE_ABOVE:
            return False
        for name, key in stubs:
            if (key, device) not in self._ort:
                array = self.arrays.get(key)
                if array is None:
                    array = self.arrays[key] = registered(key)
                self._ort[key, device] = _ortvalue(ort, np.asarray(array), device)
            options.add_initializer(name, self._ort[key, device])
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         _placeholder_folder())  # fmt: skip
        return True

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def _ortvalue(ort, array: np.ndarray, device: str):
    """``array`` as an OrtValue on ``device``; on the CPU when the GPU cannot take it (the
    session then starts with copies, or says why it cannot start)."""
    if device == "cuda":
        with contextlib.suppress(Exception):
            return ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
    return ort.OrtValue.ortvalue_from_numpy(array)


_FOLDER: list[str] = []


def _placeholder_folder() -> str:
    """A folder holding an empty file named :data:`MARK`, for the process's lifetime."""
    if not _FOLDER:
        folder = tempfile.mkdtemp(prefix="pathonnx-")
        open(os.path.join(folder, MARK), "wb").close()
        atexit.register(shutil.rmtree, folder, True)
        _FOLDER.append(folder)
    return _FOLDER[0]


def _nbytes(tensor: onnx.TensorProto) -> int:
    """The tensor's size from its shape and type (reading ``raw_data`` would copy it)."""
    count = int(np.prod(tensor.dims, dtype=np.int64)) if len(tensor.dims) else 1
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 0
    return count * itemsize
