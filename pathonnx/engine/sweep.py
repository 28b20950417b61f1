"""Sweeps: backward walks cut after gates, and the cotangent rows kept between their stages.

A selection that depends on the cotangent at a gate (pathwise explanation, critical pathways,
pruning) walks the adjoint in stages, cut right after gates (:meth:`LinearEngine.stage`).
:func:`gate_cotangents` runs one row per sample down the cuts; :class:`RowStore` keeps many
rows (all K classes of the pathwise sweep) between stages under a memory budget, on the
device; :class:`DeviceChoice` makes Algorithm 1's choice at a gate there too
(:mod:`pathonnx.graph.choice`), so that only the masks come back.
"""

from __future__ import annotations

import numpy as np

from ..graph.choice import (
    STATE,
    choose_graph,
    gather_rows_graph,
    importance_graph,
    network_top_graph,
    score_graph,
    top_units_graph,
)
from .forward import one_hot
from .resident import OrtValue, device_value, dtype_of, shape_of


class RowStore:
    """The K-row cotangents of the sweep, in chunks of rows, and the walk below them.

    :meth:`advance` walks every chunk from where it is stored down to the next cut, and yields
    each chunk's cotangents there: :attr:`start`, the *front*, is the cut the last walk
    reached. A chunk's result replaces it (its old values freed as the new ones are kept) while
    the store stays within :attr:`LinearEngine.store_budget`; a chunk that does not fit stays
    where it is, and the next walk starts it from there again, through the masks fixed
    meanwhile (more work, bounded memory). So where a cut is too large for all K rows, as many
    chunks as fit move on and only the others are walked again: that is what runs a 1000-class
    VGG-16 at 224×224, whose bottom gates hold 3.2 million units per row (12.8 GB for 1000
    rows), near the cost of one K-row walk.
    """

    def __init__(self, engine, fwd, cotangents: dict, start, bias: np.ndarray, rows: int):
        self.engine, self.fwd, self.n, self.r, self.start = engine, fwd, len(fwd.x), rows, start
        self.step = min(rows, engine.rows_per_call(self.n))
        put = engine.dev.put
        self.chunks = [
            (
                {k: put(self._rows_of(v, lo)) for k, v in cotangents.items()},
                self._rows_of(bias, lo),
                start,
            )
            for lo in range(0, rows, self.step)
        ]

    def _rows_of(self, value: np.ndarray, lo: int) -> np.ndarray:
        """Rows lo .. lo + step of every sample of a sample-major (N·R, ...) array."""
        shaped = value.reshape(self.n, self.r, *value.shape[1:])[:, lo : lo + self.step]
        return np.ascontiguousarray(shaped.reshape(-1, *value.shape[1:]))

    @staticmethod
    def _bytes(cotangents: dict) -> int:
        return sum(v.tensor_size_in_bytes() if isinstance(v, OrtValue) else v.nbytes
                   for v in cotangents.values())  # fmt: skip

    def advance(self, stop: int, masks: dict):
        stored = sum(self._bytes(c) for c, _, _ in self.chunks)
        budget = self.engine.store_budget
        for j, (cotangents, bias, start) in enumerate(self.chunks):
            values, part = self.engine.stage(self.fwd, cotangents, start, stop, masks, keep=True)
            yield j * self.step, values
            grown = self._bytes(values) - self._bytes(cotangents)
            if stored + grown <= budget:
                self.chunks[j] = ({k: self.engine.dev.detach(v) for k, v in values.items()},
                                  bias + part, stop)  # fmt: skip
                stored += grown
        self.start = stop

    def at_front(self, j: int, masks: dict) -> tuple[dict, np.ndarray]:
        """Chunk ``j``'s (cotangents, bias) at the front :attr:`start`: as stored, or walked
        there again from where it is stored (transiently), through ``masks``."""
        cotangents, bias, start = self.chunks[j]
        if start == self.start:
            return cotangents, bias
        values, part = self.engine.stage(self.fwd, cotangents, start, self.start, masks,
                                         keep=True)  # fmt: skip
        return values, bias + part

    def rows(self, row: np.ndarray, masks: dict) -> tuple[dict, np.ndarray]:
        """The cotangents (on the device) and bias of one row per sample (its index in
        0..R-1) at the front, gathered where the rows are."""
        row = np.asarray(row, np.int64)
        chunk, within = row // self.step, row % self.step
        samples = np.arange(self.n)
        picked: dict = {}
        bias = np.empty(self.n)
        for j in range(len(self.chunks)):
            take = chunk == j
            if not take.any():
                continue
            cotangents, part = self.at_front(j, masks)
            per = len(part) // self.n
            index = samples * per + np.where(take, within, 0)
            bias[take] = part[index[take]]
            for key, value in cotangents.items():
                first = key not in picked
                feeds = {"ct": value, "index": index}
                if not first:
                    feeds.update(take=take, prev=picked[key])
                graph = ("gather_rows", len(shape_of(value)), first)
                build = lambda g=graph: gather_rows_graph(g[1], g[2])  # noqa: E731
                (picked[key],) = self.engine.run_small(graph, build, feeds, ["out"])
        return picked, bias


def gate_cotangents(
    model,
    fwd,
    target: np.ndarray | None = None,
    upto: int | None = None,
    *,
    seeds: np.ndarray | None = None,
    masks: dict | None = None,
    scales: dict | None = None,
    keep: bool = False,
) -> dict:
    """∂logit[target]/∂h at every gate output (N, *gate.shape) of ``model`` (a Model), or at
    the ``upto`` top gates, from one backward walk cut after each gate, at ``fwd``'s pattern.
    ``seeds`` (N, K) replace the target's one-hot row (e.g. a loss's gradient at the logits);
    ``masks`` or ``scales`` act on the gates as in :meth:`LinearEngine.stage`. With ``keep``
    the cotangents stay on the device (OrtValues), else they come back as numpy."""
    engine = model.engine
    if seeds is None:
        seeds = one_hot(target, model.num_outputs)
    cotangents, start, out = {"seed": seeds}, None, {}
    cuts = engine.gate_cuts()
    for gate, cut in list(zip(reversed(model.gates), reversed(cuts)))[:upto]:
        cotangents, _ = engine.stage(
            fwd, cotangents, start, cut, masks, single_row=True, scales=scales, keep=True
        )
        out[gate.name], start = cotangents[f"ct:{gate.name}"], cut
    if not keep:
        out = {name: engine.dev.host(value) for name, value in out.items()}
    return out


def percentile_rank(units: int, sparsity: float) -> int:
    """k such that ``score > np.percentile(scores, 100 * sparsity)`` keeps exactly the units
    ranked above the k-th largest of ``units`` scores (see
    :func:`~pathonnx.graph.choice.network_top_graph`): numpy's linear method interpolates
    between the order statistics at floor((T - 1)·q) and the next one."""
    q = np.true_divide(100 * float(sparsity), 100)
    virtual = (units - 1) * q
    lo = units - 1 if virtual >= units - 1 else int(np.floor(virtual))
    return units - lo


def network_top(engine, fwd, gates, sparsity: float, cotangents=None, scores=None):
    """The units of ``gates`` whose score is above the network-wide ``sparsity`` percentile,
    ranked where the values are. Scores are |h ⊙ cotangent| (``cotangents``: gate name ->
    (N, *gate.shape)), or given (``scores``: float32 or float64, (N, *gate.shape) or
    (N, units)). Returns the masks (gate name -> OrtValue (N, *gate.shape)) and per gate the
    units kept and, of them, those inactive at x ((N,))."""
    count, product = len(gates), cotangents is not None
    dtype = np.float32 if product else dtype_of(scores[gates[0].name]).type
    feeds = {f"h{i}": device_value(fwd.activations, g.name) for i, g in enumerate(gates)}
    for i, g in enumerate(gates):
        feeds[f"g{i}" if product else f"s{i}"] = (cotangents if product else scores)[g.name]
    feeds["k"] = np.array([percentile_rank(sum(g.units for g in gates), sparsity)], np.int64)
    key = ("network_top", count, product, np.dtype(dtype).name)
    build = lambda: network_top_graph(count, product, dtype)  # noqa: E731
    return masks_and_counts(engine, gates, key, build, feeds)


def masks_and_counts(engine, gates, key: tuple, build, feeds: dict):
    """Run a graph whose outputs are per gate i a mask ``m{i}``, the units it keeps ``kept{i}``
    and the inactive ones among them ``dead{i}``; returns the masks (gate name -> OrtValue)
    and the counts (gate name -> (N,) int64, numpy)."""
    names = [f"{kind}{i}" for kind in ("m", "kept", "dead") for i in range(len(gates))]
    found = dict(zip(names, engine.run_small(key, build, feeds, names)))
    masks = {g.name: found[f"m{i}"] for i, g in enumerate(gates)}
    kept, dead = ({g.name: engine.dev.host(found[f"{kind}{i}"]).astype(np.int64)
                   for i, g in enumerate(gates)} for kind in ("kept", "dead"))  # fmt: skip
    return masks, kept, dead


class DeviceChoice:
    """Algorithm 1's choice at one gate, made where the cotangent rows are: the running
    softmax over chunks of rows (:func:`~pathonnx.graph.choice.importance_graph`), then the
    mask (:func:`~pathonnx.graph.choice.choose_graph`) or the scores themselves (:meth:`scores`,
    for the few units of a sparse walk).

    ``h``: the gate's output (N, *gate.shape), an OrtValue or numpy; ``row`` (N,) is the
    target's row of each sample, ``valid`` (N, R) the rows that count (None: all)."""

    def __init__(self, engine, h, row: np.ndarray, valid):
        self.engine, self.h, self.row, self.valid = engine, h, row, valid
        self.state: list[OrtValue] | None = None

    def add(self, ct, lo: int) -> None:
        """Rows ``lo .. lo + R'`` of every sample's cotangent at the gate, ``ct`` (N·R', *gate)."""
        n = len(self.row)
        rows = shape_of(ct)[0] // n
        pick = (self.row[:, None] - lo) == np.arange(rows)[None]
        first, valid = self.state is None, self.valid is not None
        feeds = {"h": self.h, "ct": ct, "pick": pick}
        if valid:
            feeds["valid"] = np.ascontiguousarray(self.valid[:, lo : lo + rows])
        if not first:
            feeds.update(zip(("top0", "total0", "mine0"), self.state))
        build = lambda: importance_graph(first, valid, rows)  # noqa: E731
        key = ("importance", first, valid, rows)
        self.state = self.engine.run_small(key, build, feeds, list(STATE))

    def scores(self) -> np.ndarray:
        """The importance (N, units), as numpy."""
        (found,) = self.engine.run_small(
            ("score",), score_graph, dict(zip(STATE, self.state)), ["importance"]
        )
        return self.engine.dev.host(found)

    def choose(self, width: int, alpha: np.ndarray):
        """The mask (N, *gate.shape) as an OrtValue on the device, and per sample the units
        kept and, of those, the ones inactive at x (both (N,) numpy)."""
        units = int(np.prod(shape_of(self.h)[1:]))
        limited = width < units
        feeds = dict(zip(STATE, self.state))
        feeds.update(h=self.h, alpha=np.asarray(alpha, np.float32).reshape(-1, 1))
        if limited:
            feeds["width"] = np.array([width], np.int64)
        build = lambda: choose_graph(limited)  # noqa: E731
        mask, kept, dead = self.engine.run_small(("choose", limited), build, feeds,
                                                 ["mask", "kept", "dead"])  # fmt: skip
        host = self.engine.dev.host
        return mask, host(kept).astype(np.int64), host(dead).astype(np.int64)


def top_units(engine, h, g, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample the ``k`` units of largest contribution ``h ⊙ g`` (h, g: (N, *gate.shape),
    OrtValues or numpy), ranked where they are: their flat indices (N, k), in descending
    contribution with ties to the lower index, and ``h`` at them (N, k)."""
    feeds = {"h": h, "g": g, "k": np.array([k], np.int64)}
    found = engine.run_small(("top_units",), top_units_graph, feeds, ["index", "h_at"])
    return engine.dev.host(found[0]), engine.dev.host(found[1])
