"""`pathonnx explain` and pathonnx.explain: inputs, preprocessing, every flag, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import pathonnx
from pathonnx.explanation import Explanation, explain
from pathonnx_cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
VGG = SAMPLES / "shapes_vgg.onnx"
MLP = SAMPLES / "digits_mlp.onnx"
IMAGE = SAMPLES / "images" / "shapes_006_cross+square.png"
MEAN = np.array([0.5019, 0.4998, 0.5011], np.float32)  # shapes_vgg's metadata
STD = np.array([0.2925, 0.2932, 0.2943], np.float32)


@pytest.fixture(scope="module")
def vgg():
    return pathonnx.load(VGG, device="cpu")


def invoke(*args, cwd=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def by_hand(path: Path) -> np.ndarray:
    """The shapes models' preprocessing, written out: (v/255 - mean) / std, CHW."""
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float32)
    return ((rgb / 255 - MEAN) / STD).transpose(2, 0, 1)


# -- the API ---------------------------------------------------------------------------------------


def test_explain_api_matches_the_pieces_it_is_made_of(vgg, tmp_path):
    e = explain(vgg, str(IMAGE), paths=2, compare=["saliency"])
    assert isinstance(e, Explanation)
    np.testing.assert_allclose(e.x, by_hand(IMAGE), rtol=1e-6, atol=1e-6)
    x = e.x[None]
    pathway = pathonnx.pathwise(vgg, x)
    np.testing.assert_allclose(e.attribution, pathway.attribution(x)[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        e.compare["saliency"], pathonnx.attribute(vgg, x, method="saliency")[0], rtol=1e-6
    )
    assert e.prediction == int(vgg.forward(x).prediction[0]) == e.target
    assert e.label(e.prediction) == "cross"
    # each path's W^p·x + b^p is the masked frozen map's output at x
    paths = pathonnx.decompose(vgg, x, paths=2)
    for summary, path in zip(e.paths, paths):
        frozen = vgg.engine.frozen_logits(vgg.forward(x), x, path.masks)[0, e.target]
        assert summary.wx + summary.bias == pytest.approx(float(frozen), rel=1e-4, abs=1e-4)
        logit = float(e.logits[e.target])
        assert summary.logit_share == pytest.approx((summary.wx + summary.bias) / logit)
    assert e.completeness_error < 1e-5
    report = json.loads(e.to_json())
    assert report["prediction"]["label"] == "cross"
    assert report["preprocess"]["mean"] == pytest.approx(MEAN.tolist())
    assert report["preprocess"]["source"]["mean"] == "model metadata"
    assert report["model_sha256"] == vgg.sha256()
    assert len(report["paths"]) == 2 and report["paths"][0]["units_kept_total"] > 0
    written = e.save(tmp_path)
    assert [p.suffix for p in written] == [".png", ".json", ".npz"]
    with Image.open(written[0]) as picture:
        assert picture.width > 4 * 192  # input, overlay, two paths, saliency, bars
    with np.load(written[2]) as arrays:
        np.testing.assert_array_equal(arrays["attribution"], e.attribution)
        assert {"path_1", "path_2", "compare_saliency"} <= set(arrays)


def test_explain_arrays_and_batches(vgg):
    x = by_hand(IMAGE)
    one = explain(vgg, x, method="saliency")
    many = explain(vgg, np.stack([x, x[:, ::-1]]), method="saliency", target="square")
    assert isinstance(one, Explanation) and len(many) == 2
    assert [e.target for e in many] == [1, 1]
    np.testing.assert_allclose(
        many[0].attribution, pathonnx.attribute(vgg, x[None], 1, method="saliency")[0], rtol=1e-6
    )
    assert one.image is None and one.preprocess is None


def test_figure_uses_matplotlib(vgg):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    fig = explain(vgg, str(IMAGE), compare=["gradcam"]).figure()
    assert len(fig.axes) == 4  # input, pathwise, gradcam, top-k bars
    assert "cross" in fig.texts[0].get_text() or "cross" in fig._suptitle.get_text()


# -- image inputs and preprocessing ----------------------------------------------------------------


def test_image_formats_give_the_same_input(vgg, tmp_path):
    rgb = np.asarray(Image.open(IMAGE).convert("RGB"))
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    alpha = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(alpha, "RGBA").save(tmp_path / "b.png")
    want = by_hand(IMAGE)
    for name in ("a.bmp", "b.png"):
        np.testing.assert_allclose(explain(vgg, str(tmp_path / name)).x, want, atol=1e-5)
    # half-transparent pixels are composited over white
    alpha[..., 3] = 128
    Image.fromarray(alpha, "RGBA").save(tmp_path / "c.png")
    blended = (rgb * (128 / 255) + 255 * (1 - 128 / 255)) / 255
    got = explain(vgg, str(tmp_path / "c.png")).x
    np.testing.assert_allclose(got, ((blended - MEAN) / STD).transpose(2, 0, 1), atol=1e-4)
    # JPEG is lossy: the input is what its decoder gives
    Image.fromarray(rgb).save(tmp_path / "d.jpg", quality=90)
    np.testing.assert_allclose(
        explain(vgg, str(tmp_path / "d.jpg")).x, by_hand(tmp_path / "d.jpg"), atol=1e-5
    )


def test_sixteen_bit_grey_image(tmp_path):
    mlp = pathonnx.load(MLP, device="cpu")
    values = np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # 16-bit grey PNG
    e = explain(mlp, str(tmp_path / "deep.png"))
    # digits_mlp's metadata: scale 1/255, mean 0, std 1 on 8-bit values
    np.testing.assert_allclose(e.x[0], values / 65535.0, atol=1e-6)


def test_resize_and_crop(vgg, tmp_path):
    big = Image.open(IMAGE).convert("RGB").resize((64, 48), Image.NEAREST)
    big.save(tmp_path / "big.png")
    stretched = explain(vgg, str(tmp_path / "big.png"))  # the metadata gives the size
    ref = np.asarray(big.resize((32, 32), Image.BILINEAR), np.float32)
    np.testing.assert_allclose(
        stretched.x, ((ref / 255 - MEAN) / STD).transpose(2, 0, 1), atol=0.03
    )
    result = invoke("explain", VGG, tmp_path / "big.png", "--crop", "-o", tmp_path / "o", "--json")
    report = json.loads(result.stdout)
    assert report["preprocess"]["resize"] == "shorter"
    assert report["preprocess"]["source"]["resize"] == "argument"


def test_default_preprocessing_is_announced(tmp_path):
    # a model with no preprocessing metadata: values in [0, 1], and a note on stderr
    import onnx

    proto = onnx.load(VGG)
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "bare.onnx")
    result = CliRunner().invoke(main, ["explain", str(tmp_path / "bare.onnx"), str(IMAGE),
                                       "-o", str(tmp_path / "o"), "--json"])  # fmt: skip
    assert result.exit_code == 0
    assert "note: no preprocessing given" in result.stderr
    report = json.loads(result.stdout)
    assert report["preprocess"]["mean"] == [0.0] and report["target"]["label"] == "3"


# -- every flag ------------------------------------------------------------------------------------


def test_flags_reach_the_api(vgg, tmp_path):
    out = tmp_path / "o"
    result = invoke(
        "explain", VGG, IMAGE, "--depth", 3, "--width", "5%", "--alpha", 0.2, "--paths", 2,
        "--target", "square", "--compare", "saliency,gradcam", "-o", out, "--json",
        "--batch", 1, "--device", "cpu",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["params"] == {"depth": 3, "width": "5%", "alpha": 0.2, "classes": None}
    assert report["target"] == {**report["target"], "index": 1, "label": "square"}
    assert report["compare"] == ["gradcam", "saliency"] and len(report["paths"]) == 2
    x = by_hand(IMAGE)[None]
    pathway = pathonnx.pathwise(vgg, x, 1, depth=3, width="5%", alpha=0.2)
    with np.load(out / "shapes_006_cross_square.npz") as arrays:
        np.testing.assert_allclose(
            arrays["attribution"], pathway.attribution(x)[0], rtol=1e-5, atol=1e-9
        )
    assert sorted(os.listdir(out)) == [f"shapes_006_cross_square.{s}" for s in ("json", "npz",
                                                                                "png")]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "method", "params"),
    [
        (["--method", "mct", "--sparsity", "0.8"], "mct", {"sparsity": 0.8}),
        (["--method", "integrated_gradients", "--steps", "8"], "integrated_gradients",
         {"steps": 8, "batch": 16}),
        (["--method", "smoothgrad", "-p", "samples=3", "-p", "stdev=0.1"], "smoothgrad",
         {"samples": 3, "stdev": 0.1, "seed": 0, "batch": 16}),
        (["--method", "intgrad", "--steps", "4", "--sparsity", "0.5"], "intgrad",
         {"sparsity": 0.5, "steps": 4}),
        (["--target", "4", "--method", "deconvnet"], "deconvnet", {}),
        (["--classes", "2", "--width", "6"], "pathwise",
         {"depth": None, "width": 6, "alpha": None, "classes": 2}),
    ],
)  # fmt: skip
def test_method_flags(vgg, tmp_path, flags, method, params):
    result = invoke("explain", VGG, IMAGE, *flags, "-o", tmp_path, "--json")
    report = json.loads(result.stdout)
    assert report["method"] == method and report["params"] == params
    target = 4 if "--target" in flags else None
    want = pathonnx.attribute(vgg, by_hand(IMAGE)[None], target, method=method,
                              **{k: v for k, v in params.items()})  # fmt: skip
    with np.load(tmp_path / "shapes_006_cross_square.npz") as arrays:
        np.testing.assert_allclose(arrays["attribution"], want[0], rtol=1e-5, atol=1e-7)


def test_preprocessing_flags(vgg, tmp_path):
    out = tmp_path / "o"
    common = ["-o", out, "--json", "--mean", "0.5", "--std", "0.25", "--scale", str(1 / 255)]
    rgb = json.loads(invoke("explain", VGG, IMAGE, *common).stdout)
    bgr = json.loads(invoke("explain", VGG, IMAGE, *common, "--color", "bgr").stdout)
    assert rgb["preprocess"]["color"] == "rgb" and bgr["preprocess"]["color"] == "bgr"
    with np.load(out / "shapes_006_cross_square.npz") as arrays:
        x_bgr = arrays["x"]
    rgb_pixels = np.asarray(Image.open(IMAGE).convert("RGB"), np.float32)
    want = ((rgb_pixels[..., ::-1] / 255 - 0.5) / 0.25).transpose(2, 0, 1)
    np.testing.assert_allclose(x_bgr, want, atol=1e-5)
    preset = json.loads(invoke("explain", VGG, IMAGE, "-o", out, "--json", "--preset",
                               "imagenet").stdout)  # fmt: skip
    assert preset["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert preset["preprocess"]["source"]["mean"] == "preset imagenet"
    sym = json.loads(invoke("explain", VGG, IMAGE, "-o", out, "--json", "--preset", "symmetric",
                            "--layout", "nchw", "--size", "32x32").stdout)  # fmt: skip
    assert sym["preprocess"]["scale"] == pytest.approx(2 / 255)


def test_labels_file(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(6)))
    result = invoke("explain", VGG, IMAGE, "--labels", labels, "--target", "class 2", "-o",
                    tmp_path / "o", "--json")  # fmt: skip
    report = json.loads(result.stdout)
    assert report["target"]["index"] == 2 and report["prediction"]["label"] == "class 3"


def test_folders_npy_workers_and_html(vgg, tmp_path):
    src = tmp_path / "in" / "nested"
    src.mkdir(parents=True)
    for name in ("shapes_000_circle.png", "shapes_003_cross.png", "shapes_005_ring.png"):
        shutil.copy(SAMPLES / "images" / name, src / name)
    np.save(tmp_path / "in" / "arrays.npy", np.stack([by_hand(IMAGE), by_hand(IMAGE)]))
    before = snapshot(tmp_path / "in")
    one = tmp_path / "one"
    two = tmp_path / "two"
    invoke("explain", VGG, tmp_path / "in", "-o", one, "--method", "saliency")
    invoke("explain", VGG, tmp_path / "in", "-o", two, "--method", "saliency", "--workers", 2,
           "--batch", 2)  # fmt: skip
    assert snapshot(tmp_path / "in") == before
    names = sorted(os.listdir(one))
    assert "index.html" in names and "arrays_0.png" in names and "shapes_003_cross.json" in names
    assert len([n for n in names if n.endswith(".png")]) == 5
    for name in names:
        if name.endswith(".npz"):
            with np.load(one / name) as a, np.load(two / name) as b:
                np.testing.assert_allclose(a["attribution"], b["attribution"], rtol=1e-5)
    html = (one / "index.html").read_text()
    assert html.count("<img ") == 5 and "<script>" in html


def test_no_arguments_explains_the_default_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["explain"])
    assert result.exit_code == 0, result.output
    assert "explaining the shipped default sample" in result.stderr
    assert "predicted cross" in result.stdout
    assert sorted(os.listdir(tmp_path / "pathonnx-out")) == [
        "shapes_006_cross_square.json", "shapes_006_cross_square.npz",
        "shapes_006_cross_square.png",
    ]  # fmt: skip


def test_subprocess_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pathonnx_cli.main", "explain", str(VGG), str(IMAGE), "-o",
         str(tmp_path), "--json", "--method", "gradcam"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["method"] == "gradcam"


# -- bad input -------------------------------------------------------------------------------------


def _bad_cases(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "grey.png")
    Image.open(IMAGE).convert("RGB").resize((40, 40)).save(tmp_path / "big.png")
    (tmp_path / "file").write_text("x")
    import onnx

    bare = onnx.load(VGG)  # no preprocessing metadata: nothing says to resize
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    np.save(tmp_path / "wrong.npy", np.zeros((3, 8, 8), np.float32))
    return [
        ([VGG, tmp_path / "broken.png"], "cannot decode the image"),
        ([VGG, tmp_path / "grey.png"], "greyscale but the model takes 3 channels"),
        ([VGG, IMAGE, "--target", "9"], "out of range"),
        ([VGG, IMAGE, "--target", "hexagon"], "neither a class index"),
        ([VGG, IMAGE, "-o", tmp_path / "file" / "out"], "cannot write to --out"),
        ([VGG, IMAGE, "-o", tmp_path / "file"], "is a file"),
        ([tmp_path / "bare.onnx", tmp_path / "big.png"], "is 40x40 but the model takes 32x32"),
        ([VGG, tmp_path / "wrong.npy"], "the array has shape (3, 8, 8)"),
        ([VGG, tmp_path / "missing.png"], "no such file"),
        ([VGG, IMAGE, "--method", "saliency", "--paths", 2], "use method='pathwise'"),
        ([VGG, IMAGE, "--compare", "lime"], "unknown method 'lime'"),
        ([VGG, IMAGE, "--mean", "0.5,0.5"], "mean has 2 values"),
        ([VGG, IMAGE, "--color", "grey"], "takes 3"),
        ([VGG, IMAGE, "--method", "saliency", "--depth", 3], "takes no parameter depth"),
        ([VGG, IMAGE, "--width", "lots"], "--width 'lots'"),
        ([VGG, IMAGE, "--labels", tmp_path / "file"], "1 labels given"),
    ]


def test_bad_input_exit_2_one_line_nothing_written(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shipped = snapshot(SAMPLES)
    for index, (args, message) in enumerate(_bad_cases(work)):
        before = snapshot(work)
        out = tmp_path / f"out{index}"
        extra = [] if "-o" in args else ["-o", out]
        result = CliRunner().invoke(main, ["explain", *map(str, args), *map(str, extra)])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (message, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert snapshot(work) == before
        assert not out.exists() or not any(out.iterdir())
    assert snapshot(SAMPLES) == shipped


def test_output_never_replaces_an_input(tmp_path):
    shutil.copy(IMAGE, tmp_path / "x.png")
    before = snapshot(tmp_path)
    result = CliRunner().invoke(main, ["explain", str(VGG), str(tmp_path / "x.png"), "-o",
                                       str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "would overwrite the input" in result.stderr
    assert "x.png (the image)" in result.stderr
    assert snapshot(tmp_path) == before


def test_help_lists_every_flag_with_an_example():
    result = invoke("explain", "--help")
    for flag in (
        "--method",
        "--depth",
        "--width",
        "--alpha",
        "--classes",
        "--paths",
        "--target",
        "--compare",
        "--out",
        "--json",
        "--preset",
        "--size",
        "--resize",
        "--crop",
        "--mean",
        "--std",
        "--scale",
        "--layout",
        "--color",
        "--labels",
        "--workers",
        "--batch",
    ):
        assert flag in result.stdout, flag  # fmt: skip
    assert "Examples:" in result.stdout and "pathonnx explain" in result.stdout


def test_rewrite_sets_preprocess_and_labels_and_loads_again(tmp_path):
    labels = tmp_path / "names.json"
    labels.write_text(json.dumps(["a", "b", "c", "d", "e", "f"]))
    out = tmp_path / "ready.onnx"
    result = invoke("rewrite", VGG, "-o", out, "--set-preprocess",
                    '{"mean": [0.5], "std": [0.5]}', "--set-labels", labels)  # fmt: skip
    assert result.exit_code == 0
    model = pathonnx.load(out, device="cpu")  # the canonical file loads again
    original = pathonnx.load(VGG, device="cpu")
    x = by_hand(IMAGE)[None]
    np.testing.assert_allclose(model.forward(x).logits, original.forward(x).logits, rtol=1e-5)
    e = explain(model, str(IMAGE))
    assert e.preprocess["mean"] == [0.5] and e.preprocess["std"] == [0.5]
    assert e.label(e.prediction) == "d"  # cross is class 3
    rgb = np.asarray(Image.open(IMAGE).convert("RGB"), np.float32)
    np.testing.assert_allclose(e.x, ((rgb / 255 - 0.5) / 0.5).transpose(2, 0, 1), atol=1e-5)
    bad = CliRunner().invoke(main, ["rewrite", str(VGG), "-o", str(tmp_path / "x.onnx"),
                                    "--set-preprocess", '{"layout": "NHWC"}'])  # fmt: skip
    assert bad.exit_code == 2 and "fix --size/--layout" in bad.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_grey_to_rgb_and_input_shape(tmp_path):
    grey = np.asarray(Image.open(IMAGE).convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    result = invoke("explain", VGG, tmp_path / "grey.png", "--grey-to-rgb", "-o", tmp_path / "o",
                    "--json", "--input-shape", "3x32x32", "--method", "saliency")  # fmt: skip
    report = json.loads(result.stdout)
    with np.load(tmp_path / "o" / "grey.npz") as arrays:
        x = arrays["x"]
    want = ((np.repeat(grey[..., None], 3, -1) / 255 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(x, want, atol=1e-5)
    assert report["method"] == "saliency"


def test_the_api_takes_a_preset_by_name_as_the_cli_does(vgg):
    # explain(..., preprocess="imagenet") is the CLI's --preset imagenet, not a raw TypeError
    by_name = explain(vgg, str(IMAGE), preprocess="imagenet")
    by_fields = explain(vgg, str(IMAGE), preprocess={"preset": "imagenet"})
    np.testing.assert_array_equal(by_name.x, by_fields.x)
    plain = explain(vgg, str(IMAGE))
    assert not np.array_equal(by_name.x, plain.x)  # the ImageNet mean and std were applied
    with pytest.raises(pathonnx.InputError, match="unknown preset 'imagenett'"):
        explain(vgg, str(IMAGE), preprocess="imagenett")
    with pytest.raises(pathonnx.InputError, match="preprocess 3 is not understood"):
        explain(vgg, str(IMAGE), preprocess=3)


def test_large_models_default_to_the_top_classes_and_say_so(vgg, monkeypatch, tmp_path):
    """Above the cost bound the default is the documented approximation (classes=20 on a
    real model; here the bound is lowered and the approximation set to 3 of the 6 classes):
    its result is exactly pathwise(classes=3), a note says so, and exact=True (--exact) runs
    the exact sweep."""
    from pathonnx import explanation

    monkeypatch.setattr(explanation, "EXACT_MACS", 0)
    monkeypatch.setattr(explanation, "AUTO_CLASSES", 3)
    x = by_hand(IMAGE)
    approx = explain(vgg, x)
    assert approx.params["classes"] == 3
    assert any("approximated" in note and "exact=True" in note for note in approx.notes)
    assert json.loads(approx.to_json())["notes"] == approx.notes
    three = pathonnx.pathwise(vgg, x[None], classes=3)
    np.testing.assert_array_equal(approx.attribution, three.attribution(x[None])[0])
    exact = explain(vgg, x, exact=True)
    assert exact.params["classes"] is None and exact.notes == []
    np.testing.assert_array_equal(
        exact.attribution, pathonnx.pathwise(vgg, x[None]).attribution(x[None])[0]
    )
    chosen = explain(vgg, x, classes=4)  # a given classes is kept, without a note
    assert chosen.params["classes"] == 4 and chosen.notes == []
    result = CliRunner().invoke(main, ["explain", str(VGG), str(IMAGE), "-o", str(tmp_path),
                                       "--json", "--exact"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "approximated" not in result.output
    result = CliRunner().invoke(main, ["explain", str(VGG), str(IMAGE), "-o", str(tmp_path)])
    assert result.exit_code == 0 and "note: pathwise is approximated" in result.output


def _mlp(second: np.ndarray) -> bytes:
    """A 4-8-K ReLU MLP with the given second layer (K, 8) and no biases."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    first = rng.standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)],
        "mlp", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", len(second)])],
        [numpy_helper.from_array(first, "w1"),
         numpy_helper.from_array(second.astype(np.float32), "w2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_degenerate_explanations_come_with_warnings():
    dead = explain(pathonnx.load(_mlp(np.zeros((5, 8)))), np.ones(4, np.float32))
    warned = [n for n in dead.notes if n.startswith("warning")]
    assert len(warned) == 3, dead.notes
    assert "map is all zero" in warned[0] and not dead.attribution.any()
    assert "float noise" in warned[1]
    assert "all 5 classes" in warned[2] and dead.prediction == 0
    rng = np.random.default_rng(1)
    second = rng.standard_normal((4, 8))
    second[0] = second[2] = 10.0  # classes 0 and 2 tie, above the others (ReLU outputs ≥ 0)
    x = np.ones(4, np.float32)
    tied = explain(pathonnx.load(_mlp(second)), x, target=1, method="saliency")
    expected = [n for n in tied.notes if n.startswith("warning")]
    assert len(expected) == 1 and "2 classes (0, 2)" in expected[0], tied.notes
    clear = explain(pathonnx.load(_mlp(rng.standard_normal((4, 8)))), x)
    assert [n for n in clear.notes if n.startswith("warning")] == []
    assert clear.attribution.any()


def test_a_folder_goes_on_past_bad_inputs(tmp_path):
    """Every readable input is explained and written; the others are listed, and the exit code
    is 2 (unreadable input, DESIGN §5). A single bad input still fails at once."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(IMAGE, folder / "a.png")
    Image.new("L", (32, 32), 128).save(folder / "b_grey.png")
    (folder / "c_bad.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["explain", str(VGG), str(folder), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.npz", "a.png"]
    assert "b_grey.png" in result.output and "c_bad.png" in result.output
    assert "2 of 3 inputs could not be read" in result.output
    single = CliRunner().invoke(main, ["explain", str(VGG), str(folder / "c_bad.png"), "-o",
                                       str(tmp_path / "out2")])  # fmt: skip
    assert single.exit_code == 2 and not (tmp_path / "out2").exists()
    (folder / "a.png").unlink()
    none = CliRunner().invoke(main, ["explain", str(VGG), str(folder), "-o", str(tmp_path / "o3")])
    assert none.exit_code == 2 and "none of the 2 inputs can be read" in none.output


def test_evaluate_approximates_as_explain_does(monkeypatch, tmp_path):
    from pathonnx import explanation

    monkeypatch.setattr(explanation, "EXACT_MACS", 0)
    monkeypatch.setattr(explanation, "AUTO_CLASSES", 3)
    for flags, classes in (([], 3), (["--exact"], None)):
        out = tmp_path / f"eval{len(flags)}"
        result = CliRunner().invoke(main, ["evaluate", str(VGG), str(IMAGE), "--methods",
                                           "pathwise", "--metrics", "pathway", "-o", str(out),
                                           *flags])  # fmt: skip
        assert result.exit_code == 0, result.output
        report = json.loads((out / "results.json").read_text())
        assert report["settings"]["params"].get("pathwise", {}).get("classes") == classes
        assert ("note: pathwise is approximated" in result.output) == (classes is not None)
