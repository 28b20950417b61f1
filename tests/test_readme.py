"""The README's examples run as written (from the repository root)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index, monkeypatch):
    monkeypatch.chdir(ROOT)
    exec(compile(BLOCKS[index], f"README.md[python {index}]", "exec"), {"__name__": "readme"})


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second():
    quick = README.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in quick.splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_check_example_is_what_check_prints(monkeypatch):
    from click.testing import CliRunner

    from pathonnx_cli.main import main

    monkeypatch.chdir(ROOT)
    shown = README.split("$ pathonnx check sample_models/shapes_vgg.onnx\n", 1)[1].split("```")[0]
    result = CliRunner().invoke(main, ["check", "sample_models/shapes_vgg.onnx"])
    assert result.exit_code == 0
    # numbers differ across CPUs in the last digits; the structure must not
    strip = re.compile(r"\d\.\d\de[-+]\d\d|\d\.\de[-+]\d\d")
    assert strip.sub("#", result.stdout.strip()) == strip.sub("#", shown.strip())
