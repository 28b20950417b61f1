"""The README's examples run as written (from the repository root)."""

from __future__ import annotations

import json
import re
import sys
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


SHELL = [  # every `pathonnx explain` command in the README's shell blocks (Quick start too)
    line[line.index("pathonnx explain") :].strip()
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    for line in block.splitlines()
    if "pathonnx explain" in line
]


def test_readme_pictures_come_from_the_readme_commands():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_pictures
    finally:
        sys.path.pop(0)
    assert sorted(make_pictures.COMMANDS.values()) == sorted(SHELL)
    for name in make_pictures.COMMANDS:
        assert f"(docs/images/{name})" in README
        assert (ROOT / "docs" / "images" / name).is_file()


@pytest.mark.parametrize("command", SHELL)
def test_readme_explain_commands_run_as_written(command, tmp_path):
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_pictures
    finally:
        sys.path.pop(0)
    (tmp_path / "sample_models").symlink_to(ROOT / "sample_models")
    png = make_pictures.run(command, tmp_path)
    report = json.loads(png.with_suffix(".json").read_text())
    assert report["completeness_error"] < 1e-5
    if "--target triangle" in command:
        assert report["target"]["label"] == "triangle"


@pytest.mark.parametrize("model", ["shapes_vgg", "shapes_resnet"])
def test_readme_evaluation_tables_are_the_evaluate_output(model):
    # the tables are pasted from `pathonnx evaluate`'s results.md, whose run the README shows
    table = README.split(f"<!-- evaluate:{model} -->\n", 1)[1].split("<!-- /evaluate -->")[0]
    written = (ROOT / "docs" / "evaluation" / model / "results.md").read_text()
    assert table.strip() == written.strip()
    rows = (ROOT / "docs" / "evaluation" / model / "results.csv").read_text().splitlines()[1:]
    insertion = [r.split(",") for r in rows if r.split(",")[1] == "insertion"]
    assert len(insertion) == 10 and all(r[4] == "60" for r in insertion)  # methods, inputs
    assert f"-o docs/evaluation/{model}\n" in README


_EXPORT_BLOCK = README.split("## Export", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
EXPORT_SHELL = [  # the `pathonnx export` commands of the Export section's first shell block
    line.strip() for line in _EXPORT_BLOCK.splitlines() if line.startswith("pathonnx export")
]


def test_readme_export_picture_comes_from_the_readme_commands(tmp_path):
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_pictures
    finally:
        sys.path.pop(0)
    assert make_pictures.EXPORTS == EXPORT_SHELL and len(EXPORT_SHELL) == 4
    assert f"(docs/images/{make_pictures.EXPORT_PICTURE})" in README
    assert (ROOT / "docs" / "images" / make_pictures.EXPORT_PICTURE).is_file()
    (tmp_path / "sample_models").symlink_to(ROOT / "sample_models")
    picture = make_pictures.export_picture(tmp_path)  # the commands run as written
    assert picture.size[0] > 5 * 192
    for command in EXPORT_SHELL:
        assert (tmp_path / command.split(" -o ")[1].split()[0]).is_file()
