"""onnxruntime sessions: which providers, one shared CPU arena, one set of options."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import tempfile
from collections import Counter

import onnxruntime as ort

from ..errors import InputError, ModelLoadError
from ..graph.weights import has_stubs

DEVICES = ("auto", "cpu", "cuda")
#: Float32 arithmetic on CUDA. "exact" (the default) keeps TF32 off, so W·x + b reproduces the
#: logit to float32 precision as on the CPU. "tf32" lets the tensor cores round the inputs of
#: convolutions and products to TF32's 10-bit mantissa: faster, and measured on an H200 to
#: miss the logit by up to 7.9e-3 relative (VGG-16). The CPU provider has no TF32: both are exact.
PRECISIONS = ("exact", "tf32")


#: onnxruntime's log severity for pathonnx's sessions and its default logger: fatal only.
#: Its warnings (unused initializers, optimizer notes) are noise, and what its errors say
#: pathonnx reports in its one-line errors, or expects (graphsurgeon's constant folding
#: tries subgraphs that cannot fold).
LOG_SEVERITY = 4

#: The environment variable that sets onnxruntime's intra-op threads per session (unset or
#: 0: onnxruntime's default, one per physical core). A Ray worker sets it to the CPUs it
#: holds, so that several workers on one node do not each start a thread per core.
THREADS_ENV = "PATHONNX_THREADS"


def _quiet_runtime() -> None:
    """onnxruntime's process-wide settings, made once, before any session of pathonnx or of
    graphsurgeon's folding: no telemetry events (``ORT_DISABLE_TELEMETRY``, set in
    ``pathonnx/__init__.py`` before onnxruntime is first imported, also stops its device id
    file under $HOME/.cache), and its log at :data:`LOG_SEVERITY`."""
    ort.disable_telemetry_events()
    ort.set_default_logger_severity(LOG_SEVERITY)


_quiet_runtime()


def providers_for(device: str = "auto", precision: str = "exact") -> list:
    """onnxruntime providers for ``device``: CUDA when asked for or available (with TF32 on
    only for ``precision="tf32"``), else CPU. Entries are names or (name, options) pairs."""
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise InputError(
            "device 'cuda' asked for, but onnxruntime has no CUDA provider here; install "
            "pathonnx[gpu] on a machine with an NVIDIA GPU, or use device='cpu'"
        )
    if device == "cuda" or (device == "auto" and has_cuda):
        options = {"use_tf32": "1" if precision == "tf32" else "0"}
        return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def provider_names(providers: list) -> list[str]:
    """The names in a provider list of names or (name, options) pairs."""
    return [p[0] if isinstance(p, tuple) else p for p in providers]


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("used", ctypes.c_ulonglong)]  # fmt: skip


def device_memory(index: int = 0) -> int | None:
    """Free memory of NVIDIA GPU ``index`` in bytes, read from the driver's NVML library
    (``nvmlDeviceGetMemoryInfo``); None where there is no NVIDIA driver or it cannot say."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        handle, memory = ctypes.c_void_p(), _NvmlMemory()
        if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
            return None
        if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
            return None
        return int(memory.free)
    finally:
        nvml.nvmlShutdown()


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


_CUDA_LIBRARIES = False


def _load_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries that onnxruntime-gpu's CUDA provider needs, from
    torch or pip's nvidia packages (``onnxruntime.preload_dlls``), once; importing torch first
    does the same. Without them the provider fails to start."""
    global _CUDA_LIBRARIES
    if not _CUDA_LIBRARIES and hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):  # a library missing shows in make_session's check
            ort.preload_dlls()
    _CUDA_LIBRARIES = True


def _threads() -> int:
    """The intra-op threads of a new session: :data:`THREADS_ENV`, else 0 (the default)."""
    text = os.environ.get(THREADS_ENV, "").strip()
    try:
        threads = int(text or 0)
    except ValueError:
        raise InputError(f"{THREADS_ENV}={text!r} is not a number of threads; unset it or "
                         "give a positive integer") from None  # fmt: skip
    if threads < 0:
        raise InputError(f"{THREADS_ENV}={text} must be 0 (the default) or more")
    return threads


def make_session(proto, providers: list, profile: str | None = None,
                 weights=None) -> ort.InferenceSession:  # fmt: skip
    """A session for ``proto`` (a graph from :mod:`pathonnx.graph`) on ``providers``;
    ``profile``: a file prefix to profile its runs under. ``weights``
    (:class:`~pathonnx.graph.weights.Weights`) gives the arrays of the proto's stubbed
    initializers, which the session reads in place. Raises when onnxruntime silently
    starts the session without the first provider asked for (CUDA that failed to load)."""
    wanted = provider_names(providers)[0]
    if wanted == "CUDAExecutionProvider":
        _load_cuda_libraries()
    options = ort.SessionOptions()
    if profile is not None:
        options.enable_profiling, options.profile_file_prefix = True, profile
    _share_cpu_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.log_severity_level = LOG_SEVERITY
    # pathonnx runs several sessions back to back (forward, then adjoint): threads that spin
    # after one run would steal the cores the next run needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = _threads()
    # The memory pattern plans one block per run for the whole graph. The shared arena grows
    # by what is asked, so with the pattern on, VGG-16's backward runs kept ~1.7 GB more and
    # were slower (measured on integrated gradients).
    options.enable_mem_pattern = False
    shared = weights is not None and weights.bind(proto, options, _device_of(wanted))
    if not shared and weights is not None and has_stubs(proto):
        proto = weights.inflate(proto)
    # onnxruntime's Python wrapper retries a session that fails on the CPU provider alone, on
    # the CPU provider, after printing the error in four lines on stdout: no retry there.
    fallback = int(wanted != "CPUExecutionProvider")
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers,
                                       enable_fallback=fallback)  # fmt: skip
    except Exception as err:
        if shared:  # an optimization wanted a shared weight's data: this graph gets a copy
            return make_session(weights.inflate(proto), providers, profile)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"onnxruntime cannot run the model ({first}); check that the original file runs in "
            "onnxruntime, and report it if it does"
        ) from None
    if wanted not in session.get_providers():
        raise InputError(
            f"onnxruntime could not start its {wanted} and would run on "
            f"{', '.join(session.get_providers())} instead; install the CUDA and cuDNN libraries "
            "it needs (pip install 'onnxruntime-gpu[cuda,cudnn]', or import torch first), or use "
            "device='cpu' (--device cpu)"
        )
    return session


def _device_of(provider: str) -> str:
    return "cuda" if provider == "CUDAExecutionProvider" else "cpu"


def node_providers(proto, providers: list, feeds: dict, weights=None) -> Counter:
    """(op type, provider) -> how many nodes onnxruntime ran on that provider in one run of
    ``proto`` with ``feeds``, read from its profile (after its graph optimizations: fused
    nodes appear as such). Shows the nodes a provider lacks a kernel for, which run elsewhere."""
    with tempfile.TemporaryDirectory() as folder:
        session = make_session(proto, providers, os.path.join(folder, "profile"), weights)
        session.run(None, feeds)
        with open(session.end_profiling()) as handle:
            events = json.load(handle)
    return Counter(
        (event["args"]["op_name"], event["args"]["provider"])
        for event in events
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
    )
