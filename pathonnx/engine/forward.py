"""The forward pass's results: input validation, the frozen pattern, targets and probabilities."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .resident import OnDevice


def as_batch(x, input_shape: tuple[int, ...], what: str = "input") -> np.ndarray:
    """Validate ``x`` as a float32 batch ``(N, *input_shape)``; returns a new or read-only array."""
    try:
        array = np.asarray(x)
    except Exception as err:
        raise InputError(f"{what} cannot be read as an array ({err})") from None
    if array.dtype.kind not in "fiu" and array.dtype != np.bool_:
        raise InputError(f"{what} has dtype {array.dtype}; pass float32 numbers")
    if tuple(array.shape) == tuple(input_shape):
        raise InputError(
            f"{what} has shape {array.shape}, one sample without a batch axis; pass "
            f"x[None] (shape (1, {', '.join(map(str, input_shape))}))"
        )
    if array.ndim != len(input_shape) + 1 or tuple(array.shape[1:]) != tuple(input_shape):
        want = ", ".join(["N", *map(str, input_shape)])
        raise InputError(f"{what} has shape {array.shape}; the model takes ({want})")
    if array.shape[0] == 0:
        raise InputError(f"{what} is an empty batch; pass at least one sample")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{what} contains NaN or Inf; clean the input before explaining it")
    return array


def finite_logits(logits: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``logits`` when every one is finite; else :class:`InputError`: a finite input whose
    values overflow float32 inside the network (e.g. 3e38) leaves NaN or Inf in the logits,
    and every explanation of them would be NaN."""
    if np.isfinite(logits).all():
        return logits
    largest = float(np.abs(x).max()) if x.size else 0.0
    raise InputError(
        f"the model's outputs are NaN or infinite at this input: its values overflow float32 "
        f"inside the network (the input's largest magnitude is {largest:.3g}); scale the input "
        "to the range the model was trained on"
    )


@dataclass(frozen=True)
class Forward:
    """One forward pass at ``x`` (N, *input_shape): ``logits`` (N, K); each gate's output
    ``activations[name]`` (N, *gate.shape); the input of each LeakyRelu/PRelu gate
    ``preactivations[name]``; each max-pool's argmax ``argmax[name]`` (onnxruntime's flat
    indices into the pool's input, batch and channel offsets included).

    The three maps read as numpy arrays. After :meth:`LinearEngine.forward` they are
    :class:`~pathonnx.engine.resident.OnDevice` maps: the values stay on the device, and an
    array comes to numpy only when code reads it."""

    x: np.ndarray
    logits: np.ndarray
    activations: Mapping[str, np.ndarray]
    preactivations: Mapping[str, np.ndarray]
    argmax: Mapping[str, np.ndarray]

    @property
    def prediction(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def samples(self) -> int:
        return len(self.logits)

    def targets(self, target) -> np.ndarray:
        """``target`` as (N,) int64, checked against the K outputs; the prediction for None."""
        if target is None:
            return self.prediction
        return check_target(target, self.samples, self.logits.shape[1])


def pattern_outputs(graph) -> list[str]:
    """The outputs one run needs for a :class:`Forward` of the canonical ``graph``: the logits,
    every gate, every argmax and the inputs of LeakyRelu/PRelu gates that are not the input."""
    names = [graph.logits_name, *(g.name for g in graph.gates), *(m.argmax for m in graph.maxpools)]
    wanted = [g.input for g in graph.gates if g.reads_input and g.input != graph.input_name]
    return names + [name for name in wanted if name not in names]


def pattern(graph, x: np.ndarray, values: OnDevice, logits: np.ndarray, read=None) -> Forward:
    """The :class:`Forward` of a run of ``graph`` at ``x`` whose outputs ``values`` (by tensor
    name, with the input itself) stay on the device; ``logits`` (N, K) already read.
    ``read(tensor name)``: the name of the output holding a LeakyRelu/PRelu gate's input
    (default: the same name)."""
    read = read or (lambda name: name)
    return Forward(
        x=x,
        logits=logits,
        activations=values.select((g.name, g.name) for g in graph.gates),
        preactivations=values.select((g.name, read(g.input)) for g in graph.gates if g.reads_input),
        argmax=values.select((m.name, m.argmax) for m in graph.maxpools),
    )


def check_target(target, n: int, num_outputs: int) -> np.ndarray:
    """Targets as (N,) int64, from an int or one per sample; raises on out-of-range."""
    t = np.asarray(target)
    if t.dtype.kind not in "iu" and not (t.dtype.kind == "f" and np.all(t == np.round(t))):
        raise InputError(f"target {target!r} is not an integer class index")
    t = np.broadcast_to(t.astype(np.int64), (n,)) if t.ndim == 0 else t.astype(np.int64)
    if t.shape != (n,):
        raise InputError(f"target has shape {t.shape}; give an int or one per sample ({n})")
    bad = t[(t < 0) | (t >= num_outputs)]
    if bad.size:
        raise InputError(
            f"target {int(bad[0])} is out of range; the model has {num_outputs} "
            f"outputs (0..{num_outputs - 1})"
        )
    return t


def one_hot(target: np.ndarray, k: int, rows: int | None = None) -> np.ndarray:
    """Cotangent seeds at the logits: (N, K), or (N, rows, K) when ``rows`` is given, with a 1
    at each sample's target (in every row)."""
    n = len(target)
    seeds = np.zeros((n, k) if rows is None else (n, rows, k), np.float32)
    if rows is None:
        seeds[np.arange(n), target] = 1.0
    else:
        seeds[np.arange(n), :, target] = 1.0
    return seeds


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
