"""Hand-built ONNX models for the fuzz corpus, broken on purpose where a case wants it.

Built with ``onnx.helper`` and never passed to the checker: a cycle, an undefined input, a
short ``raw_data`` are the point. The base is a small MLP, x (N, 4) -> 8 ReLU units -> 3
logits, and a pooled network whose weights do not grow with its input, so that a huge
declared input costs nothing to write down.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def value_info(name: str, dims, dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, list(dims))


def graph_model(nodes, inputs, outputs, initializers=(), opset=13, ir=8, metadata=None):
    """A model from parts, never checked: broken on purpose where the case wants it."""
    graph = helper.make_graph(nodes, "fuzz", inputs, outputs, list(initializers))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pathonnx-fuzz"
    )
    model.ir_version = ir
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def mlp_weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((4, 8)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((8, 3)).astype(np.float32),
    }


def mlp(nodes=None, weights=None, opset=13, outputs=None, ir=8) -> onnx.ModelProto:
    """x (N, 4) -> MatMul -> Add -> Relu -> MatMul -> y (N, 3); parts replaceable."""
    weights = (
        weights
        if weights is not None
        else {k: numpy_helper.from_array(v, k) for k, v in mlp_weights().items()}
    )
    nodes = (
        nodes
        if nodes is not None
        else [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["z"]),
            helper.make_node("Relu", ["z"], ["a"]),
            helper.make_node("MatMul", ["a", "w2"], ["y"]),
        ]
    )
    inits = weights.values() if isinstance(weights, dict) else weights
    return graph_model(
        nodes, [value_info("x", ["N", 4])], outputs or [value_info("y", ["N", 3])], inits, opset, ir
    )


def mlp_with(**changed: np.ndarray) -> onnx.ModelProto:
    weights = {**mlp_weights(), **changed}
    return mlp(weights={k: numpy_helper.from_array(v, k) for k, v in weights.items()})


def pooled(dims, metadata=None) -> onnx.ModelProto:
    """x (N, *dims) -> 1x1 Conv (images) or nothing -> Relu -> GlobalAveragePool -> Flatten
    -> MatMul: weights that do not grow with the input, so a huge input costs nothing to
    declare."""
    channels = dims[0]
    rng = np.random.default_rng(1)
    nodes, inits, source = [], [], "x"
    if len(dims) == 3:
        inits.append(
            numpy_helper.from_array(
                rng.standard_normal((2, channels, 1, 1)).astype(np.float32), "k"
            )
        )
        nodes.append(helper.make_node("Conv", ["x", "k"], ["c"]))
        source, channels = "c", 2
    inits.append(
        numpy_helper.from_array(rng.standard_normal((channels, 3)).astype(np.float32), "w")
    )
    nodes += [
        helper.make_node("Relu", [source], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["y"]),
    ]
    return graph_model(
        nodes,
        [value_info("x", ["N", *dims])],
        [value_info("y", ["N", 3])],
        inits,
        metadata=metadata,
    )


def image_metadata(size: int) -> dict:
    pre = {
        "size": [size, size],
        "color": "rgb",
        "scale": 1 / 255,
        "mean": [0.0],
        "std": [1.0],
        "layout": "NCHW",
    }
    return {"pathonnx.preprocess": json.dumps(pre)}


def short_raw_data():
    tensor = numpy_helper.from_array(mlp_weights()["w1"], "w1")
    tensor.raw_data = tensor.raw_data[:20]
    return mlp(
        weights=[
            tensor,
            *(numpy_helper.from_array(v, k) for k, v in mlp_weights().items() if k != "w1"),
        ]
    )


def wrong_dtype():
    weights = {k: numpy_helper.from_array(v, k) for k, v in mlp_weights().items()}
    weights["w1"] = numpy_helper.from_array(mlp_weights()["w1"].astype(np.float64), "w1")
    return mlp(weights=weights)


def zero_outputs():
    weights = {**mlp_weights(), "w2": np.zeros((8, 0), np.float32)}
    return mlp(
        weights={k: numpy_helper.from_array(v, k) for k, v in weights.items()},
        outputs=[value_info("y", ["N", 0])],
    )


def clip_opset11_in_opset9():
    weights = {k: numpy_helper.from_array(v, k) for k, v in mlp_weights().items()}
    weights["lo"] = numpy_helper.from_array(np.array(0, np.float32), "lo")
    weights["hi"] = numpy_helper.from_array(np.array(6, np.float32), "hi")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["z"]),
        helper.make_node("Clip", ["z", "lo", "hi"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["y"]),
    ]
    return mlp(nodes=nodes, weights=weights, opset=9, ir=4)


def rewired(**inputs):
    """The MLP with some nodes' inputs replaced: a cycle, a self-loop, an undefined name."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", inputs.get("add", "b1")], ["z"]),
        helper.make_node("Relu", [inputs.get("relu", "z")], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["y"]),
    ]
    return mlp(nodes=nodes)


def poke(array: np.ndarray, value: float) -> np.ndarray:
    array = array.copy()
    array.flat[1] = value
    return array


def with_metadata(path: str, entries: dict) -> onnx.ModelProto:
    model = onnx.load(path)
    for entry in model.metadata_props:
        if entry.key in entries:
            entry.value = entries.pop(entry.key)
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return model
