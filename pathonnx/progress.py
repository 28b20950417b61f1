"""Progress of one long run, reported step by step to whoever listens.

The methods that take long on a large model (a sweep down all gates, NeuronIntGrad's per-gate
integration, pruning's rounds) call :func:`step` after each step; :func:`reporting` installs a
listener for the calls made inside it (in this thread or task), e.g. the CLI's progress line
on a terminal. Without a listener a step costs one lookup.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

Listener = Callable[[str, int, int], None]
_LISTENER: contextvars.ContextVar[Listener | None] = contextvars.ContextVar(
    "pathonnx_progress", default=None
)


@contextlib.contextmanager
def reporting(listener: Listener):
    """Within it, ``listener(task, done, total)`` hears every :func:`step`."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def step(task: str, done: int, total: int) -> None:
    """``done`` of ``total`` steps of ``task`` (e.g. "pathwise: gates") are finished."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(task, done, total)
