"""`pathonnx class-pathways`: build class pathways from a folder of inputs and write them."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click
import numpy as np

import pathonnx
from pathonnx.errors import InputError
from pathonnx.explanation import model_labels
from pathonnx.images import collect, folder_classes, load_inputs
from pathonnx.io import json_text
from pathonnx.methods import METHODS
from pathonnx.methods.transfer import NAME, THRESHOLD

from . import options

#: The methods whose pathways can be aggregated: every pathway method but class_pathway.
SOURCES = [m.name for m in METHODS.values() if m.kind == "pathway" and m.name != NAME]


def class_pathways_options(func):
    """The options of `pathonnx class-pathways`, in the order --help lists them."""
    own = [
        click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
                     help="Where to write the class pathways (.npz)."),
        click.option("--method", type=click.Choice(SOURCES), default="mct", show_default=True,
                     help="The pathway method whose pathways are aggregated."),
        click.option("--threshold", type=float, default=THRESHOLD, show_default=True,
                     help="Keep a unit in a class pathway when at least this share of the "
                          "class's pathways keep it, in (0, 1]."),
        click.option("--labels-from", type=click.Choice(["auto", "folders", "predictions"]),
                     default="auto", show_default=True,
                     help="Each input's class: the name of its folder (DATA/<class>/...), the "
                          "model's prediction, or auto: folders when every input lies in a "
                          "folder named after a class, else predictions."),
        click.option("--limit", type=click.IntRange(min=1), help="Use only the first N inputs."),
        *options.output_options(dense=True),
        click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input)."),
        click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON."),
        *options.preprocess_options(),
    ]  # fmt: skip
    return options.apply_options(func, options.with_method_options(own))


def _inputs(model, opts: dict, files: list[Path]):
    """The inputs of every file, and the file each came from (a .npy may hold several)."""
    pre = options.cli_preprocess(model, opts, files)
    samples, owners = [], []
    for path in files:
        found = load_inputs(path, pre, model.input_shape, opts["grey_to_rgb"])
        samples += found
        owners += [path] * len(found)
    return samples, owners


def _classes(how: str, owners: list[Path], names: list[str]):
    """(each input's class or None for the predictions, where the classes came from)."""
    if how == "predictions":
        return None, "predictions"
    found = folder_classes(owners, names)
    if all(c is not None for c in found):
        return found, "folders"
    if how == "folders":
        stray = owners[found.index(None)]
        raise InputError(
            f"--labels-from folders: {stray} lies in no folder named after a class (folders "
            f"must be named {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}); use "
            "--labels-from predictions"
        )
    return None, "predictions"


def run_class_pathways(model, data, **opts) -> None:
    method = opts["method"]
    chosen = options.method_params(opts, [method], primary=method)[method]
    params = pathonnx.methods.method_params(method, chosen)  # checked before the model loads
    if not 0 < opts["threshold"] <= 1:
        raise InputError(f"--threshold {opts['threshold']:g} must be in (0, 1]")
    files = collect(list(data))
    loaded_model = options.load_model(model, opts)
    pathonnx.methods.method_params(method, chosen, loaded_model)
    names = model_labels(loaded_model, opts["labels"])
    samples, owners = _inputs(loaded_model, opts, files)
    if opts["limit"] is not None:
        samples, owners = samples[: opts["limit"]], owners[: opts["limit"]]
    classes, source = _classes(opts["labels_from"], owners, names)
    out = Path(opts["out"])
    options.check_out_file(out, opts["force"])  # after every read: no input may be replaced
    x = np.stack([s.x for s in samples]).astype(np.float32)
    show = not opts["as_json"] and sys.stderr.isatty()
    bar = click.progressbar(length=len(x), label=f"{method} pathways", file=sys.stderr)
    with bar if show else contextlib.nullcontext(bar):
        found = pathonnx.class_pathways(
            loaded_model, x, classes, method, opts["threshold"], names,
            progress=bar.update if show else None, **params,
        )  # fmt: skip
    found.save(out)
    report = {"model": str(model), "output": str(out), "inputs": len(x), "labels_from": source,
              **found.to_dict()}  # fmt: skip
    if opts["as_json"]:
        click.echo(json_text(report))
        return
    shown = ", ".join(f"{k}={v}" for k, v in found.params.items())
    rule = f"a class keeps the units that {found.threshold:g} of its pathways keep"
    click.echo(f"{len(x)} inputs, classes from {source}; {method} ({shown}); {rule}, of "
               f"{found.units:,}")  # fmt: skip
    rows = [("class", "samples", "units kept", "share")] + [
        (name, str(c["samples"]), f"{c['units_kept']:,}", f"{c['kept_share']:.2%}")
        for name, c in report["classes"].items()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip())  # fmt: skip
    click.echo(f"wrote {out}")
