"""`pathonnx evaluate`: methods × metrics on a folder of inputs, with a resumable cache."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from pathonnx import distributed
from pathonnx.errors import InputError
from pathonnx.evaluation.evaluate import (
    GROUP_HELP,
    GROUPS,
    SETTINGS,
    Settings,
    check_run,
    csv_text,
    curves_png,
    evaluate,
    has_curves,
    table_markdown,
    table_text,
)
from pathonnx.explanation import approximate, model_labels
from pathonnx.images import collect
from pathonnx.io import atomic_write_bytes, json_text, read_arrays
from pathonnx.methods import METHODS

from . import options
from .render import Throughput

#: The files `evaluate` writes in --out (and a cache folder).
OUTPUTS = ("results.json", "results.csv", "results.md", "curves.png")


def _names(text: str, known, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise InputError(f"--{what}: unknown {', '.join(bad) or 'empty list'}; choose from "
                         f"{', '.join(sorted(known))}")  # fmt: skip
    return names


def _masks(path: str | None, data: tuple[str, ...]) -> dict | None:
    """Object masks: --masks FILE, else a masks.npz in the (single) DATA folder."""
    if path is None:
        found = [Path(d) / "masks.npz" for d in data if (Path(d) / "masks.npz").is_file()]
        if len(found) != 1:
            return None
        path = found[0]
    return read_arrays(path, "the masks file")


def evaluate_options(func):
    """The options of `pathonnx evaluate`, in the order --help lists them."""
    own = [
        click.option("--methods", default="pathwise,saliency,integrated_gradients,gradcam",
                     show_default=True, help="Comma-separated registry names."),
        click.option("--metrics", default=",".join(GROUPS), show_default=True,
                     help="Comma-separated: " + ", ".join(
                         f"{g} ({GROUP_HELP[g]})" if g in GROUP_HELP else g for g in GROUPS
                     ) + "."),
        *options.output_options(dense=True),
        click.option("--limit", type=click.IntRange(min=1),
                     help="Evaluate only the first N inputs."),
        *options.declared_options(SETTINGS),
        click.option("--masks", type=click.Path(dir_okay=False),
                     help="Object masks (.npz, <stem>__obj<k> and <stem>__classes); default "
                          "DATA/masks.npz."),
        click.option("-o", "--out", default="pathonnx-eval", show_default=True,
                     help="Folder for results.json, results.csv, curves.png and the cache."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        click.option("--exact", is_flag=True,
                     help="Exact pathwise over all K classes even where it takes minutes "
                          "(by default a large model with many classes runs --classes 20)."),
        *options.preprocess_options(),
        *options.ray_options(),
    ]  # fmt: skip
    return options.apply_options(func, options.with_method_options(own, flags=False))


def run_evaluate(model, data, **opts) -> None:
    methods = _names(opts["methods"], METHODS, "methods")
    groups = _names(opts["metrics"], GROUPS, "metrics")
    on_ray = options.ray_settings(opts)
    if on_ray is not None:
        distributed.require()  # before any work: the extra is missing
    declared = options.declared_values(SETTINGS, opts)
    one = methods[0] if len(methods) == 1 else None
    chosen = options.method_params(opts, methods, primary=one)
    files = collect(list(data))
    if opts["limit"] is not None:
        files = files[: opts["limit"]]
    loaded_model = options.load_model(model, opts)
    notes = [] if opts["exact"] else [
        note for m in methods if (note := approximate(loaded_model, m, chosen.setdefault(m, {})))
    ]  # fmt: skip
    params = {m: p for m, p in chosen.items() if p}
    settings = Settings(**{**declared, "batch": max(4, declared["batch"])}, params=params)
    check_run(loaded_model, methods, groups, settings)  # before reading inputs or writing
    pre, loaded = options.read_inputs(loaded_model, opts, files)
    for note in notes + list(pre.notes if pre is not None else ()):
        click.echo(f"note: {note}", err=True)
    if opts["limit"] is not None:
        loaded = loaded[: opts["limit"]]
    labels = model_labels(loaded_model, opts["labels"])
    masks = _masks(opts["masks"], data)
    out = Path(opts["out"])
    options.check_out_dir(out, [*OUTPUTS, "cache", distributed.RECORDS])  # after every read
    show = not opts["as_json"] and sys.stderr.isatty()
    total = len(loaded) * len(methods)
    bar = click.progressbar(
        length=total,
        label="evaluating",
        file=sys.stderr,
        show_pos=on_ray is not None,
        item_show_func=lambda rate: rate,
    )
    throughput = Throughput(bar if show else None, "records")
    with bar if show else contextlib.nullcontext(bar):
        if on_ray is None:
            results = evaluate(
                loaded_model, loaded, methods, groups, settings, masks, labels,
                cache=out / "cache", progress=bar.update if show else None,
            )  # fmt: skip
        else:
            results = distributed.evaluate(
                options.model_spec(model, opts), loaded, methods, groups, settings, masks,
                labels, out, on_ray, throughput, driver_model=loaded_model)  # fmt: skip
    summary = results.summary()
    report = {
        "model": str(model), "model_sha256": loaded_model.sha256(),
        "output": loaded_model.describe_output(), "inputs": len(loaded),
        "device": loaded_model.device, "precision": loaded_model.precision,
        "methods": methods, "metrics": results.columns, "settings": {
            **{name: declared[name] for name in ("steps", "seed", "mprt_layers",
                                                 "class_threshold")},
            "params": params, "preprocess": None if pre is None else pre.to_dict(),
            "masks": masks is not None,
        },
        "ray": None if on_ray is None else {
            "address": on_ray.address, "records": str(out / distributed.RECORDS),
            "measured": throughput.done, "reused": throughput.reused,
        },
        "summary": summary, "best": results.winners(), "records": results.records,
    }  # fmt: skip
    atomic_write_bytes(out / "results.json", json_text(report, indent=1).encode())
    atomic_write_bytes(out / "results.csv", csv_text(results).encode())
    atomic_write_bytes(out / "results.md", (table_markdown(results) + "\n").encode())
    png = curves_png(results)
    if png is not None:
        atomic_write_bytes(out / "curves.png", png)
    if opts["as_json"]:
        click.echo(json_text({k: v for k, v in report.items() if k != "records"}))
        return
    if on_ray is not None:
        click.echo(throughput.summary(str(out / distributed.RECORDS)), err=True)
    click.echo(f"{len(loaded)} inputs × {len(methods)} methods, mean ± 95% CI; * best")
    click.echo(table_text(results))
    wrote = ["results.json", "results.csv", "results.md"] + (["curves.png"] if png else [])
    wrote += [distributed.RECORDS] if on_ray is not None else []
    click.echo(f"wrote {', '.join(str(out / w) for w in wrote)}")
    if png is None and has_curves(results):
        click.echo("note: install matplotlib for curves.png", err=True)
