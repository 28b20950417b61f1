"""GEN-CNP's metrics in `evaluate` (mIC, mDC, sparsity, acIOU, transfer accuracy), checked
against numpy oracles written from their definitions, and the table and files that show them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import EVAL, VGG, invoke, mlp_weights, two_gate_mlp

import pathonnx
from pathonnx.evaluation import metrics as M
from pathonnx.evaluation.evaluate import GROUPS, Settings, evaluate
from pathonnx.explanation import image_preprocess
from pathonnx.images import Sample, collect, load_inputs
from pathonnx.methods.pathway import kept_units

# -- a tiny MLP, and its forward pass in numpy -----------------------------------------------------

W1, B1, W2, B2, W3, B3 = mlp_weights(7)


@pytest.fixture(scope="module")
def mlp():
    """Two ReLU gates, h1 (6 units) and h2 (5 units), three classes."""
    return two_gate_mlp((W1, B1, W2, B2, W3, B3))


def numpy_logits(x, m1=None, m2=None):
    """The MLP in float64; with masks, units outside them removed (scaled by 0), every gate
    above re-deciding its pattern: the network restricted to the pathway."""
    h1 = np.maximum(x @ W1 + B1, 0) * (1 if m1 is None else m1)
    h2 = np.maximum(h1 @ W2 + B2, 0) * (1 if m2 is None else m2)
    return h2 @ W3 + B3


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_mdc_and_mic_against_a_numpy_forward_with_known_masks(mlp, tmp_path):
    x = np.random.default_rng(1).standard_normal((40, 4)).astype(np.float32)
    m1 = np.random.default_rng(2).random((40, 6)) < 0.7
    m2 = np.random.default_rng(3).random((40, 5)) < 0.7
    target = numpy_logits(x.astype(np.float64)).argmax(axis=1)
    rows = np.arange(len(x))
    p = softmax(numpy_logits(x.astype(np.float64)))[rows, target]
    q = softmax(numpy_logits(x.astype(np.float64), m1, m2))[rows, target]
    mdc, mic = np.mean(np.maximum(0, p - q) / p), np.mean(q > p)
    assert 0.1 < mic < 0.9 and mdc > 0.01  # both kinds of samples: the check means something
    names = [g.name for g in mlp.gates]
    assert names == ["h1", "h2"]
    conf = M.pathway_confidence(mlp, x, {"h1": m1, "h2": m2}, target)
    drop, rise = M.confidence_drop_increase(conf["full"], conf["pathway"])
    np.testing.assert_allclose(conf["pathway"], q, rtol=1e-5)
    assert drop.mean() == pytest.approx(mdc, rel=1e-4, abs=1e-7)
    assert rise.mean() == mic
    # the same through evaluate, with known masks: a class pathways file holding one mask
    # per class (the first sample's), which method class_pathway gives every sample of it
    per_class = {c: (m1[target == c][0], m2[target == c][0]) for c in np.unique(target)}
    cm1 = np.stack([per_class[c][0] for c in target])
    cm2 = np.stack([per_class[c][1] for c in target])
    q = softmax(numpy_logits(x.astype(np.float64), cm1, cm2))[rows, target]
    path = write_class_pathways(mlp, per_class, tmp_path / "classes.npz")
    items = [Sample(x[i], None, f"array[{i}]") for i in range(len(x))]
    settings = Settings(params={"class_pathway": {"pathways": str(path)}})
    results = evaluate(mlp, items, ["class_pathway"], ["pathway", "cnp"], settings)
    summary = results.summary()["class_pathway"]
    assert summary["mDC"]["mean"] == pytest.approx(np.mean(np.maximum(0, p - q) / p), rel=1e-4)
    assert summary["mIC"]["mean"] == pytest.approx(np.mean(q > p))
    kept = (cm1.sum(1) + cm2.sum(1)) / 11
    assert summary["sparsity"]["mean"] == pytest.approx(np.mean(1 - kept))
    assert summary["acIOU"]["mean"] == 1.0  # a class pathway is the same for its samples
    for record, pi, qi in zip(results.records, p, q):
        assert record["pathway_probability"] == pytest.approx(qi, rel=1e-5)
        assert record["mIC"] == float(qi > pi)


def write_class_pathways(model, per_class: dict, path):
    """A class pathways file holding the given masks (class -> per-gate masks) for ``model``."""
    masks = {int(c): np.concatenate([np.ravel(m) for m in ms]).astype(bool)
             for c, ms in per_class.items()}  # fmt: skip
    found = pathonnx.ClassPathways(
        model.sha256(), model.identity, "hand", {}, 0.5, ["a", "b", "c"],
        [(g.name, tuple(g.shape)) for g in model.gates], dict.fromkeys(masks, 1), masks,
    )  # fmt: skip
    return found.save(path)


# -- acIOU ----------------------------------------------------------------------------------------


def test_aciou_of_hand_made_pathways():
    a = [1, 1, 1, 0, 0, 0]
    b = [0, 1, 1, 1, 0, 0]
    c = [1, 0, 0, 0, 0, 0]
    d = [0, 0, 0, 0, 1, 1]
    units = np.array([a, b, c, d, d, a], bool)
    classes = np.array([0, 0, 0, 1, 1, 2])
    # class 0: IoU(a, b) = 2/4, IoU(a, c) = 1/3, IoU(b, c) = 0; class 1: identical; class 2
    # has one sample and no pair
    class0 = (2 / 4 + 1 / 3 + 0) / 3
    assert M.pairwise_iou(units[:3]) == pytest.approx(class0)
    assert M.ac_iou(units, classes) == pytest.approx((class0 + 1.0) / 2)
    assert np.isnan(M.pairwise_iou(units[:1]))
    packed = np.packbits(units, axis=1)
    scores = M.iou_matrix(packed)
    assert scores[0, 1] == pytest.approx(0.5) and scores[2, 3] == 0 and scores[3, 4] == 1
    assert M.popcount(packed).tolist() == [3, 3, 1, 2, 2, 3]


def test_aciou_in_evaluate_is_the_class_mean_of_pairwise_ious(mlp):
    x = np.random.default_rng(4).standard_normal((30, 4)).astype(np.float32)
    items = [Sample(x[i], None, f"array[{i}]") for i in range(len(x))]
    settings = Settings(params={"mct": {"sparsity": 0.5}})
    results = evaluate(mlp, items, ["mct"], ["cnp"], settings)
    pathway = pathonnx.critical_pathway(mlp, x, method="mct", sparsity=0.5)
    units = kept_units(mlp.gates, pathway.masks, len(x))
    classes = pathway.target
    assert len(set(classes.tolist())) > 1
    summary = results.summary()["mct"]
    assert summary["acIOU"]["mean"] == pytest.approx(M.ac_iou(units, classes), rel=1e-9)
    assert summary["acIOU"]["n"] == sum((classes == c).sum() > 1 for c in set(classes))
    assert summary["sparsity"]["mean"] == pytest.approx(1 - units.mean(), rel=1e-9)


# -- transfer accuracy on the shipped evaluation set ---------------------------------------------


@pytest.fixture(scope="module")
def vgg_eval():
    model = pathonnx.load(VGG, device="cpu")
    pre = image_preprocess(model)
    items = [s for f in collect([EVAL]) for s in load_inputs(f, pre, model.input_shape)]
    return model, items


def test_transfer_accuracy_is_leave_one_out_with_the_public_class_pathways(vgg_eval):
    """Each record's transfer hit equals the network restricted to the class pathway built by
    ``pathonnx.class_pathways`` from the *other* inputs of its class, run on it."""
    model, items = vgg_eval
    x = np.stack([s.x for s in items])
    params = {"mct": {"sparsity": 0.3}}
    results = evaluate(model, items, ["mct"], ["cnp"], Settings(params=params))
    y = model.logits(x).argmax(axis=1)
    hits = []
    for i in range(len(x)):
        others = (np.arange(len(x)) != i) & (y == y[i])
        if not others.any():
            hits.append(None)
            continue
        found = pathonnx.class_pathways(model, x[others], y[others], "mct", sparsity=0.3)
        scales = {k: v.astype(np.float32) for k, v in found.masks_for([y[i]]).items()}
        hits.append(float(model.engine.scaled_forward(x[i : i + 1], scales).prediction[0] == y[i]))
    assert [r["transfer_accuracy"] for r in results.records] == hits
    summary = results.summary()["mct"]["transfer_accuracy"]
    done = [h for h in hits if h is not None]
    assert summary["mean"] == pytest.approx(np.mean(done)) and summary["n"] == len(done)
    # a class pathway of every unit any other pathway of the class keeps holds them all:
    # the network restricted to it predicts the class almost always
    union = evaluate(model, items, ["mct"], ["cnp"], Settings(class_threshold=1e-9,
                                                              params=params))  # fmt: skip
    assert union.summary()["mct"]["transfer_accuracy"]["mean"] >= 0.9


# -- the command: table, files, cache -------------------------------------------------------------


def test_evaluate_prints_the_new_columns_for_pathway_methods(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for p in sorted(EVAL.glob("*.png"))[:12]:
        shutil.copy(p, data / p.name)
    out = tmp_path / "out"
    args = ["evaluate", VGG, data, "-o", out, "--methods", "mct,saliency", "--metrics",
            "pathway,cnp"]  # fmt: skip
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    head = first.stdout.splitlines()[1]
    for column in ("mIC ↑", "mDC ↓", "sparsity", "acIOU ↑", "transfer_accuracy ↑"):
        assert column in head, head
    saliency = next(line for line in first.stdout.splitlines() if line.startswith("saliency"))
    assert saliency.split()[1:] == ["n/a"] * 7  # a map has no pathway
    report = json.loads((out / "results.json").read_text())
    assert report["metrics"][2:] == GROUPS["cnp"]
    assert report["settings"]["class_threshold"] == 0.5
    mct = report["summary"]["mct"]
    assert mct["sparsity"]["mean"] == pytest.approx(0.9, abs=1e-3) and mct["acIOU"]["n"] >= 2
    assert {"class_iou", "transfer_accuracy", "mIC", "mDC"} <= set(report["records"][0])
    csv = (out / "results.csv").read_text().splitlines()
    assert "mct,sparsity," in "\n".join(csv) and any(
        line.startswith("mct,sparsity,") and line.endswith(",") for line in csv
    )  # no better direction
    assert "| `mct` |" in (out / "results.md").read_text()
    # the pathways are cached beside the records; a lost one is measured again, the rest kept
    cached = sorted((out / "cache").glob("*.units.npy"))
    assert len(cached) == 12
    cached[0].unlink()
    untouched = {p.name: p.stat().st_mtime_ns for p in cached[1:]}
    second = invoke(*args)
    assert second.exit_code == 0, second.output
    assert {p.name: p.stat().st_mtime_ns for p in cached[1:]} == untouched
    assert cached[0].exists()
    again = json.loads((out / "results.json").read_text())
    for column, cell in again["summary"]["mct"].items():
        assert cell["mean"] == pytest.approx(mct[column]["mean"], rel=1e-9), column


def test_evaluate_refuses_a_bad_class_threshold(tmp_path):
    for value in ("0", "1.5", "nan"):
        result = invoke("evaluate", VGG, EVAL, "--limit", "2", "--methods", "mct", "--metrics",
                        "cnp", "--class-threshold", value, "-o", tmp_path / "x")  # fmt: skip
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert "--class-threshold" in result.stderr
        assert not (tmp_path / "x").exists()
