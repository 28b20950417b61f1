"""Forward-pass benchmark: pathonnx (logits + every gate) against torch with ReLU hooks.

For each model and batch size, four ways of running the same network on the same input:

  pathonnx     ``model.forward(x)``: one onnxruntime run of the canonical graph that returns the
               logits and every gate output (plus max-pool argmax indices)
  torch+hooks  the torch module under ``torch.no_grad()`` with a forward hook on every ReLU
               keeping its output: the reference, the same tensors produced by the same library
               a user would otherwise call
  torch        the torch module, no hooks (logits only), for context
  ort-orig     onnxruntime on the exported file as is (logits only), for context

Each method is timed in blocks of consecutive calls, in the order A B C D then D C B A, so that
slow drift of a shared machine hits all four alike. Before timing, the outputs are checked to
agree, so the timings compare equal work. ``python bench/bench_forward.py --help`` lists flags.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import pathonnx
from pathonnx.engine import providers_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
import archs  # noqa: E402  (a sibling file, not an installed package)

METHODS = ("pathonnx", "torch+hooks", "torch", "ort-orig")
MODELS = {
    "resnet18": lambda size: archs.resnet18(num_classes=1000),
    "vgg16": lambda size: archs.vgg16(num_classes=1000, input_size=size),
}
# Largest max|difference| / max|reference| allowed between pathonnx and torch (float32 reorderings
# of big sums differ around 1e-6; a wrong rewrite would be off by far more).
REL_TOL = 1e-3
# A block of calls cheaper than this starts with an untimed call; for slower calls the few
# milliseconds a switch between libraries costs are lost in the noise.
SETTLE_BELOW_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64x64 input, batches 1,4, few reps")
    parser.add_argument("--models", default="resnet18,vgg16", help="comma-separated subset")
    parser.add_argument("--batches", default=None, help="comma-separated (default 1,16)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 224)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="for pathonnx")
    parser.add_argument(
        "--torch-threads", type=int, default=os.cpu_count() or 1, help="default: all cores"
    )
    parser.add_argument("--budget", type=float, default=None, help="timed seconds per cell")
    parser.add_argument("--cap", type=float, default=None, help="hard seconds cap per cell")
    parser.add_argument("--min-repeats", type=int, default=None, help="timed calls per method")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    # A cell is one (model, batch); budget and cap count the timed calls of all four methods.
    quick = {"batches": "1,4", "size": 64, "budget": 1.0, "cap": 10.0, "min_repeats": 3}
    full = {"batches": "1,16", "size": 224, "budget": 10.0, "cap": 120.0, "min_repeats": 5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; use {', '.join(MODELS)}")
    return args


# ---------------------------------------------------------------------------------------------
# Machine and memory


def machine_info(device: str, torch_device: str) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_device": torch_device,
        "onnxruntime": ort.__version__,
        "ort_available_providers": ort.get_available_providers(),
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "pathonnx": pathonnx.__version__,
        "pathonnx_device": device,
        "load_average_start": _load_average(),
    }


def _load_average() -> float:
    """1-minute load average: on a shared 2-core machine, what else was running matters."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _cpu_model() -> str:
    """The CPU's marketing name where Linux tells it (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# ---------------------------------------------------------------------------------------------
# Building, exporting, loading


def prepare(name: str, size: int, device: str, folder: str) -> dict:
    """Build and export one model, then time pathonnx.load and both sessions' creation."""
    module = MODELS[name](size)
    path = os.path.join(folder, f"{name}.onnx")
    t0 = time.perf_counter()
    archs.export_legacy(module, (3, size, size), path)
    t1 = time.perf_counter()
    model = pathonnx.load(path, device=device)
    t2 = time.perf_counter()
    # The session is built lazily on first forward; build it here so no timed call pays for it.
    model.session  # noqa: B018
    t3 = time.perf_counter()
    original = ort.InferenceSession(path, providers=model.providers)
    t4 = time.perf_counter()
    return {
        "module": module,
        "model": model,
        "original": original,
        "times": {"export_s": t1 - t0, "load_s": t2 - t1, "session_s": t3 - t2},
        "ort_orig_session_s": t4 - t3,
        "file_mib": os.path.getsize(path) / 2**20,
        "gates": len(model.gates),
        "units": sum(g.units for g in model.gates),
    }


# ---------------------------------------------------------------------------------------------
# The four runners


def relu_outputs(module: torch.nn.Module, relus: list, x: torch.Tensor) -> tuple:
    """Logits, and every ReLU output in execution order, kept by forward hooks."""
    kept: list[torch.Tensor] = []
    # Registered per call so that the plain torch runner sees no hooks at all.
    handles = [r.register_forward_hook(lambda _m, _i, out: kept.append(out)) for r in relus]
    try:
        with torch.no_grad():
            logits = module(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, kept


def runners(prepared: dict, x: np.ndarray, torch_device: str) -> dict[str, Callable[[], object]]:
    module, model, original = prepared["module"], prepared["model"], prepared["original"]
    xt = torch.from_numpy(x).to(torch_device)
    relus = [m for m in module.modules() if isinstance(m, torch.nn.ReLU)]
    sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)

    def torch_hooks():
        out = relu_outputs(module, relus, xt)
        sync()
        return out

    def torch_plain():
        with torch.no_grad():
            out = module(xt)
        sync()
        return out

    return {
        "pathonnx": lambda: model.forward(x),
        "torch+hooks": torch_hooks,
        "torch": torch_plain,
        "ort-orig": lambda: original.run(None, {"input": x})[0],
    }


def check_equal_work(run: dict[str, Callable[[], object]], gates: list) -> dict[str, float]:
    """Assert that pathonnx returns what torch+hooks returns; give the worst relative errors."""
    fwd = run["pathonnx"]()
    logits, kept = run["torch+hooks"]()
    assert len(kept) == len(gates), f"{len(kept)} ReLU outputs in torch, {len(gates)} gates"
    worst_gate = 0.0
    for gate, ref in zip(gates, kept):
        got = fwd.activations[gate.name]
        assert got.shape == tuple(ref.shape), f"gate {gate.name}: {got.shape} vs {ref.shape}"
        worst_gate = max(worst_gate, _rel_err(got, ref.cpu().numpy()))
    errors = {
        "logits": _rel_err(fwd.logits, logits.cpu().numpy()),
        "gates": worst_gate,
        "ort_orig_logits": _rel_err(run["ort-orig"](), logits.cpu().numpy()),
    }
    for what, err in errors.items():
        assert err < REL_TOL, f"{what}: max|diff|/max|ref| = {err:.2e} >= {REL_TOL}"
    return errors


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.abs(ref).max()) or 1.0
    return float(np.abs(got - ref).max()) / scale


# ---------------------------------------------------------------------------------------------
# Timing


def time_cell(run: dict[str, Callable[[], object]], args: argparse.Namespace) -> dict:
    """Time each method in blocks of consecutive calls: A B C D, then D C B A.

    Blocks, not calls interleaved one by one: onnxruntime's and torch's (OpenMP) thread pools
    spin-wait for a while after each call, and on 2 cores one library's spinning threads slow the
    other's next call, which no user running one of them would see. The mirrored second half
    cancels slow drift of a shared machine to first order.
    """
    samples = {}
    for name, fn in run.items():
        fn()  # warm-up: first-call allocations, onnxruntime arena growth, torch kernel caches
        samples[name] = [_timed(fn)]  # sizes the cell, and is kept as a sample
    cost = sum(s[0] for s in samples.values())
    reps = max(args.min_repeats, math.ceil(args.budget / cost))
    # The slowest cell (VGG-16 at batch 16) would blow the run time: fewer repeats there, never
    # fewer than 3 so that a median and a spread still mean something.
    reps = min(reps, 100, max(3, int(args.cap // cost)))
    left = reps - 1
    names = list(run)
    for order, count in ((names, left - left // 2), (names[::-1], left // 2)):
        for name in order:
            _block(run[name], samples[name], count)
    return samples


def _block(fn: Callable[[], object], times: list[float], count: int) -> None:
    if count and times[0] < SETTLE_BELOW_S:
        fn()  # untimed: lets the other library's threads go idle; cheap calls only
    for _ in range(count):
        times.append(_timed(fn))


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - t0
    del out  # free big outputs (VGG-16 gates at batch 16: ~1 GB) before the next call
    return elapsed


def summary(times: list[float]) -> dict:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_s": median, "q1_s": q1, "q3_s": q3, "repeats": len(times), "times_s": times}


# ---------------------------------------------------------------------------------------------
# Output


def format_header(info: dict, args: argparse.Namespace) -> str:
    providers = info["pathonnx_providers"]
    return "\n".join(
        [
            f"machine   {info['processor']}, {info['cpu_model'] or '?'}, "
            f"{info['cpu_count']} logical cores; {info['platform']}",
            f"software  python {info['python']}, torch {info['torch']} "
            f"({info['torch_threads']} threads, {info['torch_device']}), onnxruntime "
            f"{info['onnxruntime']} (defaults; providers {', '.join(providers)}), "
            f"onnx {info['onnx']}, numpy {info['numpy']}",
            f"setup     input {args.size}x{args.size}, batches {args.batches}, budget "
            f"{args.budget:g} s/cell, cap {args.cap:g} s/cell, >= {args.min_repeats} repeats; "
            f"load average at start {info['load_average_start']:.2f} (other processes count)",
        ]
    )


def format_load_table(prepared: dict[str, dict]) -> str:
    lines = [
        "model      file MiB  export s  pathonnx.load s  session s  ort-orig session s  "
        "gates  units/sample",
    ]
    for name, p in prepared.items():
        t = p["times"]
        lines.append(
            f"{name:<10} {p['file_mib']:8.1f}  {t['export_s']:8.2f}  {t['load_s']:15.2f}  "
            f"{t['session_s']:9.2f}  {p['ort_orig_session_s']:18.2f}  {p['gates']:5d}  "
            f"{p['units']:12,d}"
        )
    return "\n".join(lines)


def format_time_table(cells: list[dict]) -> str:
    head = f"{'model':<10} {'N':>3}  " + "  ".join(f"{m + ' ms':>22}" for m in METHODS)
    head += "  pathonnx/hooks  reps  logit err"
    lines = [head]
    for cell in cells:
        stats = cell["methods"]
        parts = "  ".join(f"{_ms(stats[m]):>22}" for m in METHODS)
        lines.append(
            f"{cell['model']:<10} {cell['batch']:>3}  {parts}  {cell['ratio']:14.2f}  "
            f"{stats['pathonnx']['repeats']:4d}  {cell['errors']['logits']:9.1e}"
        )
    lines.append(
        "ms: median (interquartile range); pathonnx/hooks: ratio of medians, pathonnx over "
        "torch+hooks; logit err: max|diff| / max|logit|, pathonnx vs torch"
    )
    return "\n".join(lines)


def _ms(stat: dict) -> str:
    return f"{stat['median_s'] * 1e3:.1f} ({stat['q1_s'] * 1e3:.1f}-{stat['q3_s'] * 1e3:.1f})"


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.torch_threads)
    torch_device = "cuda" if args.device == "cuda" and torch.cuda.is_available() else "cpu"
    info = machine_info(args.device, torch_device)
    info["pathonnx_providers"] = providers_for(args.device)
    print(format_header(info, args), flush=True)

    prepared, cells = {}, []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            prepared[name] = prepare(name, args.size, args.device, folder)
            for batch in args.batches:
                x = rng.standard_normal((batch, 3, args.size, args.size)).astype(np.float32)
                cells.append(run_cell(name, batch, prepared[name], x, torch_device, args))
                print(f"  done {name} N={batch}", flush=True)
            _release(prepared[name])

    print()
    print(format_load_table(prepared))
    print()
    print(format_time_table(cells))
    elapsed = time.perf_counter() - started
    peak = peak_rss_mib()
    info["load_average_end"] = _load_average()
    print(
        f"\npeak RSS {peak:,.0f} MiB; whole run {elapsed:.0f} s; "
        f"load average at end {info['load_average_end']:.2f}"
    )
    if args.json:
        write_json(args, info, prepared, cells, peak, elapsed)


def run_cell(name, batch, prepared, x, torch_device, args) -> dict:
    run = runners(prepared, x, torch_device)
    errors = check_equal_work(run, prepared["model"].gates)
    samples = time_cell(run, args)
    methods = {m: summary(samples[m]) for m in METHODS}
    ratio = methods["pathonnx"]["median_s"] / methods["torch+hooks"]["median_s"]
    return {"model": name, "batch": batch, "methods": methods, "ratio": ratio, "errors": errors}


def _release(prepared: dict) -> None:
    """Drop the big objects of a finished model (VGG-16 holds ~0.5 GiB of weights, thrice)."""
    for key in ("module", "model", "original"):
        prepared.pop(key, None)


def write_json(args, info, prepared, cells, peak, elapsed) -> None:
    loads = {
        name: {k: v for k, v in p.items() if k not in ("module", "model", "original")}
        for name, p in prepared.items()
    }
    payload = {
        "args": vars(args),
        "machine": info,
        "loads": loads,
        "cells": cells,
        "peak_rss_mib": peak,
        "elapsed_s": elapsed,
    }
    Path(args.json).write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
