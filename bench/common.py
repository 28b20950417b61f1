"""Shared benchmark helpers: repeated timing with medians, peak memory, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class PeakMemory:
    """Samples RSS in a thread while a block runs: ``extra`` is the peak above the start."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.extra = 0

    def __enter__(self):
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.extra = self.peak - self.start


def measure(fn: Callable[[], object], budget_s: float, min_repeats: int = 5, max_repeats: int = 30):
    """Warm up once, then time ``fn`` at least ``min_repeats`` times (more while under budget;
    3 when one call alone takes half the budget).

    Returns (median seconds, interquartile range seconds, repeats, peak extra bytes).
    """
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        fn()
    if time.perf_counter() - t0 > budget_s / 2:
        min_repeats = min(min_repeats, 3)
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (
        len(times) < min_repeats or time.perf_counter() - start < budget_s
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    q = np.percentile(times, [25, 75])
    return statistics.median(times), float(q[1] - q[0]), len(times), memory.extra


class Device:
    """Where a benchmark runs both sides, with one TF32 setting for both: pathonnx's provider
    (``load(..., device, precision)``) and the torch/Captum reference's device. On CUDA the
    reference's clock stops only after ``torch.cuda.synchronize()``."""

    def __init__(self, name: str = "cpu", tf32: bool = False):
        import torch

        self.name, self.tf32 = name, tf32
        self.precision = "tf32" if tf32 else "exact"
        if name == "cuda":
            if not torch.cuda.is_available():
                raise SystemExit("--device cuda: torch sees no CUDA GPU here")
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self.torch = torch.device(name)

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                            help="where pathonnx and the torch reference both run")  # fmt: skip
        parser.add_argument("--tf32", action="store_true",
                            help="TF32 on for both sides (default: off, exact)")  # fmt: skip

    @classmethod
    def from_args(cls, args) -> Device:
        return cls(args.device, args.tf32)

    def load(self, path):
        import pathonnx

        return pathonnx.load(path, device=self.name, precision=self.precision)

    def synced(self, fn: Callable[[], object]) -> Callable[[], object]:
        """``fn`` whose return waits for the GPU's queued work (on CUDA)."""
        if self.name != "cuda":
            return fn
        import torch

        def run():
            out = fn()
            torch.cuda.synchronize()
            return out

        return run

    def describe(self) -> str:
        return f"device {self.name}, TF32 {'on' if self.tf32 else 'off'} on both sides"


def pathwise_vgg(size: int, device: Device):
    """The pathwise paper's VGG-16 at ``size``×``size`` on ``device``: (torch module, its ReLUs,
    one input x (1, 3, size, size), the pathonnx model, the predicted target), exported and
    loaded through a temporary file."""
    import archs

    module, relus = archs.frozen_pathwise_vgg(size)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vgg16_pathwise.onnx"
        archs.export_legacy(module, (3, size, size), path)
        model = device.load(path)
    module.to(device.torch)
    return module, relus, x, model, int(model.forward(x).prediction[0])


def providers_report(model) -> str:
    """The providers each session of ``model`` really got, one line per kind of session, and
    the nodes onnxruntime ran on another provider than the first asked for (a profiled run)."""
    counts: dict[tuple, int] = {}
    for kind, names in model.engine.session_providers():
        counts[kind, tuple(names)] = counts.get((kind, tuple(names)), 0) + 1
    lines = [f"  {kind} ×{n}: {', '.join(names)}" for (kind, names), n in counts.items()]
    moved = model.engine.fallback_nodes(np.zeros((1, *model.input_shape), np.float32))
    shown = ", ".join(f"{op} ×{n} on {where}" for (op, where), n in sorted(moved.items()))
    return (
        "sessions and their providers (get_providers()):\n"
        + "\n".join(lines)
        + f"\nnodes of the forward+adjoint graph off the first provider: {shown or 'none'}"
    )


def machine() -> str:
    import onnxruntime as ort
    import torch

    return (
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}"
    )
