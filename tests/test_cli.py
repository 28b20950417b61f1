"""The command line, through click's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import make_model, rand, run

import pathonnx
from pathonnx_cli.main import main

HEADER = '<ir_version: 8, opset_import: ["" : 13]>'


@pytest.fixture()
def model_path(tmp_path):
    text = f"""{HEADER}
    g (float[N, 2, 6, 6] x, float[4, 2, 3, 3] w, float[4] s, float[4] t, float[4] m,
       float[4] v, float[36, 3] fc) => (float[N, 3] y) {{
        c = Conv <pads = [1, 1, 1, 1]> (x, w)
        b = BatchNormalization(c, s, t, m, v)
        r = Relu(b)
        p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r)
        f = Flatten(p)
        h = MatMul(f, fc)
        y = Softmax(h)
    }}"""
    model = make_model(
        text, w=rand(4, 2, 3, 3), s=rand(4, seed=1), t=rand(4, seed=2), m=rand(4, seed=3),
        v=rand(4, seed=4, low=0.5), fc=rand(36, 3, seed=5),
    )  # fmt: skip
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_check_text(model_path):
    result = invoke("check", model_path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "tiny.onnx: explainable" in out
    assert "gates: 1 (relu×1), 144 units per sample; max-pools: 1" in out
    assert "batchnorm: 1 folded, 0 kept as affine" in out
    assert "trailing softmax removed" in out
    assert "self-check" in out and " ok" in out


def test_check_json_and_verbose(model_path):
    result = invoke("check", "--json", model_path)
    (report,) = json.loads(result.stdout)
    assert report["explainable"] and report["exit_code"] == 0
    assert report["ops"]["BatchNormalization"] == 1
    assert report["canonical_ops"] == {
        "Conv": 1,
        "Relu": 1,
        "MaxPool": 1,
        "Flatten": 1,
        "MatMul": 1,
    }
    assert report["self_check"]["max_abs_diff"] <= report["self_check"]["tolerance"]
    verbose = invoke("check", "-v", model_path).stdout
    assert "pass fold_batchnorm:" in verbose and "+ folded BatchNormalization" in verbose


def test_check_mixed_exit_code_is_the_worst(model_path, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    result = invoke("check", model_path, broken)
    assert result.exit_code == 2
    assert "1/2 model(s) explainable" in result.stdout


def test_inspect(model_path):
    result = invoke("inspect", model_path)
    assert result.exit_code == 0
    assert "0  r     relu  4x6x6  144" in result.stdout
    data = json.loads(invoke("inspect", "--json", model_path).stdout)
    assert data["gates"] == [
        {"index": 0, "name": "r", "kind": "relu", "shape": [4, 6, 6], "units": 144, "params": {}}
    ]
    assert data["num_outputs"] == 3


def test_rewrite_writes_the_canonical_model(model_path, tmp_path):
    out = tmp_path / "out" / "canonical.onnx"
    result = invoke("rewrite", model_path, "-o", out)
    assert result.exit_code == 0, result.output
    assert "fold_batchnorm: 1 change(s)" in result.stdout
    canonical = onnx.load(out)
    assert [o.name for o in canonical.graph.output] == ["h", "r", "p__argmax"]
    x = rand(2, 2, 6, 6)
    logits = pathonnx.load(model_path).forward(x).logits
    np.testing.assert_allclose(run(canonical, x), logits, rtol=1e-6)
    # a second run refuses to replace it, unless --force
    again = invoke("rewrite", model_path, "-o", out)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert invoke("rewrite", model_path, "-o", out, "--force").exit_code == 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.parametrize("command", ["check", "inspect", "rewrite"])
def test_help_has_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example" in result.stdout


def test_usage_error_exits_2(model_path):
    assert invoke("check").exit_code == 2
    assert invoke("check", "--input-shape", "3xfoo", model_path).exit_code == 2
    assert invoke("rewrite", model_path).exit_code == 2  # -o missing


def test_debug_shows_the_traceback(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00\x01garbage")
    result = invoke("--debug", "inspect", broken)
    # the traceback, then the same one line and exit code as without --debug
    assert "Traceback" in result.stderr and "pathonnx.errors.ModelLoadError" in result.stderr
    plain = invoke("inspect", broken)
    assert result.exit_code == plain.exit_code == 2
    assert result.stderr.splitlines()[-1] == plain.stderr.strip()


def test_console_script_runs(model_path):
    exe = shutil.which("pathonnx")
    command = [exe] if exe else [sys.executable, "-m", "pathonnx_cli.main"]
    done = subprocess.run([*command, "check", str(model_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "explainable" in done.stdout
    missing = subprocess.run([*command, "inspect", "nope.onnx"], capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("pathonnx: error: nope.onnx: no such file")
    assert "Traceback" not in missing.stderr
