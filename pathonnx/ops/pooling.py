"""Pooling and reductions: max-pools (frozen selections) and averages (linear)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import (
    Rule,
    axes_of,
    axes_reason,
    constant_axes,
    crop_or_pad,
    merge_positions,
    op_rule,
    rank,
    run_alone,
    sample_shape,
    spatial_pads,
)


@op_rule("MaxPool")
class MaxPool(Rule):
    """Frozen at x: each output copies the input element at its argmax (onnxruntime's Indices
    output, exposed by the rewrite). The transpose scatters cotangents back to those elements."""

    role = "selection"

    def check(self, node):
        if node.attrs.get("storage_order", 0):
            return "MaxPool with column-major storage_order"
        return None

    def _flat(self, node):
        x, y = node.inputs[0], node.outputs[0]
        (channels, *in_sp), out_sp = sample_shape(x), sample_shape(y)[1:]
        return channels, int(np.prod(in_sp)), int(np.prod(out_sp))

    def spatial_argmax(self, node, cx):
        """Per sample (N, C, out positions): the argmax as an index into the input's positions."""
        channels, in_flat, out_flat = self._flat(node)

        def make():
            em = cx.em
            flat = em.reshape(cx.argmax(node), [0, channels, out_flat], "argmax_flat", np.int64)
            return em.op("Mod", [flat, em.const(np.int64(in_flat))], hint="argmax", dtype=np.int64)

        return cx.em.cached(("argmax", node.outputs[0].name), make)

    def unpool_pads(self, node) -> list[int] | None:
        """MaxUnpool's pads when it can transpose this pool, else None (then ScatterElements).

        It can when windows never share an element (kernel ≤ stride, no dilation): every input
        element is the argmax of at most one output, so the transpose places values instead of
        adding them, and onnxruntime's MaxUnpool is far faster than its ScatterElements. The
        indices address the input exactly; the pads only have to keep onnxruntime's inferred
        size, (out − 1)·stride + kernel − pads, within the input, each pad below the kernel.
        """
        kernel = list(node.attrs["kernel_shape"])
        nd = len(kernel)
        strides = list(node.attrs.get("strides", [1] * nd))
        dilations = list(node.attrs.get("dilations", [1] * nd))
        if any(d != 1 for d in dilations) or any(k > s for k, s in zip(kernel, strides)):
            return None
        in_sp, out_sp = sample_shape(node.inputs[0])[1:], sample_shape(node.outputs[0])[1:]
        excess = [max(0, (o - 1) * s + k - i) for o, s, k, i in zip(out_sp, strides, kernel, in_sp)]
        begin = [e // 2 for e in excess]
        end = [e - b for e, b in zip(excess, begin)]
        if any(p >= k for p, k in zip(begin + end, kernel + kernel)):
            return None
        return begin + end

    def _unpool(self, node, ct, cx):
        em = cx.em
        channels, in_flat, _ = self._flat(node)
        index = cx.argmax(node)
        rows = em.leading(ct[0], "rows")
        if not cx.single_row:
            # Row j = n·R + r addresses its own slice of the (N·R, C, ...) output: the index
            # within sample n (onnxruntime's indices count the samples before it) plus j·C·HW.
            size = channels * in_flat
            out_shape = sample_shape(node.outputs[0])

            def make():
                within = em.op("Mod", [index, em.const(np.int64(size))], hint="argmax_sample",
                               dtype=np.int64)  # fmt: skip
                return em.op("Unsqueeze", [within, em.ints([1])], hint="argmax_rows",
                             dtype=np.int64)  # fmt: skip

            within = em.cached(("argmax_sample", node.outputs[0].name), make)
            count = em.op("Squeeze", [rows], hint="rows_count", dtype=np.int64)
            offsets = em.op("Range", [em.const(np.int64(0)), count, em.const(np.int64(1))],
                            hint="row_offsets", dtype=np.int64)  # fmt: skip
            offsets = em.op("Mul", [offsets, em.const(np.int64(size))], hint="row_offsets",
                            dtype=np.int64)  # fmt: skip
            view = em.op("Concat", [em.leading(index, "samples"), em.ints([-1] + [1] * len(
                out_shape))], {"axis": 0}, hint="offsets_view", dtype=np.int64)  # fmt: skip
            offsets = em.op("Reshape", [offsets, view], hint="row_offsets", dtype=np.int64)
            index = em.op("Add", [within, offsets], hint="argmax_rows", dtype=np.int64)
            index = em.reshape(index, [-1, *out_shape], "argmax_rows", np.int64)
        shape = em.op("Concat", [rows, em.ints(sample_shape(node.inputs[0]))], {"axis": 0},
                      hint="unpool_shape", dtype=np.int64)  # fmt: skip
        nd = len(node.attrs["kernel_shape"])
        attrs = {
            "kernel_shape": list(node.attrs["kernel_shape"]),
            "strides": list(node.attrs.get("strides", [1] * nd)),
            "pads": self.unpool_pads(node),
        }
        return [em.op("MaxUnpool", [ct[0], index, shape], attrs, hint="unpool")]

    def adjoint(self, node, ct, cx):
        em = cx.em
        if cx.maxunpool and self.unpool_pads(node) is not None:
            return self._unpool(node, ct, cx)
        if cx.single_row:
            # One row per sample: onnxruntime's indices already address the flat input tensor.
            index = em.reshape(cx.argmax(node), [-1], "argmax_flat", np.int64)
            size = em.op("Mul", [em.leading(ct[0], "rows"), em.ints([int(np.prod(
                sample_shape(node.inputs[0])))])], hint="size", dtype=np.int64)  # fmt: skip
            zeros = em.op("ConstantOfShape", [size], hint="zeros")
            updates = em.reshape(ct[0], [-1], "ct_flat")
            spread = em.op("ScatterElements", [zeros, index, updates],
                           {"axis": 0, "reduction": "add"}, hint="unpool")  # fmt: skip
            return [em.reshape(spread, [-1, *sample_shape(node.inputs[0])], "unpooled")]
        channels, in_flat, out_flat = self._flat(node)
        index = self.spatial_argmax(node, cx)
        rows, samples = em.leading(ct[0], "rows"), em.leading(index, "samples")
        per_sample = em.op("Div", [rows, samples], hint="per_sample", dtype=np.int64)
        shape = em.op("Concat", [samples, per_sample, em.ints([channels, out_flat])], {"axis": 0},
                      hint="expand_shape", dtype=np.int64)  # fmt: skip
        index = em.op("Unsqueeze", [index, em.ints([1])], hint="argmax_rows", dtype=np.int64)
        index = em.op("Expand", [index, shape], hint="argmax_rows", dtype=np.int64)
        index = em.reshape(index, [-1, channels, out_flat], "argmax_rows", np.int64)
        zeros_shape = em.op("Concat", [rows, em.ints([channels, in_flat])], {"axis": 0},
                            hint="zeros_shape", dtype=np.int64)  # fmt: skip
        zeros = em.op("ConstantOfShape", [zeros_shape], hint="zeros")
        updates = em.reshape(ct[0], [-1, channels, out_flat], "ct_flat")
        spread = em.op(
            "ScatterElements", [zeros, index, updates], {"axis": 2, "reduction": "add"},
            hint="unpool",
        )  # fmt: skip
        return [em.reshape(spread, [-1, *sample_shape(node.inputs[0])], "unpooled")]

    def walks_sparse(self, node):
        return True

    def sparse(self, node, idx, vals, sx):
        size = int(np.prod(sample_shape(node.inputs[0])))
        source = sx.argmax(node)[idx] - sx.sample * size  # onnxruntime counts N·C·H·W
        return (*merge_positions(source, vals, size), None)

    def frozen(self, node, x, cx):
        em = cx.em
        channels, in_flat, out_flat = self._flat(node)
        flat = em.reshape(x, [-1, channels, in_flat], "pool_in")
        picked = em.op("GatherElements", [flat, self.spatial_argmax(node, cx)], {"axis": 2},
                       hint="frozen_pool")  # fmt: skip
        return em.reshape(picked, [-1, *sample_shape(node.outputs[0])], "frozen_pool")


@op_rule("GlobalMaxPool")
class GlobalMaxPool(Rule):
    """Rewritten to a MaxPool over the whole map (which has an argmax output) before the engine."""

    role = "selection"


def _average_weights(node: gs.Node, in_sp, out_sp) -> np.ndarray:
    """Weight 1/divisor of every output position, as onnxruntime computes AveragePool.

    An input of ones gives valid/divisor at each output, where ``valid`` (the window's elements
    inside the input) follows from the geometry; so 1/divisor = output / valid.
    """
    (ones,) = run_alone(node, [np.ones((1, 1, *in_sp), np.float32)])
    ones = ones[0, 0]
    valid = np.ones(out_sp)
    nd = len(in_sp)
    kernel = list(node.attrs["kernel_shape"])
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    begin = spatial_pads(node, in_sp, out_sp, kernel, strides, dilations)
    for axis in range(nd):
        o = np.arange(out_sp[axis])[:, None] * strides[axis] - begin[axis]
        positions = o + np.arange(kernel[axis])[None, :] * dilations[axis]
        count = ((positions >= 0) & (positions < in_sp[axis])).sum(axis=1)
        shape = [1] * nd
        shape[axis] = -1
        valid = valid * count.reshape(shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid > 0, ones / np.maximum(valid, 1), 0.0)


@op_rule("AveragePool")
class AveragePool(Rule):
    def adjoint(self, node, ct, cx):
        # Scale each output by 1/divisor, spread it over its window (a depthwise transposed
        # convolution with a kernel of ones), and crop the pads.
        em = cx.em
        x, y = node.inputs[0], node.outputs[0]
        (channels, *in_sp), out_sp = sample_shape(x), list(sample_shape(y)[1:])
        nd = len(in_sp)
        kernel = list(node.attrs["kernel_shape"])
        strides = list(node.attrs.get("strides", [1] * nd))
        dilations = list(node.attrs.get("dilations", [1] * nd))
        begin = spatial_pads(node, in_sp, out_sp, kernel, strides, dilations)
        weights = _average_weights(node, in_sp, out_sp).astype(np.float32)
        scaled = em.op("Mul", [ct[0], em.const(weights[None])], hint="avg_scale")
        ones = em.const(np.ones((channels, 1, *kernel), np.float32), "avg_kernel")
        attrs = {"strides": strides, "dilations": dilations, "group": channels}
        spread = em.op("ConvTranspose", [scaled, ones], attrs, hint="avg_t")
        full = [
            (o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_sp, strides, kernel, dilations)
        ]
        return [crop_or_pad(cx, spread, begin, list(in_sp), full, 2)]


@op_rule("GlobalAveragePool")
class GlobalAveragePool(Rule):
    def adjoint(self, node, ct, cx):
        em = cx.em
        _, *in_sp = sample_shape(node.inputs[0])
        scaled = em.op("Mul", [ct[0], em.const(np.float32(1.0 / np.prod(in_sp)))], hint="gap_t")
        return [em.op("Expand", [scaled, em.ints([1, 1, *in_sp])], hint="gap_t")]


def _reduce_axes(node: gs.Node) -> list[int] | None:
    axes = axes_of(node)
    if axes is None or np.size(axes) == 0:
        return None
    full = rank(node.inputs[0])
    return sorted(int(a) % full for a in np.atleast_1d(axes))


@op_rule("ReduceMean", "ReduceSum")
class Reduce(Rule):
    def check(self, node):
        reason, axes = constant_axes(node)
        if reason:
            return reason
        if axes is None or np.size(axes) == 0:
            if node.attrs.get("noop_with_empty_axes", 0):
                return None
            return f"{node.op} over all axes includes the batch axis"
        return axes_reason(axes, rank(node.inputs[0]), node.op)

    def adjoint(self, node, ct, cx):
        em = cx.em
        axes = _reduce_axes(node)
        if axes is None:  # noop_with_empty_axes: identity
            return [ct[0]] + [None] * (len(node.inputs) - 1)
        shape = sample_shape(node.inputs[0])
        grad = ct[0]
        if not node.attrs.get("keepdims", 1):
            grad = em.op("Unsqueeze", [grad, em.ints(axes)], hint="reduce_t")
        if node.op == "ReduceMean":
            count = np.prod([shape[a - 1] for a in axes])
            grad = em.op("Mul", [grad, em.const(np.float32(1.0 / count))], hint="reduce_t")
        grad = em.op("Expand", [grad, em.ints([1, *shape])], hint="reduce_t")
        return [grad] + [None] * (len(node.inputs) - 1)
