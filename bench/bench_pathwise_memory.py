"""Benchmark: memory of the exact pathwise sweep on a 1000-class VGG-16 at 224×224.

All K = 1000 logits enter the softmax at every gate, so the sweep carries 1000 cotangent rows.
Kept whole, the rows at VGG-16's first gates would take 1000 × 3.2 M units × 4 bytes = 12.8 GB.
pathonnx walks them in chunks and stores the chunks at a cut while they fit
``LinearEngine.store_budget`` (a quarter of the machine's memory, at most 5 GiB); the chunks
that do not fit are walked again from where they are stored. Each onnxruntime call of the
walk holds at most ``LinearEngine.memory_budget`` (1 GiB) of rows. This script exports the
network (torch, in this process), then runs ``pathonnx.pathwise`` in a child process that
never imports torch, and prints that process's peak resident memory (``ru_maxrss``) and its
run time. The goal is at most 8 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import archs  # noqa: E402
from common import Device, machine  # noqa: E402

CHILD = """
import json, resource, sys, time
import numpy as np
import onnxruntime as ort
path, size, depth, device, precision = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
if device == "cuda" and hasattr(ort, "preload_dlls"):
    ort.preload_dlls()  # the CUDA libraries, which torch would load, in a process without torch
import pathonnx
t0 = time.perf_counter()
model = pathonnx.load(path, device=device, precision=precision)
x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
t1 = time.perf_counter()
pathway = pathonnx.pathwise(model, x, depth=None if depth == "all" else int(depth))
t2 = time.perf_counter()
print(json.dumps({
    "load_s": t1 - t0, "pathwise_s": t2 - t1,
    "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "units_kept": {k: int(v[0]) for k, v in pathway.stats["units_kept"].items()},
    "path_logit": float(pathway.linear.W.ravel() @ x.ravel() + pathway.linear.b[0]),
    "providers": model.engine.session_providers()[0][1],
}))
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--depth", default="all", help="gates from the top, or 'all'")
    parser.add_argument("--json", type=Path)
    Device.add_arguments(parser)
    args = parser.parse_args(argv)
    precision = "tf32" if args.tf32 else "exact"

    print(f"bench_pathwise_memory: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vgg16.onnx"
        archs.export_legacy(
            archs.vgg16(args.classes, input_size=args.size), (3, args.size, args.size), path
        )
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(args.size), args.depth, args.device,
             precision],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(size=args.size, classes=args.classes, depth=args.depth, wall_s=wall)
    print(
        f"VGG-16, K={args.classes}, {args.size}x{args.size}, batch 1, depth {args.depth}; "
        f"device {args.device}, precision {precision}, providers {result['providers']}"
    )
    print(f"pathonnx.load              {result['load_s']:8.1f} s")
    print(f"pathwise (exact, all K)    {result['pathwise_s']:8.1f} s")
    print(f"peak RSS of that process   {result['peak_rss_gib']:8.2f} GiB   (goal <= 8 GB)")
    print(f"W^p.x + b^p (the path's logit) {result['path_logit']:8.3g}")
    kept = ", ".join(str(v) for v in result["units_kept"].values())
    print(f"units kept per gate, top down: {kept}")
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"parent peak RSS (torch export) {parent:.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
