"""Real torch exports (legacy at opsets 13 and 17, dynamo at 18): load, rewrite, reproduce."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import zoo

import pathonnx

GATE_OPS = {"Relu", "Clip", "Min", "Max", "LeakyRelu", "PRelu"}
EXTRA = [name for name in zoo.ARCHITECTURES if name not in zoo.MAIN_ARCHITECTURES]


def export_id(case) -> str:
    return "-".join(map(str, case))


def reproduce(path, module, arch: str, batch: int = 3) -> pathonnx.Model:
    """The canonical model matches torch's logits at batch ``batch``, whatever batch the export
    was traced with (dynamo hard-codes 1)."""
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=batch, seed=11)
    expected = zoo.torch_logits64(module, x)
    got = model.forward(x).logits
    if arch.endswith("_softmax"):
        assert model.softmax_stripped
        got = np.exp(got - got.max(1, keepdims=True))
        got /= got.sum(1, keepdims=True)
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-5 * scale + 1e-7
    return model


@pytest.mark.parametrize("case", zoo.ALL_EXPORTS, ids=export_id)
def test_main_architectures_reproduce_torch(case, exported):
    arch, exporter, opset = case
    path, module = exported(arch, exporter, opset)
    model = reproduce(path, module, arch)
    assert model.gates and "BatchNormalization" not in model.op_histogram()
    result = pathonnx.check_model(path, device="cpu")
    assert result.exit_code == 0 and result.self_check["passed"], result.error


@pytest.mark.parametrize("arch", [*EXTRA, "vgg_bn_softmax"])
def test_engine_architectures_reproduce_torch(arch, exported):
    path, module = exported(arch)
    reproduce(path, module, arch)


@pytest.mark.parametrize("case", zoo.ALL_EXPORTS, ids=export_id)
def test_gates_keep_the_original_execution_order(case, exported):
    path, _ = exported(*case)
    model = pathonnx.load(path, device="cpu")
    original = onnx.load(path)
    order = [out for node in original.graph.node if node.op_type in GATE_OPS for out in node.output]
    names = [g.name for g in model.gates]
    assert all(name in order for name in names)
    assert names == sorted(names, key=order.index)


def test_relu6_forms_all_become_clip_gates(exported):
    for exporter, opset in (("legacy", 13), ("dynamo", 18)):
        path, _ = exported("mobilenetv2", exporter, opset)
        model = pathonnx.load(path, device="cpu")
        clips = [g for g in model.gates if g.kind == "clip"]
        # stem + 3 blocks × 2 + last conv, whatever form each ReLU6 took in the file
        assert len(clips) == 8
        assert all(g.params == {"lo": 0.0, "hi": 6.0} for g in clips)
        assert not {"Min", "Max"} & set(model.op_histogram())


def test_dynamo_export_runs_at_any_batch(exported):
    path, _ = exported("shufflenet", "dynamo", 18)
    original = onnx.load(path)
    assert original.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    model = pathonnx.load(path, device="cpu")
    free = next(r for r in model.reports if r.name == "free_batch")
    assert len(free.changed) >= 5  # every hard-coded Reshape was freed
    assert model.forward(zoo.example_input("shufflenet", batch=5)).logits.shape == (5, 10)


def test_densenet_preactivation_batchnorm_is_kept_affine(exported):
    path, _ = exported("densenet")
    model = pathonnx.load(path, device="cpu")
    bn = next(r for r in model.reports if r.name == "fold_batchnorm")
    assert any("Concat" in s for s in bn.skipped)
