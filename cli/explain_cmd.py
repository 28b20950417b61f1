"""`pathonnx explain`: read inputs, call :func:`pathonnx.explain.explain_loaded`, write results."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

import pathonnx
from pathonnx.attribution import METHODS
from pathonnx.errors import InputError
from pathonnx.explanation import explain_loaded, image_preprocess, output_stem
from pathonnx.images import PRESETS, collect, load_inputs
from pathonnx.io import atomic_write_bytes
from pathonnx.pictures import index_html

SAMPLES = Path(pathonnx.__file__).resolve().parent.parent / "sample_models"


def default_sample(model: str | None) -> tuple[str, list[str], str]:
    """(model, images, note) for the shipped samples: the default pair with no MODEL, or the
    first shipped image of a shipped MODEL given without images."""
    try:
        index = json.loads((SAMPLES / "index.json").read_text())
        images = json.loads((SAMPLES / "images" / "index.json").read_text())["images"]
    except (OSError, ValueError, KeyError):
        raise InputError(
            "no MODEL/IMAGE given and the shipped samples are not here (install pathonnx from "
            "its repository with pip install -e .); give a model and an image"
        ) from None
    if model is None:
        chosen = _rel(str(SAMPLES / index["default"]["model"]))
        image = _rel(str(SAMPLES / index["default"]["image"]))
        return chosen, [image], f"explaining the shipped default sample {image} with {chosen}"
    name = Path(model).name
    mine = [k for k, v in images.items() if v["model"] == name]
    if not mine or Path(model).resolve().parent != SAMPLES:
        raise InputError(f"no IMAGE given for {model}; give image files, folders or .npy arrays")
    image = _rel(str(SAMPLES / "images" / mine[0]))
    return model, [image], f"no IMAGE given: explaining the shipped sample {image}"


def _rel(path: str) -> str:
    """The path relative to the working folder when it lies inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def param_value(text: str):
    """A ``-p name=value`` value: JSON when it parses (numbers, null, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _size(text):
    if text is None:
        return None
    try:
        dims = [int(v) for v in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise InputError(f"--size {text!r} is not a size like 224x224 (or 224)") from None
    return dims * 2 if len(dims) == 1 else dims


def _width(text):
    if text is None or text.strip().endswith("%"):
        return text
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--width {text!r} must be a count like 64 or a share like 5%") from None


def cli_preprocess(model, opts: dict, files: list[Path]):
    """The preprocessing the flags ask for (None when every input is a .npy array)."""
    if all(f.suffix.lower() == ".npy" for f in files):
        return None
    given = {
        "size": _size(opts["size"]), "mean": opts["mean"], "std": opts["std"],
        "scale": opts["scale"], "layout": opts["layout"] and opts["layout"].upper(),
        "color": opts["color"], "resize": "shorter" if opts["crop"] else opts["resize"],
    }  # fmt: skip
    return image_preprocess(model, opts["preset"], **given)


def read_inputs(model, opts: dict, files: list[Path]):
    """(preprocessing, the inputs of every file) as the preprocessing flags ask."""
    pre = cli_preprocess(model, opts, files)
    loaded = [
        item
        for path in files
        for item in load_inputs(path, pre, model.input_shape, opts["grey_to_rgb"])
    ]
    return pre, loaded


def check_out_dir(out: Path, sources: list[str], files: list[Path]) -> None:
    """--out must be a writable folder (made if missing) where no output replaces an input."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    inputs = {f.resolve() for f in files}
    for source in sources:
        stem = output_stem(source)
        for suffix in (".png", ".json", ".npz", ".html"):
            target = (out / (stem + suffix)).resolve()
            if target in inputs:
                raise InputError(
                    f"--out {out} would overwrite the input {target.name}; choose another folder"
                )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise InputError(
            f"cannot write to --out {out} ({err.strerror or err}); choose a writable folder"
        ) from None


def run_explain(model, images, **opts) -> None:
    notes = []
    if model is None or not images:
        model, images, note = default_sample(model)
        notes.append(note)
    method = opts["method"]
    params = {}
    for key in ("depth", "width", "alpha", "classes", "sparsity", "steps"):
        value = opts[key] if key != "width" else _width(opts[key])
        if value is not None:
            params[key] = value
    for item in opts["param"]:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--param {item!r} must look like name=value")
        params[key] = param_value(value)
    compare = [c.strip() for c in (opts["compare"] or "").split(",") if c.strip()]
    out = Path(opts["out"])
    files = collect(images)
    loaded_model = pathonnx.load(model, opts["input_shape"], opts["device"])
    pre, loaded = read_inputs(loaded_model, opts, files)
    if pre is not None:
        notes += list(pre.notes)
    check_out_dir(out, [item.source for item in loaded], files)
    k = loaded_model.num_outputs
    if "pathwise" in (method, *compare) and k >= 100 and opts["classes"] is None:
        notes.append(
            f"exact pathwise carries all {k} classes down the network, which takes minutes on a "
            "CPU for a large model; --classes 20 approximates it with the top 20"
        )
    for note in notes:
        click.echo(f"note: {note}", err=True)
    batch = max(1, opts["batch"])
    chunks = [loaded[i : i + batch] for i in range(0, len(loaded), batch)]
    show = len(loaded) > 1 and not opts["as_json"] and sys.stderr.isatty()

    def work(chunk):
        return explain_loaded(
            loaded_model, chunk, method, opts["target"], opts["paths"], compare, pre,
            opts["labels"], batch, **params,
        )  # fmt: skip

    results = []
    bar = click.progressbar(length=len(loaded), label="explaining", file=sys.stderr)
    with bar if show else contextlib.nullcontext(bar):
        if opts["workers"] > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(opts["workers"]) as pool:
                for done in pool.map(work, chunks):
                    results += done
                    if show:
                        bar.update(len(done))
        else:
            for chunk in chunks:
                results += work(chunk)
                if show:
                    bar.update(len(chunk))
    names, rows = set(), []
    for expl in results:
        stem = expl.stem
        while stem in names:  # the same name from two folders
            stem += "_"
        names.add(stem)
        written = expl.save(out, stem)
        rows.append(_row(expl, written[0].name))
        if not opts["as_json"]:
            click.echo(_summary(expl, written[0]))
    if len(results) > 1:
        atomic_write_bytes(out / "index.html", index_html(rows).encode())
        if not opts["as_json"]:
            click.echo(f"{len(results)} explanations; overview: {out / 'index.html'}")
    if opts["as_json"]:
        data = [json.loads(e.to_json()) for e in results]
        click.echo(json.dumps(data[0] if len(data) == 1 else data, indent=2))


def _row(expl, png: str) -> dict:
    p = expl.probabilities
    share = expl.pathway.logit_share if expl.pathway is not None else None
    return {
        "png": png, "input": expl.source, "prediction": expl.label(expl.prediction),
        "probability": float(p[expl.prediction]), "target": expl.label(expl.target),
        "method": expl.method, "share": share, "error": expl.completeness_error,
    }  # fmt: skip


def _summary(expl, png: Path) -> str:
    p = expl.probabilities
    text = (
        f"{expl.source}: predicted {expl.label(expl.prediction)} ({100 * p[expl.prediction]:.1f}%)"
        f"; {expl.method} explains {expl.label(expl.target)}"
    )
    if expl.pathway is not None:
        kept = sum(expl.pathway.units_kept.values())
        text += (
            f": {kept} units over {len(expl.pathway.units_kept)} gates, path logit "
            f"{expl.pathway.wx + expl.pathway.bias:.3g} of {float(expl.logits[expl.target]):.3g}"
        )
    for i, path in enumerate(expl.paths):
        text += f"\n  path {i + 1}: {100 * path.logit_share:.0f}% of the logit"
    return text + f"\n  exact-model error {expl.completeness_error:.1e} -> {png}"


def apply_options(func, options):
    """Decorate ``func`` with click ``options``, listed in --help in the given order."""
    for option in reversed(options):
        func = option(func)
    return func


def preprocess_options(func):
    """Preprocessing flags, shared by `explain` and `evaluate`."""
    return apply_options(func, [
        click.option("--preset", type=click.Choice(list(PRESETS)),
                     help="Preprocessing preset (flags below override its fields)."),
        click.option("--size", help="Resize images to HxW (e.g. 224x224)."),
        click.option("--resize", type=click.Choice(["stretch", "shorter"]),
                     help="How to reach --size: stretch, or scale the shorter side and crop."),
        click.option("--crop", is_flag=True, help="Same as --resize shorter (center crop)."),
        click.option("--mean", help="Per-channel mean, after --scale (e.g. 0.485,0.456,0.406)."),
        click.option("--std", help="Per-channel std (e.g. 0.229,0.224,0.225)."),
        click.option("--scale", type=float, help="Multiplies 0..255 pixels first (1/255)."),
        click.option("--layout", type=click.Choice(["nchw", "nhwc"], case_sensitive=False)),
        click.option("--color", type=click.Choice(["grey", "rgb", "bgr"]),
                     help="Channel order the model expects."),
        click.option("--grey-to-rgb", is_flag=True, help="Repeat grey images on 3 channels."),
        click.option("--labels", type=click.Path(dir_okay=False),
                     help="Class names: one per line, or a JSON list."),
    ])  # fmt: skip


def explain_options(func):
    """The options of `pathonnx explain`, in the order --help lists them."""
    func = apply_options(func, [
        click.option("--batch", type=int, default=16, show_default=True,
                     help="Inputs per onnxruntime call."),
        click.option("--workers", type=int, default=1, show_default=True,
                     help="Batches explained in parallel (threads)."),
    ])  # fmt: skip
    func = preprocess_options(func)
    return apply_options(func, [
        click.option("--method", type=click.Choice(sorted(METHODS)), default="pathwise",
                     show_default=True, help="Attribution or pathway method."),
        click.option("--depth", type=int, help="pathwise: gates from the top to select in."),
        click.option("--width", help="pathwise: max units per gate, a count or a share (5%)."),
        click.option("--alpha", type=float, help="pathwise: importance threshold (default 1/K)."),
        click.option("--classes", type=int,
                     help="pathwise: softmax over the top N logits + the target, not all K "
                          "(an approximation; faster for many classes)."),
        click.option("--sparsity", type=float, help="mct/intgrad: share of units removed."),
        click.option("--steps", type=int, help="intgrad/integrated_gradients: steps."),
        click.option("-p", "--param", multiple=True, help="Any other method parameter, k=v."),
        click.option("--paths", type=int, help="Decompose the pathwise pathway into M paths."),
        click.option("--target", help="Class to explain: index or label (default: predicted)."),
        click.option("--compare", help="Baselines side by side, e.g. saliency,gradcam."),
        click.option("-o", "--out", default="pathonnx-out", show_default=True,
                     help="Folder for PNG, JSON, NPZ, HTML."),
        click.option("--json", "as_json", is_flag=True, help="Also print the report as JSON."),
    ])  # fmt: skip
