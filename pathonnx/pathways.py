"""Stage 5, pathway selection: the pathwise explanation of ReLU networks (one K-row sweep).

Pathwise explanation (DESIGN §3; "Pathwise Explanation of ReLU Neural Networks",
arXiv:2506.18037, Algorithm 1): visit the gates from the last in execution order downwards; at
gate l, with the masks of the gates above fixed, score every unit i by
``imp_i = softmax_c(h_i · ∂logit_c/∂h_i)[target]`` over all K outputs, keep the ``width`` most
important units, of those the ones with ``imp > alpha`` (the single best if none), and go on.

The public code recomputes the K-row Jacobian at every gate (depth × K backward passes). Here
the K cotangent rows flow down once: the engine's walk is cut right after each visited gate,
the selection runs there on the cotangent at the gate's output, and the next stage continues
below it with the new mask applied. The rows of the target then carry W^p and b^p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .engine import Linear, live_tensors
from .errors import InputError
from .forward import Forward
from .model import Model
from .sparse import TooDense


@dataclass(frozen=True)
class Pathway:
    """A pathway: one boolean mask per gate it restricts, ``(N, *gate.shape)``, its target (N,)
    and its linear model ``linear`` (``W^p`` shaped like x, ``b^p`` (N,)). ``stats`` holds the
    units kept per gate (N,) and the share of kept units that were dead (inactive) at x."""

    masks: dict[str, np.ndarray]
    target: np.ndarray
    linear: Linear
    method: str = "pathwise"
    params: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def attribution(self, x: np.ndarray) -> np.ndarray:
        """``W^p ⊙ x``, shaped like x."""
        return self.linear.attribution(x)


def _width(width, units: int) -> int:
    """Max units to keep at a gate: an int, or a percentage such as "5%" of its units."""
    if width is None:
        return units
    if isinstance(width, str) and width.strip().endswith("%"):
        try:
            share = float(width.strip()[:-1])
        except ValueError:
            raise InputError(f"width {width!r} is not a percentage like '5%'") from None
        if not 0 < share <= 100:
            raise InputError(f"width {width!r} must be a percentage in (0, 100]")
        return max(1, math.ceil(units * share / 100))
    if isinstance(width, (bool, float)) or not isinstance(width, (int, np.integer)) or width < 1:
        raise InputError(f"width {width!r} must be a positive int or a percentage like '5%'")
    return min(int(width), units)


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


class _Importance:
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


def pathwise(
    model: Model,
    x,
    target=None,
    depth: int | None = None,
    width: int | str | None = None,
    alpha: float | None = None,
    classes: int | None = None,
) -> Pathway:
    """The pathwise explanation of ``x`` (N, *input_shape) for ``target`` (default: the argmax).

    ``depth``: gate tensors from the top to select in (default all); ``width``: max units per
    gate (int or a percentage like "5%"; default unlimited); ``alpha``: importance threshold
    (default 1/K). Gates below ``depth`` stay whole. Any target works, e.g. the true class of a
    misclassified input.

    ``classes=k`` is an explicit approximation for many classes: the softmax runs over the k
    highest logits plus the target instead of all K outputs, so the sweep carries k (or k + 1)
    rows instead of K. Its default ``alpha`` is 1/R for the R rows of its softmax (k or
    k + 1), the score of a unit that contributes nothing: 1/K would let every such unit pass.
    Dropping classes only shrinks the softmax's denominator, so with one same ``alpha`` the
    approximation keeps the exact selection's units and possibly more.
    """
    fwd = model.forward(x)
    target = fwd.prediction if target is None else model.check_target(target, len(fwd.x))
    return _sweep(model, fwd, target, depth, width, alpha, classes=classes)


def decompose(
    model: Model,
    x,
    target=None,
    paths: int = 3,
    depth: int | None = None,
    width: int | str | None = None,
    alpha: float | None = None,
) -> list[Pathway]:
    """Decomposition into ``paths`` pathways: path m is seeded at the top gate with the unit of
    m-th largest contribution ``h·∂logit[target]/∂h``, and Algorithm 1 continues below it. Their
    attribution maps show the input's distinct components. Returns one Pathway per path."""
    fwd = model.forward(x)
    n = len(fwd.x)
    target = fwd.prediction if target is None else model.check_target(target, n)
    top = model.gates[-1]
    if not 1 <= int(paths) <= top.units:
        raise InputError(f"paths {paths} must be between 1 and {top.units} (the top gate's units)")
    grads = gate_cotangents(model, fwd, target, upto=1)[top.name].reshape(n, -1)
    contribution = fwd.activations[top.name].reshape(n, -1) * grads
    seeds = np.argsort(-contribution, axis=1, kind="stable")[:, : int(paths)]  # (N, M)
    # Every (sample, path) pair becomes one sample of a batch of N·M, so all paths run at once.
    many = model.forward(np.repeat(fwd.x, int(paths), axis=0))
    forced = np.zeros((n * int(paths), top.units), bool)
    forced[np.arange(n * int(paths)), seeds.reshape(-1)] = True
    pathway = _sweep(
        model, many, np.repeat(target, int(paths)), depth, width, alpha,
        forced=forced.reshape(-1, *top.shape),
    )  # fmt: skip
    return [_take(pathway, slice(m, None, int(paths))) for m in range(int(paths))]


def _take(pathway: Pathway, rows: slice) -> Pathway:
    """The pathway restricted to some samples of its batch."""
    linear = pathway.linear
    pick = Linear(linear.W[rows], linear.b[rows], linear.target[rows], linear.logits[rows])
    stats = {key: {g: v[rows] for g, v in value.items()} for key, value in pathway.stats.items()}
    masks = {g: m[rows] for g, m in pathway.masks.items()}
    return Pathway(masks, pathway.target[rows], pick, pathway.method, pathway.params, stats)


def _rows(logits: np.ndarray, target: np.ndarray, classes: int | None):
    """The classes each sample's sweep carries: (N, R) class indices, which of them count
    (N, R), and the row of the target (N,). All K, or the ``classes`` top logits + the target."""
    n, k = logits.shape
    if classes is None or int(classes) >= k:
        return np.broadcast_to(np.arange(k), (n, k)), None, target
    if int(classes) < 1:
        raise InputError(f"classes {classes} must be a positive number of classes")
    order = np.argsort(-logits, axis=1, kind="stable")[:, : int(classes)]
    chosen = np.concatenate([order, target[:, None]], axis=1)  # R = classes + 1
    valid = np.ones(chosen.shape, bool)
    valid[:, -1] = ~(order == target[:, None]).any(axis=1)  # target already among the top
    row = np.where(valid[:, -1], int(classes), (order == target[:, None]).argmax(axis=1))
    return chosen, valid, row


def _sweep(model, fwd, target, depth, width, alpha, forced=None, classes=None) -> Pathway:
    """Algorithm 1 as one K-row sweep, cut after each visited gate. ``forced``: the top gate's
    mask, given instead of selected (decomposition seeds). ``classes``: see :func:`pathwise`."""
    n, k = len(fwd.x), model.num_outputs
    gates = model.gates
    depth = len(gates) if depth is None else int(depth)
    if not 1 <= depth <= len(gates):
        raise InputError(f"depth {depth} is out of range; the model has {len(gates)} gates")
    chosen, valid, row = _rows(fwd.logits, target, classes)
    if alpha is None and valid is None:
        alpha = 1.0 / k
    # left unset only for the approximation: its softmax has R = k or k + 1 rows, 1/R uniform
    alpha_rows = 1.0 / valid.sum(axis=1) if alpha is None else np.full(n, float(alpha))
    engine = model.engine
    cuts = engine.gate_cuts()
    r = chosen.shape[1]
    seeds = np.zeros((n, r, k), np.float32)
    seeds[np.arange(n)[:, None], np.arange(r)[None], chosen] = 1.0
    if valid is not None:
        seeds[~valid] = 0.0
    sweep = _RowStore(engine, fwd, {"seed": seeds.reshape(n * r, k)}, None, np.zeros(n * r), r)
    walker, sparse = engine.sparse_walker, None
    masks, kept = {}, {}
    for index in range(len(gates) - 1, len(gates) - 1 - depth, -1):
        gate = gates[index]
        narrow = _narrow(walker, gates, cuts, index, masks, (sparse or sweep).start)
        if narrow and sparse is None:
            sparse = _Sparse.from_store(sweep, gates[index + 1], masks[gates[index + 1].name])
        elif not narrow and sparse is not None:
            sweep, sparse = sparse.to_store(engine, fwd, gates[index + 1]), None
        if sparse is not None and not sparse.advance(walker, fwd, cuts[index], masks):
            sweep, sparse = sparse.to_store(engine, fwd, gates[index + 1]), None  # too dense
        if forced is not None and index == len(gates) - 1:
            for _ in sweep.advance(cuts[index], masks):
                pass  # seeded, not selected: the walk only moves the store down
            mask = forced.reshape(n, gate.units)
        elif sparse is not None:
            mask = sparse.select(fwd, gate, row, valid, _width(width, gate.units), alpha_rows)
        else:
            h = fwd.activations[gate.name].reshape(n, gate.units)
            score = _Importance(h, row, valid)
            for lo, values in sweep.advance(cuts[index], masks):
                score.add(values[f"ct:{gate.name}"].reshape(n, -1, gate.units), lo)
            mask = select_units(score.result(), _width(width, gate.units), alpha_rows)
        masks[gate.name] = mask.reshape(n, *gate.shape)
        kept[gate.name] = mask.sum(axis=1)
    # Below the last visited gate only the target's row matters: carry that one row.
    last = len(gates) - depth
    if sparse is None and _narrow(walker, gates, cuts, -1, masks, sweep.start, last):
        sparse = _Sparse.from_store(sweep, gates[last], masks[gates[last].name])
    found = None
    if sparse is not None and walker.can_walk(sparse.start, 0):
        found = sparse.to_input(walker, fwd, row, masks, model.input_shape)
    if found is not None:
        grad, bias = found
    else:
        if sparse is not None:
            sweep = sparse.to_store(engine, fwd, gates[last])
        cotangents, bias = sweep.rows(row)
        cotangents, part = engine.stage(fwd, cotangents, sweep.start, 0, masks, single_row=True)
        bias = bias + part
        grad = cotangents["grad"]
    linear = Linear(W=grad, b=bias.astype(np.float64), target=target, logits=fwd.logits)
    params = {"depth": depth, "width": width, "alpha": alpha, "classes": classes}
    stats = {"units_kept": kept, "dead_share": _dead_share(fwd, masks, kept)}
    return Pathway(masks, target, linear, "pathwise", params, stats)


def _narrow(walker, gates, cuts, index, masks, start, above=None) -> bool:
    """Whether the stage from the cut after gate ``above`` (default ``index + 1``) down to the
    cut after gate ``index`` (the model input for -1) can run sparse: the gate above keeps at
    most 1/16 of its units in every sample, the walk is stored at its cut, and the stage is a
    chain the :class:`~pathonnx.sparse.SparseWalker` covers."""
    above = index + 1 if above is None else above
    if above >= len(gates) or gates[above].name not in masks or start != cuts[above]:
        return False
    mask = masks[gates[above].name].reshape(len(masks[gates[above].name]), -1)
    if mask.sum(axis=1).max() * 16 > mask.shape[1]:
        return False
    return walker.can_walk(cuts[above], cuts[index] if index >= 0 else 0)


class _Sparse:
    """The sweep's rows below a narrow gate, per sample: the flat positions with a nonzero
    cotangent (``idx``) and their values (rows × positions), at the cut ``start``."""

    def __init__(self, start: int, entries: list, bias: np.ndarray, rows: int):
        self.start, self.entries, self.bias, self.r = start, entries, bias, rows

    @classmethod
    def from_store(cls, store, gate, mask: np.ndarray) -> _Sparse:
        """The stored dense rows at the cut after ``gate``, on the units its mask keeps (the
        gate's transpose zeroes every other one)."""
        n = store.n
        flat = mask.reshape(n, -1)
        entries = []
        for i in range(n):
            idx = np.flatnonzero(flat[i])
            parts = [c[f"ct:{gate.name}"].reshape(n, -1, gate.units)[i][:, idx]
                     for c, _ in store.chunks]  # fmt: skip
            entries.append((idx, np.concatenate(parts, axis=0)))
        bias = np.concatenate([b.reshape(n, -1) for _, b in store.chunks], axis=1)
        return cls(store.start, entries, bias, store.r)

    def advance(self, walker, fwd, stop: int, masks: dict) -> bool:
        """Walk down to ``stop``; False (and no change) when the cotangent grows too dense for
        the sparse walk, so that the caller runs the stage dense instead."""
        walked = []
        try:
            for i, (idx, vals) in enumerate(self.entries):
                walked.append(walker.walk(fwd, i, idx, vals, self.start, stop, masks))
        except TooDense:
            return False
        for i, (idx, vals, part) in enumerate(walked):
            self.entries[i] = (idx, vals)
            self.bias[i] = self.bias[i] + part
        self.start = stop
        return True

    def select(self, fwd, gate, row: np.ndarray, valid, width: int, alpha) -> np.ndarray:
        """Algorithm 1's choice at ``gate`` (N, units), scored on the positions with a
        cotangent only: every other unit contributes 0 to every class, so its score is the
        uniform softmax ``1/K`` (``fill``), the same float32 value the dense score gives it."""
        n = len(self.entries)
        mask = np.zeros((n, gate.units), bool)
        for i, (idx, vals) in enumerate(self.entries):
            rows = self.r if valid is None else int(valid[i].sum())
            fill = np.float32(1) / np.float32(rows)
            h = fwd.activations[gate.name][i].reshape(1, -1)[:, idx]
            score = _Importance(h, row[i : i + 1], None if valid is None else valid[i : i + 1])
            score.add(vals[None], 0)
            mask[i] = select_sparse(score.result()[0], idx, gate.units, width, alpha[i], fill)
        return mask

    def to_store(self, engine, fwd, gate) -> _RowStore:
        """The rows as dense arrays again, for a stage the sparse walk does not cover."""
        n = len(self.entries)
        dense = np.zeros((n, self.r, gate.units), np.float32)
        for i, (idx, vals) in enumerate(self.entries):
            dense[i][:, idx] = vals
        cotangents = {f"ct:{gate.name}": dense.reshape(n * self.r, *gate.shape)}
        return _RowStore(engine, fwd, cotangents, self.start, self.bias.reshape(-1), self.r)

    def to_input(self, walker, fwd, row: np.ndarray, masks: dict, input_shape):
        """The target's row walked down to the input: W^p (N, *input_shape) and b^p (N,); None
        when the cotangent grows too dense on the way."""
        n = len(self.entries)
        grad = np.zeros((n, int(np.prod(input_shape))), np.float32)
        bias = np.empty(n)
        for i, (idx, vals) in enumerate(self.entries):
            pick = vals[int(row[i]) : int(row[i]) + 1]
            try:
                found, values, part = walker.walk(fwd, i, idx, pick, self.start, 0, masks)
            except TooDense:
                return None  # unmasked layers below spread it out: the dense walk does better
            grad[i, found] = values[0]
            bias[i] = self.bias[i, int(row[i])] + part[0]
        return grad.reshape(n, *input_shape), bias


class _RowStore:
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


def _dead_share(fwd, masks: dict, kept: dict) -> dict:
    """Per gate and sample: the share of kept units that were inactive (h ≤ 0) at x."""
    return {
        name: (~(fwd.activations[name] > 0) & mask).reshape(len(mask), -1).sum(1)
        / np.maximum(kept[name], 1)
        for name, mask in masks.items()
    }


def gate_cotangents(
    model: Model,
    fwd,
    target: np.ndarray | None = None,
    upto: int | None = None,
    *,
    seeds: np.ndarray | None = None,
    masks: dict | None = None,
    scales: dict | None = None,
) -> dict[str, np.ndarray]:
    """∂logit[target]/∂h at every gate output (N, *gate.shape), or at the ``upto`` top gates,
    from one backward walk cut after each gate, at ``fwd``'s pattern. ``seeds`` (N, K) replace
    the target's one-hot row (e.g. a loss's gradient at the logits); ``masks`` or ``scales``
    act on the gates as in :meth:`LinearEngine.stage`."""
    n, k = len(fwd.x), model.num_outputs
    if seeds is None:
        seeds = np.zeros((n, k), np.float32)
        seeds[np.arange(n), target] = 1.0
    engine, cotangents, start, out = model.engine, {"seed": seeds}, None, {}
    cuts = engine.gate_cuts()
    for gate, cut in list(zip(reversed(model.gates), reversed(cuts)))[:upto]:
        cotangents, _ = engine.stage(
            fwd, cotangents, start, cut, masks, single_row=True, scales=scales
        )
        out[gate.name], start = cotangents[f"ct:{gate.name}"], cut
    return out


def critical_pathway(
    model: Model, x, target=None, method: str = "mct", sparsity: float = 0.9, steps: int = 50
) -> Pathway:
    """A critical pathway (Khakzar et al. 2021): every unit of every gate scored, ranked
    network-wide, and the units above the ``sparsity`` percentile kept.

    ``method="mct"`` (NeuronMCT): ``c = |a ⊙ ∂y/∂a|``, y the target logit, one backward pass.
    ``method="intgrad"`` (NeuronIntGrad): ``c = |a^l ⊙ (1/m) Σ_k ∂y(α_k a^l)/∂a^l|``, the
    network above each gate l re-evaluated on scaled activations, α on a midpoint grid of
    ``steps``. The pathway's attribution is its gradient ``W^p`` (``pathway.linear.W``).
    """
    if method not in ("mct", "intgrad"):
        raise InputError(f"critical pathway method {method!r} is unknown; use 'mct' or 'intgrad'")
    fwd, target = network_wide_start(model, x, target, sparsity)
    n = len(fwd.x)
    if method == "mct":
        grads = gate_cotangents(model, fwd, target)
        scores = {
            g.name: np.abs(fwd.activations[g.name] * grads[g.name]).reshape(n, -1)
            for g in model.gates
        }
    else:
        found = _intgrad_scores(model, fwd.x, target, int(steps), batch=16)
        scores = {name: value.reshape(n, -1) for name, value in found.items()}
    # Khakzar et al. rank all neurons of the network together, not layer by layer.
    threshold = np.percentile(np.concatenate(list(scores.values()), axis=1), 100 * sparsity, axis=1)
    masks = {g.name: scores[g.name] > threshold[:, None] for g in model.gates}
    return pathway_from_masks(model, fwd, target, masks, method, {"sparsity": float(sparsity)})


def network_wide_start(model: Model, x, target, sparsity: float):
    """Checks shared by the network-wide pathway methods; returns the forward pass at x and
    the targets (default: the prediction)."""
    if not 0.0 <= float(sparsity) < 1.0:
        raise InputError(f"sparsity {sparsity} must be in [0, 1)")
    fwd = model.forward(x)
    target = fwd.prediction if target is None else model.check_target(target, len(fwd.x))
    return fwd, target


def pathway_from_masks(model, fwd, target, flat: dict, method: str, params: dict, extra=None):
    """The Pathway of per-gate masks (N, units): its linear model at x and its statistics."""
    n = len(fwd.x)
    masks = {g.name: flat[g.name].reshape(n, *g.shape) for g in model.gates}
    linear = model.engine.linearize(fwd.x, target, masks, fwd=fwd)
    kept = {name: m.reshape(n, -1).sum(1) for name, m in masks.items()}
    stats = {"units_kept": kept, "dead_share": _dead_share(fwd, masks, kept), **(extra or {})}
    return Pathway(masks, target, linear, method, params, stats)


def jaccard(a: Pathway, b: Pathway) -> np.ndarray:
    """Per-sample Jaccard overlap of two pathways' kept units (gates without a mask count whole)."""
    names = sorted(set(a.masks) | set(b.masks))
    inter, union = 0, 0
    for name in names:
        ma, mb = a.masks.get(name), b.masks.get(name)
        shape = (ma if ma is not None else mb).shape
        ma = np.ones(shape, bool) if ma is None else ma
        mb = np.ones(shape, bool) if mb is None else mb
        inter = inter + (ma & mb).reshape(len(ma), -1).sum(1)
        union = union + (ma | mb).reshape(len(ma), -1).sum(1)
    return inter / np.maximum(union, 1)


def _intgrad_scores(model: Model, x: np.ndarray, target: np.ndarray, steps: int, batch: int):
    """NeuronIntGrad scores, gate by gate: |a ⊙ (1/m) Σ_k ∂y(α_k a)/∂a| with the network above
    each gate re-evaluated on the scaled activations (α on a midpoint grid of m steps)."""

    from .engine import with_outputs
    from .forward import make_session

    engine, n, k = model.engine, len(x), model.num_outputs
    graph = gs.import_onnx(model.canonical)
    cuts = engine.gate_cuts()
    crossing = {c: [t.name for t in live_tensors(graph, c)] for c in cuts}
    wanted = sorted({name for names in crossing.values() for name in names} - {model.input_name})
    values = dict(
        zip(
            wanted,
            make_session(with_outputs(model.canonical, wanted), model.providers).run(
                wanted, {model.input_name: x}
            ),
        )  # fmt: skip
    )
    values[model.input_name] = x
    alphas = (np.arange(steps) + 0.5) / steps
    scores = {}
    for gate, cut in zip(model.gates, cuts):
        suffix = engine.suffix_session(cut)
        outputs = [o.name for o in suffix.get_outputs()]
        mean = np.zeros((n, *gate.shape), np.float64)
        for lo in range(0, steps, batch):
            a = alphas[lo : lo + batch]
            m = len(a)
            feeds = {}
            for name in crossing[cut]:
                tiled = np.repeat(values[name], m, axis=0)  # sample-major: row n·m + j
                if name == gate.name:
                    tiled = tiled * np.tile(a, n).reshape(-1, *[1] * len(gate.shape))
                feeds[name] = np.ascontiguousarray(tiled, np.float32)
            got = dict(zip(outputs, suffix.run(outputs, feeds)))
            fwd = Forward(
                x=np.empty((n * m, 0)),
                logits=got[outputs[0]],
                activations={g.name: got[g.name] for g in model.gates if g.name in got},
                preactivations={g.name: got[g.input] for g in model.gates if g.input in got},
                argmax={p.name: got[p.argmax] for p in model.maxpools if p.argmax in got},
            )
            seeds = np.zeros((n * m, k), np.float32)
            seeds[np.arange(n * m), np.repeat(target, m)] = 1.0
            cotangents, _ = engine.stage(fwd, {"seed": seeds}, None, cut, single_row=True)
            grad = cotangents[f"ct:{gate.name}"].reshape(n, m, *gate.shape)
            mean += grad.sum(axis=1)
        scores[gate.name] = np.abs(values[gate.name] * mean / steps)
    return scores
