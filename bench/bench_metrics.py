"""Benchmark: one insertion curve (224×224, 224 steps) against a plain per-step loop.

Model: ResNet-18 (1000 classes, random weights, legacy export), batch 1. The insertion curve of
one image has 225 points (0 to 224 steps of 224 pixels). pathonnx builds all 225 images at once
and runs them in batches of 64 through a logits-only session (``pathonnx.metrics.insertion``).
The reference, in the same run, is what a user would write without it: a loop that builds each
step's image and runs one onnxruntime call per step on the same logits-only session. The goal
is that the curve costs at most 4 forward batches of 64 (225 images are 3.5 such batches).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import archs  # noqa: E402
from common import Device, machine, measure, providers_report  # noqa: E402

import pathonnx  # noqa: E402
from pathonnx.evaluation import metrics as M  # noqa: E402


def per_step_loop(model, x, attribution, target, steps):
    """The plain loop: blur, then per step put the next pixels back and run the model once."""
    blurred = M.gaussian_blur(x)
    order = M.pixel_order(attribution)[0]
    counts = M._counts(x.shape[2] * x.shape[3], steps)
    current, scores = blurred[0].copy(), []
    for count in counts:
        current = M._replace(current, x[0], order[:count], "NCHW")
        p = M.softmax(model.logits(current[None], 1))[0, target]
        scores.append(p)
    return np.array(scores)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per method")
    parser.add_argument("--json", type=Path)
    Device.add_arguments(parser)
    args = parser.parse_args(argv)
    device = Device.from_args(args)
    steps = args.size
    print(f"bench_metrics: {machine()}")
    print(f"ResNet-18, K=1000, {args.size}x{args.size}, insertion curve with {steps} steps")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet18.onnx"
        archs.export_legacy(archs.resnet18(), (3, args.size, args.size), path)
        model = device.load(path)
        target = int(model.logits(x)[0].argmax())
        attribution = pathonnx.attribute(model, x, target, method="saliency")
        ours = M.insertion(model, x, attribution, target, steps, batch=64)
        loop = per_step_loop(model, x, attribution, target, steps)
        err = float(np.abs(ours.scores[0] - loop).max())
        batch64 = np.repeat(x, 64, axis=0)
        t_batch = measure(lambda: model.logits(batch64, 64), args.budget, min_repeats=5)
        t_curve = measure(lambda: M.insertion(model, x, attribution, target, steps, batch=64),
                          args.budget, min_repeats=3)  # fmt: skip
        t_loop = measure(lambda: per_step_loop(model, x, attribution, target, steps),
                         args.budget, min_repeats=3)  # fmt: skip
    print(f"  max |curve - loop| = {err:.1e}")
    print(providers_report(model))
    rows = [
        ("one forward batch of 64", t_batch[0]),
        ("insertion curve, batched (pathonnx)", t_curve[0]),
        ("insertion curve, per-step loop", t_loop[0]),
    ]
    print()
    print(f"{'measured':40} {'median':>10}")
    print("-" * 51)
    for label, value in rows:
        print(f"{label:40} {value:>8.2f} s")
    print()
    print(f"curve / forward batch of 64     {t_curve[0] / t_batch[0]:6.2f}  (goal <= 4)")
    print(f"per-step loop / batched curve   {t_loop[0] / t_curve[0]:6.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows, "err": err}))


if __name__ == "__main__":
    main()
