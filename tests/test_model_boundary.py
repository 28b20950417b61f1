"""The model boundary: damaged and invalid models, weights and shapes get a named one-line error.

Every model is built here with onnx.helper, or by damaging the bytes of one. For each, the API
raises the documented class (never a library's KeyError, ValueError, ...), and each command
exits with the documented code, one line on stderr, no traceback, every file left as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import pathonnx
from pathonnx.engine.memory import BUDGET_VARIABLE, run_bytes
from pathonnx_cli.main import main

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def info(name: str, dims, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def graph_model(nodes, initializers=(), inputs=None, outputs=None, opset=13, metadata=None):
    """A model of ``nodes`` (not checked: many are invalid on purpose); x is (N, 4), y (N, 3)
    unless ``inputs``/``outputs`` say otherwise."""
    graph = helper.make_graph(nodes, "g", inputs or [info("x", ["N", 4])],
                              outputs or [info("y", ["N", 3])], list(initializers))  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model


def mlp(w: np.ndarray = W, opset: int = 13) -> onnx.ModelProto:
    """y = Relu(x · w)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    return graph_model(nodes, [numpy_helper.from_array(w, "w")], opset=opset)


def saved(folder: Path, name: str, model: onnx.ModelProto) -> Path:
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# -- the damaged and invalid models ----------------------------------------------------------------


def _external(folder: Path, location: str) -> Path:
    """The MLP with its weight in external data at ``location``."""
    path = folder / "external.onnx"
    onnx.save_model(mlp(), path, save_as_external_data=True, location="w.bin", size_threshold=0)
    model = onnx.load(path, load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    path.write_bytes(model.SerializeToString())
    return path


def nul_location(folder: Path) -> Path:
    return _external(folder, "w\0.bin")


def long_location(folder: Path) -> Path:
    return _external(folder, "a" * 5000)


def looping_location(folder: Path) -> Path:
    os.symlink("loop.bin", folder / "loop.bin")
    return _external(folder, "loop.bin")


def cyclic(folder: Path) -> Path:
    nodes = [
        helper.make_node("Relu", ["b"], ["a"]),
        helper.make_node("Add", ["a", "x"], ["b"]),
        helper.make_node("MatMul", ["b", "w"], ["y"]),
    ]
    return saved(folder, "cyclic.onnx", graph_model(nodes, [numpy_helper.from_array(W, "w")]))


def self_loop(folder: Path) -> Path:
    nodes = [
        helper.make_node("Add", ["x", "h"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["z"]),
        helper.make_node("Relu", ["z"], ["y"]),
    ]
    return saved(folder, "loop.onnx", graph_model(nodes, [numpy_helper.from_array(W, "w")]))


def undefined_input(folder: Path) -> Path:
    nodes = [helper.make_node("MatMul", ["x", "nowhere"], ["h"]),
             helper.make_node("Relu", ["h"], ["y"])]  # fmt: skip
    return saved(folder, "undefined.onnx", graph_model(nodes))


def opset_99(folder: Path) -> Path:
    return saved(folder, "opset99.onnx", mlp(opset=99))


def short_raw_data(folder: Path) -> Path:
    model = mlp()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:8]
    return saved(folder, "short.onnx", model)


def short_large_raw_data(folder: Path) -> Path:
    """A weight large enough to reach the checker without its data (graph/validate.py)."""
    model = mlp(np.ones((4, 2000), np.float32))
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:100]
    model.graph.output[0].CopyFrom(info("y", ["N", 2000]))
    return saved(folder, "short_large.onnx", model)


def float64_weight(folder: Path) -> Path:
    return saved(folder, "float64.onnx", mlp(W.astype(np.float64)))


def unknown_data_type(folder: Path) -> Path:
    model = mlp()
    model.graph.initializer[0].data_type = 78
    return saved(folder, "dtype78.onnx", model)


def no_outputs_per_sample(folder: Path) -> Path:
    model = mlp(np.zeros((4, 0), np.float32))
    model.graph.output[0].CopyFrom(info("y", ["N", 0]))
    return saved(folder, "k0.onnx", model)


def clip_11_in_opset_9(folder: Path) -> Path:
    """Clip with its bounds as inputs (opset 11's form) in a file that declares opset 9."""
    bounds = [
        numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0), ("hi", 6))
    ]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Clip", ["h", "lo", "hi"], ["y"])]  # fmt: skip
    model = graph_model(nodes, [numpy_helper.from_array(W, "w"), *bounds], opset=9)
    return saved(folder, "clip11.onnx", model)


def _bad_utf8(model: onnx.ModelProto, marker: bytes) -> bytes:
    """``model``'s bytes with a name that is not UTF-8 (its marker's first two bytes 0xfffe)."""
    data = model.SerializeToString()
    assert marker in data
    return data.replace(marker, b"\xff\xfe" + marker[2:])


def bad_utf8_tensor_name(folder: Path) -> Path:
    model = mlp()
    model.graph.node[0].output[0] = model.graph.node[1].input[0] = "HIDDENAA"
    path = folder / "utf8.onnx"
    path.write_bytes(_bad_utf8(model, b"HIDDENAA"))
    return path


def bad_utf8_attribute(folder: Path) -> Path:
    model = mlp()
    model.graph.node[1].attribute.extend([helper.make_attribute("ATTRIBUT", 1.0)])
    path = folder / "utf8_attribute.onnx"
    path.write_bytes(_bad_utf8(model, b"ATTRIBUT"))
    return path


def bad_utf8_metadata(folder: Path) -> Path:
    model = mlp()
    model.metadata_props.add(key="pathonnx.preprocess", value="VALUEAAA")
    path = folder / "utf8_metadata.onnx"
    path.write_bytes(_bad_utf8(model, b"VALUEAAA"))
    return path


def nan_weight(folder: Path) -> Path:
    w = W.copy()
    w[1, 2] = np.nan
    return saved(folder, "nan.onnx", mlp(w))


def inf_weight(folder: Path) -> Path:
    w = W.copy()
    w[0, 0] = -np.inf
    return saved(folder, "inf.onnx", mlp(w))


def nan_constant(folder: Path) -> Path:
    value = numpy_helper.from_array(np.array([1.0, np.nan, 1.0], np.float32), "c")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Constant", [], ["c"], value=value),
        helper.make_node("Mul", ["h", "c"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    return saved(folder, "nan_constant.onnx", graph_model(nodes, [numpy_helper.from_array(W, "w")]))


LOAD = pathonnx.ModelLoadError
UNSUPPORTED = pathonnx.UnsupportedModelError
#: name -> (build(folder) -> path, error from the API, exit code, words of the message)
CASES = {
    "nul_location": (nul_location, LOAD, 2, "NUL byte"),
    "long_location": (long_location, LOAD, 2, "(5000 characters)"),
    "looping_location": (looping_location, LOAD, 2, "Symlink loop"),
    "cyclic": (cyclic, LOAD, 2, "topologically sorted"),
    "self_loop": (self_loop, LOAD, 2, "topologically sorted"),
    "undefined_input": (undefined_input, LOAD, 2, "'nowhere'"),
    "opset_99": (opset_99, LOAD, 2, "opset 99, which does not exist"),
    "short_raw_data": (short_raw_data, LOAD, 2, "raw_data size (8 bytes) is too small"),
    "short_large_raw_data": (short_large_raw_data, LOAD, 2, "does not hold data of its declared"),
    "float64_weight": (float64_weight, LOAD, 2, "inconsistent type tensor(double)"),
    "unknown_data_type": (unknown_data_type, LOAD, 2, "data type 78"),
    "no_outputs_per_sample": (no_outputs_per_sample, LOAD, 2, "no elements per sample"),
    "clip_11_in_opset_9": (clip_11_in_opset_9, LOAD, 2, "Clip:6) has input size 3"),
    "bad_utf8_tensor_name": (bad_utf8_tensor_name, LOAD, 2, "b'\\xff\\xfeDDENAA' is not UTF-8"),
    "bad_utf8_attribute": (bad_utf8_attribute, LOAD, 2, "an attribute of node"),
    "bad_utf8_metadata": (bad_utf8_metadata, LOAD, 2, "metadata 'pathonnx.preprocess'"),
    "nan_weight": (nan_weight, UNSUPPORTED, 1, "weight 'w' holds 1 NaN or infinite value(s) of 12"),
    "inf_weight": (inf_weight, UNSUPPORTED, 1, "weight 'w' holds 1 NaN or infinite"),
    "nan_constant": (nan_constant, UNSUPPORTED, 1, "weight 'c' holds 1 NaN"),
}


def one_line(stderr: str) -> bool:
    return stderr.count("\n") == 1 and stderr.startswith("pathonnx: error: ")


@pytest.mark.parametrize("case", CASES)
def test_bad_model_api(case, tmp_path):
    build, error, _, words = CASES[case]
    path = build(tmp_path)
    before = snapshot(tmp_path)
    for call in (pathonnx.load, lambda p: pathonnx.explain(p, np.ones((1, 4), np.float32))):
        with pytest.raises(error) as caught:
            call(path)
        assert type(caught.value) is error and words in str(caught.value)
        assert "\n" not in str(caught.value)
    result = pathonnx.check_model(path)
    assert (result.exit_code, result.explainable) == (CASES[case][2], False)
    assert words in result.error
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["check", "inspect", "explain"])
@pytest.mark.parametrize("case", CASES)
def test_bad_model_cli(case, command, tmp_path):
    build, _, code, words = CASES[case]
    path = build(tmp_path)
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 4), np.float32))
    before = snapshot(tmp_path)
    args = {"check": ["check", str(path)], "inspect": ["inspect", str(path)],
            "explain": ["explain", str(path), str(x), "-o", str(tmp_path / "out")]}  # fmt: skip
    result = CliRunner().invoke(main, args[command])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    if command == "check":  # the report on stdout, nothing on stderr
        assert words in result.stdout and not result.stderr
    else:
        assert one_line(result.stderr) and words in result.stderr, result.stderr
    assert snapshot(tmp_path) == before


def test_an_infinite_bound_is_not_a_bad_weight():
    """Clip(0, inf) is a ReLU: an infinity where a bound is meant loads."""
    bounds = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("lo", 0), ("hi", np.inf))]  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Clip", ["h", "lo", "hi"], ["y"])]  # fmt: skip
    model = pathonnx.load(graph_model(nodes, [numpy_helper.from_array(W, "w"), *bounds]))
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x).logits, np.maximum(x @ W, 0), rtol=1e-6)


def test_an_unknown_op_is_still_refused_by_name(tmp_path):
    """The checker skips ops it has no schema for: the refusal names them, exit 1."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Gelu", ["h"], ["y"])]
    model = graph_model(nodes, [numpy_helper.from_array(W, "w")])
    with pytest.raises(pathonnx.UnsupportedModelError, match="GELU"):
        pathonnx.load(model)


def test_a_model_whose_logits_are_a_gates_output():
    """y = Relu(x · w): the sweep's first cut is the top of the graph, where its walk starts
    at the seed (it used to feed a cotangent input the top stage does not have)."""
    model = pathonnx.load(mlp())
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    logits = np.maximum(x @ W, 0)
    target = logits.argmax(axis=1)
    path = pathonnx.pathwise(model, x, width=1)
    assert path.masks["y"].sum(axis=1).tolist() == [1, 1, 1]
    np.testing.assert_allclose(path.linear.output(x), logits[np.arange(3), target], rtol=1e-5)
    explanation = pathonnx.explain(model, x, paths=2)[0]
    assert explanation.pathway.logit_share == pytest.approx(1.0, rel=1e-5)


def test_mutated_sample_models_raise_only_pathonnx_errors(tmp_path):
    """Bytes of the sample models' graphs (not of their weights) changed at random: each
    loads, or raises a pathonnx error of one line; check never raises."""
    outcomes = {}
    for name in ("digits_mlp.onnx", "shapes_resnet.onnx"):
        data = (SAMPLES / name).read_bytes()
        where = _graph_bytes(data, onnx.load(SAMPLES / name))
        for seed in range(8):
            rng = np.random.default_rng(seed)
            mutated = bytearray(data)
            for at in rng.choice(where, int(rng.integers(1, 6))):
                mutated[at] = int(rng.integers(256))
            path = tmp_path / f"{seed}-{name}"
            path.write_bytes(bytes(mutated))
            try:
                pathonnx.load(path)
                outcome = "loads"
            except pathonnx.PathonnxError as err:
                assert "\n" not in str(err)
                outcome = type(err).__name__
            result = pathonnx.check_model(path)
            assert result.exit_code in (0, 1, 2) and "\n" not in (result.error or "")
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("ModelLoadError", 0) >= 8, outcomes  # most damage is found


def _graph_bytes(data: bytes, model: onnx.ModelProto) -> np.ndarray:
    """Positions in ``data`` outside the weights' raw data."""
    inside = np.zeros(len(data), bool)
    for tensor in model.graph.initializer:
        if len(tensor.raw_data) > 64:
            at = data.find(tensor.raw_data)
            inside[at : at + len(tensor.raw_data)] = True
    return np.flatnonzero(~inside)


# -- values that overflow inside the network ----------------------------------------------------


def test_an_input_that_overflows_inside_the_network(tmp_path):
    model = pathonnx.load(SAMPLES / "shapes_vgg.onnx")
    x = np.full((1, *model.input_shape), 3e38, np.float32)
    for call in (model.forward, lambda v: model.linearize(v, 0),
                 lambda v: pathonnx.explain(model, v)):  # fmt: skip
        with pytest.raises(pathonnx.InputError, match="overflow float32 inside the network"):
            call(x)
    path = tmp_path / "x.npy"
    np.save(path, x)
    before = snapshot(tmp_path)
    args = ["explain", str(SAMPLES / "shapes_vgg.onnx"), str(path), "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and one_line(result.stderr), result.output
    assert "largest magnitude is 3e+38" in result.stderr
    assert snapshot(tmp_path) == before


# -- memory estimated from the declared shapes -----------------------------------------------------


def wide(dim: int) -> onnx.ModelProto:
    """A model declaring a per-sample input of ``dim`` values: y = ReduceSum(Relu(x))."""
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=1)]  # fmt: skip
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    return graph_model(nodes, [axes], [info("x", ["N", dim])], [info("y", ["N", 1])])


def huge_image() -> onnx.ModelProto:
    """An image model of 3×20000×20000 whose metadata asks for that size."""
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=0)]  # fmt: skip
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    return graph_model(nodes, [axes], [info("x", ["N", 3, 20000, 20000])], [info("y", ["N", 3])],
                       metadata={"pathonnx.preprocess": '{"size": [20000, 20000]}'})  # fmt: skip


def limited(gib: int):
    """For a subprocess: at most ``gib`` GiB of address space (an estimate that failed to
    refuse would fail to allocate, not swap the machine)."""
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))


def run_cli(args: list[str], home: Path | None = None, gib: int = 4) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "pathonnx_cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, preexec_fn=limited(gib),
                          timeout=300)  # fmt: skip


@pytest.mark.parametrize("dim", [10**9, 2**62])
def test_a_huge_declared_dim_is_refused_before_allocating(dim, tmp_path):
    path = saved(tmp_path, "wide.onnx", wide(dim))
    model = pathonnx.load(path)  # reading it allocates nothing of that size
    with pytest.raises(pathonnx.InputError, match="one sample needs about .* above the memory"):
        model.check_memory(1)
    result = pathonnx.check_model(path)
    assert result.exit_code == 2 and "smaller input size" in result.error
    done = run_cli(["check", path])
    assert done.returncode == 2, done.stderr
    assert "memory budget" in done.stdout and not done.stderr


def test_a_huge_image_model_is_refused_by_check_and_explain(tmp_path):
    path = saved(tmp_path, "huge.onnx", huge_image())
    image = tmp_path / "in.png"
    image.write_bytes(next((SAMPLES / "images").glob("*.png")).read_bytes())
    before = snapshot(tmp_path)
    with pytest.raises(pathonnx.InputError, match="memory budget"):
        pathonnx.explain(path, image)
    done = run_cli(["check", path])
    assert done.returncode == 2 and "memory budget" in done.stdout, done.stdout
    done = run_cli(["explain", path, image, "-o", tmp_path / "out"])
    assert done.returncode == 2 and one_line(done.stderr), done.stderr
    assert "one sample needs about 80" in done.stderr and "--size" in done.stderr
    assert snapshot(tmp_path) == before


def test_the_budget_says_which_batch_fits(monkeypatch):
    model = pathonnx.load(SAMPLES / "shapes_vgg.onnx")
    per_sample = run_bytes(model.engine.tensor_bytes, 1)
    monkeypatch.setenv(BUDGET_VARIABLE, str(5 * per_sample))
    model.check_memory(5)
    with pytest.raises(pathonnx.InputError, match=r"a batch of 16 .* pass --batch 5 or less"):
        model.check_memory(16)
    x = np.random.default_rng(0).standard_normal((6, *model.input_shape)).astype(np.float32)
    forward_only = run_bytes(model.engine.tensor_bytes, 1, rows=False)  # no adjoint row
    monkeypatch.setenv(BUDGET_VARIABLE, str(5 * forward_only))
    with pytest.raises(pathonnx.InputError, match="a batch of 6"):
        model.forward(x)
    one_by_one = model.logits(x, batch=1)
    # a logits-only batch is a throughput setting: run in calls of 5 instead of refused
    np.testing.assert_allclose(model.logits(x, batch=64), one_by_one, rtol=1e-5, atol=1e-6)
    monkeypatch.setenv(BUDGET_VARIABLE, str(forward_only // 2))
    with pytest.raises(pathonnx.InputError, match="one sample needs"):
        model.logits(x, batch=64)
    monkeypatch.setenv(BUDGET_VARIABLE, str(5 * per_sample))
    monkeypatch.setenv(BUDGET_VARIABLE, "lots")
    with pytest.raises(pathonnx.InputError, match=f"{BUDGET_VARIABLE}='lots'"):
        model.check_memory(1)
    monkeypatch.setenv(BUDGET_VARIABLE, "1G")
    model.check_memory(16)


# -- preprocessing metadata and --set-preprocess ---------------------------------------------------


def image_model(metadata: str | None = None) -> onnx.ModelProto:
    """An RGB 8×8 model: y = Flatten(Relu(x)) · w."""
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Flatten", ["h"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]  # fmt: skip
    w = numpy_helper.from_array(np.ones((192, 3), np.float32), "w")
    meta = None if metadata is None else {"pathonnx.preprocess": metadata}
    return graph_model(nodes, [w], [info("x", ["N", 3, 8, 8])], metadata=meta)


@pytest.mark.parametrize(
    ("entry", "key"),
    [('{"size": "abc"}', "size"), ('{"scale": "x"}', "scale"), ('{"size": null}', "size"),
     ('{"mean": {"a": 1}}', "mean"), ('{"std": "wide"}', "std")],
)  # fmt: skip
def test_bad_preprocessing_names_its_key(entry, key, tmp_path):
    path = saved(tmp_path, "meta.onnx", image_model(entry))
    plain = saved(tmp_path, "plain.onnx", image_model())
    image = tmp_path / "in.png"
    image.write_bytes(next((SAMPLES / "images").glob("*.png")).read_bytes())
    before = snapshot(tmp_path)
    with pytest.raises(pathonnx.InputError, match=f"preprocessing {key} is"):
        pathonnx.explain(path, image)
    result = CliRunner().invoke(main, ["explain", str(path), str(image), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and one_line(result.stderr), result.output
    assert f"preprocessing {key} is" in result.stderr
    out = tmp_path / "out.onnx"
    args = ["rewrite", str(plain), "-o", str(out), "--set-preprocess", entry]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and one_line(result.stderr), result.output
    assert f"preprocessing {key} is" in result.stderr
    assert snapshot(tmp_path) == before


# -- the evaluate cache ----------------------------------------------------------------------------


def test_damaged_cache_records_are_measured_again(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    np.save(
        data / "x.npy", np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    )
    out = tmp_path / "out"
    args = ["evaluate", str(SAMPLES / "digits_mlp.onnx"), str(data), "-o", str(out),
            "--methods", "saliency", "--metrics", "insertion,lerf", "--steps", "4"]  # fmt: skip
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    means = _means(out)
    records = sorted((out / "cache").iterdir())
    assert len(records) == 3
    record = json.loads(records[2].read_text())
    damages = [{**record, "insertion": "high"}, {**record, "insertion_curve": [0.5]}, [], {}]
    for damage in [json.dumps(d).encode() for d in damages] + [b"\xff\xfe", b'{"input": ']:
        records[0].write_text(json.dumps({**record, "input": "elsewhere"}))
        records[1].write_bytes(damage)
        again = CliRunner().invoke(main, args)
        assert again.exit_code == 0, (damage, again.output)
        assert _means(out) == pytest.approx(means, rel=1e-5), damage
        assert json.loads(records[1].read_text())["method"] == "saliency"
    records[1].unlink()
    records[1].mkdir()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and one_line(result.stderr), result.output
    assert "not a file" in result.stderr


def _means(out: Path) -> dict[str, float]:
    summary = json.loads((out / "results.json").read_text())["summary"]["saliency"]
    return {column: entry["mean"] for column, entry in summary.items()}


# -- onnxruntime's telemetry and log ---------------------------------------------------------------


def test_onnxruntime_writes_nothing_under_home_and_stays_quiet(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = run_cli(["check", SAMPLES / "digits_mlp.onnx"], home=home)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert not list(home.rglob("*"))
    blocked = tmp_path / "file"
    blocked.write_text("")
    done = run_cli(["check", SAMPLES / "digits_mlp.onnx"], home=blocked / "home")
    assert done.returncode == 0 and not done.stderr, done.stderr


def test_a_constant_too_large_to_fold_prints_nothing_but_the_verdict(tmp_path):
    """Folding a 2^40-element ConstantOfShape fails inside onnxruntime: its error log stays
    quiet (pathonnx refuses the model by itself, naming the op)."""
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=fill),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        helper.make_node("Add", ["x", "total"], ["a"]),
        helper.make_node("MatMul", ["a", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    shape = numpy_helper.from_array(np.array([1 << 40], np.int64), "shape")
    path = saved(tmp_path, "big.onnx", graph_model(nodes, [shape, numpy_helper.from_array(W, "w")]))
    done = run_cli(["check", path])
    assert done.returncode == 1 and "NOT explainable" in done.stdout, done.stdout
    assert "ConstantOfShape" in done.stdout and not done.stderr, done.stderr


def test_a_model_onnxruntime_cannot_run_is_a_load_error(tmp_path):
    """A Conv with group 0 passes the checks of reading and fails only when onnxruntime runs
    it: that failure is a ModelLoadError (exit 2), not an internal error."""
    w = np.ones((3, 2, 1, 1), np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], group=0),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Flatten", ["r"], ["y"])]  # fmt: skip
    shapes = {"inputs": [info("x", ["N", 2, 4, 4])], "outputs": [info("y", ["N", 48])]}
    model = graph_model(nodes, [numpy_helper.from_array(w, "w")], **shapes)
    path = tmp_path / "group0.onnx"
    onnx.save(model, path)
    result = pathonnx.check_model(path)
    assert result.exit_code == 2 and "cannot run it in onnxruntime" in result.error, result.error
    with pytest.raises(pathonnx.ModelLoadError, match="cannot run it in onnxruntime"):
        pathonnx.explain(path, np.ones((1, 2, 4, 4), np.float32))
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 2, 4, 4), np.float32))
    before = snapshot(tmp_path)
    out = CliRunner().invoke(main, ["explain", str(path), str(x), "-o", str(tmp_path / "out")])
    assert out.exit_code == 2 and one_line(out.stderr), out.output
    assert "internal error" not in out.stderr and snapshot(tmp_path) == before
