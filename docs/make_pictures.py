"""Regenerate the README's pictures with the README's own `pathonnx explain` commands.

    python docs/make_pictures.py

Each command runs as written, in a scratch folder that links the shipped ``sample_models/``, and
its PNG is copied to ``docs/images/<name>``. tests/test_readme.py checks that these commands are
the ones the README shows, and that they run.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = {
    "explain_default.png": "pathonnx explain",
    "explain_paths.png": (
        "pathonnx explain sample_models/shapes_vgg.onnx "
        "sample_models/images/shapes_007_circle+star.png --paths 3 "
        "--compare saliency,integrated_gradients,gradcam"
    ),
    "explain_other_class.png": (
        "pathonnx explain sample_models/shapes_resnet.onnx "
        "sample_models/images/shapes_008_ring+triangle.png --target triangle --width 5%"
    ),
}


def run(command: str, folder: Path) -> Path:
    """Run one README command in ``folder``; return the PNG it wrote."""
    import os

    from pathonnx_cli.main import main

    args = shlex.split(command)
    assert args[:2] == ["pathonnx", "explain"], command
    here = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(main, args[1:])
    finally:
        os.chdir(here)
    if result.exit_code != 0:
        raise RuntimeError(f"{command!r} failed: {result.output}")
    (png,) = [p for p in (folder / "pathonnx-out").glob("*.png")]
    return png


def scratch() -> tempfile.TemporaryDirectory:
    tmp = tempfile.TemporaryDirectory()
    (Path(tmp.name) / "sample_models").symlink_to(ROOT / "sample_models")
    return tmp


def main() -> None:
    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    for name, command in COMMANDS.items():
        with scratch() as tmp:
            shutil.copy(run(command, Path(tmp)), out / name)
        print(f"{command}\n  -> docs/images/{name}", file=sys.stderr)


if __name__ == "__main__":
    main()
