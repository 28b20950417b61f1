"""`pathonnx export`: the exported graph equals pathonnx's own attribution, run by a plain
onnxruntime in a process where pathonnx cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from helpers import SAMPLES, invoke, make_model, rand

import pathonnx
from pathonnx.engine.ingraph import GATES_KEY as GATES

# Tolerance. A one-walk method (saliency, input × gradient, guided backprop, DeconvNet) runs
# the same fused graph as pathonnx's Python path: equal up to onnxruntime's kernel choices at
# another batch size. Integrated gradients add m ≤ 50 weighted gradients in float32 inside
# the graph, where Python adds them in float64: the error is below m·2⁻²⁴ ≈ 3e-6 of the
# largest term, so 1e-5 of the map's largest magnitude (and 1e-4 relative) bounds both.
ATOL_SHARE, RTOL = 1e-5, 1e-4
COSINE = 0.9999

#: Runs exported graphs with onnxruntime alone: argv = a JSON list of jobs, each
#: {"model", "inputs" (.npz: x and, optionally, target), "output" (.npz)}. Started with -I -S
#: and a sys.path of onnxruntime's and numpy's folders only, so that pathonnx cannot be
#: imported (asserted), nor any code of this project.
RUNNER = """
import json, sys
try:
    import pathonnx
except ImportError:
    pass
else:
    raise SystemExit("pathonnx is importable in the runner")
import numpy as np
import onnxruntime as ort
for job in json.loads(sys.argv[1]):
    session = ort.InferenceSession(job["model"], providers=["CPUExecutionProvider"])
    feeds = dict(np.load(job["inputs"]))
    feeds[session.get_inputs()[0].name] = feeds.pop("x")
    names = [o.name for o in session.get_outputs()]
    np.savez(job["output"], **dict(zip(names, session.run(names, feeds))))
"""


def library_paths() -> list[str]:
    """The folders onnxruntime and numpy are installed in (the runner asserts that pathonnx
    is not importable from them: without site, the editable install's hook is not read)."""
    return sorted({str(Path(m.__file__).resolve().parent.parent) for m in (onnxruntime, np)})


def run_without_pathonnx(jobs: list[dict]) -> None:
    """Run ``jobs`` (see :data:`RUNNER`) in a fresh interpreter that cannot import pathonnx."""
    code = f"import sys; sys.path += {library_paths()!r}\n{RUNNER}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, json.dumps(jobs)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def assert_same_map(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape and got.dtype == np.float32
    scale = float(np.abs(expected).max())
    assert cosine(got, expected) >= COSINE
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL_SHARE * scale)


#: Per method, the parameters used (integrated gradients at its default of 50 steps on the
#: samples; fewer on the zoo, where the point is the architectures). Pathwise: exact over all
#: classes, the top-classes approximation with a width share, and a shallow narrow pathway.
SAMPLE_CASES = [
    ("saliency", {}),
    ("input_x_gradient", {}),
    ("guided_backprop", {}),
    ("deconvnet", {}),
    ("integrated_gradients", {}),
    ("smoothgrad", {"samples": 8, "stdev": 0.3, "seed": 5}),
    ("gradcam", {}),
    ("mct", {}),
    ("pathwise", {}),
    ("pathwise", {"classes": 2, "width": "10%"}),
    ("pathwise", {"depth": 2, "width": 3, "alpha": 0.2}),
]
CASE_IDS = [f"{m}-{'-'.join(f'{k}={v}' for k, v in p.items())}".rstrip("-")
            for m, p in SAMPLE_CASES]  # fmt: skip


def python_result(model, x, target, method: str, params: dict):
    """pathonnx's own result: the map, and for a pathway method the Pathway."""
    entry = pathonnx.METHODS[method]
    expected = pathonnx.attribute(model, x, target, method=method, **params)
    if entry.kind == "pathway":
        checked = pathonnx.methods.method_params(method, params, model)
        return expected, entry.fn(model, x, target, **checked)
    return expected, None


def check_export(model: pathonnx.Model, method: str, params: dict, folder: Path, seed: int = 0):
    """Export ``method``, run it without pathonnx at batch 1 and 3, with and without a
    target, and compare with pathonnx's Python result and the model's logits: the map, and
    for a pathway method its masks, units kept, W and b."""
    exported = pathonnx.export(model, method, masks=True, **params)
    path = folder / f"{method}.onnx"
    path.write_bytes(exported.SerializeToString())
    rng = np.random.default_rng(seed)
    cases = []
    for batch in (1, 3):
        x = rng.standard_normal((batch, *model.input_shape)).astype(np.float32)
        target = rng.integers(0, model.num_outputs, batch)
        cases += [(x, None), (x, target)]
    jobs = []
    for i, (x, target) in enumerate(cases):
        feeds = {"x": x} if target is None else {"x": x, "target": target.astype(np.int64)}
        np.savez(folder / f"in{i}.npz", **feeds)
        jobs.append({"model": str(path), "inputs": str(folder / f"in{i}.npz"),
                     "output": str(folder / f"out{i}.npz")})  # fmt: skip
    run_without_pathonnx(jobs)
    gates = json.loads({p.key: p.value for p in exported.metadata_props}.get(GATES, "[]"))
    for i, (x, target) in enumerate(cases):
        out = np.load(folder / f"out{i}.npz")
        logits = model.forward(x).logits
        np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5)
        expected, pathway = python_result(model, x, target, method, params)
        assert_same_map(out["attribution"], expected)
        if pathway is None:
            assert "W" not in out
            continue
        assert gates == list(pathway.masks)
        for name in gates:
            np.testing.assert_array_equal(out[f"mask:{name}"], pathway.masks[name])
        kept = np.stack([pathway.stats["units_kept"][name] for name in gates], axis=1)
        np.testing.assert_array_equal(out["units_kept"], kept)
        assert_same_map(out["W"], pathway.linear.W)
        # completeness on the pathway: W^p·x + b^p is the pathway's logit, pathonnx's too
        got = (out["W"].astype(np.float64) * x).reshape(len(x), -1).sum(1) + out["b"]
        want = (pathway.linear.W.astype(np.float64) * x).reshape(len(x), -1).sum(1)
        want = want + pathway.linear.b
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(logits).max())


@pytest.fixture(scope="module")
def samples():
    return {name: pathonnx.load(SAMPLES / f"{name}.onnx", device="cpu")
            for name in ("shapes_vgg", "shapes_resnet", "digits_mlp")}  # fmt: skip


#: Every sample with every case, but Grad-CAM on the MLP, which has no spatial gate (refused:
#: see the CLI tests).
SAMPLE_GRID = [
    pytest.param(sample, method, params, id=f"{sample}-{case_id}")
    for sample in ("shapes_vgg", "shapes_resnet", "digits_mlp")
    for (method, params), case_id in zip(SAMPLE_CASES, CASE_IDS)
    if not (method == "gradcam" and sample == "digits_mlp")
]


@pytest.mark.parametrize("sample,method,params", SAMPLE_GRID)
def test_export_equals_attribute_on_samples(samples, sample, method, params, tmp_path):
    check_export(samples[sample], method, params, tmp_path)


def test_a_full_pathway_reproduces_the_logit(samples, tmp_path):
    """alpha=0 keeps every unit pathwise scores above 0: all of them, so the exported W·x + b
    is the model's logit (completeness), within 1e-4."""
    model = samples["shapes_resnet"]
    session = onnxruntime.InferenceSession(
        pathonnx.export(model, "pathwise", alpha=0.0).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    x = rand(4, *model.input_shape, seed=11)
    logits, w, b, kept = session.run(["logits", "W", "b", "units_kept"], {model.input_name: x})
    assert (kept == [[g.units for g in model.gates[::-1]]]).all()
    top = logits.max(axis=1)
    linear = (w.astype(np.float64) * x).reshape(len(x), -1).sum(1) + b
    np.testing.assert_allclose(linear, top, rtol=1e-4, atol=1e-4 * np.abs(logits).max())


#: Zoo rows that bring what the samples lack: Clip gates (ReLU6), LeakyRelu/PRelu, dense
#: concatenation, overlapping and disjoint max-pools (ScatterElements, MaxUnpool).
ZOO = ["mobilenetv2", "leaky_prelu", "densenet", "inception", "ceil_pool"]
ZOO_CASES = [
    ("saliency", {}),
    ("guided_backprop", {}),
    ("integrated_gradients", {"steps": 8}),
    ("smoothgrad", {"samples": 3}),
    ("gradcam", {}),
    ("mct", {"sparsity": 0.8}),
    ("pathwise", {"width": "20%"}),
]


@pytest.mark.parametrize("arch", ZOO)
def test_export_equals_attribute_on_zoo(exported, arch, tmp_path):
    path, _ = exported(arch)
    model = pathonnx.load(path, device="cpu")
    for method, params in ZOO_CASES:
        folder = tmp_path / method
        folder.mkdir()
        check_export(model, method, params, folder, seed=3)


def test_exported_graph_is_self_contained_and_described(samples):
    model = samples["digits_mlp"]
    exported = pathonnx.export(model, "integrated_gradients", steps=7)
    onnx.checker.check_model(exported, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in exported.graph.initializer)
    assert [i.name for i in exported.graph.input] == [model.input_name, "target"]
    assert [o.name for o in exported.graph.output] == ["logits", "attribution"]
    # the model's IR version raised to what opset 17 needs, not the newest the onnx package
    # writes, which older runtimes (onnxruntime-node 1.30: IR ≤ 13) refuse to load
    assert exported.ir_version == max(8, model.graph.proto.ir_version) < onnx.IR_VERSION
    (default,) = [t for t in exported.graph.initializer if t.name == "target"]
    assert list(default.dims) == [0]  # empty: the argmax
    meta = {p.key: p.value for p in exported.metadata_props}
    assert meta["pathonnx.export.method"] == "integrated_gradients"
    assert json.loads(meta["pathonnx.export.params"]) == {"steps": 7, "batch": 16}
    assert meta["pathonnx.export.source_sha256"] == model.sha256()
    assert meta["pathonnx.version"] == pathonnx.__version__
    assert meta["pathonnx.labels"] == model.metadata["pathonnx.labels"]  # the source's kept


def test_a_target_of_the_wrong_length_fails_at_run_time(samples):
    model = samples["digits_mlp"]
    session = onnxruntime.InferenceSession(
        pathonnx.export(model, "saliency").SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    x = rand(3, *model.input_shape)
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.Fail):
        session.run(None, {model.input_name: x, "target": np.array([1], np.int64)})


def test_exportable_methods_come_from_the_registry():
    names = pathonnx.exportable_methods()
    assert names == [m.name for m in pathonnx.METHODS.values() if m.exportable]
    assert {"saliency", "input_x_gradient", "guided_backprop", "deconvnet", "gradcam",
            "integrated_gradients", "smoothgrad", "mct", "pathwise"} <= set(names)  # fmt: skip
    assert "intgrad" not in names
    with pytest.raises(pathonnx.InputError, match="cannot be exported.*export one of pathwise"):
        pathonnx.export(SAMPLES / "digits_mlp.onnx", "intgrad")
    with pytest.raises(pathonnx.InputError, match="unknown method 'nope'; export one of"):
        pathonnx.export(SAMPLES / "digits_mlp.onnx", "nope")
    with pytest.raises(pathonnx.InputError, match="steps"):
        pathonnx.export(SAMPLES / "digits_mlp.onnx", "integrated_gradients", steps=0)


# -- the command line --------------------------------------------------------------------------


def test_cli_export_writes_the_graph(tmp_path):
    out = tmp_path / "ig.onnx"
    result = invoke("export", SAMPLES / "digits_mlp.onnx", "-o", out,
                    "--method", "integrated_gradients", "-p", "steps=5", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"] == {"steps": 5}
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert json.loads(meta["pathonnx.export.params"])["steps"] == 5


def test_cli_export_help_lists_the_exportable_methods():
    result = invoke("export", "--help")
    assert result.exit_code == 0
    listed = result.output.split("Exportable methods")[1]
    for name in pathonnx.exportable_methods():
        assert name in listed
    assert "intgrad" not in listed


def _sigmoid_model(folder: Path) -> Path:
    model = make_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {
            h = MatMul(x, w)
            s = Sigmoid(h)
            y = Relu(s)
        }""",
        w=rand(4, 3),
    )
    path = folder / "sigmoid.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "case,code,words",
    [
        ("intgrad", 2, "method 'intgrad' cannot be exported"),
        ("no_spatial_gate", 2, "Grad-CAM needs a gate with spatial axes"),
        ("unknown", 2, "unknown method 'unknown'"),
        ("bad_param", 2, "steps"),
        ("unsupported", 1, "Sigmoid"),
        ("over_input", 2, "would overwrite the input"),
    ],
)
def test_cli_export_bad_input(tmp_path, case, code, words):
    model = SAMPLES / "digits_mlp.onnx"
    out, method, extra = tmp_path / "out.onnx", case, []
    if case == "bad_param":
        method, extra = "integrated_gradients", ["-p", "steps=0"]
    elif case == "no_spatial_gate":
        method = "gradcam"
    elif case == "unsupported":
        model, method = _sigmoid_model(tmp_path), "saliency"
    elif case == "over_input":
        copy = tmp_path / "model.onnx"
        copy.write_bytes(model.read_bytes())
        model, out, method, extra = copy, copy, "saliency", ["--force"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = invoke("export", model, "-o", out, "--method", method, *extra)
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pathonnx: error:") and words in lines[0]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_export_past_the_memory_budget_is_refused_with_what_to_pass(samples, monkeypatch):
    model = samples["shapes_vgg"]

    def needed(**params) -> int:
        meta = {p.key: p.value for p in pathonnx.export(model, "pathwise", **params).metadata_props}
        return int(meta["pathonnx.export.bytes_per_sample"])

    need, fewer = needed(), needed(classes=2)
    assert 0 < fewer < need  # 3 rows instead of 6
    monkeypatch.setenv("PATHONNX_MEMORY_BUDGET", str(need - 1))
    with pytest.raises(pathonnx.InputError, match=r"pathwise .* per sample .* -p classes=20"):
        pathonnx.export(model, "pathwise")
    pathonnx.export(model, "pathwise", classes=2)  # within the budget
