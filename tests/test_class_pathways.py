"""Class pathways (Lin et al. 2023): aggregation by average firing, the file, the
``class_pathway`` method's exact linear model, `pathonnx class-pathways`, and bad input."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
from helpers import EVAL, IMAGE, SAMPLES, VGG, invoke, mlp_weights, two_gate_mlp

import pathonnx
from pathonnx.explanation import image_preprocess
from pathonnx.images import load_inputs
from pathonnx.methods.pathway import gate_masks, kept_units
from pathonnx.methods.transfer import average_firing, threshold_firing

W1, B1, W2, B2, W3, B3 = mlp_weights(11)


@pytest.fixture(scope="module")
def mlp():
    """Two ReLU gates, h1 (6 units) and h2 (5 units), three classes."""
    return two_gate_mlp((W1, B1, W2, B2, W3, B3))


@pytest.fixture(scope="module")
def vgg():
    return pathonnx.load(VGG, device="cpu")


def one_line_error(result, words: str, code: int = 2) -> None:
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("pathonnx: error: "), result.stderr
    assert "Traceback" not in result.output and words in lines[0], lines[0]


# -- aggregation by average firing ----------------------------------------------------------------


def test_average_firing_and_threshold_by_hand():
    units = np.array(
        [[1, 1, 0, 0],  # class 0
         [1, 0, 1, 0],  # class 0
         [1, 0, 0, 0],  # class 0
         [0, 1, 1, 1],  # class 2
         [0, 0, 1, 0]],  # class 2
        bool,
    )  # fmt: skip
    firing = average_firing(units, [0, 0, 0, 2, 2])
    assert sorted(firing) == [0, 2]
    np.testing.assert_allclose(firing[0], [1, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(firing[2], [0, 0.5, 1, 0.5])
    # kept when at least half of the class's pathways keep it: 0.5 is enough
    assert threshold_firing(firing[0]).tolist() == [True, False, False, False]
    assert threshold_firing(firing[2]).tolist() == [False, True, True, True]
    assert threshold_firing(firing[0], 0.3).tolist() == [True, True, True, False]


def test_units_flatten_in_gate_order_and_back(mlp):
    masks = {"h1": np.arange(12).reshape(2, 6) % 2 == 0}  # h2 has no mask: kept whole
    units = kept_units(mlp.gates, masks, 2)
    assert units.shape == (2, 11) and units[:, 6:].all()
    np.testing.assert_array_equal(units[:, :6], masks["h1"])
    back = gate_masks(mlp.gates, units)
    np.testing.assert_array_equal(back["h1"], masks["h1"])
    assert back["h2"].shape == (2, 5)


def test_class_pathways_aggregate_each_samples_pathway(vgg):
    pre = image_preprocess(vgg)
    files = sorted(EVAL.glob("*.png"))[:10]
    x = np.stack([load_inputs(f, pre, vgg.input_shape)[0].x for f in files])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 3, 3, 0])  # not the predictions: as given
    found = pathonnx.class_pathways(vgg, x, labels, "mct", threshold=0.5, chunk=3, sparsity=0.8)
    pathway = pathonnx.critical_pathway(vgg, x, labels, method="mct", sparsity=0.8)
    units = kept_units(vgg.gates, pathway.masks, len(x))
    assert found.counts == {0: 4, 1: 4, 3: 2} and found.classes == [0, 1, 3]
    for c in (0, 1, 3):
        share = units[labels == c].mean(axis=0)
        np.testing.assert_array_equal(found.masks[c], share >= 0.5)
        np.testing.assert_allclose(found.firing[c], share)
    assert found.method == "mct" and found.params == {"sparsity": 0.8}
    assert found.labels == ["circle", "square", "triangle", "cross", "star", "ring"]


# -- the file ------------------------------------------------------------------------------------


def test_the_file_round_trips_with_its_header(vgg, tmp_path):
    x = np.random.default_rng(0).random((6, *vgg.input_shape), np.float32)
    found = pathonnx.class_pathways(vgg, x, [0, 0, 0, 5, 5, 5], "greedy", sparsity=0.9, rounds=2)
    path = found.save(tmp_path / "classes.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["classes.npz"]  # no temp file left
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["class_0.npy", "class_5.npy", "header.npy"]
    with np.load(path) as arrays:
        head = json.loads(arrays["header"].tobytes())
    assert head["format"] == "pathonnx.class_pathways" and head["version"] == 1
    assert head["model_sha256"] == vgg.sha256() and head["method"] == "greedy"
    assert head["params"] == {"sparsity": 0.9, "rounds": 2} and head["threshold"] == 0.5
    assert head["counts"] == {"0": 3, "5": 3} and len(head["labels"]) == 6
    assert [g["name"] for g in head["gates"]] == [g.name for g in vgg.gates]
    again = pathonnx.ClassPathways.load(path, vgg)
    for c in (0, 5):
        np.testing.assert_array_equal(again.masks[c], found.masks[c])
    masks = again.masks_for([5, 0, 5])
    assert {k: v.shape for k, v in masks.items()} == {
        g.name: (3, *g.shape) for g in vgg.gates}  # fmt: skip
    np.testing.assert_array_equal(kept_units(vgg.gates, masks, 3)[1], found.masks[0])


# -- the method: its W^p, b^p is the frozen map through the class pathway -------------------------


def test_class_pathway_is_the_frozen_map_through_the_class_pathway(mlp, tmp_path):
    x = np.random.default_rng(5).standard_normal((24, 4)).astype(np.float32)
    found = pathonnx.class_pathways(mlp, x[:16], None, "mct", threshold=0.4, sparsity=0.5)
    path = found.save(tmp_path / "mlp.npz")
    new = x[16:]
    target = mlp.logits(new).argmax(axis=1)
    new, target = new[np.isin(target, found.classes)], target[np.isin(target, found.classes)]
    assert len(new) >= 4
    pathway = pathonnx.METHODS["class_pathway"].fn(mlp, new, target, pathways=str(path))
    masks = found.masks_for(target)
    m1, m2 = masks["h1"].astype(np.float64), masks["h2"].astype(np.float64)
    # numpy oracle: the slopes frozen at x's own pattern, the units outside the pathway removed
    z1 = new.astype(np.float64) @ W1 + B1
    d1 = (z1 > 0) * m1
    z2 = np.maximum(z1, 0) @ W2 + B2
    d2 = (z2 > 0) * m2
    rows = np.arange(len(new))
    grad = np.stack([W1 @ np.diag(d1[n]) @ W2 @ np.diag(d2[n]) @ W3[:, target[n]] for n in rows])
    frozen = ((new @ W1 + B1) * d1 @ W2 + B2) * d2 @ W3 + B3
    np.testing.assert_allclose(pathway.linear.W, grad, rtol=1e-5, atol=1e-6)
    wx_b = (pathway.linear.W * new).sum(axis=1) + pathway.linear.b
    np.testing.assert_allclose(wx_b, frozen[rows, target], rtol=1e-5, atol=1e-5)
    for name, mask in masks.items():
        np.testing.assert_array_equal(pathway.masks[name], mask)
        np.testing.assert_array_equal(pathway.stats["units_kept"][name], mask.sum(axis=1))
    inactive = ~(z1 > 0)
    dead = (masks["h1"] & inactive).sum(1) / np.maximum(masks["h1"].sum(1), 1)
    np.testing.assert_allclose(pathway.stats["dead_share"]["h1"], dead)
    # its attribution is the pathway gradient W^p
    got = pathonnx.attribute(mlp, new, target, method="class_pathway", pathways=str(path))
    np.testing.assert_allclose(got, pathway.linear.W)


def test_explain_command_runs_class_pathway(tmp_path):
    path = tmp_path / "vgg.npz"
    built = invoke("class-pathways", VGG, EVAL, "-o", path, "--sparsity", "0.8", "--json")
    assert built.exit_code == 0, built.output
    report = json.loads(built.stdout)
    assert report["labels_from"] == "predictions" and report["inputs"] == 60
    assert sum(c["samples"] for c in report["classes"].values()) == 60
    out = tmp_path / "out"
    result = invoke("explain", VGG, IMAGE, "--method", "class_pathway", "--pathways", path,
                    "-o", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    explained = json.loads(result.stdout)
    assert explained["method"] == "class_pathway" and explained["pathway"]["units_kept"]


def test_class_pathways_command_reads_classes_from_folders(tmp_path):
    data = tmp_path / "data"
    for p in sorted(EVAL.glob("*.png"))[:18]:
        label = p.stem.split("_")[-1].split("+")[0]
        (data / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, data / label / p.name)
    out = tmp_path / "classes.npz"
    result = invoke("class-pathways", VGG, data, "-o", out, "--method", "greedy", "-p",
                    "rounds=2", "--threshold", "0.6", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labels_from"] == "folders" and report["threshold"] == 0.6
    counts = {name: len(list((data / name).iterdir())) for name in report["classes"]}
    assert {k: v["samples"] for k, v in report["classes"].items()} == counts
    assert report["params"] == {"sparsity": 0.9, "rounds": 2}
    text = invoke("class-pathways", VGG, data, "-o", out, "--force", "--labels-from",
                  "predictions")  # fmt: skip
    assert text.exit_code == 0 and "classes from predictions" in text.stdout
    assert text.stdout.splitlines()[1].split() == ["class", "samples", "units", "kept", "share"]


# -- bad input ------------------------------------------------------------------------------------


def test_bad_class_pathways_files_are_one_line_errors(vgg, tmp_path):
    resnet = SAMPLES / "shapes_resnet.onnx"
    made = tmp_path / "vgg.npz"
    x = np.random.default_rng(0).random((4, *vgg.input_shape), np.float32)
    pathonnx.class_pathways(vgg, x, [1, 1, 2, 2], "mct").save(made)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not a zip")
    other = tmp_path / "other.npz"
    np.savez(other, header=np.frombuffer(b'{"format": "x"}', np.uint8))
    cases = [
        ([resnet, "--pathways", made], "was made for another model"),
        ([VGG, "--pathways", SAMPLES / "eval" / "masks.npz"], "is not a class pathways file"),
        ([VGG, "--pathways", other], "is not a class pathways file"),
        ([VGG, "--pathways", corrupt], "cannot read the class pathways file"),
        ([VGG, "--pathways", tmp_path / "missing.npz"], "no such file"),
        ([VGG], "class_pathway needs pathways"),
        ([VGG, "--pathways", made], "has no pathway in"),  # the image is a cross (3)
    ]
    for args, words in cases:
        out = tmp_path / "out"
        result = invoke("explain", args[0], IMAGE, "--method", "class_pathway", *args[1:],
                        "-o", out)  # fmt: skip
        one_line_error(result, words)
        assert not out.exists() or not any(out.iterdir()), words  # refused before any output
    with pytest.raises(pathonnx.InputError, match="class 'cross' \\(3\\) has no pathway"):
        pathonnx.attribute(vgg, x[:1], 3, method="class_pathway", pathways=str(made))
    with pytest.raises(pathonnx.InputError, match="^class_pathway needs pathways"):
        pathonnx.attribute(vgg, x[:1], method="class_pathway")


def test_bad_arguments_to_the_builder(vgg, tmp_path):
    x = np.random.default_rng(0).random((2, *vgg.input_shape), np.float32)
    for kwargs, words in [
        ({"method": "saliency"}, "'saliency' is not a pathway method"),
        ({"method": "class_pathway"}, "is not a pathway method"),
        ({"threshold": 0}, "threshold=0 must be in (0, 1]"),
        ({"threshold": 1.5}, "threshold=1.5 must be in (0, 1]"),
        ({"labels": [0, 9]}, "out of range"),
        ({"sparsity": 1.0}, "mct: sparsity=1.0 must be in [0, 1)"),
        ({"names": ["a"]}, "1 class names given"),
    ]:
        with pytest.raises(pathonnx.InputError) as err:
            pathonnx.class_pathways(vgg, x, **kwargs)
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)
    cases = [
        (["--threshold", "0"], "--threshold 0 must be in (0, 1]"),
        (["--method", "saliency"], "'saliency' is not one of"),
        (["--labels-from", "folders"], "lies in no folder named after a class"),
        (["--sparsity", "2"], "--sparsity '2' must be in [0, 1)"),
        (["-o", VGG], "would overwrite the input"),
    ]
    for args, words in cases:
        out = tmp_path / "c.npz"
        result = invoke("class-pathways", VGG, EVAL, "-o", out, "--limit", "2", *args)
        one_line_error(result, words)
        assert not out.exists()
    out = tmp_path / "c.npz"
    out.write_bytes(b"keep")
    result = invoke("class-pathways", VGG, EVAL, "-o", out, "--limit", "2")
    one_line_error(result, "exists; pass --force")
    assert out.read_bytes() == b"keep"
