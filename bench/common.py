"""Shared benchmark helpers: repeated timing with medians, peak memory, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable

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


def machine() -> str:
    import onnxruntime as ort
    import torch

    return (
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}"
    )
