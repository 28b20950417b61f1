"""Any output, any element: choosing one of several outputs, dense outputs, positions, regions.

Tiny graphs written inline. A model with several outputs explains the one named by ``output``
(--output); a dense output, e.g. (N, C, H, W) or (N, H, W, C), is flattened to logits in its own
C order, and a target is a channel at a position (``at``, --at) or summed over a region
(``mask``, --target-mask). Classifiers behave as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import make_model, rand, run

import pathonnx
import pathonnx.engine.sparse as sparse
from pathonnx.check import self_check
from pathonnx.evaluation.metrics import cascade_models
from pathonnx_cli.main import main

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
HEADER = '<ir_version: 8, opset_import: ["" : 13]>'

TWO_HEADS = f"""{HEADER}
g (float[N, 4] x, float[4, 5] w1, float[5, 3] w2, float[5, 2] w3) => (float[N, 3] a,
                                                                   float[N, 2] p) {{
    h = MatMul(x, w1)
    r = Relu(h)
    a = MatMul(r, w2)
    z = MatMul(r, w3)
    p = Softmax <axis = 1> (z)
}}"""

NCHW = f"""{HEADER}
g (float[N, 3, 6, 6] x, float[4, 3, 3, 3] k1, float[4] b1, float[2, 4, 1, 1] k2)
  => (float[N, 2, 4, 4] p) {{
    c = Conv(x, k1, b1)
    r = Relu(c)
    z = Conv(r, k2)
    p = Softmax <axis = 1> (z)
}}"""

NHWC = f"""{HEADER}
g (float[N, H, W, 3] x, float[4, 3, 3, 3] k1, float[4] b1, float[1, 4, 1, 1] s,
   float[4, 4, 1, 1] k2, float[1, 4, 1, 1] s2, float[2, 4, 1, 1] k3) => (float[N, H2, W2, 2] y) {{
    t = Transpose <perm = [0, 3, 1, 2]> (x)
    c = Conv(t, k1, b1)
    r = PRelu(c, s)
    c2 = Conv(r, k2)
    r2 = PRelu(c2, s2)
    z = Conv(r2, k3)
    y = Transpose <perm = [0, 2, 3, 1]> (z)
}}"""


def two_heads() -> onnx.ModelProto:
    return make_model(TWO_HEADS, w1=rand(4, 5), w2=rand(5, 3, seed=1), w3=rand(5, 2, seed=2))


def nchw() -> onnx.ModelProto:
    return make_model(NCHW, k1=rand(4, 3, 3, 3), b1=rand(4, seed=1), k2=rand(2, 4, 1, 1, seed=2))


def nhwc() -> onnx.ModelProto:
    slope = np.linspace(0.05, 0.3, 4, dtype=np.float32).reshape(1, 4, 1, 1)
    return make_model(NHWC, k1=rand(4, 3, 3, 3), b1=rand(4, seed=1), s=slope,
                      k2=rand(4, 4, 1, 1, seed=2), s2=slope[:, ::-1].copy(),
                      k3=rand(2, 4, 1, 1, seed=3))  # fmt: skip


# -- several outputs ------------------------------------------------------------------------


def test_several_outputs_listed_with_shapes():
    with pytest.raises(pathonnx.InputError) as info:
        pathonnx.load(two_heads())
    message = str(info.value)
    assert "has 2 outputs: a (N, 3); p (N, 2)" in message
    assert "--output NAME" in message and "output=NAME" in message and "\n" not in message
    with pytest.raises(pathonnx.InputError, match="no output 'q'; its outputs are: a"):
        pathonnx.load(two_heads(), output="q")


@pytest.mark.parametrize(("output", "weights", "softmax"), [("a", "w2", False), ("p", "w3", True)])
def test_the_chosen_output_alone(output, weights, softmax):
    """The other head and its branch are gone from the model as read (the self-check runs it,
    the sanity check re-initializes its layers) and from the canonical graph."""
    proto = two_heads()
    model = pathonnx.load(proto, output=output)
    assert model.output_name == output and model.outputs == ("a", "p")
    assert model.softmax_stripped == softmax
    assert model.op_histogram(canonical=False)["MatMul"] == 2
    assert model.op_histogram(canonical=False)["Softmax"] == int(softmax)
    assert [name for _, names in model.graph.parametric_layers() for name in names] == [
        weights,
        "w1",
    ]
    x = rand(3, 4, seed=5)
    r = np.maximum(x @ onnx.numpy_helper.to_array(proto.graph.initializer[0]), 0)
    head = onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == weights))
    np.testing.assert_allclose(model.forward(x).logits, r @ head, rtol=1e-5, atol=1e-6)
    assert self_check(model).passed
    linear = model.linearize(x, 1)
    np.testing.assert_allclose(linear.output(x), (r @ head)[:, 1], rtol=1e-5, atol=1e-6)


def test_cli_output_flag(tmp_path):
    path = tmp_path / "heads.onnx"
    onnx.save(two_heads(), path)
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(path)])
    assert result.exit_code == 2 and "a (N, 3); p (N, 2)" in result.stdout
    result = runner.invoke(main, ["check", str(path), "--output", "p"])
    assert result.exit_code == 0, result.output
    assert "explaining output 'p' of 2: a, p" in result.stdout
    assert "trailing softmax removed" in result.stdout
    result = runner.invoke(main, ["inspect", str(path), "--output", "a", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["output"]["name"] == "a"
    result = runner.invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    np.save(tmp_path / "x.npy", rand(4, seed=3))
    args = ["explain", str(path), str(tmp_path / "x.npy"), "--output", "a", "--method", "saliency"]
    result = runner.invoke(main, [*args, "--json", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["output"]["name"] == "a" and report["output"]["outputs"] == ["a", "p"]


def test_explain_checks_a_loaded_model_against_output():
    model = pathonnx.load(two_heads(), output="a")
    with pytest.raises(pathonnx.InputError, match="loaded with output 'a'"):
        pathonnx.explain(model, rand(4), output="p")
    e = pathonnx.explain(two_heads(), rand(4), output="p", method="saliency")
    assert e.logits.shape == (2,) and e.output["name"] == "p"


# -- dense outputs --------------------------------------------------------------------------


def test_dense_nchw_flat_index_and_readouts():
    proto = nchw()
    model = pathonnx.load(proto)
    assert model.output_shape == (2, 4, 4) and model.channel_axis == 0  # NCHW input
    assert model.num_outputs == 32 and model.dense and model.softmax_stripped
    assert model.spatial_shape == (4, 4) and model.channels == 2
    x = rand(2, 3, 6, 6, seed=4)
    fwd = model.forward(x)
    proto.graph.output.append(onnx.helper.make_tensor_value_info("z", 1, None))
    logits = run(proto, x, "z").reshape(2, -1)  # the Softmax's input
    np.testing.assert_allclose(fwd.logits, logits, rtol=1e-5, atol=1e-6)
    index = model.flat_index(1, (2, 3))
    assert index == 16 + 2 * 4 + 3
    element = model.linearize(x, index)
    np.testing.assert_allclose(element.output(x), fwd.logits[:, index], rtol=1e-5, atol=1e-6)
    at = model.readout(at=(2, 3))
    assert at.num_outputs == 2 and at.readout_of.at == (2, 3) and not at.dense
    np.testing.assert_array_equal(at.forward(x).logits, fwd.logits[:, [index - 16, index]])
    same = at.linearize(x, 1)
    np.testing.assert_array_equal(same.W, element.W)
    weights = np.zeros((4, 4), np.float32)
    weights[0, 0], weights[1, 2], weights[3, 3] = 1.0, 0.5, -2.0
    region = model.readout(mask=weights)
    expected = sum(w * model.linearize(x, model.flat_index(0, p)).W
                   for p, w in np.ndenumerate(weights) if w)  # fmt: skip
    linear = region.linearize(x, 0)
    np.testing.assert_allclose(linear.W, expected, rtol=1e-5, atol=1e-6)
    values = fwd.logits[:, :16] @ weights.reshape(-1)
    np.testing.assert_allclose(linear.output(x), values, rtol=1e-5, atol=1e-5)
    for derived in (model, at, region):
        assert self_check(derived).passed


def test_dense_nhwc_channel_axis_is_last():
    model = pathonnx.load(nhwc(), size=(6, 6))
    assert model.input_shape == (6, 6, 3)
    assert model.output_shape == (4, 4, 2) and model.channel_axis == 2
    assert model.flat_index(1, (2, 3)) == (2 * 4 + 3) * 2 + 1
    x = rand(2, 6, 6, 3, seed=6)
    logits = run(nhwc(), x).reshape(2, -1)
    np.testing.assert_allclose(model.forward(x).logits, logits, rtol=1e-5, atol=1e-6)
    at = model.readout(at=(3, 0))
    np.testing.assert_array_equal(at.forward(x).logits, logits[:, 24:26])


def test_dense_target_errors():
    model = pathonnx.load(nchw())
    cases = [
        (dict(at=(4, 0)), "outside output 'p', whose positions span 4x4"),
        (dict(at=(1,)), "has 1 coordinate"),
        (dict(mask=np.ones((3, 4))), "has shape (3, 4) but output 'p' has 4x4 positions"),
        (dict(mask=np.zeros((4, 4))), "selects no position"),
        (dict(at=(0, 0), mask=np.ones((4, 4))), "one of the two"),
    ]
    for kwargs, words in cases:
        with pytest.raises(pathonnx.InputError) as info:
            model.readout(**kwargs)
        assert words in str(info.value)
    with pytest.raises(pathonnx.InputError, match="already reads out"):
        model.readout(at=(0, 0)).readout(at=(0, 0))
    with pytest.raises(pathonnx.InputError, match=r"is dense \(2x4x4 per sample, channels on"):
        pathonnx.explain(model, rand(3, 6, 6))
    classifier = pathonnx.load(two_heads(), output="a")
    assert classifier.output_shape == (3,) and not classifier.dense
    with pytest.raises(pathonnx.InputError, match=r"\(3,\), with no positions"):
        classifier.readout(at=(0,))


def test_explain_dense_api_and_cli(tmp_path):
    model = pathonnx.load(nchw())
    x = rand(3, 6, 6, seed=8)
    e = pathonnx.explain(model, x, method="pathwise", target=1, at=(1, 2))
    index = model.flat_index(1, (1, 2))
    assert e.target == 1 and e.logits[1] == model.forward(x[None]).logits[0, index]
    assert e.element() == [1, 1, 2] and e.completeness_error < 1e-5
    assert e.to_dict()["explains"] == "the logits at (1, 2) of 'p' (a trailing Softmax is removed)"
    path = tmp_path / "dense.onnx"
    onnx.save(nchw(), path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "region.npy", np.eye(4, dtype=bool))
    runner = CliRunner()
    base = ["explain", str(path), str(tmp_path / "x.npy"), "--target", "0", "--json"]
    result = runner.invoke(main, [*base, "--target-mask", str(tmp_path / "region.npy"),
                                  "-o", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    logits = model.forward(x[None]).logits[0]
    assert report["target"]["logit"] == pytest.approx(float(logits[[0, 5, 10, 15]].sum()), 1e-5)
    assert report["output"]["region_positions"] == 4 and report["output"]["element"] is None
    for extra, words in [([], "is dense"), (["--at", "1;2"], "not a position like 3,4"),
                         (["--at", "1,2", "--target-mask", str(tmp_path / "region.npy")],
                          "not both")]:  # fmt: skip
        result = runner.invoke(main, [*base, *extra, "-o", str(tmp_path / "bad")])
        assert result.exit_code == 2 and words in result.stderr, result.output
    assert not (tmp_path / "bad").exists()


def test_rewrite_keeps_the_dense_layout(tmp_path):
    model = pathonnx.load(nhwc(), size=(6, 6))
    model.save(tmp_path / "canonical.onnx")
    again = pathonnx.load(tmp_path / "canonical.onnx")
    assert again.output_shape == (4, 4, 2) and again.channel_axis == 2
    assert again.output_name == model.output_name
    x = rand(2, 6, 6, 3, seed=9)
    np.testing.assert_array_equal(again.readout(at=(1, 1)).forward(x).logits,
                                  model.readout(at=(1, 1)).forward(x).logits)  # fmt: skip


def test_sanity_cascade_rereads_the_position():
    at = pathonnx.load(nchw()).readout(at=(2, 1))
    models = cascade_models(at)
    assert len(models) == 2 and all(m.readout_of.at == (2, 1) for m in models)
    assert all(m.num_outputs == 2 for m in models)


def test_identity_names_the_choice():
    single = pathonnx.load(nchw())
    assert single.identity == single.sha256()
    assert single.readout(at=(0, 0)).identity != single.readout(at=(0, 1)).identity
    a, p = (pathonnx.load(two_heads(), output=o) for o in "ap")
    assert a.sha256() == p.sha256() and a.identity != p.identity


# -- dynamic inputs, in the model's layout --------------------------------------------------


def test_dynamic_image_inputs_speak_their_layout():
    with pytest.raises(pathonnx.InputError) as info:
        pathonnx.load(nhwc())
    message = str(info.value)
    assert "(?x?x3, NHWC)" in message and "--size HxW" in message
    assert "--input-shape 224x224x3" in message and "input_shape=(224, 224, 3)" in message
    dynamic = nchw()
    for dim in dynamic.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "S"
    with pytest.raises(pathonnx.InputError, match=r"--input-shape 3x224x224 \(input_shape="):
        pathonnx.load(dynamic)
    assert pathonnx.load(dynamic, size=(6, 6)).input_shape == (3, 6, 6)


def test_cli_size_sets_a_dynamic_input(tmp_path):
    path = tmp_path / "nhwc.onnx"
    onnx.save(nhwc(), path)
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(path)])
    assert result.exit_code == 2 and "12x12" not in result.stdout and "HxWxC" in result.stdout
    result = runner.invoke(main, ["check", str(path), "--size", "7x9"])
    assert result.exit_code == 0, result.output
    assert "input 7x9x3, output 'y' 5x7x2 (channels on axis 2): 70 logits" in result.stdout


def test_prelu_slope_with_a_batch_axis_in_the_sparse_walk(monkeypatch):
    """Keras writes PRelu slopes (1, C, 1, 1); the sparse walk below narrow gates broadcasts
    them like the forward pass, and gives the dense walk's pathway."""
    model = pathonnx.load(nhwc(), size=(6, 6)).readout(at=(1, 2))
    x = rand(2, 6, 6, 3, seed=11)
    calls = []
    walk = sparse.SparseWalker.walk
    monkeypatch.setattr(sparse.SparseWalker, "walk",
                        lambda self, *a, **k: calls.append(1) or walk(self, *a, **k))  # fmt: skip
    walked = pathonnx.pathwise(model, x, width=3)
    assert calls  # the sparse walk ran
    dense = pathonnx.load(nhwc(), size=(6, 6)).readout(at=(1, 2))
    monkeypatch.setattr(type(dense.engine), "walks_sparse", property(lambda self: False))
    reference = pathonnx.pathwise(dense, x, width=3)
    for name, mask in reference.masks.items():
        np.testing.assert_array_equal(walked.masks[name], mask)
    np.testing.assert_allclose(walked.linear.W, reference.linear.W, rtol=1e-5, atol=1e-7)


def test_size_leaves_a_fixed_input_alone(tmp_path):
    """--size resizes images for a fixed-size model, as before: a size it does not take is the
    preprocessing's error, not a new input shape."""
    vgg = str(SAMPLES / "shapes_vgg.onnx")
    assert pathonnx.load(vgg, size=(64, 64)).input_shape == (3, 32, 32)
    image = str(SAMPLES / "images" / "shapes_003_cross.png")
    result = CliRunner().invoke(main, ["explain", vgg, image, "--size", "64x64",
                                       "-o", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2
    assert "preprocessing gives NCHW at 64x64 but the model takes NCHW at 32x32" in result.stderr
