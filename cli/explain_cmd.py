"""`pathonnx explain`: read inputs, call :func:`pathonnx.explanation.explain_samples`, write."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

import pathonnx
from pathonnx import distributed
from pathonnx.errors import InputError, one_line
from pathonnx.explanation import Request, explain_samples, output_stems
from pathonnx.images import collect
from pathonnx.io import atomic_write_bytes, json_text, read_text
from pathonnx.methods import METHODS
from pathonnx.pictures import index_html, share_text
from pathonnx.progress import reporting

from .options import (
    apply_options,
    check_out_dir,
    load_model,
    method_params,
    model_spec,
    output_options,
    preprocess_options,
    ray_options,
    ray_settings,
    read_inputs,
    with_method_options,
)
from .render import StepLine, Throughput

SAMPLES = Path(pathonnx.__file__).resolve().parent.parent / "sample_models"


def default_sample(model: str | None) -> tuple[str, list[str], str]:
    """(model, images, note) for the shipped samples: the default pair with no MODEL, or the
    first shipped image of a shipped MODEL given without images."""
    try:
        index = json.loads(read_text(SAMPLES / "index.json", "the samples' index"))
        images = json.loads(read_text(SAMPLES / "images" / "index.json", "the images' index"))
        images = images["images"]
    except (InputError, ValueError, KeyError):
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


def run_explain(model, images, **opts) -> None:
    notes = []
    if model is None or not images:
        model, images, note = default_sample(model)
        notes.append(note)
    method = opts["method"]
    compare = [c.strip() for c in (opts["compare"] or "").split(",") if c.strip()]
    for name in compare:
        if name not in METHODS:
            raise InputError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    params = method_params(opts, [method, *compare], primary=method)
    on_ray = ray_settings(opts)
    if on_ray is not None:
        if opts["workers"] > 1:
            raise InputError("--workers runs threads on this machine; with --ray give "
                             "--ray-workers")  # fmt: skip
        distributed.require()  # before any work: the extra is missing
    out = Path(opts["out"])
    files = collect(images)
    loaded_model = load_model(model, opts)
    skipped: list = []
    pre, loaded = read_inputs(loaded_model, opts, files, skipped)
    if pre is not None:
        notes += list(pre.notes)
    request = Request.make(loaded_model, method, opts["target"], opts["paths"],
                           {name: params[name] for name in compare}, pre, opts["labels"],
                           params[method], opts["exact"])  # fmt: skip
    stems = output_stems([item.source for item in loaded])
    names = [stem + suffix for stem in stems for suffix in (".png", ".json", ".npz")]
    ray_names = [distributed.INDEX] if on_ray is not None else []
    check_out_dir(
        out, names + (["index.html"] if len(loaded) > 1 else []) + ray_names
    )  # after every read
    for note in notes + list(request.notes):
        click.echo(f"note: {one_line(note)}", err=True)
    if on_ray is not None:
        _explain_on_ray(model_spec(model, opts), loaded_model, loaded, request, out, on_ray, opts)
        _report_skipped(skipped, files)
        return
    batch = opts["batch"]
    chunks = [loaded[i : i + batch] for i in range(0, len(loaded), batch)]
    show = len(loaded) > 1 and not opts["as_json"] and sys.stderr.isatty()

    def work(chunk):
        return explain_samples(loaded_model, chunk, request, batch)

    results = []
    bar = click.progressbar(length=len(loaded), label="explaining", file=sys.stderr)
    # one batch: no bar over inputs, but a line over the gates of a long run
    steps = len(chunks) == 1 and not opts["as_json"] and sys.stderr.isatty()
    listening = reporting(StepLine(sys.stderr)) if steps else contextlib.nullcontext()
    with bar if show else contextlib.nullcontext(bar), listening:
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
    rows = []
    for expl, stem in zip(results, output_stems([expl.source for expl in results])):
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
        click.echo(json_text(data[0] if len(data) == 1 else data))
    _report_skipped(skipped, files)


def _report_skipped(skipped: list, files: list) -> None:
    """The inputs that could not be read, one line each, then exit 2 (if any)."""
    if skipped:
        for path, message in skipped:
            shown = message if one_line(path) in message else f"{path}: {message}"
            click.echo(f"skipped: {one_line(shown)}", err=True)
        click.echo(f"error: {len(skipped)} of {len(files)} inputs could not be read (listed "
                   "above); the others were explained", err=True)  # fmt: skip
        sys.exit(2)


def _explain_on_ray(spec, loaded_model, loaded, request, out: Path, on_ray, opts) -> None:
    """`explain --ray`: the inputs explained by Ray workers; files and index.parquet in OUT."""
    show = not opts["as_json"] and sys.stderr.isatty()
    bar = click.progressbar(length=len(loaded), label="explaining", file=sys.stderr,
                            show_pos=True, item_show_func=lambda text: text)  # fmt: skip
    throughput = Throughput(bar if show else None, "inputs")
    with bar if show else contextlib.nullcontext(bar):
        done = distributed.explain(spec, loaded, request, out, on_ray, opts["batch"], throughput,
                                   driver_model=loaded_model)  # fmt: skip
    if opts["as_json"]:
        click.echo(json_text({"inputs": len(done.rows), "explained": done.computed,
                              "reused": done.reused, "index": str(done.index),
                              "rows": done.rows}))  # fmt: skip
        return
    click.echo(throughput.summary(str(done.index)), err=True)
    wrote = f"{len(done.rows)} explanations in {out} (index {done.index}"
    click.echo(wrote + (f", overview {out / 'index.html'})" if len(done.rows) > 1 else ")"))


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
        f"; {expl.method} explains {expl.label(expl.target)}{expl.where}"
    )
    if expl.pathway is not None:
        kept = sum(expl.pathway.units_kept.values())
        text += (
            f": {kept} units over {len(expl.pathway.units_kept)} gates; the pathway's linear "
            f"model W^p·x + b^p = {expl.pathway.wx + expl.pathway.bias:.3g}, the logit "
            f"{float(expl.logits[expl.target]):.3g} ({share_text(expl.pathway.logit_share)})"
        )
    for i, path in enumerate(expl.paths):
        text += f"\n  path {i + 1}: {share_text(path.logit_share)}"
    if expl.pathway is not None and not 0 <= expl.pathway.logit_share <= 1.005:
        text += ("\n  (a pathway drops units: without the ones that lower the logit, its linear "
                 "model can exceed the logit)")  # fmt: skip
    for note in expl.notes:
        if note.startswith("warning"):
            text += f"\n  {note}"
    return text + f"\n  exact-model error {expl.completeness_error:.1e} -> {png}"


def explain_options(func):
    """The options of `pathonnx explain`, in the order --help lists them."""
    own = [
        click.option("--method", type=click.Choice(sorted(METHODS)), default="pathwise",
                     show_default=True, help="Attribution or pathway method (see below)."),
        click.option("--paths", type=click.IntRange(min=1),
                     help="Also decompose the pathway into M paths (pathwise)."),
        click.option("--target", help="Class to explain: index or label (default: predicted)."),
        *output_options(dense=True),
        click.option("--compare", help="Other methods side by side, e.g. saliency,gradcam."),
        click.option("-o", "--out", default="pathonnx-out", show_default=True,
                     help="Folder for PNG, JSON, NPZ, HTML."),
        click.option("--json", "as_json", is_flag=True, help="Also print the report as JSON."),
        click.option("--exact", is_flag=True,
                     help="Exact pathwise over all K classes even where it takes minutes "
                          "(by default a large model with many classes runs --classes 20)."),
        *preprocess_options(),
        click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Inputs per onnxruntime call."),
        click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Batches explained in parallel (threads)."),
        *ray_options(),
    ]  # fmt: skip
    return apply_options(func, with_method_options(own))
