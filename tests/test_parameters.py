"""Method parameters and the command line's surface: every bad value is a one-line error with
exit code 2 (InputError from the API), before any work; JSON output is strict (no NaN); click's
usage errors are one line; --debug adds the traceback and keeps the exit code.

The registry test is generated from the declarations, so a new parameter is covered by it."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import onnxruntime
import pytest
from helpers import EVAL, IMAGE, VGG, invoke

import pathonnx
from pathonnx.evaluation.evaluate import SETTINGS, Settings, evaluate
from pathonnx.graph.noise import noise_graph
from pathonnx.io import json_text
from pathonnx.methods import METHODS, method_params
from pathonnx.methods.registry import INTEGER, NUMBER, NUMBER_OR_UNIFORM, TEXT, WIDTH, Range
from pathonnx_cli.main import main


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as strict parsers do."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def assert_one_line_error(result, code: int = 2, words: str | None = None) -> str:
    """The contract for a bad input: ``code``, one line on stderr, no traceback."""
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output, result.output
    assert lines[0].startswith(("pathonnx: error: ", "pathonnx: internal error: ")), lines
    if words is not None:
        assert words in lines[0], lines[0]
    if result.stdout.strip():
        strict_json(result.stdout)
    return lines[0]


@pytest.fixture(scope="module")
def vgg():
    return pathonnx.load(VGG, device="cpu")


# -- the declarations, generated from the registry ----------------------------------------------


def declared() -> list[tuple[str, pathonnx.Param]]:
    """(owner, Param) for every method's parameters and evaluate's settings."""
    out = [(m.name, p) for m in METHODS.values() for p in m.params]
    return out + [("evaluate", p) for p in SETTINGS]


DECLARED = declared()
IDS = [f"{owner}.{p.name}" for owner, p in DECLARED]
NUMERIC = (INTEGER, NUMBER, NUMBER_OR_UNIFORM)
JUNK = [float("nan"), float("inf"), -float("inf"), True, [1], {"a": 1}, object(), 1j, b"1"]
JUNK_TEXT = ["nan", "inf", "-inf", "", "x", "1e999", "[1]"]


def outside(r: Range, integer: bool) -> list[float]:
    """Values just outside ``r`` (the open ends themselves, the next value past a closed one)."""
    step = 1 if integer else 1e-6
    out = []
    if r.lo is not None:
        out.append(r.lo if r.lo_open else r.lo - step)
    if r.hi is not None:
        out.append(r.hi if r.hi_open else r.hi + step)
    return out


def inside(r: Range, integer: bool) -> list[float]:
    step = 1 if integer else 1e-6
    out = []
    if r.lo is not None:
        out.append(r.lo + step if r.lo_open else r.lo)
    if r.hi is not None:
        out.append(r.hi - step if r.hi_open else r.hi)
    return out


@pytest.mark.parametrize(("owner", "param"), DECLARED, ids=IDS)
def test_every_parameter_declares_what_it_accepts(owner, param):
    """A number has a range; text is checked against the model; a width has its own kind."""
    assert param.kind in (*NUMERIC, TEXT, WIDTH), f"{owner}.{param.name}: unknown kind"
    if param.kind in NUMERIC:
        assert param.range is not None, f"{owner}.{param.name} declares no range"
        assert param.range.lo is not None or param.range.hi is not None
    if param.kind is TEXT:
        assert param.fits is not None, f"{owner}.{param.name}: any text would pass"
    assert param.check(param.default) == param.default  # the default is valid


@pytest.mark.parametrize(("owner", "param"), DECLARED, ids=IDS)
def test_every_parameter_rejects_junk(owner, param):
    for junk in JUNK if param.kind is not TEXT else [1, 2.5, [], b"x"]:
        with pytest.raises(pathonnx.InputError, match=param.name):
            param.check(junk)
    for text in JUNK_TEXT if param.kind is not TEXT else []:
        with pytest.raises(pathonnx.InputError, match=f"--{param.name} '"):
            param.from_text(text)
    if param.range is not None:
        integer = param.kind is INTEGER
        for value in outside(param.range, integer):
            with pytest.raises(pathonnx.InputError, match=r"must be (in |>|<)"):
                param.check(value)
            with pytest.raises(pathonnx.InputError, match=f"--{param.name} "):
                param.from_text(str(value))
        for value in inside(param.range, integer):
            assert param.check(value) == value
            assert param.from_text(str(value)) == value
    if param.kind is INTEGER:  # 3.0 is 3; 2.5 is no count
        assert param.check(3.0) == 3 or param.range is not None and not param.range.holds(3)
        with pytest.raises(pathonnx.InputError, match="must be an integer"):
            param.check(2.5)


@pytest.mark.parametrize(("owner", "param"), [d for d in DECLARED if d[0] != "evaluate"],
                         ids=[i for i in IDS if not i.startswith("evaluate.")])  # fmt: skip
def test_the_api_validates_each_methods_parameters(owner, param):
    junk = "nope" if param.kind is not TEXT else 3
    with pytest.raises(pathonnx.InputError, match=f"^{owner}: {param.name}="):
        method_params(owner, {param.name: junk})


def test_ranges_read_as_intervals():
    assert str(Range(0, 1, hi_open=True)) == "in [0, 1)"
    assert str(Range(lo=1)) == ">= 1" and str(Range(lo=0, lo_open=True)) == "> 0"
    assert str(Range(hi=5, hi_open=True)) == "< 5" and str(Range(-1, 1)) == "in [-1, 1]"


def test_help_shows_the_ranges():
    explain, evaluate_help = invoke("explain", "--help").stdout, invoke("evaluate", "--help").stdout
    for method in METHODS.values():
        for param in method.params:
            assert param.describe() in explain and param.describe() in evaluate_help
    flat = " ".join(explain.split())
    assert "importance threshold (default 1/K), in [0, 1]" in flat
    assert "integrated_gradients: integration steps, in [1, 1000]" in flat
    flat = " ".join(evaluate_help.split())
    assert "Seed of the MPRT re-initialization, >= 0. [default: 0]" in flat
    assert "MPRT: randomize only the top N weighted layers (default all), >= 1." in flat


# -- every case of the trial, on the command line -----------------------------------------------

EXPLAIN_CASES = [
    (["--alpha", "2"], "--alpha '2' must be in [0, 1]"),
    (["--alpha", "-1"], "--alpha '-1' must be in [0, 1]"),
    (["--alpha", "nan"], "--alpha 'nan' must be a finite number"),
    (["--alpha", "inf"], "--alpha 'inf' must be a finite number"),
    (["--alpha", "-inf"], "must be a finite number"),
    (["--method", "intgrad", "--steps", "0"], "--steps '0' must be in [1, 10000]"),
    (["--method", "intgrad", "--steps", "-5"], "--steps '-5' must be in [1, 10000]"),
    (["--method", "intgrad", "-p", "steps=0"], "-p steps=0 must be in [1, 10000]"),
    (["--method", "integrated_gradients", "--steps", "0"], "must be in [1, 1000]"),
    (["--method", "integrated_gradients", "--steps", "99999999999"], "must be in [1, 1000]"),
    (["--method", "gradcam", "-p", "gate=nope"], "gradcam: gate='nope' is not a gate of the model"),
    (["--method", "smoothgrad", "-p", "seed=-1"], "-p seed=-1 must be >= 0"),
    (["--method", "smoothgrad", "-p", "seed=x"], "-p seed=x must be an integer"),
    (["--method", "smoothgrad", "-p", "samples=0"], "-p samples=0 must be in [1, 10000]"),
    (["--method", "smoothgrad", "-p", "samples=2.5"], "must be an integer"),
    (["--method", "smoothgrad", "-p", "stdev=-0.1"], "-p stdev=-0.1 must be >= 0"),
    (["--method", "smoothgrad", "-p", "stdev=nan"], "-p stdev=nan must be a finite number"),
    (["--method", "smoothgrad", "-p", "batch=0"], "-p batch=0 must be >= 1"),
    (["--method", "saliency", "--compare", "smoothgrad", "-p", "smoothgrad.samples=-1"],
     "-p smoothgrad.samples=-1 must be"),
    (["--method", "saliency", "--compare", "gradcam", "-p", "gradcam.gate=nope"],
     "gradcam: gate='nope'"),
    (["--depth", "0"], "--depth '0' must be >= 1"),
    (["--depth", "99"], "pathwise: depth=99 must be <= 6, the model's number of gates"),
    (["--classes", "0"], "--classes '0' must be >= 1"),
    (["--width", "0"], "--width '0' must be a count like 64"),
    (["--method", "mct", "--sparsity", "1"], "--sparsity '1' must be in [0, 1)"),
    (["--method", "dgr", "--lr", "0"], "--lr '0' must be > 0"),
    (["--method", "dgr", "--gamma", "-1"], "--gamma '-1' must be >= 0"),
    (["--method", "dgr", "--init", "-1"], "--init '-1' must be >= 0"),
    (["--method", "greedy", "--rounds", "0"], "--rounds '0' must be in [1, 10000]"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "words"), EXPLAIN_CASES,
                         ids=[" ".join(a) for a, _ in EXPLAIN_CASES])  # fmt: skip
def test_explain_rejects_bad_parameters(args, words, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", VGG, IMAGE, "-o", out, "--json", *args)
    assert_one_line_error(result, 2, words)
    assert not out.exists()  # refused before any work


def test_gradcams_gate_error_names_the_gates_and_how_to_list_them(vgg):
    with pytest.raises(pathonnx.InputError) as err:
        pathonnx.attribute(vgg, np.zeros((1, *vgg.input_shape), np.float32), method="gradcam",
                           gate="nope")  # fmt: skip
    spatial = [g.name for g in vgg.gates if len(g.shape) >= 3]
    assert repr(spatial[-1]) in str(err.value) and "pathonnx inspect MODEL" in str(err.value)
    dense = next(g.name for g in vgg.gates if len(g.shape) < 3)
    with pytest.raises(pathonnx.InputError, match="has no spatial axes"):
        method_params("gradcam", {"gate": dense}, vgg)
    assert method_params("gradcam", {"gate": spatial[0]}, vgg)["gate"] == spatial[0]


EVALUATE_CASES = [
    (["--methods", "saliency", "--mprt-layers", "0"], "--mprt-layers '0' must be >= 1"),
    (["--methods", "saliency", "--mprt-layers", "-3"], "--mprt-layers '-3' must be >= 1"),
    (["--methods", "saliency", "--seed", "-1"], "--seed '-1' must be >= 0"),
    (["--methods", "saliency", "--steps", "0"], "--steps '0' must be >= 1"),
    (["--methods", "saliency", "--steps", "-2"], "--steps '-2' must be >= 1"),
    (["--methods", "saliency", "--steps", "5000"], "steps=5000 must be <= 1024, the pixels"),
    (["--methods", "saliency", "--batch", "0"], "--batch '0' must be >= 1"),
    (["--methods", "gradcam", "-p", "gate=nope"], "gradcam: gate='nope' is not a gate"),
    (["--methods", "smoothgrad,saliency", "-p", "smoothgrad.stdev=inf"], "must be a finite"),
    (["--methods", "integrated_gradients", "-p", "steps=0"], "-p steps=0 must be in [1, 1000]"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "words"), EVALUATE_CASES,
                         ids=[" ".join(a) for a, _ in EVALUATE_CASES])  # fmt: skip
def test_evaluate_rejects_bad_settings_and_parameters(args, words, tmp_path):
    out = tmp_path / "out"
    result = invoke("evaluate", VGG, EVAL, "--limit", "1", "-o", out, "--json", *args)
    assert_one_line_error(result, 2, words)
    assert not out.exists()


# -- the API: the same declarations, InputError before any work ---------------------------------


def refuse_work(monkeypatch, model):
    """Make any run of the model fail loudly: validation must come first."""

    def no(*args, **kwargs):
        raise AssertionError("the model ran before the parameters were checked")

    monkeypatch.setattr(model, "forward", no)
    monkeypatch.setattr(model, "logits", no)


API_CASES = [
    (lambda m, x: pathonnx.pathwise(m, x, alpha=2), "pathwise: alpha=2 must be in [0, 1]"),
    (lambda m, x: pathonnx.pathwise(m, x, alpha=float("nan")), "alpha=nan must be a finite"),
    (lambda m, x: pathonnx.pathwise(m, x, depth=0), "depth=0 must be >= 1"),
    (lambda m, x: pathonnx.pathwise(m, x, depth=len(m.gates) + 1), "the model's number of gates"),
    (lambda m, x: pathonnx.pathwise(m, x, classes=0), "classes=0 must be >= 1"),
    (lambda m, x: pathonnx.pathwise(m, x, width="0%"), "width='0%' must be a count"),
    (lambda m, x: pathonnx.decompose(m, x, paths=2, alpha=-1), "alpha=-1 must be in [0, 1]"),
    (lambda m, x: pathonnx.critical_pathway(m, x, method="intgrad", steps=0),
     "intgrad: steps=0 must be in [1, 10000]"),
    (lambda m, x: pathonnx.critical_pathway(m, x, method="mct", sparsity=1.0),
     "mct: sparsity=1.0 must be in [0, 1)"),
    (lambda m, x: pathonnx.pruned_pathway(m, x, method="greedy", rounds=-1), "rounds=-1 must"),
    (lambda m, x: pathonnx.pruned_pathway(m, x, method="dgr", lr=float("inf")),
     "dgr: lr=inf must be a finite number"),
    (lambda m, x: pathonnx.pruned_pathway(m, x, method="dgr", init="nope"),
     "init='nope' must be a number"),
    (lambda m, x: pathonnx.attribute(m, x, method="smoothgrad", seed=-1),
     "smoothgrad: seed=-1 must be >= 0"),
    (lambda m, x: pathonnx.attribute(m, x, method="smoothgrad", samples=0), "samples=0 must be"),
    (lambda m, x: pathonnx.attribute(m, x, method="smoothgrad", stdev=float("nan")),
     "stdev=nan must be a finite number"),
    (lambda m, x: pathonnx.attribute(m, x, method="smoothgrad", batch=True),
     "batch=True must be an integer"),
    (lambda m, x: pathonnx.attribute(m, x, method="integrated_gradients", steps=0),
     "integrated_gradients: steps=0 must be in [1, 1000]"),
    (lambda m, x: pathonnx.attribute(m, x, method="gradcam", gate="nope"),
     "gradcam: gate='nope' is not a gate of the model"),
    (lambda m, x: pathonnx.explain(m, x[0], method="gradcam", gate="nope"), "gate='nope'"),
    (lambda m, x: pathonnx.explain(m, x[0], method="saliency",
                                   compare={"smoothgrad": {"seed": -2}}), "seed=-2 must be"),
    (lambda m, x: evaluate(m, [], ["saliency"], settings=Settings(seed=-1)), "seed=-1 must be"),
    (lambda m, x: evaluate(m, [], ["saliency"], settings=Settings(mprt_layers=0)),
     "mprt_layers=0 must be >= 1"),
    (lambda m, x: evaluate(m, [], ["saliency"], settings=Settings(steps=10**6)),
     "steps=1000000 must be <= 1024"),
    (lambda m, x: evaluate(m, [], ["gradcam"],
                           settings=Settings(params={"gradcam": {"gate": "x"}})),
     "gradcam: gate='x'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "words"), API_CASES, ids=[w for _, w in API_CASES])
def test_api_raises_input_error_before_any_work(case, words, vgg, monkeypatch):
    x = np.random.default_rng(0).random((1, *vgg.input_shape), np.float32)
    refuse_work(monkeypatch, vgg)
    with pytest.raises(pathonnx.InputError) as err:
        case(vgg, x)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_settings_are_checked_when_made():
    for bad in ({"seed": -1}, {"mprt_layers": 0}, {"steps": 0}, {"batch": 0}, {"seed": 1.5}):
        with pytest.raises(pathonnx.InputError, match=next(iter(bad))):
            Settings(**bad)
    assert Settings(steps=3.0).steps == 3 and Settings().seed == 0


def test_integral_floats_are_counts_and_numbers_are_floats(vgg):
    assert method_params("smoothgrad", {"samples": 3.0, "stdev": 1}) == {
        "samples": 3, "stdev": 1.0, "seed": 0, "batch": 16}  # fmt: skip
    assert method_params("dgr", {"init": "uniform"})["init"] == "uniform"
    assert method_params("pathwise", {"width": "5%", "depth": None})["width"] == "5%"


# -- -p batch=N reaches SmoothGrad and integrated gradients -------------------------------------


@pytest.mark.parametrize("method", ["smoothgrad", "integrated_gradients"])
def test_batch_parameter_works_and_changes_nothing_but_the_calls(method, vgg, tmp_path):
    x = np.random.default_rng(1).random((2, *vgg.input_shape), np.float32)
    small = {"samples": 3} if method == "smoothgrad" else {"steps": 3}  # 6 points in all
    calls = []
    engine = vgg.engine
    original = engine.linearize_at

    def counted(points, *args, **kwargs):
        calls.append(len(points))
        return original(points, *args, **kwargs)

    engine.linearize_at = counted
    try:
        one = pathonnx.attribute(vgg, x, method=method, batch=1, **small)
        assert calls == [1] * 6
        calls.clear()
        many = pathonnx.attribute(vgg, x, method=method, batch=5, **small)
        assert calls == [5, 1]
    finally:
        del engine.linearize_at
    np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-7)
    small_p = [f"-p{k}={v}" for k, v in small.items()]
    result = invoke("explain", VGG, IMAGE, "--method", method, "-p", "batch=2", *small_p,
                    "-o", tmp_path, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["params"]["batch"] == 2
    result = invoke("evaluate", VGG, EVAL, "--limit", "1", "--methods", method, "-p", "batch=3",
                    *small_p, "--metrics", "deletion", "-o", tmp_path / "eval",
                    "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["settings"]["params"][method]["batch"] == 3


def test_smoothgrad_draws_the_same_noise_in_batches(vgg):
    """The noisy copies are made a batch at a time, each with its copy's noise (a hash of the
    seed, the copy and the element: tests/test_noise.py): the result is the mean gradient at
    x + that noise, the same noise for both samples."""
    x = np.random.default_rng(2).random((2, *vgg.input_shape), np.float32)
    elements = int(np.prod(x.shape[1:]))
    session = onnxruntime.InferenceSession(noise_graph(elements).SerializeToString(),
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    (noise,) = session.run(None, {"copy": np.arange(3), "seed": np.array([7])})
    noise = np.float32(0.2) * noise.reshape(3, 1, *x.shape[1:])
    points = (x[None] + noise).reshape(-1, *x.shape[1:])
    target = vgg.forward(x).prediction
    grads = vgg.linearize(points, np.tile(target, 3)).W.reshape(3, *x.shape)
    got = pathonnx.attribute(vgg, x, method="smoothgrad", samples=3, stdev=0.2, seed=7, batch=4)
    np.testing.assert_allclose(got, grads.mean(axis=0), rtol=1e-5, atol=1e-7)


# -- strict JSON ----------------------------------------------------------------------------------


def test_json_text_refuses_non_finite_numbers_and_says_where():
    assert strict_json(json_text({"a": np.float32(1.5), "b": np.arange(2)})) == {
        "a": 1.5, "b": [0, 1]}  # fmt: skip
    for data, where in [
        ({"summary": {"m": {"mean": float("nan")}}}, "summary.m.mean"),
        ([1, {"curve": [0.5, float("inf")]}], "[1].curve[1]"),
        ({"W": np.array([[0.0, -np.inf]], np.float32)}, "W[0, 1]"),
        (np.float64("nan"), "the top"),
    ]:
        with pytest.raises(pathonnx.InputError, match=re.escape(f"at {where}, which JSON")):
            json_text(data)


def test_reports_are_strict_json_where_metrics_are_undefined(tmp_path):
    """One input: no confidence interval (n = 1); Grad-CAM's coarse map and MPRT give
    undefined values on this model. Reports say null, and parse with a strict parser."""
    out = tmp_path / "eval"
    result = invoke("evaluate", VGG, EVAL, "--limit", "1", "--methods", "gradcam,saliency",
                    "--mprt-layers", "2", "-o", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = strict_json(result.stdout)["summary"]
    assert all(cell["ci95"] is None for row in summary.values() for cell in row.values())
    report = strict_json((out / "results.json").read_text())
    for path in (out / "cache").iterdir():
        strict_json(path.read_text())
    assert report["records"] and "nan" in (out / "results.csv").read_text()
    # a cache record with a NaN token (as older versions wrote) is computed again
    record = next((out / "cache").iterdir())
    record.write_text(record.read_text().replace('"insertion": ', '"insertion": NaN, "x": '))
    again = invoke("evaluate", VGG, EVAL, "--limit", "1", "--methods", "gradcam,saliency",
                   "--mprt-layers", "2", "-o", out, "--json")  # fmt: skip
    assert again.exit_code == 0, again.output
    strict_json(record.read_text())
    result = invoke("explain", VGG, IMAGE, "-o", tmp_path / "x", "--json", "--paths", "2")
    assert result.exit_code == 0, result.output
    strict_json(result.stdout)
    strict_json(next((tmp_path / "x").glob("*.json")).read_text())


def test_a_non_finite_result_is_an_error_not_invalid_json(monkeypatch, tmp_path):
    import pathonnx.explanation as E

    real = E.Explanation.to_dict

    def poisoned(self):
        return {**real(self), "attribution_sum": float("nan")}

    monkeypatch.setattr(E.Explanation, "to_dict", poisoned)
    result = invoke("explain", VGG, IMAGE, "--method", "saliency", "-o", tmp_path, "--json")
    line = assert_one_line_error(result, 2, "attribution_sum")
    assert "non-finite" in line and "NaN" not in result.stdout
    assert not list(tmp_path.glob("*.*"))  # nothing written for it


def test_a_self_check_of_nan_reads_null(tmp_path):
    from helpers import make_model, rand

    w = rand(4, 3)
    w[0, 0] = np.nan
    text = """<ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {
        h = MatMul(x, w)
        y = Relu(h)
    }"""
    import onnx

    onnx.save(make_model(text, w=w), tmp_path / "nan.onnx")
    result = invoke("check", tmp_path / "nan.onnx", "--json")
    assert result.exit_code == 1, result.output
    (report,) = strict_json(result.stdout)
    assert report["self_check"] is None or report["self_check"]["max_abs_diff"] is None


# -- click's usage errors: one line, click's words, exit 2 ---------------------------------------

COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_one_line(command):
    result = invoke(command, "--no-such-flag")
    line = assert_one_line_error(result, 2, "No such option '--no-such-flag'")
    assert line.endswith(f"see pathonnx {command} --help")


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "explain"])
def test_missing_argument_is_one_line(command):
    line = assert_one_line_error(invoke(command), 2, "Missing argument")
    assert line.endswith(f"see pathonnx {command} --help")


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_choice_and_bad_type_are_one_line(command):
    model = [VGG, IMAGE] if command in ("explain", "evaluate") else [VGG]
    out = {"rewrite": ["-o", "x.onnx"],
           "export": ["-o", "x.onnx", "--method", "saliency"]}.get(command, [])  # fmt: skip
    if command != "export":  # export builds a graph and runs nothing: it has no --device
        result = invoke(command, *model, *out, "--device", "gpu")
        assert_one_line_error(result, 2, "'gpu' is not one of 'auto', 'cpu', 'cuda'")
    result = invoke(command, *model, *out, "--input-shape", "3xfoo")
    assert_one_line_error(result, 2, "Invalid value for '--input-shape'")


def test_usage_errors_of_the_group_and_of_int_options():
    line = assert_one_line_error(invoke("--nope"), 2, "No such option '--nope'")
    assert line.endswith("see pathonnx --help")
    line = assert_one_line_error(invoke("nope"), 2, "No such command 'nope'")
    assert line.endswith("see pathonnx --help")
    for args in (["explain", VGG, IMAGE, "--batch", "0"], ["explain", VGG, IMAGE, "--paths", "x"],
                 ["explain", VGG, IMAGE, "--workers", "-1"],
                 ["evaluate", VGG, EVAL, "--limit", "0"],
                 ["explain", VGG, IMAGE, "--scale", "abc"], ["explain", VGG, "--method", "lime"],
                 ["rewrite", VGG]):  # fmt: skip
        line = assert_one_line_error(invoke(*args), 2)
        assert f"see pathonnx {args[0]} --help" in line and "Usage:" not in line


def test_help_is_not_an_error():
    result = invoke("explain", "--help")
    assert result.exit_code == 0 and result.stdout.startswith("Usage:")


# -- --debug: the traceback, the same exit code ------------------------------------------------


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["inspect", "missing.onnx"], 2),
        (["explain", VGG, IMAGE, "--alpha", "7"], 2),
        (["inspect", VGG, "--input-shape", "1x2x3"], 2),
        (["inspect", "UNSUPPORTED"], 1),
        (["inspect", VGG], 1),  # an internal error (pathonnx.load made to raise)
    ],
)
def test_debug_keeps_the_exit_code(args, code, monkeypatch, tmp_path):
    if args[1] == "UNSUPPORTED":
        import onnx
        from helpers import make_model, rand

        text = """<ir_version: 8, opset_import: ["" : 13]>
        g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {
            h = MatMul(x, w)
            y = Erf(h)
        }"""
        onnx.save(make_model(text, w=rand(4, 3)), tmp_path / "erf.onnx")
        args = ["inspect", tmp_path / "erf.onnx"]
    elif code == 1:
        monkeypatch.setattr(pathonnx, "load", _boom)
    plain, debug = invoke(*args), invoke("--debug", *args)
    line = assert_one_line_error(plain, code)
    assert debug.exit_code == code, debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == line
    if code == 1 and "boom" in line:
        assert "internal error: RuntimeError: boom" in line


def test_no_nan_from_parameters_means_finite_records(vgg):
    """The mprt_layers trial case: n = 0 gave NaN means; now there is no such setting, and a
    cascade of one layer gives finite or null values only."""
    from pathonnx.images import Sample

    x = np.random.default_rng(0).random(vgg.input_shape, np.float32)
    found = evaluate(vgg, [Sample(x, None, "a")], ["saliency"], ["mprt"], Settings(mprt_layers=1))
    for value in found.records[0].values():
        if isinstance(value, float):
            assert math.isfinite(value)
    strict_json(json_text(found.summary()))
