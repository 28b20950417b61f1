"""The seeded fuzz cases: mutations of the sample models, images and arrays, and drawn
parameter values and preprocessing metadata.

``cases(seed, count)`` makes ``count`` cases, shared among the families by :data:`SHARES`;
case ``i`` of a family always has the same id, and its draws come from
``random.Random(f"{seed}/{id}")``. Families: ``truncate`` (a prefix of a model), ``bytes``
(bit flips, random bytes, insertions, deletions, copies, mostly inside the graph rather than
the weights), ``proto`` (structural edits through protobuf: op types, wiring, shapes, dtypes,
attributes, opsets, metadata), ``image`` (PNG and .npy bytes), ``param`` (a registry method's
parameter set to a drawn value) and ``metadata`` (drawn pathonnx.preprocess entries).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import pathonnx
from fuzz import models
from fuzz.contract import Run
from fuzz.corpus import ANY, MODELS, Case, Context

#: Shares of the seeded cases, by family.
SHARES = {"truncate": 0.2, "bytes": 0.25, "proto": 0.25, "image": 0.15, "param": 0.1,
          "metadata": 0.05}  # fmt: skip


def cases(seed: int, count: int) -> list[Case]:
    """``count`` seeded cases (their draws depend on the seed given to :func:`corpus.build`)."""
    return [_FAMILIES[family](i) for family, share in SHARES.items()
            for i in range(round(count * share))]  # fmt: skip


def _mutant(ctx: Context, name: str, path: str, expect, why: str) -> Run:
    """A mutated sample model run by a drawn command (a third of the time with --json), and
    given to ``pathonnx.load`` too."""
    command = ctx.rng.choices(["check", "inspect", "explain"], weights=[45, 20, 35])[0]
    extra = ["--json"] if ctx.rng.random() < 0.3 else []
    return ctx.command(command, path, ctx.shared.subject(name), expect, why, extra=extra, api=True)


def _position(ctx: Context, name: str, size: int) -> int:
    """A byte offset: two times in three inside the graph's structure, else anywhere."""
    if ctx.rng.random() < 1 / 3:
        return ctx.rng.randrange(size)
    ranges = ctx.shared.structure(name)
    start, end = ctx.rng.choices(ranges, weights=[e - s for s, e in ranges])[0]
    return ctx.rng.randrange(start, max(start + 1, end))


def _parses(data: bytes) -> bool:
    try:
        onnx.load_from_string(data)
    except Exception:  # protobuf raises its own DecodeError, or others on odd bytes
        return False
    return True


def _truncate(i: int) -> Case:
    name = MODELS[i % len(MODELS)]

    def build(ctx):
        data = Path(ctx.shared.model(name)).read_bytes()
        where = ctx.rng.random()
        if where < 1 / 3:
            cut = ctx.rng.randrange(1, min(4096, len(data)))
        elif where < 2 / 3:
            cut = ctx.rng.randrange(max(1, len(data) - 4096), len(data))
        else:
            cut = ctx.rng.randrange(1, len(data))
        expect = ANY if _parses(data[:cut]) else (2,)
        why = f"the first {cut} of {len(data)} bytes of {name}: " + (
            "a complete model still, any code" if expect == ANY else "unreadable, exit 2"
        )
        return _mutant(ctx, name, ctx.write(f"{name}.onnx", data[:cut]), expect, why)

    return Case(f"seeded/truncate/{name}/{i:04d}", build)


def _mutate_bytes(ctx: Context, data: bytes, position) -> tuple[bytes, str]:
    """One to four byte-level edits: bit flips, random bytes, insertions, deletions, copies."""
    data, done = bytearray(data), []
    for _ in range(ctx.rng.randint(1, 4)):
        at = min(position(len(data)), len(data) - 1)
        kind = ctx.rng.choice(["flip", "byte", "insert", "delete", "duplicate", "ones"])
        if kind == "flip":
            data[at] ^= 1 << ctx.rng.randrange(8)
        elif kind == "byte":
            data[at] = ctx.rng.randrange(256)
        elif kind == "insert":
            data[at:at] = bytes(ctx.rng.randrange(256) for _ in range(ctx.rng.randint(1, 16)))
        elif kind == "delete":
            del data[at : at + ctx.rng.randint(1, 64)]
        elif kind == "duplicate":
            data[at:at] = data[at : at + ctx.rng.randint(1, 64)]
        else:
            data[at : at + 5] = b"\xff" * 4 + b"\x7f"  # a huge varint
        done.append(f"{kind}@{at}")
    return bytes(data), ", ".join(done)


def _bytes(i: int) -> Case:
    name = MODELS[i % len(MODELS)]

    def build(ctx):
        data = Path(ctx.shared.model(name)).read_bytes()
        mutated, how = _mutate_bytes(ctx, data, lambda size: _position(ctx, name, size))
        why = f"{name} with {how}: any code, but the contract's form"
        return _mutant(ctx, name, ctx.write(f"{name}.onnx", mutated), ANY, why)

    return Case(f"seeded/bytes/{name}/{i:04d}", build)


JUNK_TEXT = ["abc", "", "null", "[]", "{}", "nan", "1e309", "-1", "0", "\n", "é", "x" * 300]
OP_TYPES = ["Sigmoid", "Relu", "Conv", "MatMul", "Loop", "Identity", "NoSuchOp", "", "Softmax",
            "MaxPool", "Clip", "Max"]  # fmt: skip


def _op(model, node, tensor, rng):
    node.op_type = rng.choice(OP_TYPES)


def _drop(model, node, tensor, rng):
    model.graph.node.remove(node)


def _wire(model, node, tensor, rng):
    """A node input made undefined, a self-loop, a cycle, empty, or the graph input."""
    if node.input:
        last = [n.output[0] for n in model.graph.node if n.output][-1]
        choices = ["nowhere", node.output[0], last, "", model.graph.input[0].name]
        node.input[rng.randrange(len(node.input))] = rng.choice(choices)


def _dim(model, node, tensor, rng):
    values = [*model.graph.input[:1], *model.graph.output[:1]]
    dims = rng.choice(values).type.tensor_type.shape.dim
    if dims:
        dim, value = rng.choice(dims), rng.choice([0, 1, 7, 10**9, 2**62, -3, "Q", None])
        if value is None:
            dim.Clear()
        elif isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = value


def _dtype(model, node, tensor, rng):
    if tensor is not None:
        tensor.data_type = rng.choice([11, 7, 10, 8, 0, 99, 16])  # double .. bfloat16, bad ones


def _raw(model, node, tensor, rng):
    if tensor is not None and tensor.raw_data:
        data = tensor.raw_data
        tensor.raw_data = rng.choice([data[: len(data) // 2], data + b"\0" * 7, b""])


def _dims(model, node, tensor, rng):
    if tensor is not None and tensor.dims:
        k = rng.randrange(len(tensor.dims))
        tensor.dims[k] = rng.choice([0, 1, tensor.dims[k] * 2, 10**9])


def _opset(model, node, tensor, rng):
    model.opset_import[0].version = rng.choice([1, 6, 9, 11, 17, 21, 99, 0])


def _ir(model, node, tensor, rng):
    model.ir_version = rng.choice([0, 1, 3, 99])


def _attribute(model, node, tensor, rng):
    if node.attribute:
        attr = rng.choice(node.attribute)
        if attr.ints:
            attr.ints[:] = [rng.choice([0, -5, 10**9])] * len(attr.ints)
        elif attr.type == onnx.AttributeProto.FLOAT:
            attr.f = rng.choice([math.nan, math.inf, -1.0])
        else:
            attr.i = rng.choice([7, -1, 0])


def _outputs(model, node, tensor, rng):
    outputs = model.graph.output
    choice = rng.choice(["remove", "duplicate", "rename"])
    if choice == "remove":
        del outputs[:]
    elif outputs and choice == "duplicate":
        outputs.append(outputs[0])
    elif outputs:
        outputs[0].name = "nowhere"


def _rename_input(model, node, tensor, rng):
    model.graph.input[0].name = "renamed"


def _duplicate(model, node, tensor, rng):
    model.graph.node.append(node)


def _value(model, node, tensor, rng):
    """One weight set to NaN, Inf or 3e38 (none where an edit before broke the tensor)."""
    if tensor is not None:
        try:
            array = numpy_helper.to_array(tensor).copy()
        except (ValueError, TypeError):  # its dtype or dims no longer fit its data
            return
        if array.size and array.dtype.kind == "f":
            array.flat[rng.randrange(array.size)] = rng.choice([np.nan, np.inf, 3e38])
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def _metadata_entry(model, node, tensor, rng):
    entry = model.metadata_props.add()
    entry.key = rng.choice(["pathonnx.preprocess", "pathonnx.labels"])
    entry.value = rng.choice(JUNK_TEXT)


def _order(model, node, tensor, rng):
    """The nodes shuffled: no longer in topological order."""
    nodes = list(model.graph.node)
    rng.shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


#: Structural edits of a model, by name: ``edit(model, node, tensor, rng)``, in place.
EDITS = {"op": _op, "drop": _drop, "wire": _wire, "dim": _dim, "dtype": _dtype, "raw": _raw,
         "dims": _dims, "opset": _opset, "ir": _ir, "attribute": _attribute,
         "outputs": _outputs, "rename-input": _rename_input, "duplicate": _duplicate,
         "value": _value, "metadata": _metadata_entry, "order": _order}  # fmt: skip


def _mutate_proto(model: onnx.ModelProto, rng: random.Random) -> str:
    """One structural edit of ``model`` (of a random node and weight); says which."""
    if not model.graph.node:
        return "none (no node left)"
    node = rng.choice(model.graph.node)
    tensor = rng.choice(model.graph.initializer) if model.graph.initializer else None
    name = rng.choice(sorted(EDITS))
    EDITS[name](model, node, tensor, rng)
    return f"{name} ({node.name or node.op_type})"


def _proto(i: int) -> Case:
    name = MODELS[i % len(MODELS)]

    def build(ctx):
        model = onnx.load(ctx.shared.model(name))
        how = [_mutate_proto(model, ctx.rng) for _ in range(ctx.rng.randint(1, 3))]
        path = ctx.write(f"{name}.onnx", model.SerializeToString())
        why = f"{name} with {'; '.join(how)}: any code, but the contract's form"
        return _mutant(ctx, name, path, ANY, why)

    return Case(f"seeded/proto/{name}/{i:04d}", build)


def _image(i: int) -> Case:
    files = [("digit.png", "digits_mlp"), ("shape.png", "shapes_vgg"),
             ("digits.npy", "digits_mlp"), ("shapes.npy", "shapes_resnet")]  # fmt: skip
    source, model = files[i % len(files)]

    def build(ctx):
        data = Path(ctx.shared[source]).read_bytes()
        if ctx.rng.random() < 0.25:
            cut = ctx.rng.randrange(len(data))
            mutated, how = data[:cut], f"cut to {cut} bytes"
        else:
            head = ctx.rng.random() < 0.5  # the header, where a change matters most
            mutated, how = _mutate_bytes(
                ctx, data, lambda size: ctx.rng.randrange(min(size, 128) if head else size)
            )
        path = ctx.write(source, mutated)
        why = f"{source} with {how}: explained or refused with a named error"
        return ctx.explain(ctx.shared.model(model), path, expect=(0, 2), why=why)

    return Case(f"seeded/image/{source}/{i:04d}", build)


PARAM_VALUES = {
    "INT": ["0", "-1", "1", "2", "abc", "", "1.5", "nan", "null"],
    "FLOAT": ["0", "-1", "0.5", "1", "2", "nan", "inf", "-inf", "abc", "", "1e309", "null"],
    "N|P%": ["0", "1", "2", "5%", "0%", "101%", "-1", "abc", "nan", "null"],
    "FLOAT|uniform": ["uniform", "nan", "0.5", "abc", "-1"],
    "TEXT": ["nope", "", "x" * 300, "null"],
}


def _param_expect(default, kind: str, text: str, required: bool = False) -> tuple[int, ...]:
    """What a parameter value must give: exit 2 where it is not a finite number (or, for a
    text parameter such as a gate name, names nothing); 0 or 2 where range rules decide. None
    leaves a parameter at its default, which a required one (a file) does not have."""
    if text.strip().lower() in ("null", "none"):
        return (0,) if default is None and not required else (2,)
    if kind == "TEXT":
        return (2,)
    if kind == "FLOAT|uniform" and text == "uniform":
        return (0,)
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        return (2,)
    if not math.isfinite(value):
        return (2,)
    if kind == "INT" and not text.lstrip("-").isdigit():
        return (2,)
    return (0, 2)


def _param(i: int) -> Case:
    def build(ctx):
        methods = [m for m in pathonnx.METHODS.values() if m.params]
        method = ctx.rng.choice(methods)
        param = ctx.rng.choice(method.params)
        kind = getattr(param.kind, "metavar", "")
        text = ctx.rng.choice(PARAM_VALUES.get(kind, ["abc", "0", "-1", "nan"]))
        model = "shapes_vgg" if method.name == "gradcam" else "digits_mlp"
        expect = (_param_expect(param.default, kind, text, param.required)
                  if kind in PARAM_VALUES else (0, 2))  # fmt: skip
        why = f"{method.name} {param.name}={text!r} ({kind or 'unknown kind'})"
        return ctx.explain(
            ctx.shared.model(model),
            ctx.shared.subject(model),
            extra=["--method", method.name, "-p", f"{param.name}={text}", "--json"],
            expect=expect,
            why=why,
        )

    return Case(f"seeded/param/{i:04d}", build)


PREPROCESS_VALUES = {
    "size": ["abc", None, [], [0, 0], [-1, 8], [8], [8, 8], [8, 8, 8], [1e9, 1e9], 8, 8.5, True,
             {"a": 1}, ["8", "8"], [10**12, 10**12]],
    "color": ["grey", "rgb", "bgr", "GREY", "cmyk", None, 3, ""],
    "scale": ["x", None, -1, 0, 0.5, [1, 2], math.inf, math.nan],
    "mean": [[0.0], [0.1, 0.2], "0.5,0.5", "abc", [], None, [math.nan]],
    "std": [[1.0], [0.0], [-1], "x", [], None, [math.inf]],
    "layout": ["NCHW", "NHWC", "nchw", "XYZ", None, 1],
    "resize": ["stretch", "shorter", "none", "zoom", None],
}  # fmt: skip


def _metadata_seeded(i: int) -> Case:
    def build(ctx):
        keys = ctx.rng.sample(sorted(PREPROCESS_VALUES), ctx.rng.randint(1, 3))
        entry = {k: ctx.rng.choice(PREPROCESS_VALUES[k]) for k in keys}
        text = json.dumps(entry)  # NaN and Infinity as Python writes them
        why = f"preprocessing {text}: used, or refused with a named error"
        if i % 2:
            return ctx.rewrite(
                ctx.shared.model("digits_mlp"),
                extra=["--set-preprocess", text],
                expect=(0, 2),
                why=why,
            )
        model = models.with_metadata(ctx.shared.model("digits_mlp"), {"pathonnx.preprocess": text})
        return ctx.explain(
            ctx.save("model.onnx", model), ctx.shared["digit.png"], expect=(0, 2), why=why
        )

    return Case(f"seeded/metadata/{i:04d}", build)


_FAMILIES = {"truncate": _truncate, "bytes": _bytes, "proto": _proto, "image": _image,
             "param": _param, "metadata": _metadata_seeded}  # fmt: skip
