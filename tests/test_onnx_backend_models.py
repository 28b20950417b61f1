"""The real-world graphs bundled with the onnx package (onnx/backend/test/data/light).

Their weights are placeholders (ConstantOfShape fills), so the numerical checks draw them again
at random: the rewrite must reproduce the original graph's logits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import pathonnx
from pathonnx_cli.main import main

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
EXPLAINABLE = ["resnet50", "vgg19", "squeezenet", "shufflenet", "densenet121", "inception_v2"]
REFUSED = ["bvlc_alexnet", "zfnet512", "inception_v1"]


def light(name: str) -> Path:
    return LIGHT / f"light_{name}.onnx"


def randomized(name: str, seed: int = 0) -> onnx.ModelProto:
    """The bundled graph with every placeholder weight drawn again (He-scaled, BN var > 0)."""
    model = onnx.load(light(name))
    rng = np.random.default_rng(seed)
    variances = {n.input[4] for n in model.graph.node if n.op_type == "BatchNormalization"}
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        name = node.output[0]
        if name in variances:
            value = rng.uniform(0.5, 2.0, shape)
        elif len(shape) >= 2:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        else:
            value = 0.1 * rng.standard_normal(shape)
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        # IR version 3 (these files) wants every initializer listed among the graph inputs.
        model.graph.input.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)
        )
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


@pytest.mark.parametrize("name", EXPLAINABLE)
def test_bundled_model_rewrite_reproduces_logits(name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    onnx.save(randomized(name), path)
    result = pathonnx.check_model(path, device="cpu")
    assert result.explainable and result.exit_code == 0, result.error
    check = result.self_check
    assert check["compared"] == "logits"
    assert check["max_abs_diff"] <= 1e-5 * check["logit_scale"]
    assert check["logit_scale"] > 1e-3  # the random weights make the comparison meaningful
    assert result.gates > 0 and "BatchNormalization" not in result.canonical_ops


def test_check_cli_passes_on_every_explainable_bundled_model():
    result = CliRunner().invoke(main, ["check", "--json", *map(str, map(light, EXPLAINABLE))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", REFUSED)
def test_models_with_lrn_are_refused_naming_lrn(name):
    with pytest.raises(pathonnx.UnsupportedModelError, match="LRN") as info:
        pathonnx.load(light(name))
    assert {op for _, op, _ in info.value.nodes} == {"LRN"}
    result = CliRunner().invoke(main, ["check", str(light(name))])
    assert result.exit_code == 1 and "LRN" in result.output


def test_densenet_keeps_preactivation_batchnorm_as_affine():
    model = pathonnx.load(light("densenet121"))
    bn = next(r for r in model.reports if r.name == "fold_batchnorm")
    kept = [s for s in bn.skipped if "Concat" in s]
    assert kept and any(c.startswith("folded") for c in bn.changed)
