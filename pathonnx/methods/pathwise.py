"""Pathwise explanation of ReLU networks, as one K-row backward sweep cut at each gate.

Pathwise explanation (docs/ARCHITECTURE.md, Semantics; "Pathwise Explanation of ReLU Neural
Networks", arXiv:2506.18037, Algorithm 1): visit the gates from the last in execution order
downwards; at gate l, with the masks of the gates above fixed, score every unit i by
``imp_i = softmax_c(h_i · ∂logit_c/∂h_i)[target]`` over all K outputs, keep the ``width`` most
important units, of those the ones with ``imp > alpha`` (the single best if none), and go on
(:mod:`pathonnx.methods.selection`).

The public code recomputes the K-row Jacobian at every gate (depth × K backward passes). Here
the K cotangent rows flow down once: the engine's walk is cut right after each visited gate,
the selection runs there on the cotangent at the gate's output, and the next stage continues
below it with the new mask applied. Below a gate that keeps few units the rows are walked
sparse (:mod:`pathonnx.engine.sparse`). The rows of the target then carry W^p and b^p.
"""

from __future__ import annotations

import numpy as np

from ..engine import (
    DeviceChoice,
    Linear,
    OnDevice,
    Pathwise,
    RowStore,
    TooDense,
    device_value,
    gate_cotangents,
    top_units,
)
from ..errors import InputError
from ..progress import step
from .pathway import Pathway
from .registry import (
    INTEGER,
    NUMBER,
    WIDTH,
    Param,
    Range,
    at_least,
    max_units,
    method_params,
    register,
)
from .selection import select_sparse


def _within_gates(model, depth: int) -> str | None:
    """Why ``depth`` does not fit ``model`` (None if it does)."""
    count = len(model.gates)
    return None if depth <= count else f"must be <= {count}, the model's number of gates"


DEPTH = Param("depth", None, INTEGER, "gates from the top to select in (default all)",
              at_least(1), fits=_within_gates)  # fmt: skip
WIDTH_ = Param("width", None, WIDTH, "max units per gate, a count or a share (5%)")
# imp is a softmax probability: alpha above 1 keeps no unit, below 0 every one
ALPHA = Param("alpha", None, NUMBER, "importance threshold (default 1/K)", Range(0, 1))
CLASSES = Param(
    "classes", None, INTEGER,
    "softmax over the top N logits + the target, not all K (an approximation; faster for "
    "many classes)", at_least(1),
)  # fmt: skip


def pathwise(
    model,
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
    given = {"depth": depth, "width": width, "alpha": alpha, "classes": classes}
    p = method_params("pathwise", given, model)
    fwd = model.forward(x)
    return _sweep(model, fwd, fwd.targets(target), p["depth"], p["width"], p["alpha"],
                  classes=p["classes"])  # fmt: skip


def decompose(
    model,
    x,
    target=None,
    paths: int = 3,
    depth: int | None = None,
    width: int | str | None = None,
    alpha: float | None = None,
    classes: int | None = None,
) -> list[Pathway]:
    """Decomposition into ``paths`` pathways: path m is seeded at the top gate with the unit of
    m-th largest contribution ``h·∂logit[target]/∂h``, and Algorithm 1 continues below it. Their
    attribution maps show the input's distinct components. Returns one Pathway per path; its
    ``stats["seed_unit"]`` is the seed's flat index in the top gate."""
    given = {"depth": depth, "width": width, "alpha": alpha, "classes": classes}
    p = method_params("pathwise", given, model)
    fwd = model.forward(x)
    n = len(fwd.x)
    target = fwd.targets(target)
    top = model.gates[-1]
    if not 1 <= int(paths) <= top.units:
        raise InputError(f"paths {paths} must be between 1 and {top.units} (the top gate's units)")
    m = int(paths)
    grads = gate_cotangents(model, fwd, target, upto=1, keep=True)[top.name]
    h = device_value(fwd.activations, top.name)
    seeds, h_at = top_units(model.engine, h, grads, m)  # (N, M) each, in contribution order
    # Every (sample, path) pair becomes one sample of a batch of N·M, so all paths run at once.
    many = model.forward(np.repeat(fwd.x, m, axis=0))
    forced = np.zeros((n * m, top.units), bool)
    forced[np.arange(n * m), seeds.reshape(-1)] = True
    forced = (forced.reshape(-1, *top.shape), (h_at.reshape(-1) <= 0).astype(np.int64))
    pathway = _sweep(model, many, np.repeat(target, m), p["depth"], p["width"], p["alpha"],
                     forced=forced, classes=p["classes"])  # fmt: skip
    pathway.stats["seed_unit"] = seeds.reshape(-1)
    return [pathway.take(slice(j, None, m)) for j in range(m)]


def _export_pathwise(model, depth, width, alpha, classes):
    """Algorithm 1 in the exported graph: per selected gate from the top, its width."""
    gates = model.gates
    depth = len(gates) if depth is None else int(depth)
    widths = tuple(max_units(width, g.units) for g in gates[::-1][:depth])
    return Pathwise(depth, widths, None if alpha is None else float(alpha),
                    None if classes is None else int(classes))  # fmt: skip


@register("pathwise", DEPTH, WIDTH_, ALPHA, CLASSES, attribution="product", family="pathwise",
          decompose=decompose, carries_classes=True, export=_export_pathwise)  # fmt: skip
def pathwise_pathway(model, x, target, depth, width, alpha, classes):
    """Pathwise explanation: the pathway's W^p ⊙ x (arXiv:2506.18037, Algorithm 1)."""
    return pathwise(model, x, target, depth, width, alpha, classes)


def _rows(logits: np.ndarray, target: np.ndarray, classes: int | None):
    """The classes each sample's sweep carries: (N, R) class indices, which of them count
    (N, R), and the row of the target (N,). All K, or the ``classes`` top logits + the target."""
    n, k = logits.shape
    if classes is None or int(classes) >= k:
        return np.broadcast_to(np.arange(k), (n, k)), None, target
    order = np.argsort(-logits, axis=1, kind="stable")[:, : int(classes)]
    chosen = np.concatenate([order, target[:, None]], axis=1)  # R = classes + 1
    valid = np.ones(chosen.shape, bool)
    valid[:, -1] = ~(order == target[:, None]).any(axis=1)  # target already among the top
    row = np.where(valid[:, -1], int(classes), (order == target[:, None]).argmax(axis=1))
    return chosen, valid, row


def _sweep(model, fwd, target, depth, width, alpha, forced=None, classes=None) -> Pathway:
    """Algorithm 1 as one K-row sweep, cut after each visited gate. ``forced``: the top gate's
    mask (N, *shape), given instead of selected (decomposition seeds, one unit per sample), and
    whether that unit is inactive at x (N,). ``classes``: see :func:`pathwise`."""
    n, k, gates = len(fwd.x), model.num_outputs, model.gates
    depth = len(gates) if depth is None else int(depth)  # checked by DEPTH's declaration
    chosen, valid, row = _rows(fwd.logits, target, classes)
    if alpha is None and valid is None:
        alpha = 1.0 / k
    # left unset only for the approximation: its softmax has R = k or k + 1 rows, 1/R uniform
    alpha_rows = 1.0 / valid.sum(axis=1) if alpha is None else np.full(n, float(alpha))
    seeds = np.zeros((n, chosen.shape[1], k), np.float32)
    seeds[np.arange(n)[:, None], np.arange(chosen.shape[1])[None], chosen] = 1.0
    if valid is not None:
        seeds[~valid] = 0.0
    rows = _Rows(model, fwd, seeds, row, valid)
    task = f"pathwise ({chosen.shape[1]} rows): gates"
    for done, index in enumerate(range(len(gates) - 1, len(gates) - 1 - depth, -1)):
        step(task, done, depth)
        gate = gates[index]
        if forced is not None and index == len(gates) - 1:
            rows.skip(index)  # seeded, not selected: the walk only moves down
            mask, dead = forced
            rows.fix(gate, model.engine.dev.put(mask), np.ones(n, np.int64), dead)
        else:
            rows.select(index, max_units(width, gate.units), alpha_rows)
    step(task, depth, depth)
    grad, bias = rows.target_to_input(len(gates) - depth)
    linear = Linear(W=grad, b=bias.astype(np.float64), target=target, logits=fwd.logits)
    params = {"depth": depth, "width": width, "alpha": alpha, "classes": classes}
    masks = {name: model.engine.dev.host(mask) for name, mask in rows.masks.items()}
    return Pathway(masks, target, linear, "pathwise", params, rows.stats())


def _narrow(walker, gates, cuts, index, kept, start, above=None) -> bool:
    """Whether the stage from the cut after gate ``above`` (default ``index + 1``) down to the
    cut after gate ``index`` (the model input for -1) can run sparse: the gate above keeps at
    most 1/16 of its units in every sample (``kept``: gate name -> units kept (N,)), the walk
    is stored at its cut, and the stage is a chain the
    :class:`~pathonnx.engine.sparse.SparseWalker` covers."""
    above = index + 1 if above is None else above
    if above >= len(gates) or gates[above].name not in kept or start != cuts[above]:
        return False
    if kept[gates[above].name].max() * 16 > gates[above].units:
        return False
    return walker.can_walk(cuts[above], cuts[index] if index >= 0 else 0)


class _Rows:
    """The sweep's cotangent rows at its current cut, and the masks chosen so far.

    The rows are dense in a :class:`RowStore` on the device, or, on the CPU below a gate that
    keeps few units, sparse (:class:`_Sparse`), whichever the stage allows. The masks the
    device chooses stay there (``masks``) until the sweep ends; ``host_masks`` reads them.
    ``row`` (N,) is the target's row of each sample, ``valid`` (N, R) the rows that count
    (None: all)."""

    def __init__(self, model, fwd, seeds: np.ndarray, row: np.ndarray, valid):
        n, r, k = seeds.shape
        self.model, self.engine, self.fwd = model, model.engine, fwd
        self.gates, self.cuts = model.gates, self.engine.gate_cuts()
        self.walker = self.engine.sparse_walker if self.engine.walks_sparse else None
        self.row, self.valid = row, valid
        self.dense = RowStore(self.engine, fwd, {"seed": seeds.reshape(n * r, k)}, None,
                              np.zeros(n * r), r)  # fmt: skip
        self.sparse: _Sparse | None = None
        self.masks: dict = {}
        self.host_masks = OnDevice(self.engine.dev, self.masks)
        self.kept: dict[str, np.ndarray] = {}
        self.dead: dict[str, np.ndarray] = {}

    def narrow(self, index: int, start: int, above=None) -> bool:
        if self.walker is None:
            return False
        return _narrow(self.walker, self.gates, self.cuts, index, self.kept, start, above)

    def fix(self, gate, mask, kept=None, dead=None) -> None:
        """Set ``gate``'s mask (an OrtValue on the device, or numpy (N, *gate.shape)) and its
        statistics (counted here from the host arrays when not given)."""
        self.masks[gate.name] = mask
        if kept is None:
            flat = np.asarray(mask).reshape(len(self.row), -1)
            inactive = ~(self.fwd.activations[gate.name].reshape(len(flat), -1) > 0)
            kept, dead = flat.sum(1), (flat & inactive).sum(1)
        self.kept[gate.name], self.dead[gate.name] = kept, dead

    def stats(self) -> dict:
        """The Pathway's statistics (units kept, the share of them inactive at x), from the
        counts made where the masks were chosen."""
        share = {name: self.dead[name] / np.maximum(kept, 1) for name, kept in self.kept.items()}
        return {"units_kept": dict(self.kept), "dead_share": share}

    def _densify(self, index: int) -> None:
        """Back to dense rows, at the cut after gate ``index``."""
        self.dense = self.sparse.to_store(self.engine, self.fwd, self.gates[index])
        self.sparse = None

    def _reach(self, index: int) -> None:
        """Choose how to walk down to the cut after gate ``index``: sparse below a narrow gate
        above it (walked here), dense otherwise (walked by the caller, chunk by chunk)."""
        narrow = self.narrow(index, (self.sparse or self.dense).start)
        if narrow and self.sparse is None:
            above = self.gates[index + 1]
            self.sparse = _Sparse.from_store(self.dense, above, self.host_masks[above.name],
                                             self.masks)  # fmt: skip
        elif not narrow and self.sparse is not None:
            self._densify(index + 1)
        if self.sparse is not None:
            walked = self.sparse.advance(self.walker, self.fwd, self.cuts[index], self.host_masks)
            if not walked:  # the cotangent grew too dense on the way
                self._densify(index + 1)

    def skip(self, index: int) -> None:
        """Walk down to the cut after gate ``index`` without selecting there."""
        self._reach(index)
        if self.sparse is None:
            for _ in self.dense.advance(self.cuts[index], self.masks):
                pass

    def select(self, index: int, width: int, alpha: np.ndarray) -> None:
        """Walk down to the cut after gate ``index`` and choose its units there."""
        self._reach(index)
        gate, fwd = self.gates[index], self.fwd
        if self.sparse is not None:
            mask = self.sparse.select(self.engine, fwd, gate, self.row, self.valid, width, alpha)
            self.fix(gate, mask.reshape(len(mask), *gate.shape))
            return
        h = device_value(fwd.activations, gate.name)
        choice = DeviceChoice(self.engine, h, self.row, self.valid)
        for lo, values in self.dense.advance(self.cuts[index], self.masks):
            choice.add(values[f"ct:{gate.name}"], lo)
        self.fix(gate, *choice.choose(width, alpha))

    def target_to_input(self, last: int) -> tuple[np.ndarray, np.ndarray]:
        """Below the last visited gate (``last``) only the target's row matters: walk that one
        row to the input. Returns W^p (N, *input_shape) and b^p (N,)."""
        if self.sparse is None and self.narrow(-1, self.dense.start, last):
            self.sparse = _Sparse.from_store(self.dense, self.gates[last],
                                             self.host_masks[self.gates[last].name],
                                             self.masks)  # fmt: skip
        if self.sparse is not None and self.walker.can_walk(self.sparse.start, 0):
            found = self.sparse.to_input(self.walker, self.fwd, self.row, self.host_masks,
                                         self.model.input_shape)  # fmt: skip
            if found is not None:
                return found
        if self.sparse is not None:
            self._densify(last)
        cotangents, bias = self.dense.rows(self.row, self.masks)
        cotangents, part = self.engine.stage(self.fwd, cotangents, self.dense.start, 0,
                                             self.masks, single_row=True)  # fmt: skip
        return cotangents["grad"], bias + part


class _Sparse:
    """The sweep's rows below a narrow gate, per sample: the flat positions with a nonzero
    cotangent (``idx``) and their values (rows × positions), at the cut ``start``."""

    def __init__(self, start: int, entries: list, bias: np.ndarray, rows: int):
        self.start, self.entries, self.bias, self.r = start, entries, bias, rows

    @classmethod
    def from_store(cls, store, gate, mask: np.ndarray, masks: dict) -> _Sparse:
        """The dense rows at the store's front, the cut after ``gate``, on the units its mask
        keeps (the gate's transpose zeroes every other one); ``masks``: those fixed so far."""
        n, host = store.n, store.engine.dev.host
        flat = mask.reshape(n, -1)
        kept = [np.flatnonzero(flat[i]) for i in range(n)]
        parts: list[list] = [[] for _ in range(n)]
        biases = []
        for j in range(len(store.chunks)):  # one chunk at a time: each may be walked again
            cotangents, bias = store.at_front(j, masks)
            rows = host(cotangents[f"ct:{gate.name}"]).reshape(n, -1, gate.units)
            for i in range(n):
                parts[i].append(rows[i][:, kept[i]])
            biases.append(bias.reshape(n, -1))
        entries = [(kept[i], np.concatenate(parts[i], axis=0)) for i in range(n)]
        return cls(store.start, entries, np.concatenate(biases, axis=1), store.r)

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

    def select(self, engine, fwd, gate, row: np.ndarray, valid, width: int, alpha) -> np.ndarray:
        """Algorithm 1's choice at ``gate`` (N, units), scored on the positions with a
        cotangent only, by the same graphs as the dense choice (:class:`DeviceChoice`): every
        other unit contributes 0 to every class, so its score is the uniform softmax ``1/R``
        (``fill``), the same float32 value the dense score gives it."""
        n = len(self.entries)
        mask = np.zeros((n, gate.units), bool)
        for i, (idx, vals) in enumerate(self.entries):
            rows = self.r if valid is None else int(valid[i].sum())
            fill = np.float32(1) / np.float32(rows)
            imp = np.empty(0, np.float32)  # no cotangent left: every unit scores fill
            if len(idx):
                h = np.ascontiguousarray(fwd.activations[gate.name][i].reshape(1, -1)[:, idx])
                counts = None if valid is None else valid[i : i + 1]
                score = DeviceChoice(engine, h, row[i : i + 1], counts)
                score.add(np.ascontiguousarray(vals), 0)
                imp = score.scores()[0]
            mask[i] = select_sparse(imp, idx, gate.units, width, alpha[i], fill)
        return mask

    def to_store(self, engine, fwd, gate) -> RowStore:
        """The rows as dense arrays again, for a stage the sparse walk does not cover."""
        n = len(self.entries)
        dense = np.zeros((n, self.r, gate.units), np.float32)
        for i, (idx, vals) in enumerate(self.entries):
            dense[i][:, idx] = vals
        cotangents = {f"ct:{gate.name}": dense.reshape(n * self.r, *gate.shape)}
        return RowStore(engine, fwd, cotangents, self.start, self.bias.reshape(-1), self.r)

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
