"""The model boundary: what the libraries raise on a bad model becomes one pathonnx error.

protobuf, onnx, onnx-graphsurgeon and onnxruntime answer a damaged model with whatever their
code meets first: a ``KeyError`` for a tensor that no node defines, a ``UnicodeDecodeError``
for a mutated name, a ``ValueError`` for a short ``raw_data``, a ``RuntimeError`` for a
symlink loop in an external-data location, an ``onnxruntime`` ``Fail``. pathonnx reads a
model, rewrites it and builds the graphs it runs from it inside :func:`boundary`, which turns
any such exception into a :class:`~pathonnx.errors.ModelLoadError`: one line naming the
model, the step and the library's own words, exit code 2. pathonnx's own errors pass through
as they are, and the library's exception stays attached as the cause (``--debug`` shows it).

The checks of :mod:`.validate` find the usual damage first and say more precisely what is
wrong; this mapping is what catches the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import InputError, ModelLoadError, PathonnxError

#: The longest library message quoted in an error (the rest is cut, with "...").
QUOTED = 240


def library_error(err: BaseException) -> str:
    """``Type: message`` of a library's exception on one line, at most :data:`QUOTED`
    characters of the message (onnx and onnxruntime write several lines)."""
    text = " ".join(str(err).split())
    if len(text) > QUOTED:
        text = text[: QUOTED - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def model_error(name: str, step: str, err: BaseException) -> PathonnxError:
    """The error for a library's exception ``err`` met while doing ``step`` on model ``name``:
    an :class:`InputError` when memory ran out, else a :class:`ModelLoadError`."""
    if isinstance(err, MemoryError) or "Failed to allocate memory" in str(err):  # onnxruntime's
        return InputError(
            f"{name}: not enough memory to {step} ({library_error(err)}); free memory, or use a "
            "smaller --batch or input size (--size)"
        )
    return ModelLoadError(
        f"{name}: cannot {step} ({library_error(err)}); the file is damaged or not valid ONNX: "
        "re-export it (onnx.checker.check_model says what is wrong), or report it if it runs "
        "in onnxruntime"
    )


@contextlib.contextmanager
def boundary(name: str, step: str) -> Iterator[None]:
    """Within it, an exception other than pathonnx's own becomes :func:`model_error`.

    ``name`` is the model as messages show it, ``step`` what is being done to it, as a verb
    phrase ("read the model", "rewrite the graph", "build the adjoint graph")."""
    try:
        yield
    except PathonnxError:
        raise
    except Exception as err:
        raise model_error(name, step, err) from err
