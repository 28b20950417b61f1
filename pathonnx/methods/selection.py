"""Algorithm 1's choice at one gate: keep the most important units.

The score of unit i for the target class is ``imp_i = softmax_c(h_i · ∂logit_c/∂h_i)[target]``
over the classes c the sweep carries ("Pathwise Explanation of ReLU Neural Networks",
arXiv:2506.18037, Algorithm 1). The sweep computes it, and makes the dense choice, where the
cotangents are (:mod:`pathonnx.graph.choice`). :func:`select_units` states the choice in
numpy: the ``width`` best units above ``alpha`` (the best one if none); :func:`select_sparse` is
the same rule when only a few units have a cotangent, the choice below a narrow gate.
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
