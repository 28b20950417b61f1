"""Tensors that stay on the device between onnxruntime calls.

On CUDA, copying every activation, cotangent and mask to numpy between calls costs more than
the calls themselves (issue 12: ``Model.forward`` took 15.9 ms where the bound run took 1.3 ms,
ResNet-18 b16 on an H200). :class:`Device` runs sessions with IOBinding: inputs that are
already OrtValues are bound where they are, outputs stay where the provider made them, and a
value comes back to numpy only through :meth:`Device.host`, which every such copy passes. On
the CPU provider the same code runs, and :meth:`Device.host` is a view, not a copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import onnxruntime as ort

from ..graph.boundary import model_error

OrtValue = ort.OrtValue


#: onnxruntime's exceptions for a graph it could not run: its pybind11 types (whose only base
#: is Exception) and the RuntimeError that a run with IOBinding raises ("Error in execution").
RUNTIME_ERRORS = (RuntimeError,) + tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, name)
    for name in (
        "Fail",
        "InvalidArgument",
        "RuntimeException",
        "EPFail",
        "InvalidGraph",
        "NotImplemented",
        "InvalidProtobuf",
        "NoModel",
        "EngineError",
    )  # fmt: skip
    if hasattr(ort.capi.onnxruntime_pybind11_state, name)
)


@contextlib.contextmanager
def running():
    """Around an onnxruntime call only: its failure to run a graph of the model becomes a
    :class:`~pathonnx.errors.ModelLoadError` (:func:`~pathonnx.graph.boundary.model_error`).
    A model whose declared shapes or attributes do not fit its weights can pass the checks of
    reading it and fail only when it runs (a Conv with a group of 0)."""
    try:
        yield
    except RUNTIME_ERRORS as err:
        raise model_error("the model", "run it in onnxruntime", err) from err


class Device:
    """Where one engine's sessions run (``"cuda"`` or ``"cpu"``) and its values stay."""

    def __init__(self, name: str):
        self.name = name
        #: Called with each array that :meth:`host` brings back (tests count them).
        self.on_host: Callable[[np.ndarray], None] | None = None

    def put(self, array) -> OrtValue:
        """A host array as an OrtValue on the device (on the CPU: the same memory)."""
        array = np.ascontiguousarray(array)
        value = OrtValue.ortvalue_from_numpy(array, self.name, 0)
        if self.name == "cpu":
            # the OrtValue borrows the array's memory, but a view that numpy() returns would
            # not keep the array alive: host() hands out the array itself
            value.pathonnx_array = array
        return value

    def detach(self, value) -> OrtValue:
        """A value to keep across many calls. On the CPU it is copied out of onnxruntime's
        arena into memory of its own: blocks held there while later calls need other sizes
        made the arena grow (the 1000-class VGG-16 sweep peaked at 8.66 GiB instead of
        6.6). On CUDA it stays where it is."""
        if self.name != "cpu":
            return value
        return self.put(np.array(value.numpy()))

    def host(self, value) -> np.ndarray:
        """An OrtValue's contents as numpy (numpy arrays pass through). On the CPU it is a
        view: of memory onnxruntime allocated (the view keeps it alive), or the array that
        :meth:`put` wrapped."""
        if isinstance(value, np.ndarray):
            return value
        array = getattr(value, "pathonnx_array", None)
        if array is None:
            array = value.numpy()
        if self.on_host is not None:
            self.on_host(array)
        return array

    def run(self, session, feeds: dict, outputs: list[str]) -> list[OrtValue]:
        """Run ``session`` with IOBinding; OrtValue feeds are bound where they are, numpy
        feeds copied in once; the ``outputs`` are returned as OrtValues on the device."""
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in outputs:
            binding.bind_output(name, self.name)
        with running():
            session.run_with_iobinding(binding)
        return binding.get_outputs()


class OnDevice(Mapping):
    """Name -> numpy array, read from OrtValues on the device on first access (and kept);
    :meth:`value` gives the OrtValue itself, for the next onnxruntime call."""

    def __init__(self, device: Device, values: dict[str, OrtValue]):
        self.device, self.values, self._host = device, values, {}

    def value(self, name: str) -> OrtValue:
        return self.values[name]

    def select(self, pairs) -> OnDevice:
        """A map of the same values under other keys: ``(key, name)`` pairs, where ``name``
        is one of these values (pairs naming none are left out)."""
        chosen = {key: self.values[name] for key, name in pairs if name in self.values}
        return OnDevice(self.device, chosen)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._host:
            array = self.device.host(self.values[name])
            array.flags.writeable = False  # on the CPU a view of what the next call reads
            self._host[name] = array
        return self._host[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, name) -> bool:
        return name in self.values


def device_value(values: Mapping, name: str):
    """``values[name]`` as an OrtValue where it lives already, else the host array."""
    if isinstance(values, OnDevice):
        return values.value(name)
    return values[name]


def dtype_of(value) -> np.dtype:
    """The numpy dtype of an OrtValue or an array."""
    if isinstance(value, OrtValue):
        return np.dtype(np.float64 if value.data_type() == "tensor(double)" else np.float32)
    return np.asarray(value).dtype


def shape_of(value) -> tuple[int, ...]:
    """The shape of an OrtValue or an array."""
    return tuple(value.shape()) if isinstance(value, OrtValue) else tuple(value.shape)
