"""Errors that pathonnx raises, each with the exit code the CLI maps it to.

The codes are those of docs/ARCHITECTURE.md: 2 for bad input or usage, 1 for a model that is
not explainable.
"""

from __future__ import annotations

import unicodedata


def one_line(text) -> str:
    """``text`` on one line: control characters and line breaks (say, a newline in a file or
    label name) written as escapes, as ``repr`` writes them."""
    return "".join(repr(c)[1:-1] if has_control(c) else c for c in str(text))


def has_control(text) -> bool:
    """Whether ``text`` holds a control character or a line break (which :func:`one_line`
    would escape)."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in str(text))


class PathonnxError(Exception):
    """Base class. The message is one line: what is wrong, and what to do (control characters
    in it, from file or label names, are escaped)."""

    exit_code = 2

    def __str__(self) -> str:
        return one_line(super().__str__())


class ModelLoadError(PathonnxError):
    """The file is not a readable ONNX model (corrupt, truncated, unsafe external data, ...)."""

    exit_code = 2


class UnsupportedModelError(PathonnxError):
    """The model reads fine but is not an explainable piecewise-linear network.

    ``nodes`` lists every offending ``(node name, op type, reason)``. ``groups`` sums them up
    by kind (a named activation such as SiLU, else an op and its reason), most frequent first:
    dicts with ``kind``, ``label``, ``why``, ``count`` (places), ``example`` and ``nodes``.
    ``ops`` is the op histogram of the graph as read, when the refusal came before the rewrite.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        nodes: list[tuple[str, str, str]] | None = None,
        groups: list[dict] | None = None,
        ops: dict[str, int] | None = None,
    ):
        super().__init__(message)
        self.nodes = list(nodes or [])
        self.groups = list(groups or [])
        self.ops = dict(ops or {})


class InputError(PathonnxError):
    """An input array, image or argument does not fit the model (shape, dtype, NaN, target)."""

    exit_code = 2
