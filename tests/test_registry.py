"""The method registry is the one source of methods: the API, both commands and --help."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zoo
from helpers import EVAL, IMAGE, VGG, invoke

import pathonnx
from pathonnx.engine import one_hot
from pathonnx.methods.registry import check_width, max_units
from pathonnx.ops import DECONVNET, GRADIENT, GUIDED


@pytest.fixture(scope="module")
def vgg():
    return pathonnx.load(VGG, device="cpu")


def test_help_lists_every_method_and_parameter():
    explain, evaluate = invoke("explain", "--help").output, invoke("evaluate", "--help").output
    own = {"batch"}  # explain's --batch is its inputs per onnxruntime call
    for method in pathonnx.METHODS.values():
        for text in (explain, evaluate):
            assert f"  {method.name} " in text and method.summary[:40] in text, method.name
        for param in method.params:
            assert f"{param.name} [{param.default}]" in explain
            if param.name not in own:
                assert f"--{param.name} " in explain, param.name
    assert "[METHOD.]NAME=VALUE" in explain and "[METHOD.]NAME=VALUE" in evaluate


def test_every_flag_reaches_its_method_with_the_registrys_type(vgg, tmp_path):
    # --rounds and --init exist because greedy and DGR are registered; values come typed
    result = invoke("explain", VGG, IMAGE, "--method", "dgr", "--init", "uniform", "--steps",
                    "2", "--lr", "0.1", "-o", tmp_path, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["params"]
    assert params == {"sparsity": 0.9, "init": "uniform", "steps": 2, "lr": 0.1, "gamma": 0.001,
                      "seed": 0}  # fmt: skip
    bad = invoke("explain", VGG, IMAGE, "--method", "greedy", "--rounds", "many", "-o", tmp_path)
    assert bad.exit_code == 2 and "--rounds 'many' must be an integer" in bad.stderr


def test_scoped_parameters_reach_compared_methods(vgg, tmp_path):
    scoped = ["-p", "smoothgrad.samples=2", "-p", "smoothgrad.stdev=0.05"]
    result = invoke("explain", VGG, IMAGE, "--method", "saliency", "--compare", "smoothgrad",
                    *scoped, "-o", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    x = np.load(tmp_path / "shapes_006_cross_square.npz")["x"][None]
    want = pathonnx.attribute(vgg, x, method="smoothgrad", samples=2, stdev=0.05)
    with np.load(tmp_path / "shapes_006_cross_square.npz") as arrays:
        np.testing.assert_allclose(arrays["compare_smoothgrad"], want[0], rtol=1e-5, atol=1e-7)
    other = invoke("explain", VGG, IMAGE, "-p", "gradcam.gate=x", "-o", tmp_path)
    assert other.exit_code == 2 and "method 'gradcam' is not one of pathwise" in other.stderr


def test_evaluate_takes_the_same_syntax(tmp_path):
    common = ["evaluate", VGG, EVAL, "--limit", "1", "--metrics", "deletion", "--json"]
    one = invoke(*common, "--methods", "smoothgrad", "-p", "samples=2", "-o", tmp_path / "a")
    assert one.exit_code == 0, one.output
    two = invoke(*common, "--methods", "smoothgrad,saliency", "-p", "smoothgrad.samples=2",
                 "-o", tmp_path / "b")  # fmt: skip
    assert two.exit_code == 0, two.output
    for out in (one, two):
        assert json.loads(out.stdout)["settings"]["params"] == {"smoothgrad": {"samples": 2}}
    ambiguous = invoke(*common, "--methods", "smoothgrad,saliency", "-p", "samples=2")
    assert ambiguous.exit_code == 2
    assert "-p smoothgrad.samples=2" in ambiguous.stderr  # it says how to write it


def test_pruning_solvers_are_registered_methods(exported):
    path, _ = exported("mlp")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("mlp", batch=2, seed=3)
    for method, params in [("greedy", {"rounds": 3}), ("dgr", {"steps": 3, "init": "uniform"})]:
        pathway = pathonnx.pruned_pathway(model, x, method=method, sparsity=0.8, **params)
        again = model.linearize(x, pathway.target, pathway.masks)
        got = pathonnx.attribute(model, x, method=method, sparsity=0.8, **params)
        np.testing.assert_allclose(got, again.W, rtol=1e-5, atol=1e-7)
        assert pathonnx.METHODS[method].family == "pruning"
    with pytest.raises(pathonnx.InputError, match="pruning pathway method 'mct' is unknown"):
        pathonnx.pruned_pathway(model, x, method="mct")
    with pytest.raises(pathonnx.InputError, match="critical pathway method 'dgr' is unknown"):
        pathonnx.critical_pathway(model, x, method="dgr")


def test_backward_rules_are_properties_of_the_methods(exported):
    path, _ = exported("vgg_bn")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("vgg_bn", batch=2, seed=4)
    fwd = model.forward(x)
    seeds = one_hot(fwd.prediction, model.num_outputs, rows=1)
    rules = {"saliency": GRADIENT, "guided_backprop": GUIDED, "deconvnet": DECONVNET}
    maps = {}
    for name, rule in rules.items():
        assert pathonnx.METHODS[name].backward is rule
        grad, _ = model.engine.vjp(fwd, seeds, backward=rule)
        maps[name] = pathonnx.attribute(model, x, method=name)
        np.testing.assert_allclose(maps[name], grad[:, 0], rtol=1e-6, atol=1e-8)
    # the three rules differ on a network whose ReLUs see negative cotangents
    assert not np.allclose(maps["saliency"], maps["guided_backprop"])
    assert not np.allclose(maps["guided_backprop"], maps["deconvnet"])


@pytest.mark.parametrize(
    ("width", "units", "kept"),
    [(None, 50, 50), (3, 50, 3), (80, 50, 50), ("5%", 50, 3), ("100%", 7, 7), ("1%", 7, 1)],
)
def test_width_is_one_parser(width, units, kept):
    assert max_units(width, units) == kept
    param = next(p for p in pathonnx.METHODS["pathwise"].params if p.name == "width")
    if width is not None:
        assert param.from_text(str(width)) == check_width(width)
    for bad in ("lots", "0", "-3"):
        with pytest.raises(pathonnx.InputError, match=f"--width '{bad}'"):
            param.from_text(bad)
    for bad in (0, 2.5, "0%", "x%", True):
        with pytest.raises(pathonnx.InputError, match="width"):
            check_width(bad)
