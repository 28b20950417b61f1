"""Metrics on constructed cases with known answers, and `pathonnx evaluate` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_model

import pathonnx
from pathonnx.evaluation import metrics as M
from pathonnx_cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
H = W = 6
PIXEL = (2, 3)  # the only pixel the one-pixel model reads


@pytest.fixture(scope="module")
def one_pixel():
    """logits = [relu(4·x[0, 2, 3] − 2), 0]: the model looks at one pixel only."""
    w = np.zeros((H * W, 1), np.float32)
    w[PIXEL[0] * W + PIXEL[1], 0] = 4.0
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    agraph (float[N, 1, {H}, {W}] x, float[{H * W}, 1] w, float[1] c, float[1, 2] v)
        => (float[N, 2] logits) {{
        flat = Flatten(x)
        z = Gemm(flat, w, c)
        h = Relu(z)
        logits = Gemm(h, v)
    }}
    """
    model = make_model(
        text, w=w, c=np.array([-2.0], np.float32), v=np.array([[1.0, 0.0]], np.float32)
    )
    return pathonnx.load(model, device="cpu")


def _x():
    x = np.full((1, 1, H, W), 0.1, np.float32)
    x[0, 0, PIXEL[0], PIXEL[1]] = 2.0  # logit 6 for class 0: p = softmax([6, 0])[0]
    return x


def _maps():
    perfect = np.zeros((1, 1, H, W), np.float32)
    perfect[0, 0, PIXEL[0], PIXEL[1]] = 1.0
    return perfect, -perfect  # the inverted map puts the pixel last


P_FULL = 1 / (1 + np.exp(-6.0))  # softmax([6, 0])[0]
P_NONE = 0.5  # pixel gone: both logits 0


def _trapezoid(scores):
    f = np.linspace(0, 1, len(scores))
    return float(((scores[1:] + scores[:-1]) * np.diff(f) / 2).sum())


def test_deletion_auc_known_answer(one_pixel):
    perfect, inverted = _maps()
    steps = H * W  # one pixel per step
    good = M.deletion(one_pixel, _x(), perfect, 0, steps=steps)
    bad = M.deletion(one_pixel, _x(), inverted, 0, steps=steps)
    want_good = np.array([P_FULL] + [P_NONE] * steps)
    want_bad = np.array([P_FULL] * steps + [P_NONE])
    np.testing.assert_allclose(good.scores[0], want_good, rtol=1e-6)
    np.testing.assert_allclose(bad.scores[0], want_bad, rtol=1e-6)
    assert good.auc[0] == pytest.approx(_trapezoid(want_good), rel=1e-6)
    assert bad.auc[0] == pytest.approx(_trapezoid(want_bad), rel=1e-6)
    assert good.auc[0] < 0.52 < 0.99 < bad.auc[0]


def test_insertion_auc_known_answer(one_pixel):
    perfect, inverted = _maps()
    x = _x()
    blurred = M.gaussian_blur(x)
    logit = 4 * blurred[0, 0, PIXEL[0], PIXEL[1]] - 2
    p_blur = 1 / (1 + np.exp(-max(logit, 0.0)))
    good = M.insertion(one_pixel, x, perfect, 0, steps=H * W)
    bad = M.insertion(one_pixel, x, inverted, 0, steps=H * W)
    np.testing.assert_allclose(good.scores[0], [p_blur] + [P_FULL] * (H * W), rtol=1e-5)
    np.testing.assert_allclose(bad.scores[0], [p_blur] * (H * W) + [P_FULL], rtol=1e-5)
    assert good.auc[0] > 0.99 > bad.auc[0]


def test_default_steps_follow_rise():
    counts = M._counts(224 * 224, None)
    assert len(counts) == 225 and counts[1] == 224 and counts[-1] == 224 * 224
    assert list(M._counts(10, 3)) == [0, 4, 8, 10]


def test_gaussian_blur_is_the_rise_kernel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 9, 12)).astype(np.float32)
    t = np.arange(11) - 5
    k1 = np.exp(-(t**2) / 50.0)
    kernel = np.outer(k1, k1) / np.outer(k1, k1).sum()
    padded = np.pad(x, ((0, 0), (0, 0), (5, 5), (5, 5)))
    want = np.zeros_like(x)
    for i in range(9):
        for j in range(12):
            want[0, :, i, j] = (padded[0, :, i : i + 11, j : j + 11] * kernel).sum(axis=(1, 2))
    np.testing.assert_allclose(M.gaussian_blur(x), want, rtol=1e-5, atol=1e-6)


def test_lerf_and_morf_known_answer(one_pixel):
    perfect, inverted = _maps()
    change = abs(P_FULL - P_NONE) / P_FULL
    lerf = M.remove_fraction(one_pixel, _x(), perfect, 0, fractions=(0.5, 0.9))
    morf = M.remove_fraction(one_pixel, _x(), perfect, 0, fractions=(0.1, 0.5), most=True)
    np.testing.assert_allclose(lerf[0], [0.0, 0.0], atol=1e-7)  # the pixel is never removed
    np.testing.assert_allclose(morf[0], [change, change], rtol=1e-6)
    flipped = M.remove_fraction(one_pixel, _x(), inverted, 0, fractions=(0.5,))
    np.testing.assert_allclose(flipped[0], [change], rtol=1e-6)


def test_pointing_and_energy_known_answers():
    attribution = np.zeros((3, 3, 10, 10), np.float32)
    attribution[0, :, 2, 2] = 1.0  # inside the mask
    attribution[1, :, 9, 9] = 1.0  # far outside
    attribution[2, :, 5, 6] = 1.0  # one pixel right of the mask: a hit with tolerance 1
    attribution[:, :, 0, 0] += 1 / 3  # positive mass outside: a third of the channel sum
    masks = np.zeros((3, 10, 10), bool)
    masks[:, 1:6, 1:6] = True
    np.testing.assert_array_equal(M.pointing_game(attribution, masks, tolerance=0), [1, 0, 0])
    np.testing.assert_array_equal(M.pointing_game(attribution, masks, tolerance=1), [1, 0, 1])
    np.testing.assert_allclose(M.energy_pointing(attribution, masks), [0.75, 0.0, 0.0])
    assert np.isnan(M.pointing_game(attribution[:1], np.zeros((1, 10, 10), bool)))[0]


def test_rank_correlation_and_ssim():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((12, 12))
    assert M.spearman(a, a) == pytest.approx(1.0)
    assert M.spearman(a, -a) == pytest.approx(-1.0)
    assert M.spearman(a, np.exp(a)) == pytest.approx(1.0)  # ranks only
    ties = np.array([1.0, 2.0, 2.0, 3.0])
    # Pearson of the average ranks [1, 2.5, 2.5, 4] and [1, 2, 3, 4]
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    want = np.corrcoef(ra, rb)[0, 1]
    assert M.spearman(ties, np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(want)
    assert M.ssim(a / 4, a / 4) == pytest.approx(1.0)
    b = rng.standard_normal((12, 12))
    assert M.ssim(a / 4, b / 4) == pytest.approx(_ssim_by_windows(a / 4, b / 4), rel=1e-9)
    assert M.ssim(a / 4, b / 4) < 0.3


def _ssim_by_windows(a, b, size=7, data_range=2.0):
    """SSIM (Wang et al. 2004) written out: every 7×7 window, sample statistics."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            x, y = a[i : i + size, j : j + size].ravel(), b[i : i + size, j : j + size].ravel()
            mx, my = x.mean(), y.mean()
            vx, vy = x.var(ddof=1), y.var(ddof=1)
            cxy = ((x - mx) * (y - my)).sum() / (x.size - 1)
            values.append(((2 * mx * my + c1) * (2 * cxy + c2))
                          / ((mx * mx + my * my + c1) * (vx + vy + c2)))  # fmt: skip
    return float(np.mean(values))


def test_mprt_randomizes_from_the_top_reproducibly():
    model = pathonnx.load(SAMPLES / "shapes_vgg.onnx", device="cpu")
    layers = M.parametric_layers(model.original)
    assert len(layers) == 7  # 5 Conv + 2 Gemm, output first
    one = M.randomized(model.original, 1, seed=3)
    again = M.randomized(model.original, 1, seed=3)
    from onnx import numpy_helper

    def weights(proto):
        return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}

    before, after = weights(model.original), weights(one)
    changed = {n for n in before if not np.array_equal(before[n], after[n])}
    assert changed == set(layers[0][1])  # only the last Gemm's weight and bias
    assert all(np.array_equal(after[n], weights(again)[n]) for n in after)
    assert np.std(after[layers[0][1][0]]) == pytest.approx(0.1, rel=0.2)
    cascade = M.cascade_models(model, seed=0, layers=2)
    x = np.random.default_rng(0).standard_normal((2, *model.input_shape)).astype(np.float32)
    assert not np.allclose(cascade[0].logits(x), model.logits(x))


def test_pathway_confidence_of_the_whole_network_is_the_network(one_pixel):
    model = pathonnx.load(SAMPLES / "shapes_resnet.onnx", device="cpu")
    x = np.random.default_rng(0).standard_normal((2, *model.input_shape)).astype(np.float32)
    whole = {g.name: np.ones((2, *g.shape), bool) for g in model.gates}
    conf = M.pathway_confidence(model, x, whole, [0, 1])
    np.testing.assert_allclose(conf["pathway"], conf["full"], rtol=1e-5)
    none = {g.name: np.zeros((2, *g.shape), bool) for g in model.gates[-1:]}
    cut = M.pathway_confidence(model, x, none, [0, 0])
    # the top gate removed, the logits are the last layer's bias alone: the same for both inputs
    np.testing.assert_allclose(cut["pathway"][0], cut["pathway"][1], rtol=1e-6)
    assert not np.allclose(cut["pathway"], conf["full"])


# -- evaluate --------------------------------------------------------------------------------------


def test_evaluate_command_table_files_and_resume(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for p in sorted((SAMPLES / "eval").glob("*.png"))[:4]:
        shutil.copy(p, data / p.name)
    shutil.copy(SAMPLES / "eval" / "masks.npz", data / "masks.npz")
    out = tmp_path / "out"
    args = ["evaluate", str(SAMPLES / "shapes_vgg.onnx"), str(data), "-o", str(out),
            "--methods", "pathwise,saliency", "--mprt-layers", "2", "--steps", "16"]  # fmt: skip
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "pathwise" in first.stdout and "insertion" in first.stdout
    report = json.loads((out / "results.json").read_text())
    assert report["inputs"] == 4 and len(report["records"]) == 8
    for column in ("insertion", "deletion", "lerf", "morf", "mprt_ssim", "pointing", "energy"):
        s = report["summary"]["saliency"][column]
        assert s["n"] == 4 and 0 <= s["mean"] <= 1, column
    assert report["summary"]["pathwise"]["pathway_probability"]["n"] == 4
    csv = (out / "results.csv").read_text().splitlines()
    # 11 columns, and GEN-CNP's 5 (tests/test_cnp_metrics.py) since pathwise is a pathway method
    assert csv[0] == "method,metric,mean,ci95,n,higher_is_better" and len(csv) == 1 + 2 * 16
    assert (out / "curves.png").stat().st_size > 1000
    cached = sorted((out / "cache").glob("*.json"))  # beside them, pathwise's pathways
    assert len(cached) == 8 and len(list((out / "cache").glob("*.units.npy"))) == 4
    # an interrupted run: one record lost, one torn; the rerun recomputes just those two
    cached[0].unlink()
    cached[1].write_text('{"input": ')
    untouched = {p.name: p.stat().st_mtime_ns for p in cached[2:]}
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0
    assert {p.name: p.stat().st_mtime_ns for p in cached[2:]} == untouched
    again = json.loads((out / "results.json").read_text())
    for method, row in again["summary"].items():
        for column, s in row.items():
            want = report["summary"][method][column]["mean"]  # None: undefined (null)
            assert s["mean"] == (want if want is None else pytest.approx(want, rel=1e-6)), (
                method, column)  # fmt: skip


def test_evaluate_metric_choice_and_bad_input(tmp_path):
    data = SAMPLES / "eval"
    args = ["evaluate", str(SAMPLES / "shapes_vgg.onnx"), str(data), "--limit", "2",
            "--metrics", "insertion,deletion", "--methods", "gradcam", "-o", str(tmp_path),
            "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["metrics"] == ["insertion", "deletion"] and summary["inputs"] == 2
    for bad, message in [
        (["--methods", "lime"], "unknown lime"),
        (["--metrics", "speed"], "unknown speed"),
        (["--limit", "0"], "0 is not in the range x>=1"),
        (["-p", "steps=3"], "method.name=value"),
    ]:
        result = CliRunner().invoke(main, [*args[:3], "-o", str(tmp_path / "x"), *bad])
        assert result.exit_code == 2 and message in result.stderr, (bad, result.stderr)
        assert not (tmp_path / "x").exists()


def test_a_large_cascade_is_loaded_one_model_at_a_time(monkeypatch):
    """Above CASCADE_KEPT the MPRT cascade is not kept: each model is loaded when its turn
    comes (the previous one freed), with the same randomized weights, so the same numbers."""
    import gc
    import importlib
    import weakref

    from pathonnx.images import Sample

    E = importlib.import_module("pathonnx.evaluation.evaluate")  # the module, not the function

    model = pathonnx.load(SAMPLES / "shapes_vgg.onnx", device="cpu")
    x = np.random.default_rng(0).random(model.input_shape, np.float32)
    items = [Sample(x, None, "array[0]")]
    settings = E.Settings(mprt_layers=3)
    kept = E.evaluate(model, items, ["saliency"], ["mprt"], settings)
    alive = []
    iterate = M.iter_cascade

    def watched(*args, **kwargs):
        for m in iterate(*args, **kwargs):
            gc.collect()
            alive.append(sum(r() is not None for r in refs))
            refs.append(weakref.ref(m))
            yield m

    refs: list = []
    monkeypatch.setattr(M, "iter_cascade", watched)
    monkeypatch.setattr(E, "CASCADE_KEPT", 0)
    lazy = E.evaluate(model, items, ["saliency"], ["mprt"], settings)
    assert len(refs) == 3 and max(alive) <= 1  # at most the one before, not yet freed
    key = "mprt_spearman_cascade"
    assert lazy.records[0][key] == kept.records[0][key]
