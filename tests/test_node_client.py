"""An exported explainer run from Node.js (clients/node/explain.mjs, onnxruntime-node) equals
pathonnx's Python result on a shipped sample image: the same prediction, logits and map.

The Node pieces are installed by ``npm ci`` in clients/node (the README's "From Node.js").
When ``node`` or clients/node/node_modules is missing these tests are skipped, and the reason
is given; with ``PATHONNX_REQUIRE_NODE=1`` (which ``.ci/run`` sets) they fail instead, so CI
never passes without them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import IMAGE, SAMPLES, VGG, invoke

import pathonnx
from pathonnx.explanation import image_preprocess
from pathonnx.images import load_inputs

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "node"
PACKAGES = ("onnxruntime-node", "pngjs")
# Tolerance, as in test_export.py: integrated gradients sum their path in float32 in the graph
# and in float64 in Python. The input itself is the same to the bit (explain.mjs rounds each
# step of the preprocessing to float32, as numpy does).
ATOL_SHARE, RTOL, COSINE = 1e-5, 1e-4, 0.9999


def required() -> bool:
    """Whether a missing Node.js or npm install fails the test instead of skipping it (CI)."""
    return os.environ.get("PATHONNX_REQUIRE_NODE") == "1"


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` executable, with clients/node's packages installed; else skip (fail under
    PATHONNX_REQUIRE_NODE=1)."""
    found = shutil.which("node")
    missing = [p for p in PACKAGES if not (CLIENT / "node_modules" / p / "package.json").is_file()]
    reason = None
    if found is None:
        reason = "node is not on PATH"
    elif missing:
        reason = f"{', '.join(missing)} not installed: run `npm ci` in clients/node"
    if reason is not None:
        if required():
            pytest.fail(reason + " [PATHONNX_REQUIRE_NODE=1]")
        pytest.skip(reason)
    return found


def run_client(node: str, *args, out: Path | None = None) -> subprocess.CompletedProcess:
    command = [node, str(CLIENT / "explain.mjs"), *map(str, args)]
    if out is not None:
        command += ["--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model():
    return pathonnx.load(VGG, device="cpu")


@pytest.fixture(scope="module")
def x(model):
    """The sample image as pathonnx reads it, with the model's preprocess metadata: (1, C, H, W)."""
    return load_inputs(IMAGE, image_preprocess(model), model.input_shape)[0].x[None]


@pytest.fixture(scope="module")
def explainers(tmp_path_factory):
    """``explainers(method)`` -> the path of the sample model's explainer, exported once by
    ``pathonnx export``."""
    folder = tmp_path_factory.mktemp("explainers")

    def get(method: str) -> Path:
        path = folder / f"{method}.onnx"
        if not path.is_file():
            result = invoke("export", VGG, "-o", path, "--method", method)
            assert result.exit_code == 0, result.output
        return path

    return get


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def check(node, model, x, explainer: Path, method: str, tmp_path: Path, target=None, as_given=None):
    """Run the Node client on the sample image (for ``target``, an index, given on its command
    line ``as_given``) and compare with pathonnx: prediction, logits and map. Returns the map."""
    out = tmp_path / "attribution.json"
    args = [] if target is None else ["--target", as_given if as_given is not None else target]
    done = run_client(node, explainer, IMAGE, *args, out=out)
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_text())
    labels = json.loads(model.metadata["pathonnx.labels"])
    logits = model.forward(x).logits
    prediction = int(logits[0].argmax())
    index = prediction if target is None else target
    assert (got["prediction"], got["label"], got["target"]) == (
        prediction,
        labels[prediction],
        index,
    )
    assert got["method"] == method
    said = f": {labels[prediction]} ({prediction}); {method} of {labels[index]} ({index}) -> "
    assert said in done.stdout
    np.testing.assert_allclose(got["logits"], logits[0], rtol=1e-5, atol=1e-5)
    attribution = np.asarray(got["attribution"], np.float32).reshape(got["shape"])
    expected = pathonnx.attribute(model, x, np.array([index]), method=method)
    assert attribution.shape == expected.shape == x.shape
    assert cosine(attribution, expected) >= COSINE
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(attribution, expected, rtol=RTOL, atol=ATOL_SHARE * scale)
    return attribution


@pytest.mark.parametrize("method", pathonnx.exportable_methods())
def test_node_client_equals_python(node, model, x, explainers, method, tmp_path):
    check(node, model, x, explainers(method), method, tmp_path)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_node_client_with_a_target(node, model, x, explainers, method, tmp_path):
    """The runner-up class as the target, by index and by label. Its map is not the
    prediction's: onnxruntime-node would drop a fed target silently (see explain.mjs)."""
    labels = json.loads(model.metadata["pathonnx.labels"])
    other = int(model.forward(x).logits[0].argsort()[-2])
    by_index = check(node, model, x, explainers(method), method, tmp_path, other, str(other))
    by_label = check(node, model, x, explainers(method), method, tmp_path, other, labels[other])
    np.testing.assert_array_equal(by_index, by_label)
    default = check(node, model, x, explainers(method), method, tmp_path)
    assert cosine(by_index, default) < 0.9


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["{explainer}", SAMPLES / "images" / "digit_0.png"],
            "the image is 8x8 but the model takes 32x32",
        ),
        (
            ["{explainer}", IMAGE, "--target", "6"],
            "--target 6 is not a class; give 0..5 or a label",
        ),
        (["{explainer}", IMAGE, "--target", "dog"], "--target dog is not a class"),
        ([VGG, IMAGE], "shapes_vgg.onnx: not an explainer"),
        (["{explainer}", SAMPLES / "nope.png"], "nope.png: cannot read the image (no such file)"),
        (["{explainer}"], "usage: node explain.mjs EXPLAINER.onnx IMAGE.png"),
    ],
    ids=["size", "target-range", "target-label", "not-explainer", "no-image", "usage"],
)
def test_node_client_refuses_bad_input_in_one_line(node, explainers, args, message, tmp_path):
    args = [str(explainers("saliency")) if a == "{explainer}" else a for a in args]
    done = run_client(node, *args, out=tmp_path / "attribution.json")
    assert done.returncode == 2
    assert done.stderr.startswith("explain.mjs: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "attribution.json").exists()


def readme_section() -> str:
    readme = (CLIENT.parent.parent / "README.md").read_text()
    return readme.split("### From Node.js\n", 1)[1].split("\n## ", 1)[0]


def test_readme_node_example_runs_as_written(node, tmp_path, monkeypatch):
    """The README's commands (after `npm ci`), from a folder that holds the samples: they print
    what the README says; its JavaScript lines are the client's own."""
    section = readme_section()
    commands = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0].splitlines()
    assert commands[0] == "(cd clients/node && npm ci)"
    export, run = (shlex.split(c) for c in commands[1:])
    assert export[:2] == ["pathonnx", "export"] and run[:2] == ["node", "clients/node/explain.mjs"]
    (tmp_path / "sample_models").symlink_to(SAMPLES)
    monkeypatch.chdir(tmp_path)
    result = invoke(*export[1:])
    assert result.exit_code == 0, result.output
    done = subprocess.run([node, CLIENT / "explain.mjs", *run[2:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = re.search(r"It prints `([^`]*)`", section).group(1)
    assert done.stdout.strip() == printed
    assert json.loads((tmp_path / "attribution.json").read_text())["target"] == 4
    client = {line.strip() for line in (CLIENT / "explain.mjs").read_text().splitlines()}
    (javascript,) = re.findall(r"```js\n(.*?)```", section, flags=re.S)
    assert {line.strip() for line in javascript.splitlines()} <= client
