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
