"""Sweeps: backward walks cut after gates, and the cotangent rows kept between their stages.

A selection that depends on the cotangent at a gate (pathwise explanation, critical pathways,
pruning) walks the adjoint in stages, cut right after gates (:meth:`LinearEngine.stage`).
:func:`gate_cotangents` runs one row per sample down the cuts; :class:`RowStore` keeps many
rows (all K classes of the pathwise sweep) between stages under a memory budget.
"""

from __future__ import annotations

import numpy as np

from .forward import one_hot


class RowStore:
    """The K-row cotangents of the sweep at its last stored cut, in chunks of rows, and the
    walk below it.

    :meth:`advance` walks the chunks from the stored cut down to the next one, and yields each
    chunk's cotangents there. The result replaces the store, chunk by chunk (each old chunk is
    freed as its successor is made), only while it fits :attr:`LinearEngine.store_budget`;
    otherwise the store stays where it is and the next walk starts from it again, through the
    masks fixed meanwhile (more work, bounded memory). That is what runs a 1000-class VGG-16 at
    224×224, whose bottom gates hold 3.2 million units per row.
    """

    def __init__(self, engine, fwd, cotangents: dict, start, bias: np.ndarray, rows: int):
        self.engine, self.fwd, self.n, self.r, self.start = engine, fwd, len(fwd.x), rows, start
        self.step = min(rows, engine.rows_per_call(self.n))
        self.chunks = [
            (
                {k: self._rows_of(v, lo) for k, v in cotangents.items()},
                self._rows_of(bias, lo),
            )
            for lo in range(0, rows, self.step)
        ]

    def _rows_of(self, value: np.ndarray, lo: int) -> np.ndarray:
        """Rows lo .. lo + step of every sample of a sample-major (N·R, ...) array."""
        shaped = value.reshape(self.n, self.r, *value.shape[1:])[:, lo : lo + self.step]
        return np.ascontiguousarray(shaped.reshape(-1, *value.shape[1:]))

    def advance(self, stop: int, masks: dict):
        n, fits = self.n, True
        new = []
        for j in range(len(self.chunks)):
            cotangents, bias = self.chunks[j]
            values, part = self.engine.stage(self.fwd, cotangents, self.start, stop, masks)
            yield j * self.step, values
            if j == 0:
                per_row = sum(v.nbytes for v in values.values()) / len(bias)
                fits = per_row * n * self.r <= self.engine.store_budget
            if fits:
                new.append((values, bias + part))
                self.chunks[j] = None  # freed now: the store never holds two cuts whole
        if fits:
            self.chunks, self.start = new, stop

    def rows(self, row: np.ndarray) -> tuple[dict, np.ndarray]:
        """The stored cotangents and bias of one row per sample (its index in 0..R-1)."""
        picks = []
        for i, r in enumerate(row):
            cotangents, bias = self.chunks[int(r) // self.step]
            at = i * (len(bias) // self.n) + int(r) % self.step
            picks.append(({k: v[at] for k, v in cotangents.items()}, bias[at]))
        return (
            {k: np.stack([p[0][k] for p in picks]) for k in picks[0][0]},
            np.array([p[1] for p in picks]),
        )


def gate_cotangents(
    model,
    fwd,
    target: np.ndarray | None = None,
    upto: int | None = None,
    *,
    seeds: np.ndarray | None = None,
    masks: dict | None = None,
    scales: dict | None = None,
) -> dict[str, np.ndarray]:
    """∂logit[target]/∂h at every gate output (N, *gate.shape) of ``model`` (a Model), or at
    the ``upto`` top gates, from one backward walk cut after each gate, at ``fwd``'s pattern.
    ``seeds`` (N, K) replace the target's one-hot row (e.g. a loss's gradient at the logits);
    ``masks`` or ``scales`` act on the gates as in :meth:`LinearEngine.stage`."""
    engine = model.engine
    if seeds is None:
        seeds = one_hot(target, model.num_outputs)
    cotangents, start, out = {"seed": seeds}, None, {}
    cuts = engine.gate_cuts()
    for gate, cut in list(zip(reversed(model.gates), reversed(cuts)))[:upto]:
        cotangents, _ = engine.stage(
            fwd, cotangents, start, cut, masks, single_row=True, scales=scales
        )
        out[gate.name], start = cotangents[f"ct:{gate.name}"], cut
    return out
