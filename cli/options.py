"""Options shared by `explain` and `evaluate`: preprocessing, inputs, and method parameters.

Method parameters come from the registry (``pathonnx.METHODS``): their conversion, their help
and the list of methods in --help. Both commands take ``-p [METHOD.]NAME=VALUE`` for any
parameter; NAME=VALUE alone goes to the command's one method, so it needs the METHOD where
several run. `explain`, which runs one method, also has a flag per parameter (``--depth``).
"""

from __future__ import annotations

from pathlib import Path

import click

import pathonnx
from pathonnx.distributed import ModelSpec, RaySettings
from pathonnx.errors import InputError
from pathonnx.explanation import image_preprocess, target_model
from pathonnx.images import PRESETS, load_inputs, read_mask
from pathonnx.io import check_outputs, check_writable_folder
from pathonnx.methods import METHODS

#: The click dest of a method parameter's flag, apart from the command's own options.
PREFIX = "method_"


def precision(tf32: bool) -> str:
    """The model's precision for the --tf32 flag (see ``pathonnx.load``)."""
    return "tf32" if tf32 else "exact"


def apply_options(func, options):
    """Decorate ``func`` with click ``options``, listed in --help in the given order."""
    for option in reversed(options):
        func = option(func)
    return func


def preprocess_options() -> list:
    """Preprocessing flags, shared by `explain` and `evaluate`."""
    return [
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
    ]  # fmt: skip


def _owners() -> dict[str, list]:
    """Parameter name -> [(method name, Param)] over the registry, in registration order."""
    owners: dict[str, list] = {}
    for method in METHODS.values():
        for param in method.params:
            owners.setdefault(param.name, []).append((method.name, param))
    return owners


def _option_names(options: list) -> set[str]:
    """The parameter names the click ``options`` decorators declare."""

    def probe():
        pass

    apply_options(probe, options)
    return {param.name for param in probe.__click_params__}


def with_method_options(options: list, flags: bool = True) -> list:
    """``options`` (a command's own), then (with ``flags``) one flag per registry parameter
    whose name they do not take, each with help on the methods that take it, then ``-p``."""
    taken = _option_names(options) if flags else set(_owners())
    extra = []
    for name, owners in _owners().items():
        if name in taken:
            continue
        helps: dict[str, list[str]] = {}
        for method, param in owners:
            helps.setdefault(_help(param), []).append(method)
        text = "; ".join(f"{', '.join(ms)}: {h}" for h, ms in helps.items())
        extra.append(click.option(f"--{name.replace('_', '-')}", PREFIX + name,
                                  metavar=owners[0][1].kind.metavar, help=text + "."))  # fmt: skip
    extra.append(click.option(
        "-p", "--param", multiple=True, metavar="[METHOD.]NAME=VALUE",
        help="Any method parameter (see Methods below); NAME=VALUE alone goes to the one "
             "method that runs.",
    ))  # fmt: skip
    return [*options, *extra]


def _help(param) -> str:
    """A registry parameter's help text, with its range where it has one."""
    return param.help if param.range is None else f"{param.help}, {param.range}"


def declared_options(params) -> list:
    """One option per declared parameter (a registry :class:`~pathonnx.methods.Param`), read
    as text and converted by :func:`declared_values`; its help shows the range and default."""
    options = []
    for param in params:
        default = "" if param.default is None else f"  [default: {param.default}]"
        text = _help(param)
        options.append(click.option(f"--{param.name.replace('_', '-')}", param.name,
                                    metavar=param.kind.metavar,
                                    help=text[0].upper() + text[1:] + "." + default))  # fmt: skip
    return options


def declared_values(params, opts: dict) -> dict:
    """The values of :func:`declared_options` checked by their declarations (InputError
    naming the flag); the default where one was not given."""
    return {
        p.name: p.default if opts[p.name] is None
        else p.from_text(opts[p.name], f"--{p.name.replace('_', '-')} {opts[p.name]!r}")
        for p in params
    }  # fmt: skip


def methods_epilog() -> str:
    """The registry's methods, their summaries and parameters, for --help."""
    lines = ["\b", "Methods (-p METHOD.NAME=VALUE, defaults in brackets):"]
    for method in METHODS.values():
        params = ", ".join(p.describe() for p in method.params) or "no parameters"
        lines.append(f"  {method.name:<21}{method.summary}")
        lines.append(f"  {'':<21}{params}")
    return "\n".join(lines)


def export_epilog() -> str:
    """The methods ``pathonnx export`` writes (the registry's exportable ones), for --help."""
    lines = ["\b", "Exportable methods (-p NAME=VALUE, defaults in brackets):"]
    for method in METHODS.values():
        if method.exportable:
            params = ", ".join(p.describe() for p in method.params) or "no parameters"
            lines.append(f"  {method.name:<21}{method.summary}")
            lines.append(f"  {'':<21}{params}")
    return "\n".join(lines)


def method_params(opts: dict, methods: list[str], primary: str | None = None) -> dict:
    """Per method in ``methods``, the parameters given by flags and ``-p`` (values converted
    by the registry's parameter kinds). ``-p METHOD.NAME=VALUE`` goes to METHOD; flags and
    ``-p NAME=VALUE`` go to ``primary``, the command's one method (an error without one)."""
    flags = {k[len(PREFIX) :]: v for k, v in opts.items() if k.startswith(PREFIX) and v is not None}
    given = [(None, name, text, f"--{name}") for name, text in flags.items()]
    for item in opts["param"]:
        key, sep, text = item.partition("=")
        method, dot, name = key.rpartition(".")
        if not sep or not name:
            raise InputError(f"-p {item!r} must look like name=value or method.name=value")
        if dot and method not in methods:
            raise InputError(f"-p {item!r}: method {method!r} is not one of {', '.join(methods)}")
        given.append((method or None, name, text, f"-p {key}"))
    out: dict[str, dict] = {m: {} for m in methods}
    for method, name, text, flag in given:
        target = method or primary
        if target is None:
            takes = [m for m in methods if name in METHODS[m].defaults] or methods
            raise InputError(
                f"{flag}={text}: {len(methods)} methods run here; write it as method.name=value, "
                f"e.g. -p {takes[0]}.{name}={text}"
            )
        param = next((p for p in METHODS[target].params if p.name == name), None)
        shown = f"{flag}={text}" if flag.startswith("-p") else f"{flag} {text!r}"
        out[target][name] = text if param is None else param.from_text(text, shown)
    return out


def output_options(dense: bool = False) -> list:
    """``--output``, and with ``dense`` the flags that choose where in a dense output."""
    options = [
        click.option("--output", "output", metavar="NAME",
                     help="The graph output to explain, for a model with several (an error "
                          "lists them with their shapes)."),
    ]  # fmt: skip
    if dense:
        options += [
            click.option("--at", metavar="Y,X",
                         help="For a dense output (e.g. N×H×W×C): explain the channels at this "
                              "0-based position; --target is then a channel."),
            click.option("--target-mask", type=click.Path(dir_okay=False), metavar="FILE",
                         help="For a dense output: explain each channel summed over a region, "
                              "a .npy array or an image (non-zero pixels) of the output's H×W."),
        ]  # fmt: skip
    return options


def position(text: str | None) -> tuple[int, ...] | None:
    """An --at value, ``3,4`` (or ``3x4``), as integers."""
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise InputError(f"--at {text!r} is not a position like 3,4 (row, column)") from None


def load_model(model: str, opts: dict):
    """The model of `explain` and `evaluate`, loaded as the flags say: --input-shape, --output,
    --device, --tf32, a dynamic image size from --size; then the position or region of a
    dense output (--at, --target-mask). Refused when one sample would not fit in memory,
    before any input is read at the model's size."""
    loaded = pathonnx.load(model, opts["input_shape"], opts["device"], precision(opts["tf32"]),
                           output=opts["output"], size=parse_size(opts["size"]))  # fmt: skip
    loaded.check_memory(1)
    return target_model(loaded, position(opts["at"]), opts["target_mask"])


def model_spec(model: str, opts: dict) -> ModelSpec:
    """How each Ray worker loads the model as :func:`load_model` did (a --target-mask is
    read here, once, and travels as an array)."""
    mask = opts["target_mask"]
    return ModelSpec(model, opts["input_shape"], opts["device"], precision(opts["tf32"]),
                     opts["output"], parse_size(opts["size"]), position(opts["at"]),
                     None if mask is None else read_mask(Path(mask)))  # fmt: skip


def ray_options() -> list:
    """``--ray [ADDRESS]`` and its settings, shared by `explain` and `evaluate`."""
    return [
        click.option("--ray", "ray", metavar="[ADDRESS]", is_flag=False, flag_value="local",
                     help="Run on Ray (needs pathonnx[ray]): a local instance, or join the "
                          "cluster at ADDRESS (auto, HOST:PORT, ray://HOST:PORT). Rows also go "
                          "to OUT as Parquet; a rerun skips what is there."),
        click.option("--ray-workers", type=click.IntRange(min=1), metavar="N",
                     help="With --ray: workers, each holding one copy of the model (default: "
                          "one per CPU of the cluster, or per --ray-gpus)."),
        click.option("--ray-gpus", type=click.FloatRange(min=0), metavar="G",
                     help="With --ray: GPUs per worker (default: 1 with --device cuda, else "
                          "0; 0.5 puts two workers on a GPU)."),
    ]  # fmt: skip


def ray_settings(opts: dict) -> RaySettings | None:
    """The --ray flags as :class:`RaySettings`, or None without --ray (its settings alone
    are an error: they would be ignored)."""
    if opts["ray"] is None:
        given = [f for f, k in (("--ray-workers", "ray_workers"), ("--ray-gpus", "ray_gpus"))
                 if opts[k] is not None]  # fmt: skip
        if given:
            raise InputError(f"{given[0]} is a setting of --ray; add --ray [ADDRESS]")
        return None
    gpus = opts["ray_gpus"]
    if gpus is None:
        gpus = 1.0 if opts["device"] == "cuda" else 0.0
    return RaySettings(opts["ray"], opts["ray_workers"], gpus=gpus)


def parse_size(text):
    if text is None:
        return None
    try:
        dims = [int(v) for v in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise InputError(f"--size {text!r} is not a size like 224x224 (or 224)") from None
    return dims * 2 if len(dims) == 1 else dims


def cli_preprocess(model, opts: dict, files: list[Path]):
    """The preprocessing the flags ask for (None when every input is a .npy array)."""
    if all(f.suffix.lower() == ".npy" for f in files):
        return None
    given = {
        "size": parse_size(opts["size"]), "mean": opts["mean"], "std": opts["std"],
        "scale": opts["scale"], "layout": opts["layout"] and opts["layout"].upper(),
        "color": opts["color"], "resize": "shorter" if opts["crop"] else opts["resize"],
    }  # fmt: skip
    return image_preprocess(model, opts["preset"], **given)


def read_inputs(model, opts: dict, files: list[Path], skipped: list | None = None):
    """(preprocessing, the inputs of every file) as the preprocessing flags ask. With a list
    ``skipped`` and several files, a file that cannot be read is skipped, and ``(file,
    message)`` appended to it: a folder goes on past a bad input. Otherwise it raises."""
    pre = cli_preprocess(model, opts, files)
    samples = []
    for path in files:
        try:
            samples += load_inputs(path, pre, model.input_shape, opts["grey_to_rgb"])
        except InputError as err:
            if skipped is None or len(files) == 1:
                raise
            skipped.append((path, str(err)))
    if skipped and not samples:
        raise InputError(f"none of the {len(files)} inputs can be read; the first: {skipped[0][1]}")
    return pre, samples


def check_out_dir(out: Path, names: list[str]) -> None:
    """--out must be a writable folder (made if missing) where none of the files ``names`` it
    will hold replaces a file the command reads (its model, labels, masks, inputs)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    check_outputs([out / name for name in names], "choose another --out folder (no flag "
                  "replaces an input)")  # fmt: skip
    check_writable_folder(out, f"--out {out}")


def check_out_file(path: Path, force: bool) -> None:
    """-o must be a file path in a writable folder that replaces no file the command reads,
    and an existing file only with --force."""
    check_outputs([path], "choose another -o path (no flag, not even --force, replaces an input)")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file path")
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to replace it, or choose another path")
    check_writable_folder(path.parent, f"-o {path}")
