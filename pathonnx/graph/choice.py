"""Algorithm 1's choice at one gate, as small ONNX graphs that run where the cotangents are.

The pathwise sweep ("Pathwise Explanation of ReLU Neural Networks", arXiv:2506.18037,
Algorithm 1) scores every unit of a gate by ``softmax_c(h · ∂logit_c/∂h)[target]`` and keeps
the ``width`` best units above ``alpha``. These graphs compute it where the cotangent rows,
the pattern and the masks are, so that none of them leaves the device:

- :func:`importance_graph` folds one chunk of cotangent rows into the running softmax state:
  the maximum over the rows so far ``top``, the sum of exponentials relative to it ``total``,
  and the target row's term ``mine``;
- :func:`score_graph` turns the state into the importance ``exp(mine - top) / total``;
- :func:`choose_graph` turns the state into the mask, with the same importance, and counts per
  sample the units kept and those of them inactive at x.

Every operation acts on each unit alone, so a unit's score does not depend on the batch, the
gate's size, or which other units are scored with it (the sparse walk scores a few units
only). The sum over rows is a product with a row of ones for that reason: onnxruntime's
ReduceSum over the middle axis adds in a different order for N = 1 than for N > 1.
:func:`pathonnx.methods.selection.select_units` states the choice in numpy.

Inputs have any rank: ``h`` (N, *gate), the cotangent chunk (N·R, *gate); the graphs flatten
both to (N, units).
"""

from __future__ import annotations

import numpy as np
import onnx

from .emit import Emitter

OPSET = 17
_NEG_INF = np.float32(-np.inf)
STATE = ("top", "total", "mine")


def importance_graph(first: bool, valid: bool, rows: int) -> onnx.ModelProto:
    """inputs   h (N, *gate) the gate's output; ct (N·R, *gate) R = ``rows`` cotangent rows per
             sample; pick (N, R) bool, the target's row; [valid (N, R) bool, the rows that
             count]; [top0, total0, mine0 (N, units): the state so far, unless ``first``]
    outputs  top, total, mine (N, units)

    The maximum over the rows is an elementwise Max of the R rows split apart, and the target's
    term a product with the one-hot ``pick``: onnxruntime's ReduceMax over the middle axis
    reads the rows several times slower (2-3x over the whole graph, on 2 cores), and both
    forms give the same floats."""
    em = Emitter(OPSET)
    h, ct = em.input("h", np.float32, None), em.input("ct", np.float32, None)
    pick = em.input("pick", bool, ["N", rows])
    h2 = em.reshape(h, [0, -1], "h2")
    dims = em.op("Shape", [h2], dtype=np.int64)
    n, units = (em.op("Slice", [dims, em.ints([a]), em.ints([a + 1])], dtype=np.int64)
                for a in (0, 1))  # fmt: skip
    shape = em.op("Concat", [n, em.ints([rows]), units], {"axis": 0}, dtype=np.int64)
    ct3 = em.op("Reshape", [ct, shape], hint="ct3")  # (N, R, units)
    part = em.op("Mul", [em.op("Unsqueeze", [h2, em.ints([1])]), ct3], hint="part")
    neg = em.const(_NEG_INF, "neg")
    onehot = em.op("Cast", [pick], {"to": 1}, hint="pick_f")  # (N, R): 1 at the target's row
    picked = em.op("Unsqueeze", [onehot, em.ints([1])], hint="pick3")
    found = em.op("Squeeze", [em.op("MatMul", [picked, part]), em.ints([1])], hint="found")
    here = em.op("ReduceMax", [onehot], {"axes": [1], "keepdims": 1})
    here = em.op("Greater", [here, em.const(np.float32(0))], dtype=bool, hint="here")
    mine = em.op("Where", [here, found, neg], hint="chunk_mine")  # -inf: not in this chunk
    if valid:
        counts = em.op("Unsqueeze", [em.input("valid", bool, ["N", rows]), em.ints([2])],
                       dtype=bool)  # fmt: skip
        part = em.op("Where", [counts, part, neg], hint="valid_part")
    split = em.op("Split", [part], {"axis": 1}, outputs=rows, hint="row") if rows > 1 else [part]
    top = em.op("Squeeze", [em.op("Max", split), em.ints([1])], hint="chunk_top")
    if not first:
        before = [em.input(f"{name}0", np.float32, ["N", "U"]) for name in STATE]
        top = em.op("Max", [before[0], top], hint="top_all")
        mine = em.op("Max", [before[2], mine], hint="mine_all")
    zero = em.const(np.float32(0), "zero")
    finite = em.op("Not", [em.op("Equal", [top, neg], dtype=bool)], dtype=bool)
    shift = em.op("Where", [finite, top, zero], hint="shift")
    exps = em.op("Exp", [em.op("Sub", [part, em.op("Unsqueeze", [shift, em.ints([1])])])])
    row = em.const(np.ones((1, rows), np.float32), "ones")
    total = em.op("Squeeze", [em.op("MatMul", [row, exps]), em.ints([1])], hint="chunk_total")
    if not first:
        rescale = em.op("Exp", [em.op("Where", [finite, em.op("Sub", [before[0], shift]), zero])])
        total = em.op("Add", [em.op("Mul", [before[1], rescale]), total], hint="total_all")
    return em.graph(_named(em, [top, total, mine], STATE), "importance")


def _importance(em: Emitter):
    """The state inputs and the importance ``exp(mine - top) / total`` (N, units)."""
    top, total, mine = (em.input(name, np.float32, ["N", "U"]) for name in STATE)
    return em.op("Div", [em.op("Exp", [em.op("Sub", [mine, top])]), total], hint="importance")


def score_graph() -> onnx.ModelProto:
    """inputs top, total, mine (N, units); output importance (N, units)."""
    em = Emitter(OPSET)
    return em.graph(_named(em, [_importance(em)], ["importance"]), "score")


def choose_graph(limited: bool) -> onnx.ModelProto:
    """inputs   top, total, mine (N, units) the softmax state; h (N, *gate) the gate's output;
             alpha (N, 1) float32; [width (1,) int64, when ``limited`` (width < units)]
    outputs  mask (N, *gate) bool; kept, dead (N,) float32: units kept, and of them those
             with h ≤ 0 at x

    Units above alpha, of the ``width`` most important (TopK: ties go to the lower index);
    where none is, the single most important (the first of the maxima)."""
    em = Emitter(OPSET)
    imp = _importance(em)
    h = em.input("h", np.float32, None)
    alpha = em.input("alpha", np.float32, ["N", 1])
    zero = onnx.helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0])
    zeros = em.op("ConstantOfShape", [em.op("Shape", [imp], dtype=np.int64)], {"value": zero})
    _, best = em.op("TopK", [imp, em.ints([1], "one")], {"axis": 1, "largest": 1, "sorted": 1},
                    outputs=2, hint="best")  # fmt: skip
    best.dtype = np.int64
    if limited:
        width = em.input("width", np.int64, [1])
        values, order = em.op("TopK", [imp, width], {"axis": 1, "largest": 1, "sorted": 1},
                              outputs=2, hint="topk")  # fmt: skip
        order.dtype = np.int64
        keep = em.op("Cast", [em.op("Greater", [values, alpha], dtype=bool)], {"to": 1})
        chosen = em.op("ScatterElements", [zeros, order, keep], {"axis": 1}, hint="chosen")
    else:
        chosen = em.op("Cast", [em.op("Greater", [imp, alpha], dtype=bool)], {"to": 1})
    some = em.op("ReduceMax", [chosen], {"axes": [1], "keepdims": 1}, hint="some")
    fallback = em.op("Sub", [em.const(np.float32(1)), some], hint="none")  # 1 where none passed
    first = em.op("ScatterElements", [zeros, best, fallback], {"axis": 1}, hint="first")
    mask2 = em.op("Greater", [em.op("Max", [chosen, first]), em.const(np.float32(0))],
                  dtype=bool, hint="mask2")  # fmt: skip
    active = em.op("Greater", [em.reshape(h, [0, -1], "h2"), em.const(np.float32(0))], dtype=bool)
    dead = em.op("And", [mask2, em.op("Not", [active], dtype=bool)], dtype=bool)
    mask = em.op("Reshape", [mask2, em.op("Shape", [h], dtype=np.int64)], dtype=bool, hint="m")
    counts = [em.op("ReduceSum", [em.op("Cast", [value], {"to": 1}), em.ints([1])],
                    {"keepdims": 0}) for value in (mask2, dead)]  # fmt: skip
    return em.graph(_named(em, [mask, *counts], ["mask", "kept", "dead"]), "choose")


def gather_rows_graph(rank: int, first: bool) -> onnx.ModelProto:
    """One row per sample out of a chunk of cotangent rows, on the device.

    inputs   ct (rows, ...) of rank ``rank``; index (N,) int64, the row each sample takes;
             [take (N,) bool, whether it takes it from this chunk; prev (N, ...) what it has]
    outputs  out (N, ...): ``ct[index]``, or where not ``take``, ``prev``"""
    em = Emitter(OPSET)
    ct = em.input("ct", np.float32, ["rows", *(f"d{i}" for i in range(1, rank))])
    index = em.input("index", np.int64, ["N"])
    out = em.op("Gather", [ct, index], {"axis": 0}, hint="gathered")
    if not first:
        take = em.input("take", bool, ["N"])
        prev = em.input("prev", np.float32, ["N", *(f"d{i}" for i in range(1, rank))])
        take = em.reshape(take, [-1, *([1] * (rank - 1))], "take_b", dtype=bool)
        out = em.op("Where", [take, out, prev], hint="picked")
    return em.graph(_named(em, [out], ["out"]), "gather_rows")


def _batch_and_rest(em: Emitter, value, at: int = 1):
    """The shape of ``value`` split into its batch size (1,) and its axes from ``at`` on."""
    dims = em.op("Shape", [value], dtype=np.int64)
    n = em.op("Slice", [dims, em.ints([0]), em.ints([1])], dtype=np.int64)
    return n, em.op("Slice", [dims, em.ints([at]), em.ints([1 << 30])], dtype=np.int64)


def _named(em: Emitter, values: list, names) -> list:
    """The graph's outputs under their interface names."""
    outs = []
    for value, name in zip(values, names):
        out = em.op("Identity", [value], hint=name, dtype=value.dtype)
        out.name = name
        outs.append(out)
    return outs


def network_top_graph(count: int, product: bool, dtype=np.float32) -> onnx.ModelProto:
    """The critical pathway's choice (Khakzar et al., CVPR 2021): every unit of every gate
    ranked together, the units above the network-wide percentile kept.

    inputs   h0 .. h{count-1} (N, *gate) the gates' outputs; with ``product``, g0 .. the
             cotangents at them, and the score is |h ⊙ g| (NeuronMCT); else s0 .. the scores
             (of ``dtype``);
             k (1,) int64: how many of the T units rank at or above the threshold
    outputs  m0 .. (N, *gate) bool: score > threshold; kept0 .., dead0 .. (N,) float32: per
             gate the units kept, and of them those with h ≤ 0 at x

    The threshold is the percentile with linear interpolation (numpy's default) between the
    order statistics s[lo] <= s[lo + 1]. No score lies strictly between the two, so
    ``score > percentile`` is ``score > s[lo]`` whatever the interpolation weight: the k-th
    largest score, k = T - lo (the caller computes lo as numpy does)."""
    em = Emitter(OPSET)
    hs = [em.input(f"h{i}", np.float32, None) for i in range(count)]
    if product:
        gs_ = [em.input(f"g{i}", np.float32, None) for i in range(count)]
        scores = [em.op("Abs", [em.op("Mul", [h, g])]) for h, g in zip(hs, gs_)]
    else:
        scores = [em.input(f"s{i}", dtype, None) for i in range(count)]
    flat = [em.reshape(s, [0, -1], "flat") for s in scores]
    every = flat[0] if count == 1 else em.op("Concat", flat, {"axis": 1}, hint="every")
    k = em.input("k", np.int64, [1])
    kind = np.float32 if product else dtype
    for value in flat + ([every] if count > 1 else []):
        value.dtype = kind
    top, order = em.op("TopK", [every, k], {"axis": 1, "largest": 1, "sorted": 0}, outputs=2,
                       dtype=kind)  # fmt: skip
    order.dtype = np.int64
    threshold = em.op("ReduceMin", [top], {"axes": [1], "keepdims": 1}, hint="threshold",
                      dtype=kind)  # fmt: skip
    chosen = [em.op("Greater", [f, threshold], dtype=bool) for f in flat]
    return em.graph(_masks_and_counts(em, chosen, hs, hs), "network_top")


def _masks_and_counts(em: Emitter, chosen: list, activations: list, like: list) -> list:
    """Per gate i: the mask ``m{i}`` (``chosen[i]`` (N, units) shaped like ``like[i]``), the
    units it keeps ``kept{i}`` and, of them, those inactive at x ``dead{i}`` (``activations[i]``
    ≤ 0), both (N,) float32; as the graph's named outputs."""
    masks, kept, dead = [], [], []
    for mask, a, shape_of in zip(chosen, activations, like):
        active = em.op("Greater", [em.reshape(a, [0, -1]), em.const(np.float32(0))], dtype=bool)
        inactive = em.op("And", [mask, em.op("Not", [active], dtype=bool)], dtype=bool)
        for value, into in ((mask, kept), (inactive, dead)):
            into.append(em.op("ReduceSum", [em.op("Cast", [value], {"to": 1}), em.ints([1])],
                              {"keepdims": 0}))  # fmt: skip
        shape = em.op("Shape", [shape_of], dtype=np.int64)
        masks.append(em.op("Reshape", [mask, shape], dtype=bool))
    names = [f"{kind}{i}" for kind in ("m", "kept", "dead") for i in range(len(chosen))]
    return _named(em, [*masks, *kept, *dead], names)


def top_units_graph() -> onnx.ModelProto:
    """The decomposition's seeds: per sample the units of largest contribution ``h ⊙ g``.

    inputs   h, g (N, *gate) the gate's output and the cotangent at it; k (1,) int64
    outputs  index (N, k) int64, in descending contribution (ties: the lower index first);
             h_at (N, k) the gate's output there"""
    em = Emitter(OPSET)
    h = em.reshape(em.input("h", np.float32, None), [0, -1], "h2")
    g = em.reshape(em.input("g", np.float32, None), [0, -1], "g2")
    k = em.input("k", np.int64, [1])
    _, index = em.op("TopK", [em.op("Mul", [h, g]), k], {"axis": 1, "largest": 1, "sorted": 1},
                     outputs=2, hint="top")  # fmt: skip
    index.dtype = np.int64
    h_at = em.op("GatherElements", [h, index], {"axis": 1}, hint="h_at")
    return em.graph(_named(em, [index, h_at], ["index", "h_at"]), "top_units")


# -- NeuronIntGrad (Khakzar et al., CVPR 2021): the network above a gate on scaled activations --


def repeat_graph(scaled: bool) -> onnx.ModelProto:
    """inputs   v (N, ...) a tensor live at a cut; alpha (m,) float32
    outputs  out (N·m, ...): every sample repeated m times (sample-major: row n·m + j), times
             alpha[j] when ``scaled``"""
    em = Emitter(OPSET)
    v, alpha = em.input("v", np.float32, None), em.input("alpha", np.float32, ["m"])
    n, rest = _batch_and_rest(em, v)
    m = em.op("Shape", [alpha], dtype=np.int64)
    wide = em.op("Concat", [n, m, rest], {"axis": 0}, dtype=np.int64)
    out = em.op("Expand", [em.op("Unsqueeze", [v, em.ints([1])]), wide], hint="repeated")
    if scaled:
        ones = em.op("ConstantOfShape", [em.op("Shape", [rest], dtype=np.int64)],
                     {"value": onnx.helper.make_tensor("one", onnx.TensorProto.INT64, [1], [1])},
                     dtype=np.int64)  # fmt: skip
        shape = em.op("Concat", [em.ints([1, -1]), ones], {"axis": 0}, dtype=np.int64)
        out = em.op("Mul", [out, em.op("Reshape", [alpha, shape])], hint="scaled")
    flat = em.op("Concat", [em.ints([-1]), rest], {"axis": 0}, dtype=np.int64)
    return em.graph(_named(em, [em.op("Reshape", [out, flat])], ["out"]), "repeat")


def accumulate_graph(first: bool) -> onnx.ModelProto:
    """inputs   ct (N·m, ...) the cotangents at a gate for m scaled copies of each sample;
             v (N, ...) the gate's output (for N); [total (N, ...) float64, unless ``first``]
    outputs  total (N, ...) float64: the sum over the m copies, added to ``total``"""
    em = Emitter(OPSET)
    ct, v = em.input("ct", np.float32, None), em.input("v", np.float32, None)
    n, rest = _batch_and_rest(em, v)
    wide = em.op("Concat", [n, em.ints([-1]), rest], {"axis": 0}, dtype=np.int64)
    ct = em.op("Cast", [em.op("Reshape", [ct, wide])], {"to": onnx.TensorProto.DOUBLE},
               dtype=np.float64)  # fmt: skip
    total = em.op("ReduceSum", [ct, em.ints([1])], {"keepdims": 0}, dtype=np.float64)
    if not first:
        total = em.op("Add", [em.input("total0", np.float64, None), total], dtype=np.float64)
    return em.graph(_named(em, [total], ["total"]), "accumulate")


def intgrad_score_graph() -> onnx.ModelProto:
    """inputs v (N, ...) the gate's output; total (N, ...) float64; steps (1,) float64
    output score (N, ...) float32: |v ⊙ total / steps|, in float64 before the cast"""
    em = Emitter(OPSET)
    v = em.op("Cast", [em.input("v", np.float32, None)], {"to": onnx.TensorProto.DOUBLE},
              dtype=np.float64)  # fmt: skip
    total, steps = em.input("total", np.float64, None), em.input("steps", np.float64, [1])
    product = em.op("Mul", [v, total], dtype=np.float64)
    score = em.op("Abs", [em.op("Div", [product, steps], dtype=np.float64)], dtype=np.float64)
    return em.graph(_named(em, [em.op("Cast", [score], {"to": 1})], ["score"]), "intgrad_score")


# -- DGR (distillation guided routing): Adam on the per-unit gates -----------------------------


def adam_graph() -> onnx.ModelProto:
    """One Adam step (β = 0.9, 0.999, ε = 1e-8) on one gate's per-unit scales λ, projected onto
    λ ≥ 0, in the dtypes of pathonnx's numpy statement of it (float32 gradient, float64 state).

    inputs   h, g (N, *gate) float32: the gate's output and the loss's cotangent at it;
             lam, first, second (N, units) float64; gamma (1,) float32, the l1 weight;
             c1 (1,) float64 = lr / (1 − 0.9^t); c2 (1,) float64 = 1 − 0.999^t
    outputs  lam, first, second (N, units) float64; scale (N, *gate) float32: the new λ"""
    em = Emitter(OPSET)
    f64 = onnx.TensorProto.DOUBLE
    h, g = em.input("h", np.float32, None), em.input("g", np.float32, None)
    lam, first, second = (em.input(f"{name}0", np.float64, ["N", "U"])
                          for name in ("lam", "first", "second"))  # fmt: skip
    gamma = em.input("gamma", np.float32, [1])
    c1, c2 = em.input("c1", np.float64, [1]), em.input("c2", np.float64, [1])
    flat = [em.reshape(v, [0, -1]) for v in (h, g)]
    grad = em.op("Add", [em.op("Mul", flat), gamma], hint="grad")  # float32, as numpy's

    def up(value):
        return em.op("Cast", [value], {"to": f64}, dtype=np.float64)

    def f32(value):
        return em.const(np.float32(value))

    def f64c(value):
        return em.const(np.float64(value), dtype=np.float64)

    first = em.op("Add", [em.op("Mul", [first, f64c(0.9)], dtype=np.float64),
                          up(em.op("Mul", [grad, f32(0.1)]))], dtype=np.float64)  # fmt: skip
    squared = em.op("Mul", [em.op("Mul", [grad, f32(0.001)]), grad])
    second = em.op("Add", [em.op("Mul", [second, f64c(0.999)], dtype=np.float64), up(squared)],
                   dtype=np.float64)  # fmt: skip
    root = em.op("Sqrt", [em.op("Div", [second, c2], dtype=np.float64)], dtype=np.float64)
    denom = em.op("Add", [root, f64c(1e-8)], dtype=np.float64)
    step = em.op("Div", [em.op("Mul", [c1, first], dtype=np.float64), denom], dtype=np.float64)
    lam = em.op("Max", [em.op("Sub", [lam, step], dtype=np.float64), f64c(0.0)],
                dtype=np.float64)  # fmt: skip
    scale = em.op("Reshape", [em.op("Cast", [lam], {"to": 1}), em.op("Shape", [h], dtype=np.int64)])
    return em.graph(_named(em, [lam, first, second, scale], ["lam", "first", "second", "scale"]),
                    "adam")  # fmt: skip


# -- Greedy Taylor pruning (Khakzar et al.): rounds of scoring and removal ----------------------


def greedy_graph(count: int, mode: str) -> onnx.ModelProto:
    """One step of greedy Taylor pruning over ``count`` gates, on the device.

    inputs   h0 .. (N, *gate) float32 the pruned network's gate outputs; g0 .. the cotangents
             there; keep0 .. (N, *gate) bool the units still kept. The score of a unit is
             |keep·h|·|g|; it is alive when kept with a nonzero score.
    ``mode``:
    - ``"count"``: output count (N,) float64, the units alive;
    - ``"drop"``: inputs drop (N,) int64, k (1,) int64 = max(drop) ≥ 1; outputs next0 ..
      (the new keep) and scale0 .. (the same as float32): each sample's ``drop``
      lowest-scoring alive units removed (ties: the lower index first, as a stable argsort);
    - ``"final"``: inputs budget (1,) int64; a0 .. (N, *gate) the gate outputs at x, unpruned;
      outputs m0 .. the alive units, only the ``budget`` best where more are alive, and per
      gate kept0 .., dead0 .. (N,) float32: units chosen, and of them those with a ≤ 0 at x."""
    em = Emitter(OPSET)
    hs = [em.input(f"h{i}", np.float32, None) for i in range(count)]
    gs_ = [em.input(f"g{i}", np.float32, None) for i in range(count)]
    keeps = [em.input(f"keep{i}", bool, None) for i in range(count)]
    flat_keep = [em.reshape(k, [0, -1], dtype=bool) for k in keeps]
    scores = []
    for h, g, k in zip(hs, gs_, flat_keep):
        kept_h = em.op("Mul", [em.op("Cast", [k], {"to": 1}), em.reshape(h, [0, -1])])
        scores.append(
            em.op("Mul", [em.op("Abs", [kept_h]), em.op("Abs", [em.reshape(g, [0, -1])])])
        )

    def joined(values, dtype=np.float32):
        return values[0] if count == 1 else em.op("Concat", values, {"axis": 1}, dtype=dtype)

    every, kept_all = joined(scores), joined(flat_keep, bool)
    nonzero = em.op("Not", [em.op("Equal", [every, em.const(np.float32(0))], dtype=bool)],
                    dtype=bool)  # fmt: skip
    alive = em.op("And", [kept_all, nonzero], dtype=bool)
    f64 = onnx.TensorProto.DOUBLE
    alive_count = em.op("ReduceSum", [em.op("Cast", [alive], {"to": f64}, dtype=np.float64),
                                      em.ints([1])], {"keepdims": 0}, dtype=np.float64)  # fmt: skip
    units = [em.op("Slice", [em.op("Shape", [f], dtype=np.int64), em.ints([1]), em.ints([2])],
                   dtype=np.int64) for f in flat_keep]  # fmt: skip
    sizes = units[0] if count == 1 else em.op("Concat", units, {"axis": 0}, dtype=np.int64)

    def split(value, dtype):
        if count == 1:
            return [value]
        return em.op("Split", [value, sizes], {"axis": 1}, outputs=count, dtype=dtype)

    if mode == "count":
        return em.graph(_named(em, [alive_count], ["count"]), "greedy_count")
    if mode == "drop":
        drop, k = em.input("drop", np.int64, ["N"]), em.input("k", np.int64, [1])
        key = em.op("Where", [alive, every, em.const(np.float32(np.inf))])
        _, order = em.op("TopK", [key, k], {"axis": 1, "largest": 0, "sorted": 1}, outputs=2)
        order.dtype = np.int64
        ranks = em.op("Range", [em.const(np.int64(0), dtype=np.int64),
                                em.op("Squeeze", [k], dtype=np.int64),
                                em.const(np.int64(1), dtype=np.int64)], dtype=np.int64)  # fmt: skip
        chosen = em.op("Less", [em.op("Unsqueeze", [ranks, em.ints([0])], dtype=np.int64),
                                em.op("Unsqueeze", [drop, em.ints([1])], dtype=np.int64)],
                       dtype=bool)  # fmt: skip
        current = em.op("Cast", [kept_all], {"to": 1})
        there = em.op("GatherElements", [current, order], {"axis": 1})
        updates = em.op("Where", [chosen, em.const(np.float32(0)), there])
        new = em.op("ScatterElements", [current, order, updates], {"axis": 1})
        parts = split(new, np.float32)
        outs, names = [], []
        for i, (part, h) in enumerate(zip(parts, hs)):
            shape = em.op("Shape", [h], dtype=np.int64)
            scale = em.op("Reshape", [part, shape])
            outs += [em.op("Cast", [scale], {"to": onnx.TensorProto.BOOL}, dtype=bool), scale]
            names += [f"next{i}", f"scale{i}"]
        return em.graph(_named(em, outs, names), "greedy_drop")
    budget = em.input("budget", np.int64, [1])
    key = em.op("Where", [alive, every, em.const(np.float32(-np.inf))])
    _, order = em.op("TopK", [key, budget], {"axis": 1, "largest": 1, "sorted": 1}, outputs=2)
    order.dtype = np.int64
    zero = onnx.helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0])
    zeros = em.op("ConstantOfShape", [em.op("Shape", [every], dtype=np.int64)], {"value": zero})
    ones = em.op("Expand", [em.const(np.ones((1, 1), np.float32)),
                            em.op("Shape", [order], dtype=np.int64)])  # fmt: skip
    best = em.op("Greater", [em.op("ScatterElements", [zeros, order, ones], {"axis": 1}),
                             em.const(np.float32(0))], dtype=bool)  # fmt: skip
    over = em.op("Greater", [alive_count, em.op("Cast", [budget], {"to": f64}, dtype=np.float64)],
                 dtype=bool)  # fmt: skip
    over = em.op("Unsqueeze", [over, em.ints([1])], dtype=bool)
    under = em.op("Not", [over], dtype=bool)
    final = em.op("And", [alive, em.op("Or", [under, best], dtype=bool)], dtype=bool)
    at_x = [em.input(f"a{i}", np.float32, None) for i in range(count)]
    return em.graph(_masks_and_counts(em, split(final, bool), at_x, hs), "greedy_final")


def gradcam_graph() -> onnx.ModelProto:
    """Grad-CAM (Selvaraju et al. 2017) at one gate: Σ_c mean(∂y/∂A_c) · A_c.

    inputs h, g (N, C, *spatial) the gate's output and the cotangent at it
    output cam (N, *spatial) float32"""
    em = Emitter(OPSET)
    h, g = em.input("h", np.float32, None), em.input("g", np.float32, None)
    n, spatial = _batch_and_rest(em, h, at=2)
    weights = em.op("ReduceMean", [em.reshape(g, [0, 0, -1])], {"axes": [2], "keepdims": 1})
    cam = em.op("ReduceSum", [em.op("Mul", [weights, em.reshape(h, [0, 0, -1])]), em.ints([1])],
                {"keepdims": 0})  # fmt: skip
    shape = em.op("Concat", [n, spatial], {"axis": 0}, dtype=np.int64)
    return em.graph(_named(em, [em.op("Reshape", [cam, shape])], ["cam"]), "gradcam")
