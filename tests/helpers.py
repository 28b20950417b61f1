"""Small shared helpers for the tests: tiny graphs from text, running ONNX models, the shipped
samples, and the command line in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, parser


def make_model(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    """Parse a model in ONNX text syntax; graph inputs named in ``weights`` become initializers."""
    model = parser.parse_model(text)
    for name, value in weights.items():
        (info,) = [i for i in model.graph.input if i.name == name]
        model.graph.input.remove(info)
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, x: np.ndarray, output: str | None = None) -> np.ndarray:
    """Run ``model`` with onnxruntime on ``x`` and return its first (or the named) output."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = output or session.get_outputs()[0].name
    return session.run([name], {session.get_inputs()[0].name: x})[0]


def rand(*shape: int, seed: int = 0, low: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, 2.0, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


#: The shipped sample models, images and evaluation set.
SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
VGG = SAMPLES / "shapes_vgg.onnx"
IMAGE = SAMPLES / "images" / "shapes_006_cross+square.png"
EVAL = SAMPLES / "eval"


def invoke(*args):
    """``pathonnx ARGS`` in-process (click's runner), arguments as strings."""
    from click.testing import CliRunner

    from pathonnx_cli.main import main

    return CliRunner().invoke(main, [str(a) for a in args])


MLP_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
agraph (float[N, 4] x, float[4, 6] w1, float[6] b1, float[6, 5] w2, float[5] b2,
        float[5, 3] w3, float[3] b3) => (float[N, 3] logits) {
    z1 = Gemm(x, w1, b1)
    h1 = Relu(z1)
    z2 = Gemm(h1, w2, b2)
    h2 = Relu(z2)
    logits = Gemm(h2, w3, b3)
}
"""


def mlp_weights(seed: int) -> tuple[np.ndarray, ...]:
    """W1, B1, W2, B2, W3, B3 of :func:`two_gate_mlp`, standard normal float32."""
    rng = np.random.default_rng(seed)
    shapes = [(4, 6), (6,), (6, 5), (5,), (5, 3), (3,)]
    return tuple(rng.standard_normal(shape).astype(np.float32) for shape in shapes)


def two_gate_mlp(weights):
    """logits = Gemm(Relu(Gemm(Relu(Gemm(x))))): two gates, h1 (6 units) and h2 (5 units),
    three classes, with ``weights`` from :func:`mlp_weights`."""
    import pathonnx

    names = ("w1", "b1", "w2", "b2", "w3", "b3")
    return pathonnx.load(make_model(MLP_TEXT, **dict(zip(names, weights))), device="cpu")
