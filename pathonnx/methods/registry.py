"""The registry of methods: every attribution and pathway method, its parameters and summary.

One entry per method, registered by the module that implements it. Everything that lists
methods or their parameters reads them from here: :func:`pathonnx.attribute`, ``explain`` and
``evaluate`` in the API and on the command line (``--method`` choices, one flag per parameter,
``-p [METHOD.]NAME=VALUE`` and the ``--help`` text). Every method takes
``(model, x, target, **params)``, as Captum's ``attribute`` does: an attribution method returns
an array shaped like x, a pathway method a :class:`~pathonnx.methods.pathway.Pathway`, which
becomes a map by its attribution rule (``W^p ⊙ x`` or the pathway gradient ``W^p``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..engine import as_batch
from ..errors import InputError
from ..ops import GRADIENT, Backward

# -- parameters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A parameter's type: how command-line text becomes its value (``parse`` raises
    ValueError with the reason), and how --help names it."""

    metavar: str
    parse: Callable[[str], object]


def check_width(width):
    """A pathwise ``width``: a positive int, or a percentage like "5%" of a gate's units."""
    if isinstance(width, str) and width.strip().endswith("%"):
        try:
            share = float(width.strip()[:-1])
        except ValueError:
            raise InputError(f"width {width!r} is not a percentage like '5%'") from None
        if not 0 < share <= 100:
            raise InputError(f"width {width!r} must be a percentage in (0, 100]")
        return width.strip()
    if isinstance(width, (bool, float)) or not isinstance(width, (int, np.integer)) or width < 1:
        raise InputError(f"width {width!r} must be a positive int or a percentage like '5%'")
    return int(width)


def max_units(width, units: int) -> int:
    """The most units ``width`` keeps at a gate of ``units`` units (all for None)."""
    if width is None:
        return units
    width = check_width(width)
    if isinstance(width, str):
        return max(1, math.ceil(units * float(width[:-1]) / 100))
    return min(width, units)


def _width_text(text: str):
    text = text.strip()
    if text.endswith("%") or text.isdigit():
        try:
            return check_width(text if text.endswith("%") else int(text))
        except InputError:
            pass
    raise ValueError("must be a count like 64 or a share like 5%")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be an integer") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("must be a number") from None


def _number_or_uniform(text: str):
    return "uniform" if text.strip() == "uniform" else _number(text)


INTEGER = Kind("INT", _integer)
NUMBER = Kind("FLOAT", _number)
TEXT = Kind("TEXT", str)
WIDTH = Kind("N|P%", _width_text)
NUMBER_OR_UNIFORM = Kind("FLOAT|uniform", _number_or_uniform)


@dataclass(frozen=True)
class Param:
    """One parameter of a method: its name, default, kind and a short help text."""

    name: str
    default: object
    kind: Kind
    help: str

    def from_text(self, text: str, flag: str | None = None):
        """The value of ``text`` as given on the command line (``null`` for None where the
        default is None); raises InputError naming ``flag`` (default ``--<name>``)."""
        if self.default is None and text.strip().lower() in ("null", "none"):
            return None
        try:
            return self.kind.parse(text)
        except ValueError as err:
            raise InputError(f"{flag or '--' + self.name} {text!r} {err}") from None


#: Parameters that several methods take, declared once.
SPARSITY = Param("sparsity", 0.9, NUMBER, "share of all units removed, ranked network-wide")
SEED = Param("seed", 0, INTEGER, "random seed")
BATCH = Param("batch", 16, INTEGER, "points per onnxruntime call")


# -- methods -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A registered method.

    ``attribution``: how its result becomes a map shaped like x: "map" (the method returns
    one), "product" (a pathway's ``W^p ⊙ x``) or "gradient" (a pathway's ``W^p``).
    ``family`` groups methods for the APIs that take one kind (``critical_pathway``,
    ``pruned_pathway``). ``backward``: how ReLU gates pass cotangents back in its walks
    (:mod:`pathonnx.ops.backward`). ``decompose(model, x, target, paths, **params)`` splits
    its pathway into paths, where the method has such a split. ``carries_classes``: its cost
    grows with the number of classes (``classes`` approximates it).
    """

    name: str
    summary: str
    fn: Callable
    params: tuple[Param, ...] = ()
    attribution: str = "map"
    family: str = "baseline"
    backward: Backward = GRADIENT
    decompose: Callable | None = None
    carries_classes: bool = False

    @property
    def kind(self) -> str:
        return "baseline" if self.attribution == "map" else "pathway"

    @property
    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    @property
    def pathway(self) -> Callable | None:
        """``(model, x, target, **params)`` -> Pathway, for pathway methods (else None)."""
        return None if self.attribution == "map" else self.fn

    def from_pathway(self, pathway, x: np.ndarray) -> np.ndarray:
        return pathway.attribution(x) if self.attribution == "product" else pathway.linear.W

    def run(self, model, x, target, **params) -> np.ndarray:
        """The method's map for ``x`` (N, *input_shape) and ``target`` (N,), shaped like x."""
        return self.with_pathway(model, x, target, **params)[0]

    def with_pathway(self, model, x, target, **params) -> tuple[np.ndarray, object]:
        """(attribution, the Pathway behind it, or None for a baseline)."""
        if self.attribution == "map":
            return self.fn(model, x, target, **params), None
        pathway = self.fn(model, x, target, **params)
        return self.from_pathway(pathway, x), pathway


METHODS: dict[str, Method] = {}


def register(name: str, *params: Param, attribution: str = "map", family: str = "baseline",
             backward: Backward = GRADIENT, decompose: Callable | None = None,
             carries_classes: bool = False):  # fmt: skip
    """Register the decorated ``fn(model, x, target, **params)`` under ``name``; its
    docstring's first line is the method's summary."""

    def wrap(fn: Callable) -> Callable:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        METHODS[name] = Method(name, summary, fn, tuple(params), attribution, family, backward,
                               decompose, carries_classes)  # fmt: skip
        return fn

    return wrap


def method_params(method: str, params: dict) -> dict:
    """``params`` checked against ``method``'s, completed with its defaults."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    entry = METHODS[method]
    unknown = set(params) - set(entry.defaults)
    if unknown:
        raise InputError(
            f"method {method!r} takes no parameter {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(entry.defaults) or 'none'}"
        )
    return {**entry.defaults, **params}


def family(name: str, method: str) -> Method:
    """The registered ``method`` of family ``name`` (e.g. "critical"), or a one-line error."""
    members = [m for m in METHODS.values() if m.family == name]
    if method not in [m.name for m in members]:
        known = ", ".join(repr(m.name) for m in members)
        raise InputError(f"{name} pathway method {method!r} is unknown; use one of {known}")
    return METHODS[method]


def attribute(model, x, target=None, method: str = "saliency", **params) -> np.ndarray:
    """Attribution of ``x`` (N, *input_shape) for ``target`` (default: the prediction) by any
    registered ``method`` (see ``pathonnx.METHODS``); returns an array shaped like x."""
    params = method_params(method, params)
    x = as_batch(x, model.input_shape)
    if target is None:
        target = model.forward(x).prediction
    return METHODS[method].run(model, x, model.check_target(target, len(x)), **params)
