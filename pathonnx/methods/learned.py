"""Learned pathways: GEN-CNP's instance pathways, read from a generator trained once per model
(Lin, Bao, Yu and Kong, "On Model Explanations with Transferable Neural Pathways",
arXiv 2309.09887).

``pathonnx learn MODEL DATA -o GENERATOR.onnx`` (:mod:`pathonnx.learn`, which needs torch)
trains the generator and exports it to ONNX; explaining with it needs only onnxruntime. The
method ``gencnp`` runs the model at x, feeds every gate's output to the generator, and takes
its binary masks as the pathway. The pathway's attribution is its gradient ``W^p`` (the
pathway gradient, as for the critical pathways): ``W^p, b^p`` are the frozen map at x's
pattern through the kept units, so ``W^p·x + b^p`` is the target logit of the network frozen
at x with the other units removed (``LinearEngine.frozen_logits``). That is not the logit of
the network re-run with the units removed (the *pathway network* the generator was trained
on, whose gates above a removed unit re-decide), which training distils towards the model's.

The generator file (written by :mod:`pathonnx.learn.export`):

    inputs   g0 .. g{L-1}  float32 (N, *gate.shape): the model's gate outputs at x, in the
                           model's gate order (``model.forward(x).activations``)
    outputs  m0 .. m{L-1}  bool: the hard pathway, (N, C) per channel for granularity
                           "channel" (C = gate.shape[0]; a channel keeps all its positions),
                           (N, *gate.shape) per unit for "unit"
    metadata pathonnx.gencnp.gates, .shapes (JSON lists, in gate order), .granularity,
             .model_sha256 (the sha256 of the model file it was trained for), .settings and
             .losses (JSON: how it was trained and its final losses), pathonnx.version

A generator is refused (one line) for a model whose file has another sha256 or whose gates
differ: its masks would name units of another network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import GraphRunner, device_value
from ..errors import InputError
from ..graph.auxiliary import GraphFile, read_graph_file
from ..io import note_input
from ..version import __version__
from .pathway import Pathway, network_wide_start, pathway_from_counts
from .registry import TEXT, Param, register

PREFIX = "pathonnx.gencnp."
GATES_KEY = PREFIX + "gates"
SHAPES_KEY = PREFIX + "shapes"
GRANULARITY_KEY = PREFIX + "granularity"
MODEL_KEY = PREFIX + "model_sha256"
SETTINGS_KEY = PREFIX + "settings"
LOSSES_KEY = PREFIX + "losses"
VERSION_KEY = "pathonnx.version"
#: How finely a generator decides: one score per channel of a gate, or per unit.
GRANULARITIES = ("channel", "unit")
LEARN_HINT = "train one for this model with pathonnx learn MODEL DATA -o GENERATOR.onnx"


def input_name(i: int) -> str:
    """The generator's input for gate ``i`` (in the model's gate order)."""
    return f"g{i}"


def output_name(i: int) -> str:
    """The generator's output, gate ``i``'s mask."""
    return f"m{i}"


def mask_shape(shape: tuple[int, ...], granularity: str) -> tuple[int, ...]:
    """The per-sample shape of the generator's mask for a gate of per-sample ``shape``."""
    return tuple(shape[:1]) if granularity == "channel" else tuple(shape)


def generator_metadata(model, granularity: str, settings: dict, losses: dict) -> dict[str, str]:
    """The metadata entries of a generator for ``model`` (see the module docstring)."""
    return {
        GATES_KEY: json.dumps([g.name for g in model.gates]),
        SHAPES_KEY: json.dumps([list(g.shape) for g in model.gates]),
        GRANULARITY_KEY: granularity,
        MODEL_KEY: model.sha256(),
        SETTINGS_KEY: json.dumps(settings, sort_keys=True),
        LOSSES_KEY: json.dumps(losses, sort_keys=True),
        VERSION_KEY: __version__,
    }


@dataclass(frozen=True)
class Generator:
    """A pathway generator as read from its file, with its session on the model's device."""

    file: GraphFile
    runner: GraphRunner
    gates: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    granularity: str
    model_sha256: str

    @property
    def settings(self) -> dict:
        return json.loads(self.file.metadata.get(SETTINGS_KEY, "{}"))

    @property
    def losses(self) -> dict:
        return json.loads(self.file.metadata.get(LOSSES_KEY, "{}"))

    def mismatch(self, model) -> str | None:
        """Why this generator does not fit ``model`` (a phrase to follow its name), or None."""
        if self.model_sha256 != model.sha256():
            return (f"was trained for another model (sha256 {self.model_sha256[:12]}..., this "
                    f"model's is {model.sha256()[:12]}...); {LEARN_HINT}")  # fmt: skip
        return self.gate_mismatch(model)

    def gate_mismatch(self, model) -> str | None:
        """Why this generator's gates are not ``model``'s (names and per-sample shapes)."""
        names = tuple(g.name for g in model.gates)
        shapes = tuple(tuple(g.shape) for g in model.gates)
        if (names, shapes) == (self.gates, self.shapes):
            return None
        for i, (mine, theirs) in enumerate(zip(zip(self.gates, self.shapes), zip(names, shapes))):
            if mine != theirs:
                return (f"reads gate {i} as {mine[0]!r} {mine[1]} but the model has {theirs[0]!r} "
                        f"{theirs[1]} (another input size or output?); {LEARN_HINT}")  # fmt: skip
        return (f"reads {len(self.gates)} gates but the model has {len(names)}; "
                f"{LEARN_HINT}")  # fmt: skip

    def masks(self, model, fwd) -> dict[str, np.ndarray]:
        """The generator's hard pathway at ``fwd`` (the model's forward pass): gate name ->
        bool (N, *gate.shape), a channel's decision spread over its positions."""
        feeds = {input_name(i): device_value(fwd.activations, g.name)
                 for i, g in enumerate(model.gates)}  # fmt: skip
        names = [output_name(i) for i in range(len(model.gates))]
        found = self.runner.run(feeds, names)
        n, out = len(fwd.x), {}
        for gate, value in zip(model.gates, found):
            mask = np.asarray(self.runner.dev.host(value)).astype(bool)
            want = (n, *mask_shape(gate.shape, self.granularity))
            if mask.shape != want:
                raise InputError(f"{self.file.source}: the generator returned a mask of shape "
                                 f"{mask.shape} for gate {gate.name!r}, not {want}; "
                                 f"{LEARN_HINT}")  # fmt: skip
            if self.granularity == "channel":
                spread = mask.reshape(n, -1, *[1] * (len(gate.shape) - 1))
                mask = np.broadcast_to(spread, (n, *gate.shape)).copy()
            out[gate.name] = mask
        return out


def _describe(file: GraphFile) -> tuple:
    """(gates, shapes, granularity, model sha256) from a generator's metadata, or InputError."""
    meta = file.metadata
    missing = [k for k in (GATES_KEY, SHAPES_KEY, GRANULARITY_KEY, MODEL_KEY) if k not in meta]
    if missing:
        raise InputError(f"{file.source}: not a pathway generator (no {missing[0]} in its "
                         f"metadata); {LEARN_HINT}")  # fmt: skip
    try:
        gates = tuple(str(g) for g in json.loads(meta[GATES_KEY]))
        shapes = tuple(tuple(int(d) for d in s) for s in json.loads(meta[SHAPES_KEY]))
    except (ValueError, TypeError):
        raise InputError(f"{file.source}: the generator's {GATES_KEY} or {SHAPES_KEY} metadata "
                         f"is not a JSON list; {LEARN_HINT}") from None  # fmt: skip
    granularity = meta[GRANULARITY_KEY]
    if granularity not in GRANULARITIES or len(gates) != len(shapes):
        raise InputError(f"{file.source}: the generator's metadata is inconsistent "
                         f"(granularity {granularity!r}, {len(gates)} gates, {len(shapes)} "
                         f"shapes); {LEARN_HINT}")  # fmt: skip
    inputs = [name for name, _ in file.inputs]
    outputs = [name for name, _ in file.outputs]
    want_in = [input_name(i) for i in range(len(gates))]
    want_out = [output_name(i) for i in range(len(gates))]
    if inputs != want_in or outputs != want_out:
        raise InputError(f"{file.source}: the generator's inputs/outputs are {inputs}/{outputs}, "
                         f"not g0../m0.. for its {len(gates)} gates; {LEARN_HINT}")  # fmt: skip
    return gates, shapes, granularity, meta[MODEL_KEY]


_LOADED: dict[tuple, Generator] = {}


def load_generator(path, model) -> Generator:
    """The generator in the file ``path``, with a session on ``model``'s device; kept while
    the file is unchanged (its path, size and modification time), so that a batch after
    batch reads it once. Raises InputError for a file that is not a generator; whether it
    fits ``model`` is :meth:`Generator.mismatch`."""
    path = Path(path)
    try:
        status = os.stat(path)
    except OSError:
        status = None
    key = None
    if status is not None:
        key = (str(path.resolve()), status.st_size, status.st_mtime_ns, repr(model.providers))
        if key in _LOADED:
            note_input(path, "the generator", status)
            return _LOADED[key]
    file = read_graph_file(path, "the generator")
    generator = Generator(file, GraphRunner(file, model.providers), *_describe(file))
    if key is not None:
        if len(_LOADED) >= 8:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = generator
    return generator


def _fits(model, path) -> str | None:
    return load_generator(path, model).mismatch(model)


GENERATOR = Param("generator", None, TEXT, "the generator file that pathonnx learn wrote",
                  fits=_fits, required=True)  # fmt: skip


@register("gencnp", GENERATOR, attribution="gradient", family="learned")
def gencnp(model, x, target, generator):
    """GEN-CNP learned instance pathway (Lin et al. 2023): its pathway gradient W^p."""
    if generator is None:
        raise InputError(f"method 'gencnp' needs generator: {GENERATOR.help}")
    loaded = load_generator(generator, model)
    reason = loaded.gate_mismatch(model)  # the model's sha256 is checked with the parameters
    if reason is not None:
        raise InputError(f"gencnp: generator={str(generator)!r} {reason}")
    return generator_pathway(model, x, target, loaded, {"generator": str(generator)})


def generator_pathway(model, x, target, generator: Generator, params: dict) -> Pathway:
    """The Pathway of ``generator``'s masks at ``x`` (N, *input_shape): its ``W^p, b^p`` for
    ``target`` (default the prediction), units kept per gate and the share of them inactive
    at x, and ``share_kept`` (N,), the share of all the model's units kept."""
    fwd, target = network_wide_start(model, x, target)
    masks = generator.masks(model, fwd)
    n = len(fwd.x)
    kept = {name: m.reshape(n, -1).sum(axis=1).astype(np.int64) for name, m in masks.items()}
    dead = {g.name: (masks[g.name] & ~(fwd.activations[g.name] > 0)).reshape(n, -1).sum(axis=1)
            for g in model.gates}  # fmt: skip
    pathway = pathway_from_counts(model, fwd, target, masks, kept, dead, "gencnp", params)
    units = sum(g.units for g in model.gates)
    pathway.stats["share_kept"] = sum(kept.values()) / units
    return pathway
