"""Ops that only move data: reshapes, transposes, concatenation, slicing, padding, resizing,
gathering at constant indices."""

from __future__ import annotations

import numpy as np

from .base import (
    Rule,
    attr_str,
    axes_reason,
    const,
    constant_axes,
    crop_or_pad,
    is_data,
    needs_constants,
    op_rule,
    rank,
    run_alone,
    sample_shape,
)


class _Reshaping(Rule):
    """Every reshape's transpose is the reshape back to the input's shape."""

    def adjoint(self, node, ct, cx):
        back = cx.em.reshape(ct[0], [-1, *sample_shape(node.inputs[0])], "reshape_t")
        return [back] + [None] * (len(node.inputs) - 1)

    def walks_sparse(self, node):
        return True

    def sparse(self, node, idx, vals, sx):
        return idx, vals, None  # C-order flat positions do not move


@op_rule("Identity", "Dropout")
class Identity(_Reshaping):
    pass


@op_rule("Flatten")
class Flatten(_Reshaping):
    def check(self, node):
        axis = node.attrs.get("axis", 1)
        rank_ = rank(node.inputs[0])
        if axis == 0 or (rank_ is not None and axis == -rank_):
            return "Flatten with axis 0 merges the batch axis"
        return None


@op_rule("Reshape")
class Reshape(_Reshaping):
    def check(self, node):
        reason = needs_constants(node, [1], "Reshape target shape")
        if reason:
            return reason
        shape = const(node, 1)
        if shape is None or shape.size == 0 or int(shape[0]) not in (0, -1):
            return "Reshape whose target does not keep the batch axis first"
        if shape.size == 1 and int(shape[0]) == -1:
            return "Reshape to one dimension merges the batch axis with the others"
        if int(shape[0]) == 0 and node.attrs.get("allowzero", 0):
            return "Reshape to a literal batch size of 0"
        if int(shape[0]) == -1 and -1 in [int(s) for s in shape[1:]]:
            return "Reshape with two inferred dims"
        return None


@op_rule("Squeeze", "Unsqueeze")
class Squeeze(_Reshaping):
    def check(self, node):
        reason, axes = constant_axes(node)
        if reason:
            return reason
        if axes is None:
            return f"{node.op} without axes may drop the batch axis"
        rank_ = rank(node.inputs[0])
        if node.op == "Unsqueeze" and rank_ is not None:
            rank_ += np.size(axes)
        return axes_reason(axes, rank_, node.op)


@op_rule("Transpose")
class Transpose(Rule):
    def check(self, node):
        perm = node.attrs.get("perm")
        if perm is None or int(perm[0]) != 0:
            return "Transpose that moves the batch axis"
        return None

    def adjoint(self, node, ct, cx):
        inverse = np.argsort(node.attrs["perm"]).tolist()
        return [cx.em.op("Transpose", [ct[0]], {"perm": inverse}, hint="transpose_t")]


def _axis(node, rank_: int) -> int:
    return int(node.attrs.get("axis", 0)) % rank_


@op_rule("Concat")
class Concat(Rule):
    data_positions = None

    def check(self, node):
        return axes_reason(node.attrs.get("axis", 0), rank(node.inputs[0]), "Concat")

    def _pieces(self, node, ct, cx):
        """Each input with the slice of the output cotangent that its values landed in."""
        em = cx.em
        axis = _axis(node, rank(node.outputs[0]))
        start = 0
        for tensor in node.inputs:
            size = sample_shape(tensor)[axis - 1]
            bounds = [em.ints([start]), em.ints([start + size]), em.ints([axis])]
            yield tensor, lambda b=bounds: em.op("Slice", [ct[0], *b], hint="concat_t")
            start += size

    def adjoint(self, node, ct, cx):
        return [piece() if is_data(t) else None for t, piece in self._pieces(node, ct, cx)]

    def bias(self, node, ct, cx):
        em = cx.em
        terms = []
        for tensor, piece in self._pieces(node, ct, cx):
            if not is_data(tensor) and np.any(tensor.values):
                value = np.asarray(tensor.values, np.float32)[0]
                product = em.op("Mul", [piece(), em.const(value)], hint="concat_const")
                terms.append(em.sum_per_row(product, rank(node.outputs[0])))
        return em.add_all(terms)


@op_rule("Split")
class Split(Rule):
    def check(self, node):
        reason = needs_constants(node, [1], "Split sizes")
        return reason or axes_reason(node.attrs.get("axis", 0), rank(node.inputs[0]), "Split")

    def adjoint(self, node, ct, cx):
        # The transpose of a split places each piece's cotangent back at its offset.
        em = cx.em
        axis = _axis(node, rank(node.inputs[0]))
        total = sample_shape(node.inputs[0])[axis - 1]
        terms, start = [], 0
        for tensor, grad in zip(node.outputs, ct):
            size = sample_shape(tensor)[axis - 1]
            if grad is not None:
                pads = [0] * (2 * rank(node.inputs[0]))
                pads[axis], pads[rank(node.inputs[0]) + axis] = start, total - start - size
                terms.append(em.op("Pad", [grad, em.ints(pads)], hint="split_t"))
            start += size
        return [em.add_all(terms)] + [None] * (len(node.inputs) - 1)


def _slice_ranges(node) -> dict[int, tuple[int, int]]:
    """Per sliced axis: (start, length) after clamping, for unit steps."""
    shape = [None, *sample_shape(node.inputs[0])]
    starts, ends, axes = (const(node, i) for i in (1, 2, 3))
    steps = const(node, 4)
    ranges = {}
    for i, axis in enumerate(axes):
        axis = int(axis) % len(shape)
        step = 1 if steps is None else int(steps[i])
        begin, end, _ = slice(int(starts[i]), int(ends[i]), step).indices(shape[axis])
        ranges[axis] = (begin, max(end - begin, 0))
    return ranges


@op_rule("Slice")
class Slice(Rule):
    def check(self, node):
        reason = needs_constants(node, [1, 2, 3, 4], "Slice starts/ends/axes/steps")
        if reason:
            return reason
        steps = const(node, 4)
        if steps is not None and np.any(steps != 1):
            return "Slice with a step other than 1"
        axes = const(node, 3)
        if axes is None:  # default axes 0..len(starts)-1 include the batch axis
            return "Slice over the batch axis (give axes that skip axis 0)"
        return axes_reason(axes, rank(node.inputs[0]), "Slice")

    def adjoint(self, node, ct, cx):
        full_rank = rank(node.inputs[0])
        shape = sample_shape(node.inputs[0])
        pads = [0] * (2 * full_rank)
        for axis, (begin, length) in _slice_ranges(node).items():
            pads[axis], pads[full_rank + axis] = begin, shape[axis - 1] - begin - length
        back = cx.em.op("Pad", [ct[0], cx.em.ints(pads)], hint="slice_t")
        return [back] + [None] * (len(node.inputs) - 1)


def _pads(node) -> tuple[list[int], list[int]]:
    """(begin, end) pads of every axis, batch axis included."""
    full_rank = rank(node.inputs[0])
    pads = [int(p) for p in const(node, 1)]
    axes = const(node, 3)
    axes = list(range(full_rank)) if axes is None else [int(a) % full_rank for a in axes]
    begin, end = [0] * full_rank, [0] * full_rank
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[len(axes) + i]
    return begin, end


@op_rule("Pad")
class Pad(Rule):
    def check(self, node):
        mode = attr_str(node, "mode", "constant")
        if mode != "constant":
            return f"Pad mode {mode!r} (only constant padding is supported)"
        reason = needs_constants(node, [1, 2, 3], "Pad pads/value/axes")
        if reason:
            return reason
        begin, end = _pads(node)
        if begin[0] or end[0]:
            return "Pad on the batch axis"
        return None

    def adjoint(self, node, ct, cx):
        begin, _ = _pads(node)
        shape = list(sample_shape(node.inputs[0]))
        out_shape = list(sample_shape(node.outputs[0]))
        back = crop_or_pad(cx, ct[0], begin[1:], shape, out_shape, 1)
        return [back] + [None] * (len(node.inputs) - 1)

    def bias(self, node, ct, cx):
        value = const(node, 2)
        value = 0.0 if value is None else float(np.asarray(value).reshape(()))
        if value == 0.0 or not np.isfinite(value):
            # -inf pads precede max-pools, which never select them: their cotangent is 0.
            return None
        em = cx.em
        full_rank = rank(node.outputs[0])
        inner = self.adjoint(node, ct, cx)[0]
        everything = em.sum_per_row(ct[0], full_rank)
        kept = em.sum_per_row(inner, full_rank)
        difference = em.op("Sub", [everything, kept], hint="pad_region")
        return em.op("Mul", [difference, em.const(np.float32(value))], hint="pad_bias")


def _nearest_index_maps(node) -> list[np.ndarray]:
    """For each spatial axis, the input index every output index copies (nearest Resize is
    separable), read off onnxruntime running the node itself on index-valued inputs."""
    x_shape = [1, *sample_shape(node.inputs[0])]
    y_shape = [1, *sample_shape(node.outputs[0])]
    coords = []
    for axis in range(2, len(x_shape)):
        shape = [1] * len(x_shape)
        shape[axis] = x_shape[axis]
        values = np.arange(x_shape[axis], dtype=np.float32).reshape(shape)
        coords.append(np.broadcast_to(values, x_shape))
    maps = []
    for axis, y in zip(range(2, len(x_shape)), run_alone(node, coords)):
        index = np.moveaxis(y, axis, -1).reshape(-1, y_shape[axis])
        if not np.all(index == index[:1]):
            raise ValueError(f"Resize {node.name!r} is not separable")
        maps.append(index[0].astype(np.int64))
    return maps


@op_rule("Resize")
class Resize(Rule):
    def check(self, node):
        if attr_str(node, "mode", "nearest") != "nearest":
            return f"Resize mode {attr_str(node, 'mode', '')!r} (only nearest is supported)"
        reason = needs_constants(node, range(1, len(node.inputs)), "Resize roi/scales/sizes")
        if reason:
            return reason
        x, y = node.inputs[0], node.outputs[0]
        if x.shape is not None and y.shape is not None and x.shape[1] != y.shape[1]:
            return "Resize that changes the channel axis"
        return None

    def adjoint(self, node, ct, cx):
        # Nearest resizing copies input[i(o)] to output[o], axis by axis; its transpose sums the
        # copies back: one 0/1 matrix product per spatial axis, last axis first.
        em = cx.em
        grad = ct[0]
        maps = _nearest_index_maps(node)
        in_sp = sample_shape(node.inputs[0])[1:]
        nd = len(maps)
        for axis in reversed(range(nd)):
            matrix = np.zeros((len(maps[axis]), in_sp[axis]), np.float32)
            matrix[np.arange(len(maps[axis])), maps[axis]] = 1.0
            if axis == nd - 1:
                grad = em.op("MatMul", [grad, em.const(matrix)], hint="resize_t")
            else:
                perm = list(range(nd + 2))
                perm[axis + 2], perm[-1] = perm[-1], perm[axis + 2]
                moved = em.op("Transpose", [grad], {"perm": perm}, hint="resize_t")
                moved = em.op("MatMul", [moved, em.const(matrix)], hint="resize_t")
                grad = em.op("Transpose", [moved], {"perm": perm}, hint="resize_t")
        return [grad] + [None] * (len(node.inputs) - 1)


#: Why a Gather whose indices come from data is refused (before folding and after).
DATA_INDICES = "Gather at indices computed from data (data-dependent indexing) is not supported"
EMBEDDING = (
    "Gather from a constant table at indices computed from data (an embedding lookup) is not "
    "supported: pathonnx explains float inputs"
)


@op_rule("Gather")
class Gather(Rule):
    """A selection at constant indices along one axis, linear in the data: output entry
    ``(p, j, q)`` copies input entry ``(p, indices[j], q)``. Its transpose sends every output
    cotangent back to the entry it came from, and adds where an index repeats."""

    def check(self, node):
        data, indices = (is_data(t) for t in node.inputs[:2])
        if indices:
            return DATA_INDICES if data else EMBEDDING
        if not data:
            return "Gather of constants only (should have been folded)"
        return axes_reason(node.attrs.get("axis", 0), rank(node.inputs[0]), "Gather")

    def data_reason(self, node, data):
        if len(data) > 1 and data[1]:
            return DATA_INDICES if data[0] else EMBEDDING
        return None

    def _layout(self, node):
        """(indices flattened and made non-negative, size before the axis, size of the axis,
        size after it), all per sample."""
        shape = sample_shape(node.inputs[0])
        k = int(node.attrs.get("axis", 0)) % (len(shape) + 1) - 1  # the axis within a sample
        indices = np.asarray(node.inputs[1].values, np.int64).reshape(-1) % shape[k]
        before, after = int(np.prod(shape[:k])), int(np.prod(shape[k + 1 :]))
        return indices, before, shape[k], after

    def adjoint(self, node, ct, cx):
        em = cx.em
        indices, before, size, after = self._layout(node)
        count = len(indices)
        grouped = em.reshape(ct[0], [-1, before, count, after], "gather_ct")
        if len(np.unique(indices)) == count:
            # Each input entry is read at most once: gather the cotangents back, and a zero
            # slice (at position ``count``) for the entries that no output reads.
            source = np.full(size, count, np.int64)
            source[indices] = np.arange(count)
            if count < size:
                zero = em.ints([0, 0, 0, 0, 0, 0, 1, 0])
                grouped = em.op("Pad", [grouped, zero], hint="gather_zero")
            back = em.op("Gather", [grouped, em.const(source, "source", np.int64)], {"axis": 2},
                         hint="gather_t")  # fmt: skip
        else:
            rows = em.leading(ct[0], "rows")
            spread = em.op("Concat", [rows, em.ints([before, count, after])], {"axis": 0},
                           hint="spread_shape", dtype=np.int64)  # fmt: skip
            where = em.const(indices.reshape(1, 1, count, 1), "indices", np.int64)
            where = em.op("Expand", [where, spread], hint="indices", dtype=np.int64)
            size_of = em.op("Concat", [rows, em.ints([before, size, after])], {"axis": 0},
                            hint="zeros_shape", dtype=np.int64)  # fmt: skip
            zeros = em.op("ConstantOfShape", [size_of], hint="zeros")
            back = em.op("ScatterElements", [zeros, where, grouped],
                         {"axis": 2, "reduction": "add"}, hint="gather_t")  # fmt: skip
        return [em.reshape(back, [-1, *sample_shape(node.inputs[0])], "gather_t"), None]
