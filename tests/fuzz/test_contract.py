"""The fuzz suite's judge on made-up observations: each clause fires, and only when it should."""

from __future__ import annotations

import pytest

from fuzz.contract import Run, judge, strict_json_error

ERROR = "pathonnx: error: x.png: cannot decode the image; give a PNG\n"


def observation(**changed) -> dict:
    return {"exit_code": 2, "stdout": "", "stderr": ERROR, "native": "", **changed}


def clauses(run: Run, **changed) -> set[str]:
    return {clause for clause, _ in judge(run, observation(**changed)).broken}


BAD = Run(("explain", "m.onnx", "x.png"), (2,))


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        ({}, set()),
        ({"exit_code": 1}, {"exit-code"}),
        ({"stderr": "pathonnx: internal error: KeyError: 3; run with --debug\n", "exit_code": 1},
         {"exit-code", "internal-error"}),
        ({"stderr": "Usage: pathonnx explain\nTry --help\nError: no such option\n"},
         {"stderr-lines"}),
        ({"stderr": "note: resized\n" + ERROR}, set()),
        ({"stderr": "a.py:3: RuntimeWarning: overflow\n  x = y\n" + ERROR},
         {"warnings", "stderr-lines"}),
        ({"native": "[W:onnxruntime:, graph.cc:1] removing initializer\n"}, {"warnings"}),
        ({"stdout": "[C] Unsupported type: 0\n"}, {"warnings"}),
        ({"stderr": "Traceback (most recent call last):\nKeyError: 3\n"},
         {"traceback", "stderr-lines"}),
        ({"stderr": "pathonnx: internal error: MemoryError: ; run with --debug\n"},
         {"internal-error", "memory"}),
        ({"peak_rss": 3 << 30}, {"memory"}),
        ({"inputs_changed": [("labels.txt", "changed")]}, {"input-changed"}),
        ({"outside": [("home/.cache/x", "created")]}, {"wrote-outside-out"}),
        ({"json_errors": [("stdout", "non-standard token NaN")]}, {"json"}),
        ({"api_error": "builtins.KeyError: 3"}, {"api-error"}),
        ({"hang": "still running after 20 s"}, {"hang"}),
        ({"crash": "the process died (signal 9)"}, {"crash"}),
    ],
)  # fmt: skip
def test_each_clause(changed, expected):
    assert clauses(BAD, **changed) == expected


def test_check_may_report_on_stdout_and_debug_may_show_a_traceback():
    check = Run(("check", "m.onnx"), (2,))
    assert clauses(check, stderr="", stdout="m.onnx: cannot be read: truncated\n") == set()
    debug = Run(("--debug", "explain", "m.onnx", "x.png"), (2,), debug=True)
    traceback = "Traceback (most recent call last):\n  ...\nInputError: x\n"
    assert clauses(debug, stderr=traceback) == set()
    assert clauses(debug, stderr=traceback, exit_code=1) == {"exit-code"}


def test_a_control_character_is_not_a_line_break():
    assert clauses(BAD, stderr="pathonnx: error: op 'Gem\x1d' is unknown\n") == set()


def test_strict_json():
    assert strict_json_error('{"a": [1, 2.5, null]}') is None
    for token in ("NaN", "Infinity", "-Infinity"):
        assert "non-standard" in strict_json_error(f'{{"a": {token}}}')
    assert strict_json_error("[C] log line\n[]") is not None
