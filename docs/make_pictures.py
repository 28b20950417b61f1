"""Regenerate the README's pictures with the README's own `pathonnx explain` and
`pathonnx export` commands.

    python docs/make_pictures.py

Each command runs as written, in a scratch folder that links the shipped ``sample_models/``, and
its PNG is copied to ``docs/images/<name>``. The export picture (:data:`EXPORT_PICTURE`) runs the
README's ``pathonnx export`` commands, then the files they write in a plain onnxruntime session
on :data:`EXPORT_IMAGE`, and draws what those sessions return. tests/test_readme.py checks that
these commands are the ones the README shows, and that they run.
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


EXPORT_PICTURE = "export_sample.png"
EXPORT_IMAGE = "sample_models/images/shapes_007_circle+star.png"
EXPORTS = [
    "pathonnx export sample_models/shapes_vgg.onnx -o vgg_pathwise.onnx --method pathwise",
    "pathonnx export sample_models/shapes_vgg.onnx -o vgg_gradcam.onnx --method gradcam",
    "pathonnx export sample_models/shapes_vgg.onnx -o vgg_mct.onnx --method mct",
    "pathonnx export sample_models/shapes_vgg.onnx -o vgg_ig.onnx --method integrated_gradients",
]


def run_export(command: str, folder: Path) -> Path:
    """Run one README ``pathonnx export`` command in ``folder``; return the file it wrote."""
    args = invoke(command, "export", folder)
    return folder / args[args.index("-o") + 1]


def invoke(command: str, verb: str, folder: Path) -> list[str]:
    """Run the README command ``command`` (``pathonnx <verb> ...``) in ``folder``, as
    written; returns its arguments."""
    import os

    from pathonnx_cli.main import main

    args = shlex.split(command)
    assert args[:2] == ["pathonnx", verb], command
    here = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(main, args[1:])
    finally:
        os.chdir(here)
    if result.exit_code != 0:
        raise RuntimeError(f"{command!r} failed: {result.output}")
    return args


def serve(path: Path, image_path: Path) -> dict:
    """What a server without pathonnx gets from an exported explainer: the image preprocessed
    as the file's metadata says, one onnxruntime run, every output by name."""
    import json

    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pre = json.loads(session.get_modelmeta().custom_metadata_map["pathonnx.preprocess"])
    image = np.asarray(Image.open(image_path).convert("RGB"), np.float32)
    x = (image * np.float32(pre["scale"]) - np.float32(pre["mean"])) / np.float32(pre["std"])
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x})), x=x)


def export_picture(folder: Path):
    """The export picture: the image, then each exported explainer's attribution (the argmax's),
    as onnxruntime alone returned it, with the prediction and the units kept."""
    import json

    import numpy as np
    import onnx
    from PIL import Image, ImageDraw

    from pathonnx.pictures import PANEL, _font, _upscale, heat, overlay

    image = np.asarray(Image.open(folder / EXPORT_IMAGE).convert("RGB"))
    panels, head = [("input", image)], ""
    for command in EXPORTS:
        path = run_export(command, folder)
        out = serve(path, folder / EXPORT_IMAGE)
        meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        labels = json.loads(meta["pathonnx.labels"])
        method = meta["pathonnx.export.method"]
        picture, scale = overlay(image, heat(out["attribution"][0]))
        title = f"{method} (±{scale:.2g})"
        if "units_kept" in out:
            title += f", {int(out['units_kept'][0].sum())} units"
        panels.append((title, picture))
        head = f"predicted {labels[int(out['logits'][0].argmax())]}"
    side = max(PANEL, max(image.shape[:2]))
    scaled = [(t, _upscale(p, side)) for t, p in panels]
    cell, pad, title_h, head_h = max(scaled[0][1].shape[1], 200), 12, 22, 30
    height = max(p.shape[0] for _, p in scaled)
    canvas = Image.new("RGB", (pad + len(scaled) * (cell + pad), head_h + title_h + height + pad),
                       "white")  # fmt: skip
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), f"{EXPORT_IMAGE.split('/')[-1]} · exported explainers run by onnxruntime "
              f"alone · {head}", fill="black", font=_font(15))  # fmt: skip
    x0 = pad
    for title, picture in scaled:
        draw.text((x0, head_h), title, fill="black", font=_font(12))
        canvas.paste(Image.fromarray(picture), (x0, head_h + title_h))
        x0 += cell + pad
    return canvas


def run(command: str, folder: Path) -> Path:
    """Run one README command in ``folder``; return the PNG it wrote."""
    invoke(command, "explain", folder)
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
    with scratch() as tmp:
        export_picture(Path(tmp)).save(out / EXPORT_PICTURE)
    print("\n".join(EXPORTS) + f"\n  -> docs/images/{EXPORT_PICTURE}", file=sys.stderr)


if __name__ == "__main__":
    main()
