"""The fuzz corpus's frame: a case, the folder it builds its files in, the shared inputs.

A :class:`Case` has an id, known when pytest collects, and a ``build`` that writes its files
into its own folder and returns the :class:`~fuzz.contract.Run`. Nothing binary is committed:
the models, images and arrays are made at test time, from the sample models and with
``onnx.helper`` (``fuzz.models``). The cases themselves are in ``fuzz.fixed`` (each input that
issue 14 lists, and controls) and ``fuzz.seeded`` (mutations drawn from a seed). A case's
random draws come from ``random.Random(f"{seed}/{id}")``: a case is the same whatever else
runs.

Expected exit codes follow DESIGN.md §5-6 and issue 14: 2 for bad or unreadable input and bad
usage, 1 for a model that is not explainable, 0 for valid input. Where the contract leaves a
choice (a byte mutation may leave a valid model), ``expect`` lists every allowed code.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from fuzz.contract import Run
from fuzz.models import mlp

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
#: The sample models the seeded mutations start from, and the input each one explains.
MODELS = ("digits_mlp", "shapes_vgg", "shapes_resnet")
SUBJECT = {"digits_mlp": "digit.png", "shapes_vgg": "shape.png", "shapes_resnet": "shape.png"}
#: Any exit code: where the contract leaves the choice to the input.
ANY = (0, 1, 2)


# -- shared inputs -------------------------------------------------------------------------


@dataclass
class Shared:
    """Inputs that many cases read and none may change: copies of the sample models and of
    two images, arrays in the models' input spaces, and a small hand-built MLP."""

    folder: Path
    _ranges: dict = field(default_factory=dict)

    @classmethod
    def make(cls, folder: Path) -> Shared:
        folder.mkdir(parents=True, exist_ok=True)
        for name in MODELS:
            shutil.copyfile(SAMPLES / f"{name}.onnx", folder / f"{name}.onnx")
        shutil.copyfile(SAMPLES / "images" / "digit_3.png", folder / "digit.png")
        shutil.copyfile(SAMPLES / "images" / "digit_7.png", folder / "digit7.png")
        shutil.copyfile(SAMPLES / "images" / "shapes_000_circle.png", folder / "shape.png")
        rng = np.random.default_rng(0)
        np.save(folder / "digits.npy", rng.uniform(0, 1, (1, 1, 8, 8)).astype(np.float32))
        np.save(folder / "shapes.npy", rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
        onnx.save(mlp(), folder / "mlp.onnx")
        np.save(folder / "mlp.npy", rng.standard_normal((1, 4)).astype(np.float32))
        return cls(folder)

    def __getitem__(self, name: str) -> str:
        return str(self.folder / name)

    def model(self, name: str) -> str:
        return self[f"{name}.onnx"]

    def subject(self, name: str) -> str:
        return self[SUBJECT[name]]

    def structure(self, name: str) -> list[tuple[int, int]]:
        """Byte ranges of a sample model outside its weights' raw data: where a mutation
        hits the graph rather than a float."""
        if name not in self._ranges:
            data = Path(self.model(name)).read_bytes()
            spans = []
            for tensor in onnx.load_from_string(data).graph.initializer:
                if len(tensor.raw_data) > 16:
                    start = data.find(tensor.raw_data)
                    if start >= 0:
                        spans.append((start, start + len(tensor.raw_data)))
            ranges, at = [], 0
            for start, end in sorted(spans):
                if start > at:
                    ranges.append((at, start))
                at = max(at, end)
            ranges.append((at, len(data)))
            self._ranges[name] = ranges
        return self._ranges[name]


# -- a case and its folder -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One fuzz case: its test id and how to build its files and command line."""

    id: str
    build: Callable[[Context], Run]


@dataclass
class Context:
    """What a case's ``build`` gets: its own empty folder, the shared inputs and its rng; and
    the command lines of the five commands, each a :class:`Run`.

    Every existing file named on a command line that is not its output counts as an input
    (hashed before and after); ``reads`` adds files read without being named (external data,
    labels behind a flag value)."""

    folder: Path
    shared: Shared
    rng: random.Random

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def write(self, name: str, data: bytes | str) -> str:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def save(self, name: str, model: onnx.ModelProto) -> str:
        return self.write(name, model.SerializeToString())

    def run(self, argv, expect, why="", reads=(), outputs=(), **extra) -> Run:
        argv = tuple(str(a) for a in argv)
        outputs = tuple(str(o) for o in outputs)
        named = [a for a in argv if a not in outputs and os.path.lexists(a)]
        inputs = dict.fromkeys([*named, *map(str, reads)])
        return Run(argv, tuple(expect), tuple(p for p in inputs if not os.path.isdir(p)),
                   outputs, why, str(self.folder), debug="--debug" in argv, **extra)  # fmt: skip

    def explain(self, model, *images, extra=(), expect=(0,), why="", reads=(), out=None) -> Run:
        out = out or self.path("out")
        argv = ["explain", model, *images, "-o", out, *extra]
        return self.run(argv, expect, why, reads, [out])

    def check(self, model, extra=(), expect=(0,), why="", reads=()) -> Run:
        return self.run(["check", model, *extra], expect, why, reads)

    def inspect(self, model, extra=(), expect=(0,), why="", reads=()) -> Run:
        return self.run(["inspect", model, *extra], expect, why, reads)

    def rewrite(self, model, out=None, extra=(), expect=(0,), why="", reads=()) -> Run:
        out = out or self.path("rewritten.onnx")
        return self.run(["rewrite", model, "-o", out, *extra], expect, why, reads, [out])

    def evaluate(self, model, *data, out=None, extra=(), expect=(0,), why="", reads=(),
                 methods="saliency", metrics="mprt") -> Run:  # fmt: skip
        """A small `evaluate`: by default one method and the MPRT metric only (fast)."""
        out = out or self.path("eval")
        argv = ["evaluate", model, *data, "-o", out, "--methods", methods, "--metrics", metrics,
                *extra]  # fmt: skip
        return self.run(argv, expect, why, reads, [out])

    def command(self, name: str, model: str, subject: str, expect, why="", reads=(),
                extra=(), api=False) -> Run:  # fmt: skip
        """``name`` (check, inspect or explain) on ``model``, explaining ``subject``; with
        ``api``, ``pathonnx.load(model)`` is tried too."""
        if name == "explain":
            run = self.explain(model, subject, extra=extra, expect=expect, why=why, reads=reads)
        else:
            run = getattr(self, name)(model, extra=extra, expect=expect, why=why, reads=reads)
        return replace(run, api_load=model if api else "")


def build(case: Case, folder: Path, shared: Shared, seed: int) -> Run:
    """Write ``case``'s files into ``folder`` (made empty) and return its Run."""
    folder.mkdir(parents=True, exist_ok=True)
    return case.build(Context(folder, shared, random.Random(f"{seed}/{case.id}")))
