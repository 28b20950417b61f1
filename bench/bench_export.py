"""Benchmark: an exported explainer (`pathonnx export`) against pathonnx's own call and the
model's forward pass.

For ResNet-18 and VGG-16 (hand-written torch definitions, random weights, 224×224, K outputs),
per exportable method, in the same run on the same machine:

- ``exported``: one ``InferenceSession.run`` of the exported graph, which returns the logits
  and the attribution of the argmax (no ``target`` fed), as a server without pathonnx runs it;
- ``attribute``: ``pathonnx.attribute(model, x, target, method=...)`` on the loaded model (its
  forward pass for the argmax included, as the exported graph has it inside);
- ``forward``: one run of the original model in onnxruntime, logits only: the floor.

Ratios: exported / attribute (how much serving the graph costs against pathonnx in Python)
and exported / forward (what the explanation adds to a prediction). Medians over repeats. Each
row also gives the largest difference between the two attributions, relative to the largest
magnitude of pathonnx's, and their cosine; and the same difference for the exported graph run
at onnxruntime's basic optimization level. Models with over 16 MiB of weights (VGG-16) run in
pathonnx with shared weights at the basic level, while a server runs the exported graph at the
full level, whose fused convolutions round differently: the last column tells that rounding
from any other difference. (A difference of 1e-3 relative at cosine 0.9999998 that integrated
gradients showed on VGG-16 came from the path's points: Python scaled x in float64, the graph
in float32, and points one rounding apart fell on two sides of a gate. Both scale in float32
now.) Pathwise runs over the top ``--top`` classes, as ``pathonnx
explain`` does on a model with many classes. Run with no arguments; ``--quick`` for a smoke
run at 64×64.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))

import archs  # noqa: E402
from common import machine, measure  # noqa: E402

import pathonnx  # noqa: E402

MODELS = {"resnet18": archs.resnet18, "vgg16": archs.vgg16}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet18,vgg16")
    parser.add_argument("--methods", default=",".join(pathonnx.exportable_methods()))
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--classes", type=int, default=1000, help="K, the number of outputs")
    parser.add_argument("--steps", type=int, default=16, help="integrated gradients' steps")
    parser.add_argument("--samples", type=int, default=8, help="SmoothGrad's noisy copies")
    parser.add_argument("--top", type=int, default=20, help="pathwise's classes (top logits)")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of timing per cell")
    parser.add_argument("--quick", action="store_true", help="64×64, 10 classes, few repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.classes, args.budget = 64, 10, 0.3
    return args


def session(path_or_proto, basic: bool = False) -> ort.InferenceSession:
    """A plain onnxruntime session on the CPU, as a user without pathonnx would make it;
    ``basic``: at the basic optimization level, pathonnx's own for models with shared weights
    (to tell a difference that comes from the level from one that does not)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the exported graph's optional `target` warns otherwise
    if basic:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    data = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def params_of(method: str, args) -> dict:
    """The parameters benchmarked: the defaults, but fewer points for integrated gradients and
    SmoothGrad, and pathwise over the top classes as `pathonnx explain` runs it on a model
    with many classes."""
    return {
        "integrated_gradients": {"steps": args.steps},
        "smoothgrad": {"samples": args.samples},
        "pathwise": {"classes": args.top},
    }.get(method, {})


def compare(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """The largest difference relative to the largest magnitude of ``want``, and the cosine."""
    error = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    a, b = got.ravel().astype(np.float64), want.ravel().astype(np.float64)
    return error, float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def bench_model(name: str, args) -> list[tuple]:
    extra = {"input_size": args.size} if name == "vgg16" else {}
    module = MODELS[name](num_classes=args.classes, **extra)
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.onnx"
        archs.export_legacy(module, (3, args.size, args.size), path)
        model = pathonnx.load(path)
        plain = session(str(path))
        feed = {plain.get_inputs()[0].name: x}
        forward, _, _, _ = measure(lambda: plain.run(None, feed), args.budget)
        target = int(model.forward(x).prediction[0])
        for method in args.methods.split(","):
            params = params_of(method, args)
            proto = pathonnx.export(model, method, **params)
            explainer = session(proto)
            inputs = {explainer.get_inputs()[0].name: x}
            serve = lambda e=explainer, i=inputs: e.run(None, i)  # noqa: E731
            exported, _, _, _ = measure(serve, args.budget)

            def own(method=method, params=params):
                t = int(model.forward(x).prediction[0])
                return pathonnx.attribute(model, x, t, method=method, **params)

            attribute, _, _, _ = measure(own, args.budget)
            want = pathonnx.attribute(model, x, target, method=method, **params)
            error, cosine = compare(serve()[1], want)
            basic = session(proto, basic=True)
            error_basic, _ = compare(basic.run(["attribution"], inputs)[0], want)
            del basic, proto
            rows.append((name, method, exported, attribute, forward, error, cosine, error_basic))
            times = f"exported {exported * 1e3:.1f} ms, attribute {attribute * 1e3:.1f} ms"
            print(f"  {name} {method}: {times}, forward {forward * 1e3:.1f} ms", flush=True)
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"bench_export: {machine()}")
    print(f"{args.size}x{args.size}, K={args.classes}, batch 1, CPU; integrated gradients with "
          f"{args.steps} steps, SmoothGrad {args.samples} samples, pathwise classes={args.top}; "
          "medians")  # fmt: skip
    rows = []
    for name in args.models.split(","):
        rows += bench_model(name, args)
    print("\n| model | method | exported | attribute | forward | exported / attribute | "
          "exported / forward | max rel. diff | cosine | max rel. diff, basic level |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, method, exported, attribute, forward, error, cosine, basic in rows:
        print(f"| {name} | {method} | {exported * 1e3:.1f} ms | {attribute * 1e3:.1f} ms | "
              f"{forward * 1e3:.1f} ms | {exported / attribute:.2f} | {exported / forward:.2f} | "
              f"{error:.1e} | {cosine:.7f} | {basic:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
