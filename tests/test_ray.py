"""`explain` and `evaluate` on Ray (pathonnx.distributed): the same records as the serial run,
resumed after an interruption, through a killed worker, over several nodes; and the errors.

These need the extra ``pathonnx[ray]`` (ray[data], pyarrow). Without it they are skipped, and
the reason is given; with ``PATHONNX_REQUIRE_RAY=1`` (which ``.ci/run`` sets) they fail
instead, so CI never passes without them. The missing-extra and bad-address errors are
tested either way. Ray runs here on a local instance of 2 CPUs (and one test on a cluster of
three nodes on this machine), over the shipped eval set.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import pathonnx
from pathonnx import distributed
from pathonnx.errors import InputError
from pathonnx.evaluation.evaluate import Settings, evaluate
from pathonnx.explanation import image_preprocess
from pathonnx.images import collect, load_inputs
from pathonnx.io import read_arrays
from pathonnx_cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
MODEL = SAMPLES / "shapes_vgg.onnx"
EVAL = SAMPLES / "eval"
METHODS = ["pathwise", "saliency", "gradcam"]
#: Every metric group, with short curves and a 2-layer MPRT cascade, to keep it quick.
SETTINGS = {"steps": 8, "mprt_layers": 2, "batch": 16}  # 4 inputs per Ray batch
CLI_SETTINGS = ["--steps", "8", "--mprt-layers", "2", "--batch", "16"]


def required() -> bool:
    """Whether missing Ray fails the tests that need it instead of skipping them (CI)."""
    return os.environ.get("PATHONNX_REQUIRE_RAY") == "1"


def _missing() -> str | None:
    try:
        import pyarrow.parquet  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as err:
        return f"{err.name} is not installed: pip install 'pathonnx[ray]'"
    return None


def _need_ray() -> None:
    reason = _missing()
    if reason is not None:
        if required():
            pytest.fail(reason + " [PATHONNX_REQUIRE_RAY=1]")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance of 2 CPUs for this module's runs (shut down by the cluster test,
    or at the end)."""
    _need_ray()
    import ray

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data():
    """The driver's model and the eval set as the CLI reads it (the same source names)."""
    model = pathonnx.load(MODEL, device="cpu")
    pre = image_preprocess(model)
    loaded = [s for f in collect([str(EVAL)]) for s in load_inputs(f, pre, model.input_shape)]
    return model, loaded, read_arrays(EVAL / "masks.npz", "the masks")


@pytest.fixture(scope="module")
def serial(data):
    model, loaded, masks = data
    return evaluate(model, loaded, METHODS, None, Settings(**SETTINGS), masks)


def _spec():
    return distributed.ModelSpec(str(MODEL), device="cpu")


def _run(data, out, progress=None, ray_settings=None):
    model, loaded, masks = data
    return distributed.evaluate(_spec(), loaded, METHODS, None, Settings(**SETTINGS), masks,
                                out=out, ray=ray_settings, progress=progress,
                                driver_model=model)  # fmt: skip


def _same_records(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.keys() == b.keys(), a.keys() ^ b.keys()
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (b["input"], key)
            elif isinstance(value, list):
                np.testing.assert_allclose(np.array(a[key], float), np.array(value, float),
                                           rtol=1e-5, atol=1e-7, err_msg=key)  # fmt: skip
            else:
                assert a[key] == value, (b["input"], key)


def _rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out / distributed.RECORDS).to_pylist()


def _parts(out: Path) -> list[Path]:
    return sorted((out / distributed.RECORDS).glob("part-*.parquet"))


class Counter:
    """A progress callback: the first call (already recorded), then the batches."""

    def __init__(self, then=None):
        self.calls: list[int] = []
        self.then = then

    def __call__(self, n):
        self.calls.append(n)
        if self.then is not None and len(self.calls) >= 2:
            then, self.then = self.then, None
            then()


# -- without Ray, and bad addresses --------------------------------------------------------------


def test_without_the_extra_ray_is_one_line_naming_it(monkeypatch, tmp_path, data):
    for name in ("ray", "ray.data", "pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)  # `import ray` raises ImportError
    for command in (["evaluate", str(MODEL), str(EVAL), "--limit", "2"],
                    ["explain", str(MODEL), str(EVAL / "eval_001_triangle.png")]):  # fmt: skip
        out = tmp_path / command[0]
        result = CliRunner().invoke(main, [*command, "-o", str(out), "--ray"])
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and "pip install 'pathonnx[ray]'" in result.stderr
        assert not out.exists()
    model, loaded, _ = data
    with pytest.raises(InputError, match=r"pip install 'pathonnx\[ray\]'"):
        distributed.evaluate(_spec(), loaded[:1], ["saliency"], out=tmp_path / "api")


@pytest.mark.parametrize("address", ["nowhere", "ray://", "host:0", "host:99999", "a b:1"])
def test_a_bad_address_is_refused_before_any_work(address, tmp_path):
    with pytest.raises(InputError, match="not a Ray address"):
        distributed.RaySettings(address)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["evaluate", str(MODEL), str(EVAL), "-o", str(out), "--ray", address]
    )
    assert result.exit_code == 2 and "not a Ray address" in result.stderr
    assert result.stderr.count("\n") == 1 and not out.exists()


def test_settings_of_ray_need_ray(tmp_path):
    result = CliRunner().invoke(main, ["explain", str(MODEL), "-o", str(tmp_path),
                                       "--ray-workers", "2"])  # fmt: skip
    assert result.exit_code == 2 and "add --ray" in result.stderr


def test_an_unreachable_cluster_is_one_line(tmp_path):
    """In a process of its own: this module's Ray instance is not the one asked for."""
    _need_ray()
    import socket

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pathonnx_cli.main", "evaluate", str(MODEL), str(EVAL),
               "--limit", "2", "-o", str(out), "--ray", f"127.0.0.1:{port}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "cannot reach the Ray cluster" in done.stderr
    assert not (out / distributed.RECORDS).exists()


# -- on a local instance ---------------------------------------------------------------------------


def test_evaluate_on_ray_records_equal_the_serial_ones(ray_local, data, serial, tmp_path):
    model, loaded, _ = data
    out = tmp_path / "out"
    progress = Counter()
    results = _run(data, out, progress)
    _same_records(results.records, serial.records)
    _same_summary(results.summary(), serial.summary())
    total = len(loaded) * len(METHODS)
    assert progress.calls[0] == 0 and sum(progress.calls) == total
    rows = _rows(out)
    assert len(rows) == total and len({r["key"] for r in rows}) == total
    assert {r["model_sha256"] for r in rows} == {model.sha256()}
    first = next(r for r in rows if r["input"] == loaded[0].source)
    assert first["input_sha256"] == distributed.runs.input_sha256(loaded[0])
    assert all(r["seconds"] > 0 and r["worker"] for r in rows)
    pathwise = [r for r in rows if r["method"] == "pathwise"]
    assert all(r["units"] for r in pathwise) and all(r["insertion"] is not None for r in rows)
    # The CLI on the same folder: every row is there already; the tables come from them.
    args = ["evaluate", str(MODEL), str(EVAL), "-o", str(out), "--methods", ",".join(METHODS),
            "--device", "cpu", *CLI_SETTINGS, "--ray", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ray"]["measured"] == 0 and report["ray"]["reused"] == total
    _same_summary(report["summary"], serial.summary())
    assert len(_rows(out)) == total


def _same_summary(got: dict, want: dict) -> None:
    for method, row in want.items():
        for column, s in row.items():
            assert got[method][column]["n"] == s["n"], (method, column)
            for key in ("mean", "ci95"):
                if s[key] is None:
                    assert got[method][column][key] is None, (method, column, key)
                else:
                    assert got[method][column][key] == pytest.approx(s[key], rel=1e-5, abs=1e-7)


def test_an_interrupted_run_resumes_with_what_is_missing(ray_local, data, serial, tmp_path):
    out = tmp_path / "out"

    def interrupt():
        raise KeyboardInterrupt  # Ctrl-C once the first batch is written

    with pytest.raises(KeyboardInterrupt):
        _run(data, out, Counter(then=interrupt))
    kept = len(_rows(out))
    total = len(serial.records)
    assert 0 < kept < total
    (out / distributed.RECORDS / "part-torn.parquet").write_bytes(b"PAR1 not whole")
    progress = Counter()
    results = _run(data, out, progress)
    assert progress.calls[0] == kept and sum(progress.calls[1:]) == total - kept
    rows = _rows_readable(out)
    assert len(rows) == total and len({r["key"] for r in rows}) == total
    _same_records(results.records, serial.records)


def _rows_readable(out: Path) -> list[dict]:
    """The rows of every readable part (a torn one is passed over, as the run does)."""
    import pyarrow.parquet as pq

    rows = []
    for part in _parts(out):
        try:
            rows += pq.read_table(part).to_pylist()
        except Exception:
            continue
    return rows


def test_a_killed_worker_costs_only_its_batch(ray_local, data, serial, tmp_path):
    out = tmp_path / "out"
    killed = {}

    def kill():
        # the worker that wrote the first batch is computing its next one: kill its process
        killed["pid"] = int(_rows(out)[0]["worker"].rsplit(":", 1)[1])
        os.kill(killed["pid"], signal.SIGKILL)

    progress = Counter(then=kill)
    results = _run(data, out, progress)
    assert killed, "the run ended before a worker could be killed"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)  # it is gone
    total = len(serial.records)
    # Ray retried the dead worker's batches elsewhere; each batch reached the driver once
    assert progress.calls[0] == 0 and sum(progress.calls[1:]) == total
    rows = _rows(out)
    assert len(rows) == total and len({r["key"] for r in rows}) == total  # none missing, none twice
    _same_records(results.records, serial.records)


def test_a_worker_error_reaches_the_driver_as_its_one_line(ray_local, data, tmp_path):
    """A worker whose model is not the driver's (here: the driver's copy of another file)
    fails its batches; the driver raises that pathonnx error, not Ray's wrapping of it."""
    model, loaded, _ = data
    other = distributed.ModelSpec(str(SAMPLES / "shapes_resnet.onnx"), device="cpu")
    with pytest.raises(InputError, match="is not the driver's") as caught:
        distributed.evaluate(other, loaded[:4], ["saliency"], ["insertion"],
                             Settings(steps=4), out=tmp_path, driver_model=model)  # fmt: skip
    assert "\n" not in str(caught.value)
    assert not list((tmp_path / distributed.RECORDS).glob("part-*"))


def test_explain_on_ray_writes_what_serial_explain_writes(ray_local, tmp_path):
    args = ["explain", str(MODEL), str(EVAL), "--device", "cpu", "--compare", "saliency",
            "--batch", "8"]  # fmt: skip
    serial_out, ray_out = tmp_path / "serial", tmp_path / "ray"
    assert CliRunner().invoke(main, [*args, "-o", str(serial_out)]).exit_code == 0
    result = CliRunner().invoke(main, [*args, "-o", str(ray_out), "--ray"])
    assert result.exit_code == 0, result.output
    assert "60 explanations" in result.stdout
    import pyarrow.parquet as pq

    index = pq.read_table(ray_out / distributed.INDEX).to_pylist()
    assert len(index) == 60 and len({r["key"] for r in index}) == 60
    for row in index:
        want = json.loads((serial_out / row["json"]).read_text())
        got = json.loads((ray_out / row["json"]).read_text())
        want.pop("timings_s"), got.pop("timings_s")
        _close(got, want, row["json"])
        assert row["prediction"] == want["prediction"]["index"]
        with np.load(serial_out / row["npz"]) as a, np.load(ray_out / row["npz"]) as b:
            assert sorted(a.files) == sorted(b.files)
            for name in a.files:
                np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-7)
        assert (ray_out / row["png"]).stat().st_size > 1000
    assert (ray_out / "index.html").is_file()
    again = CliRunner().invoke(main, [*args, "-o", str(ray_out), "--ray", "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["explained"] == 0 and summary["reused"] == 60


def _close(got, want, where: str) -> None:
    """JSON values equal, numbers to float32 round-off."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            _close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), where
    else:
        assert got == want, where


# -- several nodes ---------------------------------------------------------------------------------


def test_work_spreads_over_the_nodes_of_a_cluster(ray_local, data, tmp_path):
    """A head without CPUs and two nodes of one CPU each, on this machine; the run joins it by
    its address, as `--ray HOST:PORT` does, and each node's worker takes batches."""
    import ray.data
    from ray.cluster_utils import Cluster

    ray_local.shutdown()  # this module's instance: the run must join the cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    context = ray.data.DataContext.get_current()
    waited = context.wait_for_min_actors_s
    # the batches start once both workers are up: else the first could take them all while
    # the other is still loading its model, and "spreads" would depend on timing
    context.wait_for_min_actors_s = 120
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        model, loaded, _ = data
        out = tmp_path / "out"
        settings = Settings(steps=8, batch=8)
        results = distributed.evaluate(
            _spec(), loaded[:24], ["saliency"], ["insertion", "deletion"], settings,
            out=out, ray=distributed.RaySettings(cluster.address), driver_model=model,
        )  # fmt: skip
        assert len(results.records) == 24
        rows = _rows(out)
        assert len(rows) == 24 and len({r["node"] for r in rows}) == 2
        assert not ray.is_initialized()  # the run left the cluster when it was done
    finally:
        context.wait_for_min_actors_s = waited
        cluster.shutdown()


def test_the_large_data_sets_python_example_runs(monkeypatch):
    """docs/large-data-sets.md's Python example, run as written from the repository root."""
    _need_ray()
    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "large-data-sets.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    monkeypatch.chdir(root)
    exec(compile(block, "docs/large-data-sets.md[python]", "exec"), {"__name__": "doc"})
