"""The fixed fuzz cases: each input that issue 14 lists, and controls that must succeed.

Families (the first part of a case id): ``control`` (valid input, exit 0), ``graph``
(hand-built broken graphs, each by check, inspect and explain), ``metadata`` and
``set-preprocess`` (bad preprocessing), ``external-data`` (hostile locations), ``image``
(odd images and arrays), ``labels`` and ``set-labels``, ``param`` (method parameters and
options), ``usage`` (click usage errors, --debug) and ``collision`` (outputs aimed at inputs,
unwritable outputs). Each case's ``why`` says what the contract expects and where it says so.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from fuzz import models
from fuzz.contract import Run
from fuzz.corpus import MODELS, SAMPLES, Case, Context


def cases() -> list[Case]:
    """Every fixed case, family by family."""
    return [*_controls(), *_graphs(), *_metadata(), *_external_data(), *_images(),
            *_labels(), *_params(), *_usage(), *_collisions()]  # fmt: skip


#: A valid labels file for the digits model.
TEN_LABELS = "\n".join(f"class {i}" for i in range(10)) + "\n"
#: Seconds for a case whose input is a FIFO or a device: refused at once, or read forever.
SPECIAL_FILE_TIMEOUT = 5


def _special(case: Case) -> Case:
    """``case`` with the short time limit of :data:`SPECIAL_FILE_TIMEOUT`."""
    return Case(case.id, lambda ctx: replace(case.build(ctx), timeout=SPECIAL_FILE_TIMEOUT))


def _controls() -> list[Case]:
    s = "control: valid input must succeed"  # a failure here is the suite's, or a regression

    def explain_json(ctx):
        return ctx.explain(
            ctx.shared.model("digits_mlp"), ctx.shared["digit.png"], extra=["--json"], why=s
        )

    def npy64(ctx):
        x = ctx.write("x64.npy", b"")
        np.save(x, np.load(ctx.shared["digits.npy"]).astype(np.float64))
        return ctx.explain(ctx.shared.model("digits_mlp"), x, why=s)

    def external(ctx):
        model, reads = _external(ctx)
        return ctx.rewrite(model, why=s, reads=reads)

    return [
        Case(
            "control/check-samples",
            lambda ctx: ctx.run(
                ["check", *(ctx.shared.model(m) for m in MODELS), "--json"],
                (0,),
                s,
                [ctx.shared.model(m) for m in MODELS],
            ),
        ),
        Case(
            "control/inspect-resnet",
            lambda ctx: ctx.inspect(ctx.shared.model("shapes_resnet"), extra=["--json"], why=s),
        ),
        Case("control/explain-digits-json", explain_json),
        Case(
            "control/explain-vgg",
            lambda ctx: ctx.explain(ctx.shared.model("shapes_vgg"), ctx.shared["shape.png"], why=s),
        ),
        Case("control/explain-npy-float64", npy64),
        Case(
            "control/rewrite-digits",
            lambda ctx: ctx.rewrite(
                ctx.shared.model("digits_mlp"), extra=["--set-preprocess", "unit"], why=s
            ),
        ),
        Case(
            "control/evaluate-digits",
            lambda ctx: ctx.evaluate(
                ctx.shared.model("digits_mlp"),
                ctx.shared["digit.png"],
                ctx.shared["digit7.png"],
                extra=["--mprt-layers", "1", "--json"],
                why=s,
            ),
        ),
        Case("control/external-data-rewrite", external),
        Case("control/mlp-check", lambda ctx: ctx.check(ctx.shared["mlp.onnx"], why=s)),
        Case(
            "control/mlp-explain",
            lambda ctx: ctx.explain(ctx.shared["mlp.onnx"], ctx.shared["mlp.npy"], why=s),
        ),
        Case(
            "control/pooled-check",
            lambda ctx: ctx.check(ctx.save("pooled.onnx", models.pooled([1, 16])), why=s),
        ),
        Case(
            "control/image-model-explain",
            lambda ctx: ctx.explain(
                ctx.save("image.onnx", models.pooled([3, 16, 16], models.image_metadata(16))),
                ctx.shared["shape.png"],
                why=s,
            ),
        ),
    ]


def _graphs() -> list[Case]:
    """Hand-built broken graphs (``fuzz.models``), each run by several commands; the check
    case also gives the model to ``pathonnx.load``."""
    bad = "a broken graph is an unreadable model: exit 2 (issue 14)"
    nan = "weights with NaN/Inf: check flags the model as not explainable, exit 1 (issue 14)"
    overflow = "non-finite values inside the network: a named one-line error (issue 14)"
    clip = "Clip with input bounds is not opset 9: not explainable or invalid (issue 14)"
    huge = "a huge declared input: refused from the shapes before allocating (issue 14)"
    unreadable = {"check": (2,), "inspect": (2,), "explain": (2,)}
    weights = models.mlp_weights()
    table = {
        "cycle": (lambda: models.rewired(add="a"), unreadable, bad),
        "self-loop": (lambda: models.rewired(add="z"), unreadable, bad),
        "undefined-input": (lambda: models.rewired(relu="nowhere"), unreadable, bad),
        "opset-99": (lambda: models.mlp(opset=99), unreadable, bad),
        "short-raw-data": (models.short_raw_data, unreadable, bad),
        "wrong-dtype-weights": (models.wrong_dtype, unreadable, bad),
        "zero-outputs": (models.zero_outputs, unreadable,
                         "a model with K=0 outputs: exit 2 (issue 14)"),
        "nan-weights": (lambda: models.mlp_with(w1=models.poke(weights["w1"], np.nan)),
                        {"check": (1,), "check --json": (1,), "explain": (1, 2)}, nan),
        "inf-weights": (lambda: models.mlp_with(w2=models.poke(weights["w2"], np.inf)),
                        {"check": (1,), "check --json": (1,), "explain": (1, 2)}, nan),
        "overflow-weights": (lambda: models.mlp_with(w1=np.full((4, 8), 3e38, np.float32)),
                             {"check": (1, 2), "check --json": (1, 2), "explain": (1, 2)},
                             overflow),
        "clip11-in-opset9": (models.clip_opset11_in_opset9,
                             {"check": (1, 2), "inspect": (1, 2), "explain": (1, 2)}, clip),
        "input-dim-1e9": (lambda: models.pooled([1, 10**9]),
                          {"check": (1, 2), "inspect": (0, 2)}, huge),
        "input-dim-2e62": (lambda: models.pooled([1, 2**62]),
                           {"check": (1, 2), "inspect": (0, 2)}, huge),
        "input-3x20000x20000": (
            lambda: models.pooled([3, 20000, 20000], models.image_metadata(20000)),
            {"check": (1, 2), "inspect": (0, 2), "explain": (2,)}, huge),
    }  # fmt: skip
    out = []
    for name, (make, commands, why) in table.items():
        for command, expect in commands.items():

            def build(ctx, name=name, make=make, command=command, expect=expect, why=why):
                model = ctx.save(f"{name}.onnx", make())
                image = "20000" in name  # the image model explains a PNG, the others an array
                subject = ctx.shared["shape.png" if image else "mlp.npy"]
                verb, *extra = command.split()
                return ctx.command(verb, model, subject, expect, why, extra=extra,
                                   api=command == "check")  # fmt: skip

            out.append(Case(f"graph/{name}/{command.replace(' --', '-')}", build))
    return out


def _metadata() -> list[Case]:
    """Bad pathonnx.preprocess metadata (read by explain) and --set-preprocess values."""
    why = "bad preprocessing metadata or --set-preprocess value: a named error, exit 2"
    values = {
        "size-abc": {"size": "abc"},
        "scale-x": {"scale": "x"},
        "size-null": {"size": None},
        "mean-text": {"mean": "abc"},
        "std-empty": {"std": []},
    }
    out = []
    for name, entry in values.items():
        text = json.dumps(entry)

        def meta(ctx, text=text):
            model = models.with_metadata(
                ctx.shared.model("digits_mlp"), {"pathonnx.preprocess": text}
            )
            return ctx.explain(
                ctx.save("model.onnx", model), ctx.shared["digit.png"], expect=(2,), why=why
            )

        def flag(ctx, text=text):
            return ctx.rewrite(
                ctx.shared.model("digits_mlp"),
                extra=["--set-preprocess", text],
                expect=(2,),
                why=why,
            )

        out += [Case(f"metadata/{name}", meta), Case(f"set-preprocess/{name}", flag)]
    out.append(
        Case(
            "set-preprocess/not-json",
            lambda ctx: ctx.rewrite(
                ctx.shared.model("digits_mlp"),
                extra=["--set-preprocess", "{size"],
                expect=(2,),
                why=why,
            ),
        )
    )
    return out


def _external(ctx: Context, location=None, offset=None, length=None, prepare=None):
    """The MLP saved with its weights in ``m/w.bin``; then every tensor's external-data entry
    patched (location, offset, length) and ``prepare(folder)`` run. Returns (model path,
    every regular file of the case)."""
    folder = ctx.folder / "m"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(
        models.mlp(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )
    (ctx.folder / "outside.bin").write_bytes((folder / "w.bin").read_bytes())
    size = (folder / "w.bin").stat().st_size
    proto = onnx.load(path, load_external_data=False)
    for tensor in proto.graph.initializer:
        info = {e.key: e.value for e in tensor.external_data}
        if location is not None:
            info["location"] = location
        if offset is not None:
            info["offset"] = str(offset(size))
        if length is not None:
            info["length"] = str(length(size))
        del tensor.external_data[:]
        for key, value in info.items():
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    path.write_bytes(proto.SerializeToString())
    if prepare is not None:
        prepare(folder)
    files = [p for p in ctx.folder.rglob("*") if p.is_file() and not p.is_symlink()]
    return str(path), [str(p) for p in files if p != path]


def _external_data() -> list[Case]:
    why = "external data that is unsafe or unreadable: a named error, exit 2 (DESIGN §6)"

    def links(**pairs):
        def prepare(folder):
            for name, target in pairs.items():
                os.symlink(target, folder / name)

        return prepare

    variants = {
        "nul-in-location": {"location": "w\x00.bin"},
        "long-name": {"location": "w" * 5000 + ".bin"},
        "long-path": {"location": "d/" * 3000 + "w.bin"},
        "symlink-loop": {
            "location": "loop.bin",
            "prepare": links(**{"loop.bin": "loop2.bin", "loop2.bin": "loop.bin"}),
        },
        "self-symlink": {"location": "self.bin", "prepare": links(**{"self.bin": "self.bin"})},
        "parent": {"location": "../outside.bin"},
        "absolute-dev-zero": {"location": "/dev/zero"},
        "symlink-out": {"location": "link.bin", "prepare": links(**{"link.bin": "../outside.bin"})},
        "directory": {"location": "sub", "prepare": lambda folder: (folder / "sub").mkdir()},
        "dot": {"location": "."},
        "fifo": {"location": "pipe.bin", "prepare": lambda folder: os.mkfifo(folder / "pipe.bin")},
        "missing": {"location": "nowhere.bin"},
        "offset-beyond": {"offset": lambda size: size + 4096},
        "length-beyond": {"length": lambda size: 10 * size},
        "offset-negative": {"offset": lambda size: -8},
    }
    out = []
    for name, patch in variants.items():
        for command in ("check", "inspect", "rewrite"):

            def build(ctx, patch=patch, command=command):
                model, reads = _external(ctx, **patch)
                run = getattr(ctx, command)(model, expect=(2,), why=why, reads=reads)
                return replace(run, api_load=model if command == "check" else "")

            case = Case(f"external-data/{name}/{command}", build)
            out.append(_special(case) if name in ("fifo", "absolute-dev-zero") else case)
    return out


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _npy_header(shape, descr="<f4") -> bytes:
    """A .npy version 1.0 header declaring ``shape`` (the format's own layout, written by hand
    so that the shape can be anything)."""
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _bomb_png(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` (CRC fixed up)."""
    data = bytearray(_png(Image.new("L", (8, 8), 128)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def _images() -> list[Case]:
    """Odd images and arrays, explained by the model they suit (or pointedly do not)."""
    bad = "an input that cannot be read or does not fit: a named error, exit 2 (DESIGN §6)"
    ok = "a valid input: it must be explained"
    digits, vgg = "digits_mlp", "shapes_vgg"

    def image(name, model, make, expect, why, extra=()):
        def build(ctx):
            path = make(ctx)
            return ctx.explain(ctx.shared.model(model), path, extra=extra, expect=expect, why=why)

        return Case(f"image/{name}", build)

    def file(name, data):
        return lambda ctx: ctx.write(name, data() if callable(data) else data)

    def array(name, value):
        def make(ctx):
            path = ctx.path(name)
            np.save(path, value())
            return path

        return make

    def npz_as_npy(ctx):
        buffer = io.BytesIO()
        np.savez(buffer, x=np.zeros((1, 3, 32, 32), np.float32))
        return ctx.write("arrays.npy", buffer.getvalue())

    def fifo(ctx):
        os.mkfifo(ctx.path("pipe.png"))
        return ctx.path("pipe.png")

    def big_png(ctx):
        path = ctx.path("big.png")
        Image.new("RGB", (11000, 11000), (90, 20, 160)).save(path, format="PNG", compress_level=1)
        return path

    def newline(ctx):
        path = ctx.path("digit\nthree.png")
        shutil.copyfile(ctx.shared["digit.png"], path)
        return path

    def empty_folder(ctx):
        (ctx.folder / "empty").mkdir()
        return ctx.path("empty")

    grey = lambda: _png(Image.new("L", (32, 32), 100))  # noqa: E731
    rgba = lambda: _png(Image.new("RGBA", (32, 32), (200, 10, 10, 128)))  # noqa: E731
    shape = lambda: Path(SAMPLES / "images" / "shapes_000_circle.png").read_bytes()  # noqa: E731
    return [
        image(
            "grey-for-rgb-model",
            vgg,
            file("grey.png", grey),
            (2,),
            "a grey image for an RGB model: exit 2 (DESIGN §6)",
        ),
        image("grey-to-rgb", vgg, file("grey.png", grey), (0,), ok, extra=["--grey-to-rgb"]),
        image("rgba", vgg, file("rgba.png", rgba), (0,), ok),
        image(
            "one-pixel",
            vgg,
            file("one.png", lambda: _png(Image.new("RGB", (1, 1)))),
            (0,),
            "a 1x1 image stretched to the model's size (metadata says stretch)",
        ),
        image(
            "grey16",
            digits,
            file("g16.png", lambda: _png(Image.fromarray(np.full((8, 8), 40000, np.uint16)))),
            (0,),
            ok,
        ),
        image(
            "truncated-png", vgg, file("cut.png", lambda: shape()[: len(shape()) // 2]), (2,), bad
        ),
        image("empty-file", vgg, file("empty.png", b""), (2,), bad),
        image("text-as-png", vgg, file("text.png", b"not an image\n" * 10), (2,), bad),
        image(
            "bomb-header",
            vgg,
            file("bomb.png", lambda: _bomb_png(30000, 30000)),
            (2,),
            "Pillow's DecompressionBombError: a named error, exit 2 (issue 14)",
        ),
        image(
            "large-png",
            vgg,
            big_png,
            (0, 2),
            "an 11000x11000 RGB PNG for a 32x32 model: decoded within the memory cap, "
            "explained or refused with a named error (issue 14)",
        ),
        image("npz-renamed-npy", vgg, npz_as_npy, (2,), bad),
        image(
            "npy-header-garbage",
            vgg,
            file(
                "garbage.npy", b"\x93NUMPY\x01\x00\x20\x00{'descr: <f4, 'shape': (1,3,32,32)}   \n"
            ),
            (2,),
            bad,
        ),
        image(
            "npy-header-beyond-file",
            vgg,
            file("beyond.npy", b"\x93NUMPY\x01\x00\xff\xff{"),
            (2,),
            bad,
        ),
        image(
            "npy-negative-shape", vgg, file("negative.npy", _npy_header((-1, 3, 32, 32))), (2,), bad
        ),
        image(
            "npy-huge-shape",
            vgg,
            file("huge.npy", _npy_header((10**12, 3, 32, 32))),
            (2,),
            "a .npy header declaring 10.9 PiB: refused before allocating (issue 14)",
        ),
        image(
            "npy-object-dtype",
            vgg,
            file("object.npy", lambda: _npy_header((1, 3, 32, 32), "|O") + b"\x80\x04N."),
            (2,),
            bad,
        ),
        image(
            "npy-empty-batch",
            vgg,
            array("empty.npy", lambda: np.zeros((0, 3, 32, 32), np.float32)),
            (2,),
            "an empty (0, 3, 32, 32) array: nothing to explain, exit 2",
        ),
        image(
            "npy-nan",
            vgg,
            array("nan.npy", lambda: np.full((1, 3, 32, 32), np.nan, np.float32)),
            (2,),
            "NaN in the input: exit 2 (DESIGN §6)",
        ),
        image(
            "npy-inf",
            vgg,
            array("inf.npy", lambda: np.full((1, 3, 32, 32), np.inf, np.float32)),
            (2,),
            "Inf in the input: exit 2 (DESIGN §6)",
        ),
        image(
            "npy-3e38",
            vgg,
            array("big.npy", lambda: np.full((1, 3, 32, 32), 3e38, np.float32)),
            (2,),
            "an input of 3e38 overflows inside the network: exit 2 (issue 14)",
        ),
        image(
            "npy-strings",
            vgg,
            array("strings.npy", lambda: np.full((1, 3, 32, 32), "a")),
            (2,),
            bad,
        ),
        image(
            "npy-wrong-shape",
            vgg,
            array("wrong.npy", lambda: np.zeros((1, 3, 31, 32), np.float32)),
            (2,),
            bad,
        ),
        _special(
            image(
                "fifo",
                vgg,
                fifo,
                (2,),
                "a FIFO is not a regular file: refused, not read (issue 14)",
            )
        ),
        _special(
            image(
                "dev-zero",
                vgg,
                lambda ctx: "/dev/zero",
                (2,),
                "a device is not a regular file: refused (issue 14)",
            )
        ),  # fmt: skip
        image(
            "newline-in-name",
            digits,
            newline,
            (2,),
            "a newline in a file name: a named one-line error, exit 2 (issue 14)",
        ),
        image("empty-folder", digits, empty_folder, (2,), bad),
    ]


def _labels() -> list[Case]:
    why = "a labels file that cannot be read as labels: a named error, exit 2"

    def explain(name, make, expect=(2,), reason=why):
        def build(ctx):
            labels = make(ctx)
            return ctx.explain(
                ctx.shared.model("digits_mlp"),
                ctx.shared["digit.png"],
                extra=["--labels", labels],
                expect=expect,
                why=reason,
                reads=[labels],
            )

        return Case(f"labels/{name}", build)

    def rewrite(name, make, expect=(2,), reason=why):
        def build(ctx):
            labels = make(ctx)
            return ctx.rewrite(
                ctx.shared.model("digits_mlp"),
                extra=["--set-labels", labels],
                expect=expect,
                why=reason,
                reads=[labels],
            )

        return Case(f"set-labels/{name}", build)

    def fifo(ctx):
        os.mkfifo(ctx.path("labels.txt"))
        return ctx.path("labels.txt")

    def sparse(ctx):
        with open(ctx.path("labels.txt"), "wb") as handle:
            handle.truncate(1 << 30)
        return ctx.path("labels.txt")

    def newline(ctx):
        return ctx.write("labels.json", json.dumps(["th\nree", *map(str, range(1, 10))]))

    def text(content):
        return lambda ctx: ctx.write("labels.txt", content)

    device = "a device: unbounded, not a regular file: refused (issue 14)"
    bounded = "a 1 GiB labels file: over the documented size limit, refused (issue 14)"
    return [
        explain("valid", text(TEN_LABELS), (0,), "control: ten labels for ten classes"),
        _special(explain("dev-zero", lambda ctx: "/dev/zero", reason=device)),
        _special(explain("fifo", fifo, reason="a FIFO as labels: refused, not read (issue 14)")),
        explain("sparse-1gib", sparse, reason=bounded),
        explain(
            "newline-in-label",
            newline,
            reason="a newline in a label name: a named one-line error, exit 2 (issue 14)",
        ),
        explain("binary", text(bytes(range(256)) * 4)),
        explain("wrong-count", text("a\nb\nc\n")),
        explain("folder", lambda ctx: str(ctx.folder)),
        _special(rewrite("dev-zero", lambda ctx: "/dev/zero", reason=device)),
        rewrite("sparse-1gib", sparse, reason=bounded),
        rewrite("newline-in-label", newline, reason="a newline in a label name: exit 2 (issue 14)"),
    ]


def _params() -> list[Case]:
    """Bad (and some valid) method parameters and options, for explain and evaluate."""
    bad = "an invalid parameter value: a named one-line error, exit 2 (issue 14)"
    ok = "a valid parameter: it must work (issue 14)"

    def explain(name, extra, expect=(2,), why=bad, model="digits_mlp"):
        def build(ctx):
            return ctx.explain(
                ctx.shared.model(model),
                ctx.shared.subject(model),
                extra=extra,
                expect=expect,
                why=why,
            )

        return Case(f"param/{name}", build)

    def evaluate(name, extra, expect=(2,), why=bad):
        def build(ctx):
            return ctx.evaluate(
                ctx.shared.model("digits_mlp"),
                ctx.shared["digit.png"],
                ctx.shared["digit7.png"],
                extra=extra,
                expect=expect,
                why=why,
            )

        return Case(f"param/evaluate-{name}", build)

    def evaluate_on(name, model, methods, extra, expect, why=bad):
        def build(ctx):
            return ctx.evaluate(
                ctx.shared.model(model),
                ctx.shared.subject(model),
                methods=methods,
                extra=extra,
                expect=expect,
                why=why,
            )

        return Case(f"param/evaluate-{name}", build)

    def masks(
        name, data, expect=(2,), why="a corrupt --masks file: a named error, exit 2 (issue 14)"
    ):
        def build(ctx):
            path = ctx.write("masks.npz", data)
            return ctx.evaluate(
                ctx.shared.model("digits_mlp"),
                ctx.shared["digit.png"],
                extra=["--masks", path],
                expect=expect,
                why=why,
                reads=[path],
            )

        return Case(f"param/evaluate-masks-{name}", build)

    smooth, ig = ["--method", "smoothgrad"], ["--method", "integrated_gradients"]
    return [
        *(explain(f"alpha-{v}", ["--alpha", v, "--json"]) for v in ("2", "-1", "nan", "inf")),
        explain("alpha-0.5", ["--alpha", "0.5", "--json"], (0,), ok),
        explain("intgrad-steps-0", ["--method", "intgrad", "--steps", "0"]),
        explain("intgrad-steps--1", ["--method", "intgrad", "--steps", "-1"]),
        explain("intgrad-steps-3", ["--method", "intgrad", "--steps", "3"], (0,), ok),
        explain("integrated-gradients-steps-0", [*ig, "-p", "steps=0"]),
        explain("integrated-gradients-batch-4", [*ig, "-p", "batch=4", "--json"], (0,), ok),
        explain("smoothgrad-batch-4", [*smooth, "-p", "batch=4", "--json"], (0,), ok),
        explain("smoothgrad-seed--1", [*smooth, "-p", "seed=-1"]),
        explain("smoothgrad-samples-0", [*smooth, "-p", "samples=0"]),
        explain("smoothgrad-samples--1", [*smooth, "-p", "samples=-1"]),
        explain("smoothgrad-stdev--1", [*smooth, "-p", "stdev=-1"]),
        explain("smoothgrad-stdev-nan", [*smooth, "-p", "stdev=nan"]),
        explain(
            "gradcam-gate-nope", ["--method", "gradcam", "-p", "gate=nope"], model="shapes_vgg"
        ),
        explain("mct-sparsity-1.5", ["--method", "mct", "--sparsity", "1.5"]),
        explain("mct-sparsity-nan", ["--method", "mct", "--sparsity", "nan"]),
        explain("width-0", ["--width", "0"]),
        explain("target-99", ["--target", "99"], why="a target out of range: exit 2 (DESIGN §6)"),
        explain("target--1", ["--target", "-1"], why="a target out of range: exit 2 (DESIGN §6)"),
        explain("target-nope", ["--target", "nope"], why="an unknown class: exit 2"),
        explain("size-abc", ["--size", "abc"]),
        explain("size-0x0", ["--size", "0x0"]),
        explain("param-unknown", ["-p", "nope=1"]),
        explain("param-malformed", ["-p", "alpha"]),
        explain("compare-unknown", ["--compare", "nope"]),
        evaluate("mprt-layers-0", ["--mprt-layers", "0"]),
        evaluate("mprt-layers--1", ["--mprt-layers", "-1"]),
        evaluate("seed--1", ["--seed", "-1"]),
        evaluate("limit-0", ["--limit", "0"]),
        evaluate("steps-0", ["--steps", "0"]),
        evaluate_on("gradcam-gate-nope", "shapes_vgg", "gradcam", ["-p", "gate=nope"], (2,)),
        evaluate_on("smoothgrad-batch-4", "digits_mlp", "smoothgrad", ["-p", "batch=4"], (0,), ok),
        evaluate_on(
            "integrated-gradients-batch-4",
            "digits_mlp",
            "integrated_gradients",
            ["-p", "batch=4"],
            (0,),
            ok,
        ),
        masks("zip-garbage", b"PK\x03\x04" + bytes(range(256)) * 8),
        masks("text", b"not masks\n"),
        Case("param/evaluate-damaged-cache", _damaged_cache),
    ]


def _damaged_cache(ctx: Context) -> Run:
    """evaluate run once here (in this process), every cache record then cut in half: the
    rerun recomputes them or refuses them with a named error (issue 14)."""
    from click.testing import CliRunner

    from pathonnx_cli.main import main

    run = ctx.evaluate(
        ctx.shared.model("digits_mlp"),
        ctx.shared["digit.png"],
        ctx.shared["digit7.png"],
        expect=(0, 2),
        why="a damaged cache record: recomputed, or a named error (issue 14)",
    )
    first = CliRunner().invoke(main, list(run.argv))
    assert first.exit_code == 0, f"the first evaluate failed: {first.output}"
    records = sorted((ctx.folder / "eval" / "cache").rglob("*.json"))
    assert records, "evaluate left no cache records"
    for record in records:
        data = record.read_bytes()
        record.write_bytes(data[: len(data) // 2])
    return run


def _usage() -> list[Case]:
    """Click usage errors (one line, exit 2) and --debug (a traceback, but still exit 2)."""
    why = "bad usage: exit 2 and one line (issue 14: click usage errors print 3+ lines)"
    debug = "--debug shows the traceback but keeps the exit code 2 (issue 14)"

    def usage(name, argv, reason=why):
        return Case(f"usage/{name}", lambda ctx: ctx.run(argv(ctx), (2,), reason))

    def explain(ctx, *extra, model="digits_mlp", image="digit.png"):
        model, image = ctx.shared.model(model), ctx.shared[image]
        return ["explain", model, image, "-o", ctx.path("out"), *extra]

    def truncated(ctx):
        data = Path(ctx.shared.model("digits_mlp")).read_bytes()
        return ctx.write("cut.onnx", data[: len(data) // 3])

    digits = lambda ctx: ctx.shared.model("digits_mlp")  # noqa: E731
    return [
        usage("unknown-command", lambda ctx: ["nope"]),
        usage("unknown-option", lambda ctx: explain(ctx, "--nope")),
        usage("method-choice", lambda ctx: explain(ctx, "--method", "nope")),
        usage("int-option", lambda ctx: explain(ctx, "--paths", "abc")),
        usage("missing-model", lambda ctx: ["check"]),
        usage("evaluate-no-data", lambda ctx: ["evaluate", digits(ctx)]),
        usage("rewrite-no-output", lambda ctx: ["rewrite", digits(ctx)]),
        usage("debug-missing-image", lambda ctx: ["--debug", *explain(ctx, image="nowhere.png")],
              debug),
        usage("debug-truncated-model", lambda ctx: ["--debug", "inspect", truncated(ctx)], debug),
        usage("debug-grey-image", lambda ctx: ["--debug", *explain(ctx, model="shapes_vgg")],
              debug),
    ]  # fmt: skip


def _collisions() -> list[Case]:
    """Outputs aimed at inputs: never over an input, with or without --force (issue 14)."""
    never = "an output onto a file the command reads: refused, exit 2, input unchanged"
    unwritable = "an output that cannot be written: a named error, exit 2 (issue 14)"

    def rewrite(name, target, force=False, expect=(2,), why=never):
        """`rewrite` of a copy of the digits model, CASE/model.onnx; ``target(ctx)`` makes the
        collision and returns (-o path, more arguments, files that must stay as they are)."""

        def build(ctx):
            model = ctx.path("model.onnx")
            shutil.copyfile(ctx.shared.model("digits_mlp"), model)
            out, extra, keep = target(ctx)
            extra = [*extra, *(["--force"] if force else [])]
            return ctx.rewrite(model, out, extra, expect, why, reads=[model, *keep])

        return Case(f"collision/rewrite-{name}{'-force' if force else ''}", build)

    def onto_model(ctx):
        return ctx.path("model.onnx"), [], []

    def onto_set_labels(ctx):
        labels = ctx.write("labels.txt", TEN_LABELS)
        return labels, ["--set-labels", labels], [labels]

    def onto_symlink(ctx):
        os.symlink("model.onnx", ctx.path("link.onnx"))
        return ctx.path("link.onnx"), [], [ctx.path("link.onnx")]

    def onto_hardlink(ctx):
        os.link(ctx.path("model.onnx"), ctx.path("hard.onnx"))
        return ctx.path("hard.onnx"), [], [ctx.path("hard.onnx")]

    def onto_existing(ctx):
        existing = ctx.write("existing.onnx", b"not an input, but no --force")
        return existing, [], [existing]

    def onto_existing_forced(ctx):
        return ctx.write("existing.onnx", b"not an input: --force replaces it"), [], []

    def onto_external_data(force):
        def build(ctx):
            model, reads = _external(ctx)
            extra = ["--force"] if force else []
            return ctx.rewrite(model, ctx.path("m/w.bin"), extra, (2,), never, [model, *reads])

        return Case(f"collision/rewrite-onto-external-data{'-force' if force else ''}", build)

    def explain_labels(name):
        def build(ctx):
            labels = ctx.write(f"out/{name}", json.dumps([f"c{i}" for i in range(10)]))
            return ctx.explain(ctx.shared.model("digits_mlp"), ctx.shared["digit.png"],
                               extra=["--labels", labels], expect=(2,), why=never,
                               reads=[labels])  # fmt: skip

        return Case(f"collision/explain-labels-as-{name}", build)

    def image_in_out(ctx):
        image = ctx.path("out/digit.png")
        (ctx.folder / "out").mkdir()
        shutil.copyfile(ctx.shared["digit.png"], image)
        return ctx.explain(ctx.shared.model("digits_mlp"), image, expect=(2,), why=never,
                           reads=[image])  # fmt: skip

    def out_is_the_model(ctx):
        model = ctx.path("model.onnx")
        shutil.copyfile(ctx.shared.model("digits_mlp"), model)
        return ctx.explain(
            model,
            ctx.shared["digit.png"],
            out=model,
            expect=(2,),
            why="--out names a file (the model): exit 2",
            reads=[model],
        )

    def evaluate(name, write):
        """`evaluate` -o CASE/eval with an input already at one of its output paths."""

        def build(ctx):
            path, flag = write(ctx)
            return ctx.evaluate(ctx.shared.model("digits_mlp"), ctx.shared["digit.png"],
                                ctx.shared["digit7.png"], extra=[flag, path], expect=(2,),
                                why=never, reads=[path])  # fmt: skip

        return Case(f"collision/evaluate-{name}", build)

    def labels_as_csv(ctx):
        return ctx.write("eval/results.csv", TEN_LABELS), "--labels"

    def masks_as_md(ctx):
        buffer = io.BytesIO()
        np.savez(buffer, digit__obj0=np.ones((8, 8), bool))
        return ctx.write("eval/results.md", buffer.getvalue()), "--masks"

    def under_a_file(command):
        """-o below a regular file: no folder can be made there."""

        def build(ctx):
            target = str(Path(ctx.write("file.txt", "a file, not a folder\n")) / "out")
            model, image = ctx.shared.model("digits_mlp"), ctx.shared["digit.png"]
            if command == "rewrite":
                return ctx.rewrite(model, target, expect=(2,), why=unwritable)
            return getattr(ctx, command)(model, image, out=target, expect=(2,), why=unwritable)

        return Case(f"collision/{command}-out-under-a-file", build)

    def unwritable_folder(ctx):
        folder = ctx.folder / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        if not _can_create_in(folder):
            return ctx.rewrite(ctx.shared.model("digits_mlp"), str(folder / "out.onnx"),
                               expect=(2,), why=unwritable)  # fmt: skip
        folder.chmod(0o755)
        # as root a folder's mode stops nothing; sysfs takes no new files, even from root
        if os.path.isdir("/sys") and not _can_create_in(Path("/sys")):
            return ctx.rewrite(ctx.shared.model("digits_mlp"), "/sys/pathonnx-fuzz.onnx",
                               expect=(2,), why=unwritable)  # fmt: skip
        return Run((), (2,), cwd=str(ctx.folder), skip="no unwritable folder here")

    return [
        *(rewrite("onto-model", onto_model, force) for force in (False, True)),
        *(rewrite("onto-set-labels", onto_set_labels, force) for force in (False, True)),
        *(onto_external_data(force) for force in (False, True)),
        rewrite("onto-symlink-to-model", onto_symlink, True),
        rewrite("onto-hardlink-to-model", onto_hardlink, True),
        rewrite("onto-existing", onto_existing, False,
                why="an existing output without --force: refused, exit 2, file unchanged"),
        rewrite("onto-existing", onto_existing_forced, True, (0,),
                "--force replaces an output that is not an input"),
        *(explain_labels(name) for name in ("digit.json", "digit.png", "digit.npz")),
        Case("collision/explain-image-in-out", image_in_out),
        Case("collision/explain-out-is-the-model", out_is_the_model),
        evaluate("labels-as-results-csv", labels_as_csv),
        evaluate("masks-as-results-md", masks_as_md),
        *(under_a_file(c) for c in ("rewrite", "explain", "evaluate")),
        Case("collision/rewrite-into-unwritable-folder", unwritable_folder),
    ]  # fmt: skip


def _can_create_in(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
