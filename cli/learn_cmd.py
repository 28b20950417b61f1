"""`pathonnx learn`: read a folder of images, call :func:`pathonnx.learn.train`, write the
generator."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

import pathonnx
from pathonnx.errors import InputError
from pathonnx.explanation import model_labels
from pathonnx.images import collect
from pathonnx.io import check_outputs, json_text
from pathonnx.learn import Settings, check_gates, require_torch
from pathonnx.methods.learned import GRANULARITIES

from .options import (
    apply_options,
    check_out_file,
    cli_preprocess,
    output_options,
    parse_size,
    precision,
    preprocess_options,
)


def learn_options(func):
    """The options of `pathonnx learn`, in the order --help lists them; defaults from
    :class:`pathonnx.learn.Settings`."""
    d = Settings()
    own = [
        click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
                     help="Where to write the generator (.onnx)."),
        click.option("--granularity", type=click.Choice(list(GRANULARITIES)),
                     default=d.granularity,
                     show_default=True,
                     help="One mask per channel of a gate, or per unit (for small models)."),
        click.option("--epochs", type=click.IntRange(min=1), default=d.epochs, show_default=True,
                     help="Most epochs (early stopping may end sooner)."),
        click.option("--batch", type=click.IntRange(min=1), default=d.batch, show_default=True,
                     help="Images per training step."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=d.lr,
                     show_default=True, help="Adam's learning rate."),
        click.option("--sparsity", type=click.FloatRange(min=0), default=d.sparsity,
                     show_default=True,
                     help="λ, the weight of the l2 sparsity term against the distillation "
                          "loss: larger keeps fewer units."),
        click.option("--baseline", type=click.FloatRange(min=0), default=d.baseline,
                     show_default=True,
                     help="μ, the weight of the baseline term: the pathway run at a zero "
                          "input should behave as the model does there (0: the paper's loss)."),
        click.option("--patience", type=click.IntRange(min=1), default=d.patience,
                     show_default=True,
                     help="Stop after this many epochs without a better validation loss."),
        click.option("--val-share", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     default=d.val_share, show_default=True,
                     help="Share of the images held out for validation (per class)."),
        click.option("--steps", type=click.IntRange(min=1),
                     help="At most this many steps per epoch (default: all the images)."),
        click.option("--checkpoint", type=click.Path(dir_okay=False),
                     help="Checkpoint to resume from and write after each epoch "
                          "[default: OUT.ckpt]."),
        click.option("--seed", type=click.IntRange(min=0), default=d.seed, show_default=True,
                     help="Random seed (the split, the order, the generator's weights)."),
        click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input)."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        *output_options(),
        *preprocess_options(),
    ]  # fmt: skip
    return apply_options(func, own)


class Progress:
    """The training's progress on stderr: on a terminal a bar per epoch with the running loss
    terms, and one line per finished epoch (the only output where stderr is not a
    terminal); nothing with --json."""

    def __init__(self, show: bool, bar: bool):
        self.show, self.use_bar, self.bar = show, bar, None

    def __call__(self, event: dict) -> None:
        if not self.show:
            return
        if event["phase"] == "step" and self.use_bar:
            if self.bar is None:
                self.bar = click.progressbar(
                    length=event["steps"], file=sys.stderr,
                    label=f"epoch {event['epoch']}/{event['epochs']}",
                    item_show_func=lambda e: e and (f"kd {e['kd']:.4f}  baseline "
                                                    f"{e['baseline']:.4f}  l2 {e['l2']:.3f}"),
                )  # fmt: skip
                self.bar.__enter__()
            self.bar.update(1, current_item=event)
        elif event["phase"] == "epoch":
            self.close()
            click.echo(
                f"epoch {event['epoch']}/{event['epochs']}: kd {event['kd']:.4f} baseline "
                f"{event['baseline']:.4f} l2 {event['l2']:.3f} | validation (hard masks): kd "
                f"{event['val_kd']:.4f}, baseline {event['val_baseline']:.4f}, "
                f"units kept {100 * event['val_units_kept']:.1f}%, agreement "
                f"{100 * event['val_agreement']:.1f}%"
                + ("; no better for --patience epochs: stopping" if event["stopped"] else ""),
                err=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def run_learn(model, data, **opts) -> None:
    require_torch()  # a one-line error names the extra
    import pathonnx.learn as learn

    settings = Settings(
        granularity=opts["granularity"], epochs=opts["epochs"], batch=opts["batch"],
        lr=opts["lr"], sparsity=opts["sparsity"], baseline=opts["baseline"],
        patience=opts["patience"], seed=opts["seed"],
        val_share=opts["val_share"], steps=opts["steps"],
    ).check()  # fmt: skip
    out = Path(opts["out"])
    checkpoint = Path(opts["checkpoint"] or f"{out}.ckpt")
    if checkpoint.resolve() == out.resolve():
        raise InputError(f"--checkpoint {checkpoint} is the generator's path; choose another")
    loaded = pathonnx.load(model, opts["input_shape"], opts["device"], precision(opts["tf32"]),
                           output=opts["output"], size=parse_size(opts["size"]))  # fmt: skip
    loaded.check_memory(settings.batch)
    check_gates(loaded)
    files = collect([data])
    pre = cli_preprocess(loaded, opts, files)
    names = model_labels(loaded, opts["labels"])
    check_out_file(out, opts["force"])  # after the model, labels and preprocessing are read
    check_outputs([checkpoint], "choose another --checkpoint (no flag replaces an input)")
    show = not opts["as_json"]
    tty = sys.stderr.isatty()
    reading = click.progressbar(length=len(files), label="reading", file=sys.stderr)
    with reading if show and tty else contextlib.nullcontext(reading):
        update = (lambda done, total: reading.update(done - reading.pos)) if show and tty else None
        examples = learn.Examples.from_folder(loaded, data, pre, names, opts["grey_to_rgb"],
                                              settings.batch, update)  # fmt: skip
    for note in list(pre.notes if pre is not None else ()):
        click.echo(f"note: {note}", err=True)
    progress = Progress(show, tty)
    try:
        trained = learn.train(loaded, examples, settings, checkpoint, progress)
    finally:
        progress.close()
    learn.export_generator(trained, loaded, out)
    extra = learn.write_class_pathways(loaded, out, examples, out)  # beside the generator
    losses = trained.losses
    summary = {
        "model": str(model), "model_sha256": loaded.sha256(), "data": str(data),
        "output": str(out), "checkpoint": str(checkpoint), "inputs": len(examples),
        "labels": examples.label_source, "label_agreement": examples.agreement,
        "split": trained.split, "settings": settings.to_dict(),
        "epochs_run": len(trained.history), "best_epoch": trained.best_epoch,
        "stopped_early": trained.stopped_early, "resumed_after_epoch": trained.resumed_from,
        "seconds": trained.seconds, "losses": losses, "history": trained.history,
        "class_pathways": [str(p) for p in extra],
    }  # fmt: skip
    if opts["as_json"]:
        click.echo(json_text(summary))
        return
    click.echo(
        f"wrote {out}: GEN-CNP generator for {model} ({settings.granularity} masks over "
        f"{len(loaded.gates)} gates), trained on {trained.split['train']} images, validated on "
        f"{trained.split['validation']} (labels from {examples.label_source}); best epoch "
        f"{trained.best_epoch} of {len(trained.history)}"
        + (" (stopped early)" if trained.stopped_early else "")
        + f"; {trained.seconds:.0f} s"
    )
    if losses:
        click.echo(
            f"validation, hard masks: kd {losses['val_kd']:.4f}, units kept "
            f"{100 * losses['val_units_kept']:.1f}%, the pathway network agrees with the "
            f"model on {100 * losses['val_agreement']:.1f}%"
        )
    click.echo(f"explain with: pathonnx explain {model} IMAGE --method gencnp -p generator={out}")
