"""Progress of long runs: the methods report every gate, and the terminal line shows them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import pathonnx
from pathonnx.progress import reporting
from pathonnx_cli.render import StepLine

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


@pytest.fixture(scope="module")
def vgg():
    return pathonnx.load(SAMPLES / "shapes_vgg.onnx", device="cpu")


def heard(run):
    calls = []
    with reporting(lambda task, done, total: calls.append((task, done, total))):
        run()
    return calls


@pytest.mark.parametrize("depth", [None, 2])
def test_the_sweep_reports_every_gate_it_visits(vgg, depth):
    x = np.random.default_rng(0).random((1, *vgg.input_shape), np.float32)
    calls = heard(lambda: pathonnx.pathwise(vgg, x, depth=depth))
    total = len(vgg.gates) if depth is None else depth
    assert [done for _, done, _ in calls] == list(range(total + 1))
    assert {t for _, _, t in calls} == {total}
    assert calls[0][0] == f"pathwise ({vgg.num_outputs} rows): gates"


def test_intgrad_reports_every_gate_and_nothing_leaks_outside(vgg):
    x = np.random.default_rng(1).random((1, *vgg.input_shape), np.float32)
    calls = heard(lambda: pathonnx.attribute(vgg, x, 0, method="intgrad", steps=4))
    assert [done for _, done, _ in calls] == list(range(len(vgg.gates) + 1))
    assert calls[-1][0].startswith("intgrad (4 steps)")
    outside = []
    with reporting(lambda *a: outside.append(a)):
        pass
    pathonnx.attribute(vgg, x, 0, method="intgrad", steps=2)  # no listener any more
    assert outside == []


def test_the_terminal_line_waits_then_counts_then_clears():
    now = [0.0]
    stream = io.StringIO()
    line = StepLine(stream, delay=1.0, clock=lambda: now[0])
    line("pathwise (21 rows): gates", 0, 3)
    now[0] = 0.5
    line("pathwise (21 rows): gates", 1, 3)
    assert stream.getvalue() == ""  # short runs show nothing
    now[0] = 2.0
    line("pathwise (21 rows): gates", 2, 3)
    assert stream.getvalue() == "\rpathwise (21 rows): gates 2/3  2 s"
    line("pathwise (21 rows): gates", 3, 3)
    shown = stream.getvalue()
    assert shown.endswith("\r" + " " * len("pathwise (21 rows): gates 2/3  2 s") + "\r")


def test_paths_carry_the_classes_asked_for(vgg):
    """--paths M honours --classes: every sweep of the explanation, the decomposition's
    included, carries classes + 1 rows, not K."""
    from pathonnx import explain

    x = np.random.default_rng(2).random(vgg.input_shape, np.float32)
    calls = heard(lambda: explain(vgg, x, paths=2, classes=3))
    tasks = {task for task, _, _ in calls}
    assert tasks == {"pathwise (4 rows): gates"}, tasks
    assert sum(done == total for _, done, total in calls) == 2  # the pathway, then the paths
    exact = {task for task, _, _ in heard(lambda: explain(vgg, x, paths=2))}
    assert exact == {f"pathwise ({vgg.num_outputs} rows): gates"}
