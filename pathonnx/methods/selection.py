"""Algorithm 1's choice at one gate: score every unit, keep the most important ones.

The score of unit i for the target class is ``imp_i = softmax_c(h_i · ∂logit_c/∂h_i)[target]``
over the classes c the sweep carries ("Pathwise Explanation of ReLU Neural Networks",
arXiv:2506.18037, Algorithm 1). :class:`Importance` builds it from chunks of rows;
:func:`select_units` keeps the ``width`` best units above ``alpha`` (the best one if none);
:func:`select_sparse` is the same rule when only a few units have a cotangent.
"""

from __future__ import annotations

import numpy as np


def select_units(importance: np.ndarray, width: int, alpha: float) -> np.ndarray:
    """Algorithm 1's choice at one gate, per sample: importance (N, units) -> mask (N, units).

    Units in descending importance (ties: lower flat index first); the first ``width``; of those
    the ones above ``alpha``; the single most important when none is. No full sort: the first
    ``width`` are the units above the width-th largest value, plus the lowest-indexed ties.
    """
    n, units = importance.shape
    # compare in the importance's own precision; alpha may be one per sample
    alpha = np.asarray(alpha, importance.dtype).reshape(-1, 1)
    mask = importance > alpha
    if width < units:
        for i in range(n):
            row = importance[i]
            bound = -np.partition(-row, width - 1)[width - 1]  # the width-th largest value
            above = row > bound
            ties = np.flatnonzero(row == bound)[: width - int(above.sum())]
            above[ties] = True
            mask[i] &= above
    empty = ~mask.any(axis=1)
    mask[np.flatnonzero(empty), importance[empty].argmax(axis=1)] = True  # first of the maxima
    return mask


def select_sparse(imp, idx, units: int, width: int, alpha: float, fill) -> np.ndarray:
    """:func:`select_units` for one sample whose units outside ``idx`` (ascending) all score
    ``fill``; ``imp`` scores the units at ``idx``. Returns the (units,) mask."""
    alpha = np.float32(alpha)
    mask = np.zeros(units, bool)
    if alpha < fill:  # units outside the support pass alpha too: the full rule
        full = np.full(units, fill, np.float32)
        full[idx] = imp
        return select_units(full[None], width, alpha)[0]
    passing = np.flatnonzero(imp > alpha)  # only these can pass; they outrank all others
    if len(passing):
        order = np.lexsort((idx[passing], -imp[passing]))[:width]  # score down, index up
        mask[idx[passing[order]]] = True
        return mask
    best = imp.max() if len(imp) else -np.inf
    outside = _first_outside(idx, units)
    if outside is None or best > fill:
        mask[idx[int(np.argmax(imp))]] = True
    elif best < fill:
        mask[outside] = True
    else:  # a tie at fill: the lowest index among the tied
        mask[min(outside, int(idx[int(np.argmax(imp == best))]))] = True
    return mask


def _first_outside(idx: np.ndarray, units: int) -> int | None:
    """The smallest unit index not in ``idx`` (ascending, unique), or None."""
    if len(idx) == units:
        return None
    gaps = np.flatnonzero(idx != np.arange(len(idx)))
    return int(gaps[0]) if len(gaps) else len(idx)


class Importance:
    """Algorithm 1's score at one gate, ``softmax_c(h·∂logit_c/∂h)[target]`` (N, units), built
    from chunks of rows (classes) so that all K rows never need to be in memory at once.

    Per unit it keeps the running maximum over the rows seen, the running sum of exponentials
    relative to it, and the target row's score. In float32, like the engine; with a single chunk
    it is exactly the plain softmax. :func:`select_units` compares with alpha in float32 too, so
    a unit with no contribution (score exactly 1/K) never passes alpha = 1/K.
    """

    def __init__(self, h: np.ndarray, row: np.ndarray, valid=None):
        self.h, self.row, self.valid = h, row, valid
        n, units = h.shape
        self.top = np.full((n, units), -np.inf, np.float32)
        self.total = np.zeros((n, units), np.float32)
        self.mine = np.full((n, units), -np.inf, np.float32)

    def add(self, ct: np.ndarray, lo: int) -> None:
        """Rows ``lo .. lo + R`` of the cotangent at the gate, ``ct`` (N, R, units)."""
        n, r, units = ct.shape
        step = max(1, (1 << 25) // (n * r))  # about 128 MiB of work at a time
        rows = np.arange(n)
        here = (self.row >= lo) & (self.row < lo + r)
        for a in range(0, units, step):
            b = min(units, a + step)
            part = self.h[:, None, a:b] * ct[:, :, a:b]
            if self.valid is not None:
                part[~self.valid[:, lo : lo + r]] = -np.inf
            top = np.maximum(self.top[:, a:b], part.max(axis=1))
            finite = np.isfinite(top)
            shift = np.where(finite, top, 0)[:, None]
            self.mine[here, a:b] = part[rows[here], self.row[here] - lo]
            part -= shift
            np.exp(part, out=part)
            rescale = np.exp(np.where(finite, self.top[:, a:b] - shift[:, 0], 0))
            self.total[:, a:b] = self.total[:, a:b] * rescale + part.sum(axis=1)
            self.top[:, a:b] = top

    def result(self) -> np.ndarray:
        return np.exp(self.mine - self.top) / self.total
