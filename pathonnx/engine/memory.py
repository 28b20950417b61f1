"""How much memory a run needs, estimated from the graph's shapes before anything is allocated.

A model's declared shapes fix what a run allocates: an input of 3×20000×20000 is 4.8 GB a
sample before the first layer, and a declared dim of 10⁹ or 2⁶² asks for terabytes. The
estimate of a run at batch N (:func:`run_bytes`) is

    N × (F + R),   F = Σ bytes per sample of every tensor the forward pass computes,
                   R = ROW_BYTES_PER_ELEMENT × elements per sample of the largest tensor,

F the forward pass with every activation kept (the pattern keeps every gate's output), R one
adjoint row (what onnxruntime holds while a cotangent row walks back, as measured for
:meth:`~pathonnx.engine.linear.LinearEngine.rows_per_call`; none for a forward pass alone).
A logits-only pass runs in chunks that fit instead of being refused: its batch is a throughput
setting. Any other run whose estimate exceeds
:func:`memory_budget` is refused with a one-line :class:`InputError` that says what to pass
instead: a smaller ``--batch`` when one sample fits, else a smaller input size.

The budget is :data:`BUDGET_FRACTION` of the machine's memory, or the environment variable
:data:`BUDGET_VARIABLE` (bytes, or with a unit: ``64G``, ``512M``) where it is set.
"""

from __future__ import annotations

import os
import re

from ..errors import InputError

#: Bytes onnxruntime holds per element of the largest cotangent and per row while an adjoint
#: row walks back: about a dozen tensors of that size at once, 4 bytes each (VGG-16).
ROW_BYTES_PER_ELEMENT = 64
#: The share of the machine's memory that a run may be estimated to need.
BUDGET_FRACTION = 0.75
#: Environment variable that sets the budget instead, in bytes or with a unit (K, M, G, T).
BUDGET_VARIABLE = "PATHONNX_MEMORY_BUDGET"
#: The machine's memory where the system does not say (sysconf fails).
UNKNOWN_MEMORY = 8 << 30

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def machine_memory() -> int:
    """The machine's physical memory in bytes (:data:`UNKNOWN_MEMORY` where unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return UNKNOWN_MEMORY


def memory_budget() -> int:
    """Bytes a run may be estimated to need: :data:`BUDGET_VARIABLE` where set, else
    :data:`BUDGET_FRACTION` of :func:`machine_memory`."""
    given = os.environ.get(BUDGET_VARIABLE, "").strip()
    if not given:
        return int(machine_memory() * BUDGET_FRACTION)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", given, re.IGNORECASE)
    if match is None or float(match[1]) <= 0:
        raise InputError(
            f"{BUDGET_VARIABLE}={given!r} is not an amount of memory; give bytes or a number "
            "with a unit, e.g. 64G or 512M"
        )
    return int(float(match[1]) * _UNITS[match[2].upper()])


def run_bytes(tensor_bytes: list[int], batch: int, rows: bool = True) -> int:
    """The estimate of a run at ``batch`` samples (see the module docstring), from the bytes
    per sample of every tensor the forward pass computes (``Canonical.tensor_bytes``);
    without ``rows``, of a forward pass alone (no adjoint row)."""
    forward = sum(tensor_bytes)
    largest = max(tensor_bytes, default=0) // 4  # elements, at 4 bytes each
    return int(batch) * (forward + (ROW_BYTES_PER_ELEMENT * largest if rows else 0))


def shown_bytes(count: int) -> str:
    """``count`` bytes for a message: 3.2 GiB, 1.4 TiB, 512 MiB."""
    for unit, size in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count / (1 << 20):.3g} MiB"


def largest_batch(tensor_bytes: list[int], rows: bool = True) -> int:
    """The most samples a run may take within :func:`memory_budget` (0: not even one)."""
    return memory_budget() // max(1, run_bytes(tensor_bytes, 1, rows))


def check_run(tensor_bytes: list[int], batch: int, what: str, rows: bool = True) -> None:
    """Raise :class:`InputError` when a run at ``batch`` is estimated to need more than
    :func:`memory_budget`; ``what`` names the model and its input for the message (e.g.
    "model.onnx at input 3x224x224"); ``rows``: as :func:`run_bytes`. The message says what
    to pass instead."""
    budget = memory_budget()
    need = run_bytes(tensor_bytes, batch, rows)
    if need <= budget:
        return
    one = run_bytes(tensor_bytes, 1, rows)
    limit = f"the memory budget of {shown_bytes(budget)} ({_budget_source()})"
    if one > budget:
        raise InputError(
            f"{what}: one sample needs about {shown_bytes(one)} (the forward pass's tensors and "
            f"one adjoint row), above {limit}; use a smaller input size (--size HxW or "
            f"--input-shape, where the model leaves it dynamic), or set {BUDGET_VARIABLE}"
        )
    fit = largest_batch(tensor_bytes, rows)
    raise InputError(
        f"{what}: a batch of {batch} needs about {shown_bytes(need)}, above {limit}; pass "
        f"--batch {fit} or less (batch={fit} in Python), or set {BUDGET_VARIABLE}"
    )


def _budget_source() -> str:
    if os.environ.get(BUDGET_VARIABLE, "").strip():
        return f"set by {BUDGET_VARIABLE}"
    return f"{BUDGET_FRACTION:.0%} of this machine's {shown_bytes(machine_memory())}"
