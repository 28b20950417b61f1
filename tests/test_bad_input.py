"""Bad input: one-line errors, the documented exit codes, and no file changed (API and CLI)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import make_model, rand

import pathonnx
from pathonnx_cli.main import main

HEADER = '<ir_version: 8, opset_import: ["" : 13]>'

MLP = f"""{HEADER}
g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {{
    h = MatMul(x, w)
    y = Relu(h)
}}"""


def mlp() -> onnx.ModelProto:
    return make_model(MLP, w=rand(4, 3))


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _save(folder: Path, name: str, model: onnx.ModelProto) -> Path:
    path = folder / name
    onnx.save(model, path)
    return path


def _truncated(folder: Path) -> Path:
    data = mlp().SerializeToString()
    path = folder / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    return path


def _random_bytes(folder: Path) -> Path:
    path = folder / "random.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _escaping_external_data(folder: Path) -> Path:
    model = mlp()
    (folder / "sub").mkdir()
    path = folder / "sub" / "model.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    # Point the weight at a file outside the model's folder.
    saved = onnx.load(path, load_external_data=False)
    for entry in saved.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../outside.bin"
    (folder / "outside.bin").write_bytes((folder / "sub" / "w.bin").read_bytes())
    path.write_bytes(saved.SerializeToString())
    return path


def _unsupported_op(folder: Path) -> Path:
    model = make_model(
        f"""{HEADER}
        g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {{
            h = MatMul(x, w)
            s = Sigmoid(h)
            y = Relu(s)
        }}""",
        w=rand(4, 3),
    )
    return _save(folder, "sigmoid.onnx", model)


def _two_inputs(folder: Path) -> Path:
    model = make_model(
        f"""{HEADER}
        g (float[N, 4] x, float[N, 4] z) => (float[N, 4] y) {{
            y = Add(x, z)
        }}"""
    )
    return _save(folder, "two_inputs.onnx", model)


def _int_input(folder: Path) -> Path:
    model = make_model(
        f"""{HEADER}
        g (int64[N, 4] x) => (float[N, 4] y) {{
            y = Cast <to = 1> (x)
        }}"""
    )
    return _save(folder, "int_input.onnx", model)


def _dynamic_size(folder: Path) -> Path:
    model = make_model(
        f"""{HEADER}
        g (float[N, C] x) => (float[N, C] y) {{
            y = Relu(x)
        }}"""
    )
    return _save(folder, "dynamic.onnx", model)


CASES = {
    "truncated": (_truncated, pathonnx.ModelLoadError, 2, "truncated"),
    "random_bytes": (_random_bytes, pathonnx.ModelLoadError, 2, "not"),
    "external_data_escape": (_escaping_external_data, pathonnx.ModelLoadError, 2, "outside"),
    "unsupported_op": (_unsupported_op, pathonnx.UnsupportedModelError, 1, "Sigmoid"),
    "two_inputs": (_two_inputs, pathonnx.UnsupportedModelError, 1, "2 data inputs"),
    "int_input": (_int_input, pathonnx.UnsupportedModelError, 1, "INT64"),
    "dynamic_size": (_dynamic_size, pathonnx.InputError, 2, "--input-shape"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_model_api(case, tmp_path):
    build, error, _, words = CASES[case]
    path = build(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(error, match=words) as info:
        pathonnx.load(path)
    assert "\n" not in str(info.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["check", "inspect", "rewrite"])
@pytest.mark.parametrize("case", CASES)
def test_bad_model_cli(case, command, tmp_path):
    build, _, code, words = CASES[case]
    path = build(tmp_path)
    before = snapshot(tmp_path)
    args = [command, str(path)] + (
        ["-o", str(tmp_path / "out.onnx")] if command == "rewrite" else []
    )
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    output = result.stdout if command == "check" else result.stderr
    assert words in output
    if command != "check":  # one line, no traceback
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


def test_unsupported_error_names_every_node():
    model = make_model(
        f"""{HEADER}
        g (float[N, 4] x) => (float[N, 4] y) {{
            a = Tanh(x)
            b = Mul(a, a)
            y = Softmax(b)
        }}"""
    )
    with pytest.raises(pathonnx.UnsupportedModelError) as info:
        pathonnx.load(model)
    ops = {op for _, op, _ in info.value.nodes}
    assert ops == {"Tanh", "Mul"}
    assert "Mul of two data tensors" in str(info.value)


def test_external_data_inside_folder_loads(tmp_path):
    model = mlp()
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    path = tmp_path / "model.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    loaded = pathonnx.load(path)
    x = rand(2, 4)
    np.testing.assert_allclose(loaded.forward(x).logits, np.maximum(x @ w, 0), rtol=1e-6)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(pathonnx.ModelLoadError, match="no such file"):
        pathonnx.load(tmp_path / "nope.onnx")
    with pytest.raises(pathonnx.ModelLoadError, match="not a file"):
        pathonnx.load(tmp_path)


@pytest.mark.parametrize(
    ("x", "words"),
    [
        (np.zeros((4,), np.float32), "without a batch axis"),
        (np.zeros((2, 5), np.float32), "the model takes"),
        (np.full((1, 4), np.nan, np.float32), "NaN"),
        (np.array([["a"] * 4]), "dtype"),
    ],
)
def test_forward_rejects_bad_arrays(x, words):
    model = pathonnx.load(mlp())
    with pytest.raises(pathonnx.InputError, match=words):
        model.forward(x)


def test_forward_does_not_modify_its_input():
    model = pathonnx.load(mlp())
    x = rand(3, 4)
    copy = x.copy()
    model.forward(x)
    np.testing.assert_array_equal(x, copy)


def test_check_target():
    model = pathonnx.load(mlp())
    assert model.check_target(2, 3).tolist() == [2, 2, 2]
    with pytest.raises(pathonnx.InputError, match="out of range"):
        model.check_target(3, 1)
    with pytest.raises(pathonnx.InputError, match="one per sample"):
        model.check_target([0, 1], 3)


def test_rewrite_refuses_to_overwrite_its_input(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(mlp(), path)
    before = snapshot(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["rewrite", str(path), "-o", str(path), "--force"])
    assert result.exit_code == 2 and "(the input model)" in result.stderr
    link = tmp_path / "link.onnx"
    os.symlink(path, link)
    result = runner.invoke(main, ["rewrite", str(path), "-o", str(link), "--force"])
    assert result.exit_code == 2
    link.unlink()
    assert snapshot(tmp_path) == before
