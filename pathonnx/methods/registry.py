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
#
# Every parameter is declared once, as a Param with a Kind (its type) and, for numbers, a
# Range; :meth:`Param.check` is the one place a value is validated, whether it comes from the
# command line (:meth:`Param.from_text`) or from a Python keyword (:func:`method_params`).


@dataclass(frozen=True)
class Kind:
    """A parameter's type: how command-line text becomes its value (``parse``), how a Python
    value is accepted (``accept``, which returns it normalized, e.g. 3.0 -> 3), and how --help
    names it. Both raise ValueError with the reason, worded to follow "must"."""

    metavar: str
    parse: Callable[[str], object]
    accept: Callable[[object], object]


@dataclass(frozen=True)
class Range:
    """The interval a number must lie in: ``lo`` and ``hi`` (None: unbounded), each closed
    unless ``lo_open``/``hi_open``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, value) -> bool:
        above = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        below = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return above and below

    def __str__(self) -> str:
        """As --help and errors show it: ``>= 1``, ``> 0``, ``in [0, 1)``."""
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return (f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")  # fmt: skip


def at_least(lo: float) -> Range:
    return Range(lo=lo)


def above(lo: float) -> Range:
    return Range(lo=lo, lo_open=True)


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
        return _width(text if text.endswith("%") else int(text))
    raise ValueError("must be a count like 64 or a share like 5%")


def _width(value):
    try:
        return check_width(value)
    except InputError:
        raise ValueError("must be a count like 64 or a share like 5%") from None


def _integer_text(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be an integer") from None


def _integer(value) -> int:
    """An int, or a float with an integral value; never a bool."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("must be an integer")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value):
        return int(value)
    raise ValueError("must be an integer")


def _number_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("must be a number") from None


#: The Python and numpy types a number parameter accepts (bool excluded separately).
REAL = (int, float, np.integer, np.floating)


def _number(value) -> float:
    """A finite real number; NaN and infinities are never a parameter's value."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, REAL):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def _text(value) -> str:
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def _number_or_uniform_text(text: str):
    return "uniform" if text.strip() == "uniform" else _number_text(text)


def _number_or_uniform(value):
    return value if value == "uniform" else _number(value)


INTEGER = Kind("INT", _integer_text, _integer)
NUMBER = Kind("FLOAT", _number_text, _number)
TEXT = Kind("TEXT", str, _text)
WIDTH = Kind("N|P%", _width_text, _width)
NUMBER_OR_UNIFORM = Kind("FLOAT|uniform", _number_or_uniform_text, _number_or_uniform)


@dataclass(frozen=True)
class Param:
    """One parameter of a method: its name, default, kind, a short help text, the ``range`` a
    number must lie in, and ``fits(model, value)``, the reason a value does not fit a given
    model (None if it does), for limits that depend on the model (a gate's name, the gates'
    count, a file made for one model). A default of None means "chosen by the method" and is
    always accepted, unless the parameter is ``required`` (a file the method cannot do
    without): :func:`method_params` then refuses a call that leaves it out."""

    name: str
    default: object
    kind: Kind
    help: str
    range: Range | None = None
    fits: Callable[[object, object], str | None] | None = None
    required: bool = False

    def check(self, value, shown: str | None = None):
        """``value`` as the method takes it, or an InputError that begins with ``shown``
        (default ``name=value``) and says what the value must be."""
        if value is None and self.default is None:
            return None
        shown = shown or f"{self.name}={value!r}"
        try:
            value = self.kind.accept(value)
        except ValueError as err:
            raise InputError(f"{shown} {err}") from None
        if self.range is not None and not isinstance(value, str) and not self.range.holds(value):
            raise InputError(f"{shown} must be {self.range}")
        return value

    def from_text(self, text: str, shown: str | None = None):
        """The value of ``text`` as given on the command line (``null`` for None where the
        default is None); raises InputError that begins with ``shown``, how the command line
        gave it (default ``--<name> 'text'``)."""
        if self.default is None and text.strip().lower() in ("null", "none"):
            return None
        shown = shown or f"--{self.name} {text!r}"
        try:
            value = self.kind.parse(text)
        except ValueError as err:
            raise InputError(f"{shown} {err}") from None
        return self.check(value, shown)

    def check_model(self, model, value, shown: str | None = None) -> None:
        """Raise InputError where ``value`` does not fit ``model`` (see ``fits``)."""
        if value is None or self.fits is None:
            return
        reason = self.fits(model, value)
        if reason is not None:
            raise InputError(f"{shown or f'{self.name}={value!r}'} {reason}")

    def describe(self) -> str:
        """``name [default]``, and the range where there is one, for --help."""
        text = f"{self.name} [{self.default}]"
        return text if self.range is None else f"{text} {self.range}"


#: Parameters that several methods take, declared once.
SPARSITY = Param("sparsity", 0.9, NUMBER, "share of all units removed, ranked network-wide",
                 Range(0, 1, hi_open=True))  # fmt: skip
SEED = Param("seed", 0, INTEGER, "random seed", at_least(0))
BATCH = Param("batch", 16, INTEGER, "points per onnxruntime call", at_least(1))


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
    export: Callable | None = None

    @property
    def exportable(self) -> bool:
        """Whether ``pathonnx export`` can write the method as one ONNX graph."""
        return self.export is not None

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
             carries_classes: bool = False, export: Callable | None = None):  # fmt: skip
    """Register the decorated ``fn(model, x, target, **params)`` under ``name``; its
    docstring's first line is the method's summary. ``export``: see :class:`Method`."""

    def wrap(fn: Callable) -> Callable:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        METHODS[name] = Method(name, summary, fn, tuple(params), attribution, family, backward,
                               decompose, carries_classes, export)  # fmt: skip
        return fn

    return wrap


def method_params(method: str, params: dict, model=None) -> dict:
    """``params`` checked against ``method``'s declarations (each value by its Param's kind and
    range, and with a ``model`` against the model too), completed with its defaults. The one
    place every method's parameters are validated, before any work."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    entry = METHODS[method]
    unknown = set(params) - set(entry.defaults)
    if unknown:
        raise InputError(
            f"method {method!r} takes no parameter {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(entry.defaults) or 'none'}"
        )
    checked = dict(entry.defaults)
    for param in entry.params:
        if param.required and params.get(param.name) is None:
            raise InputError(
                f"{method} needs {param.name}, {param.help}; on the command line "
                f"-p {method}.{param.name}=VALUE"
            )
        if param.name in params:
            shown = f"{method}: {param.name}={params[param.name]!r}"
            checked[param.name] = param.check(params[param.name], shown)
            if model is not None:
                param.check_model(model, checked[param.name], shown)
    for param in entry.params:
        if param.required and checked[param.name] is None:
            raise InputError(
                f"method {method!r} needs {param.name}: {param.help}; pass "
                f"{param.name}=... (on the command line -p {param.name}=VALUE)"
            )
    return checked


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
    params = method_params(method, params, model)
    x = as_batch(x, model.input_shape)
    if target is None:
        target = model.forward(x).prediction
    return METHODS[method].run(model, x, model.check_target(target, len(x)), **params)
