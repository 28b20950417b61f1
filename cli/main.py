"""`pathonnx` commands: parse, call the API, render. No algorithm lives here."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click
import numpy as np

import pathonnx
from pathonnx.errors import InputError, PathonnxError, one_line
from pathonnx.explanation import LABELS_KEY, model_labels
from pathonnx.exporting import check_exportable, exportable_methods, save_explainer
from pathonnx.images import METADATA_KEY, PRESETS, resolve_preprocess
from pathonnx.io import command_inputs, json_text

from .class_pathways_cmd import class_pathways_options, run_class_pathways
from .evaluate_cmd import evaluate_options, run_evaluate
from .explain_cmd import explain_options, run_explain
from .learn_cmd import learn_options, run_learn
from .options import (
    check_out_file,
    export_epilog,
    method_params,
    methods_epilog,
    output_options,
    parse_size,
    precision,
)
from .render import check_text, inspect_text, report_text


class ShapeType(click.ParamType):
    """A per-sample shape written as 3x224x224 (or 3,224,224)."""

    name = "shape"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            dims = tuple(int(d) for d in value.replace(",", "x").split("x"))
        except ValueError:
            self.fail(f"{value!r} is not a shape like 3x224x224", param, ctx)
        if not dims or any(d <= 0 for d in dims):
            self.fail(f"{value!r}: every dimension must be a positive integer", param, ctx)
        return dims


SHAPE = ShapeType()


class Group(click.Group):
    """Turns every error into one line on stderr and its exit code (docs/ARCHITECTURE.md): 2
    for bad usage or unreadable input, 1 for a model that is not explainable, 1 for an
    internal error. With --debug the traceback comes first; the line and the code stay."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:  # bare `pathonnx`: the help, as click does
            raise
        except click.UsageError as err:  # the group's own options: pathonnx --nope
            raise OneLineUsageError(err) from None

    def invoke(self, ctx):
        try:
            with np.errstate(all="ignore"):  # non-finite results are errors of their own
                return super().invoke(ctx)
        except click.UsageError as err:  # a command, its options and arguments
            raise OneLineUsageError(err) from None
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except PathonnxError as err:
            _fail(ctx, f"pathonnx: error: {err}", err.exit_code)
        except Exception as err:
            _fail(ctx, f"pathonnx: internal error: {type(err).__name__}: {one_line(err)}; run with "
                       "--debug for the traceback, and please report it", 1)  # fmt: skip


def _fail(ctx, line: str, code: int):
    """Print ``line`` (one line; the traceback first with --debug) and exit with ``code``."""
    if ctx.obj and ctx.obj.get("debug"):
        traceback.print_exc(file=sys.stderr)
    click.echo(one_line(line), err=True)
    ctx.exit(code)


class OneLineUsageError(click.UsageError):
    """A click usage error shown as one line, in click's words, with where to find help:
    ``pathonnx: error: No such option '--foo'; see pathonnx explain --help`` (exit 2)."""

    def __init__(self, err: click.UsageError):
        super().__init__(err.format_message(), err.ctx)

    def show(self, file=None):
        # named pathonnx however it was started (python -m pathonnx_cli.main, a test runner)
        names = self.ctx.command_path.split()[1:] if self.ctx is not None else []
        where = " ".join(["pathonnx", *names])
        problem = one_line(self.format_message().strip()).rstrip(".")
        click.echo(f"pathonnx: error: {problem}; see {where} --help", err=True)


def emit_json(data) -> None:
    click.echo(json_text(data))


def common_model_options(func):
    func = click.option(
        "--input-shape",
        type=SHAPE,
        help="Per-sample input size, needed when the model leaves it dynamic (e.g. 3x224x224).",
    )(func)
    func = click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where onnxruntime runs the model.",
    )(func)
    func = click.option(
        "--tf32",
        is_flag=True,
        help="On CUDA, let the GPU round float32 products to TF32: faster, but W·x + b then "
        "misses the logit by up to about 1e-2 relative. Off by default (exact).",
    )(func)
    return func


def model_only_options(func):
    """--output and --size for the commands that read a model and no images."""
    func = click.option(
        "--size",
        metavar="HxW",
        help="Height and width of an image input the model leaves dynamic (e.g. 12x12).",
    )(func)
    for option in reversed(output_options()):
        func = option(func)
    return func


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(pathonnx.__version__, prog_name="pathonnx")
@click.pass_context
def main(ctx, debug):
    """Exact, pathway-based explanations of exported ReLU networks, straight from ONNX.

    \b
    Examples:
      pathonnx explain                      # the shipped default sample
      pathonnx explain model.onnx photo.jpg --preset imagenet
      pathonnx evaluate sample_models/shapes_vgg.onnx sample_models/eval --limit 20
      pathonnx check sample_models/*.onnx
      pathonnx inspect sample_models/shapes_vgg.onnx
      pathonnx rewrite model.onnx -o model.canonical.onnx
      pathonnx export model.onnx -o explainer.onnx --method saliency
      pathonnx class-pathways sample_models/shapes_vgg.onnx sample_models/eval -o classes.npz
      pathonnx learn sample_models/shapes_vgg.onnx train/ -o vgg.gencnp.onnx
    """
    ctx.obj = {"debug": debug}
    ctx.with_resource(command_inputs())  # what the command reads, no output may replace


@main.command(epilog=methods_epilog())
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, type=click.Path())
@explain_options
@common_model_options
def explain(model, images, **opts):
    """Explain what MODEL saw in each IMAGE: a picture and a report per input.

    IMAGE: image files (PNG, JPEG, BMP, TIFF; 8/16-bit, grey, RGB, RGBA), folders (searched
    recursively) or .npy arrays already in the model's input space. With no MODEL and no IMAGE
    it explains the shipped default sample.

    Writes OUT/<name>.png (input, attribution overlay, one panel per path and per compared
    method, top predictions), OUT/<name>.json (prediction, target, method, per-path statistics,
    completeness error of the exact linear model, timings, preprocessing), OUT/<name>.npz (the
    arrays) and, for several inputs, OUT/index.html.

    Preprocessing: flags, then --preset, then the model's pathonnx.preprocess metadata, then a
    default from the input shape (pixels in [0, 1]; a note says so). Explanations are of the
    logits: a trailing Softmax is removed.

    A model with several outputs needs --output NAME. A dense output (e.g. N×H×W×C) needs a
    position, --at Y,X, or a region, --target-mask FILE: the logits are then the C channels
    there (summed over the region), --target is a channel, and pathwise's softmax runs over
    those channels. A dynamic image input takes its height and width from --size.

    With --ray [ADDRESS] (pip install 'pathonnx[ray]'), Ray workers, each holding one copy of
    the model, explain the inputs in batches of --batch, and OUT/index.parquet gets one row per
    input (prediction, target, files, worker, seconds). Inputs already explained in OUT (same
    content hash, files present) are skipped; a worker that dies costs only its batch.

    \b
    Examples:
      pathonnx explain
      pathonnx explain sample_models/shapes_vgg.onnx sample_models/images --paths 3
      pathonnx explain model.onnx photo.jpg --preset imagenet --target tabby --json
      pathonnx explain model.onnx scans/ --method intgrad --compare saliency,gradcam
      pathonnx explain pnet.onnx face.png --output softmax --size 36x44 --target 1 --at 6,8
      pathonnx explain sample_models/shapes_vgg.onnx sample_models/eval -o out --ray
      pathonnx explain model.onnx val/ --preset imagenet -o out --ray auto --ray-gpus 1
    """
    run_explain(model, images, **opts)


@main.command(epilog=methods_epilog())
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("data", nargs=-1, required=True, type=click.Path())
@evaluate_options
@common_model_options
def evaluate(model, data, **opts):
    """Measure attribution METHODS on MODEL over DATA: a table of methods × metrics.

    DATA: image files, folders (recursive) or .npy arrays. Targets are the model's predictions.
    Metrics: insertion/deletion AUC (RISE), LeRF/MoRF, the MPRT sanity check (cascading
    re-initialization from the top; Spearman and SSIM, low is good), pointing game and
    energy-based pointing game (with object masks), pathway faithfulness (pathway methods:
    the target's probability on the pathway alone), and GEN-CNP's metrics (cnp, pathway
    methods): mIC (share of inputs whose target probability rises on the pathway alone), mDC
    (mean max(0, p - p_path)/p), sparsity (share of units removed), acIOU (mean pairwise IoU of
    same-class pathways, averaged over classes) and transfer accuracy (the network restricted
    to the class pathway of the other inputs of the class, leave-one-out; units kept by at
    least --class-threshold of them). Each cell is the mean ± 95% CI (acIOU's over classes); *
    marks the best method per column.

    Writes OUT/results.json (summary and every record), OUT/results.csv, OUT/results.md and
    OUT/curves.png (insertion/deletion curves; needs matplotlib). Records are cached per input
    and method in OUT/cache: an interrupted run continues where it stopped.

    With --ray [ADDRESS] (pip install 'pathonnx[ray]'), Ray workers, each holding one copy of
    the model, measure the inputs in batches; every (input, method) record is a row of the
    Parquet dataset OUT/records.parquet (metrics, curves, timings, model and input hashes),
    and the tables are computed from it. Rows already there are skipped; a worker that dies
    costs only its batch. The set metrics (cnp) run on this machine, after every row.

    \b
    Examples:
      pathonnx evaluate sample_models/shapes_vgg.onnx sample_models/eval --limit 20
      pathonnx evaluate sample_models/shapes_vgg.onnx sample_models/eval -o out --ray
      pathonnx evaluate model.onnx val/ -o out --ray ray://head.example.org:10001
      pathonnx evaluate model.onnx val/ --methods pathwise,mct,saliency --metrics insertion,deletion
      pathonnx evaluate model.onnx val/ --methods mct,dgr,greedy --metrics pathway,cnp
    """
    run_evaluate(model, data, **opts)


@main.command("class-pathways", epilog=methods_epilog())
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("data", nargs=-1, required=True, type=click.Path())
@class_pathways_options
@common_model_options
def class_pathways(model, data, **opts):
    """Build class pathways of MODEL from DATA and write them to OUT (.npz).

    DATA: image files, folders (recursive) or .npy arrays. Each input's pathway comes from a
    pathway --method (mct by default; its parameters as flags or -p NAME=VALUE), for its class
    as the target: the name of the folder it lies in (DATA/<class>/...), else the model's
    prediction (--labels-from). A class's pathway keeps the units that at least --threshold of
    its inputs' pathways keep (average firing, Lin et al. 2023).

    OUT holds, per class, its mask over every unit of every gate, and a header with the
    model's sha256, the method and its parameters, the threshold, the class names, the gates
    and the inputs per class. Explain new inputs with it: --method class_pathway --pathways OUT
    (the target's class pathway, its W^p); evaluate measures it like any pathway method.

    \b
    Examples:
      pathonnx class-pathways sample_models/shapes_vgg.onnx sample_models/eval -o vgg.npz
      pathonnx class-pathways model.onnx train/ --method dgr --sparsity 0.95 -o classes.npz
      pathonnx explain model.onnx photo.png --method class_pathway --pathways classes.npz
    """
    run_class_pathways(model, data, **opts)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("data", type=click.Path())
@learn_options
@common_model_options
def learn(model, data, **opts):
    """Train a GEN-CNP pathway generator for MODEL on the images in DATA, and write it to OUT.

    The generator (Lin et al., arXiv 2309.09887) reads the model's gate outputs at an input
    and returns its pathway: one binary mask per channel (or per unit) of every gate, its
    sparsity chosen per input. It is trained on the network restricted to the pathway, whose
    gradients come from pathonnx's own adjoint (no framework copy of the model): by
    distillation to the model's output, plus an l2 sparsity term (--sparsity) and a
    baseline term (--baseline: at a zero input the pathway should behave as the model does
    there, so that it cannot reproduce the model's output without seeing the input). It needs
    torch (pip install 'pathonnx[learn]'); OUT is an ONNX file, and explaining with it
    (--method gencnp -p generator=OUT) needs only onnxruntime.

    DATA: a folder of images (recursive) or .npy arrays. Labels come from its sub-folders
    when every image lies in one named after a class (or a class index), else from the
    model's predictions; --val-share of them (per class) is held out. Training stops early
    when the validation loss (distillation + sparsity, with the hard masks) has not improved
    for --patience epochs, and keeps the best epoch. A checkpoint (default OUT.ckpt) is
    written after every epoch: the same command run again resumes where it stopped; with
    more --epochs it goes on.

    \b
    Examples:
      pathonnx learn sample_models/shapes_vgg.onnx shapes-train/ -o vgg.gencnp.onnx
      pathonnx learn model.onnx images/ -o gen.onnx --granularity unit --epochs 10 --json
      pathonnx explain sample_models/shapes_vgg.onnx img.png --method gencnp \\
          -p generator=vgg.gencnp.onnx
    """
    run_learn(model, data, **opts)


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@common_model_options
@model_only_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Also print every rewrite pass's report.")
def check(models, input_shape, device, tf32, output, size, as_json, verbose):
    """Check that each MODEL can be explained, for CI.

    For every model: explainable or not and why (every offending node), its op histogram, gates
    and units, BatchNorm folded or kept, and a numerical self-check that the rewritten model
    reproduces the original on random inputs.

    Exit code: 0 all explainable and reproduced, 1 some model is not explainable or failed the
    self-check, 2 some file could not be read.

    A model with several outputs needs --output NAME; a dense output (e.g. N×H×W×C) is
    checked on all its elements, flattened to logits.

    \b
    Examples:
      pathonnx check sample_models/*.onnx --json
      pathonnx check pnet.onnx --output softmax --size 12x12
    """
    results = []
    show = len(models) > 1 and not as_json and sys.stderr.isatty()
    with _progress(models, "checking", show=show) as items:
        for path in items:
            results.append(pathonnx.check_model(path, input_shape, device, precision(tf32),
                                                output, parse_size(size)))  # fmt: skip
    if as_json:
        emit_json([r.to_dict() for r in results])
    else:
        for result in results:
            click.echo(check_text(result, verbose))
        ok = sum(r.exit_code == 0 for r in results)
        if len(results) > 1:
            click.echo(f"{ok}/{len(results)} model(s) explainable")
    sys.exit(max(r.exit_code for r in results))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@common_model_options
@model_only_options
@click.option("--json", "as_json", is_flag=True, help="Print the gates as JSON.")
def inspect(model, input_shape, device, tf32, output, size, as_json):
    """Show the gates of MODEL (kind, shape, units) in execution order.

    \b
    Example:
      pathonnx inspect sample_models/shapes_resnet.onnx
    """
    loaded = pathonnx.load(model, input_shape, device, precision(tf32), output, parse_size(size))
    if as_json:
        emit_json(
            {
                "model": model,
                "input_shape": list(loaded.input_shape),
                "num_outputs": loaded.num_outputs,
                "output": loaded.describe_output(),
                "gates": [
                    {
                        "index": i,
                        "name": g.name,
                        "kind": g.kind,
                        "shape": list(g.shape),
                        "units": g.units,
                        "params": g.params,
                    }
                    for i, g in enumerate(loaded.gates)
                ],
                "maxpools": [{"name": m.name, "shape": list(m.shape)} for m in loaded.maxpools],
            }
        )
    else:
        click.echo(inspect_text(loaded))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="Where to write."
)
@common_model_options
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never the input).")
@click.option(
    "--set-preprocess",
    help="Store image preprocessing in OUT's metadata: a JSON object (size, color, scale, mean, "
    "std, layout, resize) or a preset name (imagenet, unit, symmetric).",
)
@click.option(
    "--set-labels",
    type=click.Path(dir_okay=False),
    help="Store class names in OUT's metadata: a file with one per line, or a JSON list.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the pass reports as JSON.")
def rewrite(model, out, input_shape, device, tf32, force, set_preprocess, set_labels, as_json):
    """Write the canonical form of MODEL to OUT.

    The canonical model has BatchNorm folded (or kept as a per-channel affine op), Identity and
    Dropout removed, a trailing Softmax removed (its output is the logits), every gate in one form
    (Relu, Clip, LeakyRelu, PRelu), a free batch axis, and every gate output and max-pool argmax
    exposed as extra outputs after the logits. OUT loads in pathonnx again, and keeps the
    input's metadata; --set-preprocess and --set-labels add what `pathonnx explain` reads.

    \b
    Examples:
      pathonnx rewrite model.onnx -o model.canonical.onnx
      pathonnx rewrite model.onnx -o ready.onnx --set-preprocess imagenet --set-labels classes.txt
    """
    loaded = pathonnx.load(model, input_shape, device, precision(tf32))
    metadata = {}
    if set_preprocess is not None:
        metadata[METADATA_KEY] = preprocess_entry(loaded, set_preprocess)
    if set_labels is not None:
        metadata[LABELS_KEY] = json.dumps(model_labels(loaded, set_labels))
    check_out_file(Path(out), force)  # after every read: no input may be replaced
    loaded.save(Path(out), metadata)
    if as_json:
        emit_json({"model": model, "output": out, "passes": [r.to_dict() for r in loaded.reports]})
    else:
        click.echo(report_text(loaded.reports))
        click.echo(f"wrote {out}")


@main.command(epilog=export_epilog())
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the exported graph (.onnx).",
)
@click.option(
    "--method",
    required=True,
    metavar="NAME",
    help=f"The attribution method: {', '.join(exportable_methods())}.",
)
@click.option(
    "-p",
    "--param",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter of the method (see below), e.g. -p steps=32.",
)
@click.option(
    "--input-shape",
    type=SHAPE,
    help="Per-sample input size, needed when the model leaves it dynamic.",
)
@model_only_options
@click.option("--masks", is_flag=True,
              help="Pathway methods: also return each gate's mask, as `mask:<gate>`.")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never the input).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def export(model, out, method, param, input_shape, output, size, masks, force, as_json):
    """Write MODEL and an attribution method as one ONNX graph: OUT returns the prediction
    and its explanation in any onnxruntime, with no pathonnx.

    OUT's inputs: the model's input (N, ...; any batch) and `target` (N,) int64, which may be
    left out: the target is then the argmax of the logits. Its outputs: `logits` (N, K) and
    `attribution`, shaped like the input; for the pathway methods (pathwise, mct) also the
    pathway's `W` and `b` and `units_kept` (N, G), the units kept per selected gate (the
    gates are listed in the metadata). Weights are inside the file; its metadata records the
    method, its parameters, the model's sha256 and pathonnx's version. The attribution equals
    `pathonnx explain --method NAME`'s on the same input and target.

    \b
    Examples:
      pathonnx export sample_models/shapes_vgg.onnx -o vgg_saliency.onnx --method saliency
      pathonnx export model.onnx -o ig.onnx --method integrated_gradients -p steps=32
      pathonnx export model.onnx -o pw.onnx --method pathwise -p classes=20 -p width=5%
    """
    check_exportable(method)
    params = method_params({"param": param}, [method], method)[method]
    pathonnx.methods.method_params(method, params)  # every value checked before the model loads
    loaded = pathonnx.load(model, input_shape, "cpu", output=output, size=parse_size(size))
    check_out_file(Path(out), force)  # after every read: no input may be replaced
    explainer = pathonnx.export(loaded, method, masks=masks, **params)
    save_explainer(explainer, out)
    shape = "x".join(map(str, loaded.input_shape))
    names = [o.name for o in explainer.graph.output]
    if as_json:
        emit_json({"model": model, "output": out, "method": method, "params": params,
                   "input": loaded.input_name, "input_shape": list(loaded.input_shape),
                   "num_outputs": loaded.num_outputs, "outputs": names})  # fmt: skip
    else:
        shown = ", ".join(repr(n) for n in names[:6]) + (", ..." if len(names) > 6 else "")
        click.echo(f"wrote {out}: {method} of {model}; inputs {loaded.input_name!r} (N, {shape}) "
                   f"and optional 'target' (N,); outputs {shown}")  # fmt: skip


def preprocess_entry(model, text: str) -> str:
    """A --set-preprocess value (JSON object or preset name), checked against the model."""
    if text in PRESETS:
        pre = resolve_preprocess(model.input_shape, {}, text)
    else:
        pre = resolve_preprocess(model.input_shape, {METADATA_KEY: text})
        if all(v == "model input shape" for v in pre.source.values()):
            raise InputError(f"--set-preprocess {text!r} sets nothing; give a JSON object")
    return pre.metadata_json()


class _progress:
    """A progress bar on stderr, shown only when there is more than one item of work."""

    def __init__(self, items, label: str, show: bool):
        self.items, self.label, self.show = items, label, show
        self.bar = None

    def __enter__(self):
        if not self.show:
            return iter(self.items)
        self.bar = click.progressbar(self.items, label=self.label, file=sys.stderr)
        return self.bar.__enter__()

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


if __name__ == "__main__":  # pragma: no cover
    main()
