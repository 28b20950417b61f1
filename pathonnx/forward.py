"""Stage 3, forward: onnxruntime sessions, input validation, and one run for logits + gates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from .errors import InputError, ModelLoadError

DEVICES = ("auto", "cpu", "cuda")


def providers_for(device: str = "auto") -> list[str]:
    """onnxruntime providers for ``device``: CUDA when asked for or available, else CPU."""
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise InputError(
            "device 'cuda' asked for, but onnxruntime has no CUDA provider here; install "
            "pathonnx[gpu] on a machine with an NVIDIA GPU, or use device='cpu'"
        )
    if device == "cuda" or (device == "auto" and has_cuda):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


_SHARED_ARENA = False


def _share_cpu_arena() -> None:
    """One CPU memory arena for all of pathonnx's sessions, grown only by what is asked.

    Each session would otherwise keep its own arena at its peak size, doubling it on growth:
    forward, adjoint and frozen graphs of a VGG-16 then held over 10 GB between them.
    """
    global _SHARED_ARENA
    if _SHARED_ARENA:
        return
    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    same_as_requested = 1
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, same_as_requested, -1, -1))
    _SHARED_ARENA = True


def make_session(proto: onnx.ModelProto, providers: list[str]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    _share_cpu_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.log_severity_level = 3  # warnings about unused initializers are noise to users
    # pathonnx runs several sessions back to back (forward, then adjoint): threads that spin
    # after one run would steal the cores the next run needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The memory pattern plans one block per run for the whole graph. The shared arena grows
    # by what is asked, so with the pattern on, VGG-16's backward runs kept ~1.7 GB more and
    # were slower (measured on integrated gradients).
    options.enable_mem_pattern = False
    try:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"onnxruntime cannot run the model ({first}); check that the original file runs in "
            "onnxruntime, and report it if it does"
        ) from None


def as_batch(x, input_shape: tuple[int, ...], what: str = "input") -> np.ndarray:
    """Validate ``x`` as a float32 batch ``(N, *input_shape)``; returns a new or read-only array."""
    try:
        array = np.asarray(x)
    except Exception as err:
        raise InputError(f"{what} cannot be read as an array ({err})") from None
    if array.dtype.kind not in "fiu" and array.dtype != np.bool_:
        raise InputError(f"{what} has dtype {array.dtype}; pass float32 numbers")
    if tuple(array.shape) == tuple(input_shape):
        raise InputError(
            f"{what} has shape {array.shape}, one sample without a batch axis; pass "
            f"x[None] (shape (1, {', '.join(map(str, input_shape))}))"
        )
    if array.ndim != len(input_shape) + 1 or tuple(array.shape[1:]) != tuple(input_shape):
        want = ", ".join(["N", *map(str, input_shape)])
        raise InputError(f"{what} has shape {array.shape}; the model takes ({want})")
    if array.shape[0] == 0:
        raise InputError(f"{what} is an empty batch; pass at least one sample")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{what} contains NaN or Inf; clean the input before explaining it")
    return array


@dataclass(frozen=True)
class Forward:
    """One forward pass at ``x`` (N, *input_shape): ``logits`` (N, K); each gate's output
    ``activations[name]`` (N, *gate.shape); the input of each LeakyRelu/PRelu gate
    ``preactivations[name]``; each max-pool's argmax ``argmax[name]`` (onnxruntime's flat
    indices into the pool's input, batch and channel offsets included)."""

    x: np.ndarray
    logits: np.ndarray
    activations: dict[str, np.ndarray]
    preactivations: dict[str, np.ndarray]
    argmax: dict[str, np.ndarray]

    @property
    def prediction(self) -> np.ndarray:
        return self.logits.argmax(axis=1)
