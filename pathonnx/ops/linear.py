"""Linear and affine ops with constant weights: convolutions, products, sums, scalings."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .base import (
    Rule,
    TooDense,
    attr_str,
    crop_or_pad,
    data_inputs,
    is_data,
    merge_positions,
    needs_constants,
    op_rule,
    rank,
    sample_shape,
    spatial_pads,
)


def _conv_geometry(node: gs.Node, x: gs.Tensor, y: gs.Tensor, weight: np.ndarray):
    in_sp, out_sp = sample_shape(x)[1:], sample_shape(y)[1:]
    nd = len(in_sp)
    kernel = list(weight.shape[2:])
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    return in_sp, out_sp, kernel, strides, dilations


def _channel_bias(cx, ct, bias: np.ndarray | None, shape: tuple[int, ...]):
    """Σ over channels and positions of ct[c, ...] · bias[c], per row."""
    if bias is None or not np.any(bias):
        return None
    em = cx.em
    per_channel = ct
    if len(shape) > 1:
        axes = em.ints(range(2, len(shape) + 1))
        per_channel = em.op("ReduceSum", [ct, axes], {"keepdims": 0}, hint="per_channel")
    vector = em.const(np.asarray(bias, np.float32).reshape(-1))
    return em.op("MatMul", [per_channel, vector], hint="bias")


def _conv_bias(rule: Rule, node: gs.Node, ct: list, cx):
    """Conv and ConvTranspose add bias[c] to every position of output channel c."""
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return None
    return _channel_bias(cx, ct[0], node.inputs[2].values, sample_shape(node.outputs[0]))


@op_rule("Conv")
class Conv(Rule):
    def check(self, node):
        return needs_constants(node, [1, 2], "Conv weight or bias")

    def adjoint(self, node, ct, cx):
        x, w = node.inputs[0], np.asarray(node.inputs[1].values)
        in_sp, out_sp, kernel, strides, dilations = _conv_geometry(node, x, node.outputs[0], w)
        begin = spatial_pads(node, in_sp, out_sp, kernel, strides, dilations)
        group = int(node.attrs.get("group", 1))
        em = cx.em
        if all(s == 1 for s in strides):
            # A stride-1 convolution's transpose is itself a convolution, with the kernel
            # flipped and its channel axes swapped per group, padded by d·(k−1) − pad. Runtimes
            # optimize Conv far more than ConvTranspose, so prefer it.
            reach = [(k - 1) * d for k, d in zip(kernel, dilations)]
            before = [r - b for r, b in zip(reach, begin)]
            after = [i - o - b + r for i, o, b, r in zip(in_sp, out_sp, before, reach)]
            if min(before + after) >= 0:
                m, cg = w.shape[:2]
                flipped = w.reshape(group, m // group, cg, *kernel).swapaxes(1, 2)
                flipped = flipped.reshape(group * cg, m // group, *kernel)
                flipped = np.ascontiguousarray(np.flip(flipped, axis=tuple(range(2, w.ndim))))
                attrs = {"pads": before + after, "dilations": dilations, "group": group}
                back = em.op("Conv", [ct[0], em.const(flipped, "w_flip")], attrs, hint="conv_t")
                return [back, None, None][: len(node.inputs)]
        # In general: ConvTranspose with the same weight (layout (M, C/g, k...) is what
        # ConvTranspose reads as (C_in, C_out/g, k...)), run unpadded, then crop the pads.
        full = [
            (o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_sp, strides, kernel, dilations)
        ]
        attrs = {"strides": strides, "dilations": dilations, "group": group}
        spread = em.op("ConvTranspose", [ct[0], node.inputs[1]], attrs, hint="conv_t")
        return [crop_or_pad(cx, spread, begin, list(in_sp), full, 2), None, None][
            : len(node.inputs)
        ]

    bias = _conv_bias

    def walks_sparse(self, node):
        return len(node.inputs[1].shape) == 4  # 2-D convolutions

    def sparse(self, node, idx, vals, sx):
        # Each output entry spreads over its window of the input, weighted by the kernel.
        w = sx.const(node.inputs[1])
        m, cg, kh, kw = w.shape
        x, y = node.inputs[0], node.outputs[0]
        in_sp, out_sp, kernel, strides, dilations = _conv_geometry(node, x, y, w)
        (sh, sw), (dh, dw) = strides, dilations
        top, left = spatial_pads(node, in_sp, out_sp, kernel, strides, dilations)
        group = int(node.attrs.get("group", 1))
        c, h, wd = sample_shape(x)
        _, ho, wo = sample_shape(y)
        if len(vals) * len(idx) * cg * kh * kw > sx.limit:
            raise TooDense(node.name)
        co, yo, xo = np.unravel_index(idx, (m, ho, wo))
        ci = (co // (m // group))[:, None] * cg + np.arange(cg)[None]  # (P, cg)
        yi = yo[:, None] * sh - top + np.arange(kh)[None] * dh  # (P, kh)
        xi = xo[:, None] * sw - left + np.arange(kw)[None] * dw  # (P, kw)
        inside = ((yi >= 0) & (yi < h))[:, None, :, None] & ((xi >= 0) & (xi < wd))[:, None, None]
        target = (ci[:, :, None, None] * h + yi[:, None, :, None]) * wd + xi[:, None, None, :]
        weights = w[co]  # (P, cg, kh, kw)
        keep = np.broadcast_to(inside, weights.shape).reshape(-1)
        spread = (vals[:, :, None] * weights.reshape(len(idx), -1)[None]).reshape(len(vals), -1)
        part = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            part = vals.astype(np.float64) @ sx.const(node.inputs[2])[co].astype(np.float64)
        return (*merge_positions(target.reshape(-1)[keep], spread[:, keep], c * h * wd), part)


@op_rule("ConvTranspose")
class ConvTranspose(Rule):
    def check(self, node):
        if attr_str(node, "auto_pad", "NOTSET") != "NOTSET" or "output_shape" in node.attrs:
            return "ConvTranspose with auto_pad or output_shape (give explicit pads)"
        return needs_constants(node, [1, 2], "ConvTranspose weight or bias")

    def adjoint(self, node, ct, cx):
        # y = crop_pads(extend(convT_full(x), output_padding)); its transpose zero-fills the
        # cropped pads, then convolves with the same weight (read as (M, C/g, k...)).
        x, y, w = node.inputs[0], node.outputs[0], np.asarray(node.inputs[1].values)
        in_sp, out_sp, kernel, strides, dilations = _conv_geometry(node, x, y, w)
        nd = len(in_sp)
        pads = list(node.attrs.get("pads", [0] * 2 * nd))[:nd]
        full = [
            (i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(in_sp, strides, kernel, dilations)
        ]
        em = cx.em
        grown = crop_or_pad(cx, ct[0], [-p for p in pads], full, list(out_sp), 2)
        attrs = {"strides": strides, "dilations": dilations, "group": node.attrs.get("group", 1)}
        back = em.op("Conv", [grown, node.inputs[1]], attrs, hint="conv")
        return [back, None, None][: len(node.inputs)]

    bias = _conv_bias


@op_rule("Gemm")
class Gemm(Rule):
    def check(self, node):
        if not is_data(node.inputs[0]) or node.attrs.get("transA", 0):
            return "Gemm whose data operand is not A (untransposed); only x·W + c is linear"
        return needs_constants(node, [1, 2], "Gemm B or C")

    def adjoint(self, node, ct, cx):
        # Y = alpha·A·B' + beta·C  =>  dA = alpha·dY·B'ᵀ
        attrs = {
            "alpha": float(node.attrs.get("alpha", 1.0)),
            "transB": 0 if node.attrs.get("transB", 0) else 1,
        }
        back = cx.em.op("Gemm", [ct[0], node.inputs[1]], attrs, hint="gemm_t")
        return [back] + [None] * (len(node.inputs) - 1)

    def walks_sparse(self, node):
        return True

    def sparse(self, node, idx, vals, sx):
        # The same transpose on the entries: dA = alpha·dY·B'ᵀ, dense below.
        b = sx.const(node.inputs[1])
        b = b.T if node.attrs.get("transB", 0) else b  # (in, out)
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        grad = (alpha * vals.astype(np.float64)) @ b[:, idx].T.astype(np.float64)
        part = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            c = np.broadcast_to(sx.const(node.inputs[2]), (b.shape[1],))
            part = vals.astype(np.float64) @ (beta * c[idx].astype(np.float64))
        return np.arange(b.shape[0]), grad.astype(np.float32), part

    def bias(self, node, ct, cx):
        if len(node.inputs) < 3 or not node.inputs[2].name:
            return None
        k = sample_shape(node.outputs[0])[0]
        c = np.broadcast_to(np.asarray(node.inputs[2].values, np.float64), (1, k))[0]
        c = c * float(node.attrs.get("beta", 1.0))
        return _channel_bias(cx, ct[0], c, (k,))


#: Why a product of two data tensors is refused (before folding and after).
TWO_DATA = "{op} of two data tensors (not linear)"
DATA_DIVISOR = "Div by a data tensor (not linear); only division by a constant is"


@op_rule("MatMul")
class MatMul(Rule):
    data_positions = None
    most_data = 1

    def check(self, node):
        data = [i for i, t in enumerate(node.inputs) if is_data(t)]
        if len(data) != 1:
            return TWO_DATA.format(op="MatMul")
        other = node.inputs[1 - data[0]]
        if rank(other) != 2:
            return "MatMul with a constant operand of rank other than 2"
        if data[0] == 1 and (rank(node.inputs[1]) or 0) < 3:
            return "MatMul W·x with a rank-2 data operand mixes the batch axis"
        return None

    def data_reason(self, node, data):
        return TWO_DATA.format(op=node.op) if sum(data) > 1 else None

    def adjoint(self, node, ct, cx):
        em = cx.em
        a, b = node.inputs
        if is_data(a):  # Y = A·B  =>  dA = dY·Bᵀ
            bt = em.const(np.asarray(b.values).T, "w_t")
            return [em.op("MatMul", [ct[0], bt], hint="matmul_t"), None]
        at = em.const(np.asarray(a.values).T, "w_t")  # Y = A·B  =>  dB = Aᵀ·dY
        return [None, em.op("MatMul", [at, ct[0]], hint="matmul_t")]


def unbroadcast(cx, ct, tensor: gs.Tensor, out: gs.Tensor):
    """Sum ``ct`` (rows, *out shape) over the axes where ``tensor`` was broadcast."""
    shape, out_shape = sample_shape(tensor), sample_shape(out)
    if shape == out_shape:
        return ct
    if len(shape) != len(out_shape):
        raise ValueError(f"{tensor.name!r}: data broadcast across the batch axis")
    axes = [i + 1 for i, (a, b) in enumerate(zip(shape, out_shape)) if a == 1 and b != 1]
    return cx.em.op("ReduceSum", [ct, cx.em.ints(axes)], {"keepdims": 1}, hint="unbroadcast")


def _constant_term(cx, node, ct, value: np.ndarray, sign: float):
    """Σ ct · value (value broadcast to the output), per row."""
    if not np.any(value):
        return None
    em = cx.em
    shape = sample_shape(node.outputs[0])
    value = np.asarray(value, np.float32)
    if value.ndim == len(shape) + 1:  # written with a leading batch axis of size 1
        value = value[0]
    product = em.op("Mul", [ct, em.const(sign * value)], hint="const_term")
    return em.sum_per_row(product, len(shape) + 1)


@op_rule("Add", "Sub", "Sum")
class AddSub(Rule):
    data_positions = None

    def check(self, node):
        if not data_inputs(node):
            return f"{node.op} of constants only (should have been folded)"
        return None

    def _signs(self, node):
        return [1.0, -1.0] if node.op == "Sub" else [1.0] * len(node.inputs)

    def adjoint(self, node, ct, cx):
        out = []
        for tensor, sign in zip(node.inputs, self._signs(node)):
            if not is_data(tensor):
                out.append(None)
                continue
            grad = unbroadcast(cx, ct[0], tensor, node.outputs[0])
            out.append(grad if sign > 0 else cx.em.op("Neg", [grad], hint="neg"))
        return out

    def bias(self, node, ct, cx):
        terms = [
            _constant_term(cx, node, ct[0], np.asarray(t.values), sign)
            for t, sign in zip(node.inputs, self._signs(node))
            if isinstance(t, gs.Constant)
        ]
        return cx.em.add_all(terms)


@op_rule("Mul")
class Mul(Rule):
    data_positions = None
    most_data = 1

    def check(self, node):
        if len(data_inputs(node)) != 1:
            return TWO_DATA.format(op="Mul")
        return None

    def data_reason(self, node, data):
        return TWO_DATA.format(op=node.op) if sum(data) > 1 else None

    def adjoint(self, node, ct, cx):
        out = []
        for i, tensor in enumerate(node.inputs):
            if is_data(tensor):
                scale = node.inputs[1 - i]
                grad = cx.em.op("Mul", [ct[0], scale], hint="scale_t")
                out.append(unbroadcast(cx, grad, tensor, node.outputs[0]))
            else:
                out.append(None)
        return out


@op_rule("Div")
class Div(Rule):
    def check(self, node):
        if not is_data(node.inputs[0]) or is_data(node.inputs[1]):
            return DATA_DIVISOR
        return None

    def data_reason(self, node, data):
        return DATA_DIVISOR if len(data) > 1 and data[1] else None

    def adjoint(self, node, ct, cx):
        grad = cx.em.op("Div", [ct[0], node.inputs[1]], hint="div_t")
        return [unbroadcast(cx, grad, node.inputs[0], node.outputs[0]), None]


@op_rule("BatchNormalization")
class BatchNormalization(Rule):
    """Only reaches the engine if a rewrite left it; the canonical form turns it into Mul+Add."""

    def check(self, node):
        if len([t for t in node.outputs if t.name]) > 1:
            return "BatchNormalization in training mode (running statistics outputs)"
        return needs_constants(node, [1, 2, 3, 4], "BatchNormalization parameter")

    def _affine(self, node):
        scale, bias, mean, var = (np.asarray(t.values, np.float64) for t in node.inputs[1:5])
        s = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
        return s, bias - mean * s

    def adjoint(self, node, ct, cx):
        s, _ = self._affine(node)
        shape = sample_shape(node.outputs[0])
        scale = cx.em.const(s.reshape(-1, *[1] * (len(shape) - 1)).astype(np.float32))
        return [cx.em.op("Mul", [ct[0], scale], hint="bn_t")] + [None] * 4

    def bias(self, node, ct, cx):
        _, t = self._affine(node)
        return _channel_bias(cx, ct[0], t, sample_shape(node.outputs[0]))
