"""An independent oracle in torch (float64): gradients through kept units, and the frozen map.

Written from the semantics in docs/ARCHITECTURE.md, not from pathonnx's engine: torch autograd
gives W; tensor hooks that zero the gradient of removed units give W^p; forward hooks that
replace every gate by its frozen slope and offset (and every max-pool by a gather at its frozen
argmax) give the frozen, masked map, whose value at 0 is b^p. Gates are matched to pathonnx's
by execution order.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
import torch.nn.functional as F
import zoo
from onnx import helper, numpy_helper
from torch import nn

INF = float("inf")
GATES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.Hardsigmoid, zoo.ClampReLU6,
    zoo.MinMaxReLU6,
)  # fmt: skip


def _bounds(module: nn.Module) -> tuple[float, float]:
    if isinstance(module, nn.ReLU):
        return 0.0, INF
    if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        return float(module.min_val), float(module.max_val)
    return 0.0, 6.0  # the zoo's hand-written ReLU6 forms


def _slope_offset(module: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    zero = torch.zeros_like(z)
    if isinstance(module, nn.LeakyReLU):
        return torch.where(z > 0, 1.0, module.negative_slope).to(z), zero
    if isinstance(module, nn.PReLU):
        a = module.weight.detach().to(z)
        a = a.view(1, -1, *[1] * (z.dim() - 2)) if a.numel() > 1 else a
        return torch.where(z > 0, torch.ones_like(z), a.expand_as(z)), zero
    if isinstance(module, nn.Hardsigmoid):  # relu6(z + 3) / 6: slope 1/6 on (-3, 3)
        inside = ((z > -3) & (z < 3)).to(z)
        return inside / 6, 0.5 * inside + (z >= 3).to(z)
    lo, hi = _bounds(module)
    slope = ((z > lo) & (z < hi)).to(z)
    offset = zero.clone()
    if np.isfinite(lo):
        offset = offset + lo * (z <= lo).to(z)
    if np.isfinite(hi):
        offset = offset + hi * (z >= hi).to(z)
    return slope, offset


class TorchOracle:
    """Wraps a zoo module in float64; gates are its activation modules in call order."""

    def __init__(self, module: nn.Module):
        self.module = copy.deepcopy(module).double().eval()
        for sub in self.module.modules():
            if hasattr(sub, "inplace"):
                sub.inplace = False  # hooks must see pre-activations
            for p in sub.parameters(recurse=False):
                p.requires_grad_(False)

    def _hook_all(self, gate_hook, pool_hook=None):
        handles = []
        for sub in self.module.modules():
            if isinstance(sub, GATES):
                handles.append(sub.register_forward_hook(gate_hook))
            elif pool_hook is not None and isinstance(sub, nn.MaxPool2d):
                handles.append(sub.register_forward_hook(pool_hook))
        return handles

    def gradient(self, x: np.ndarray, target, masks: list | None = None) -> np.ndarray:
        """d logit[target] / dx through the kept units: masks[i] multiplies gate i's gradient."""
        calls = []

        def gate_hook(module, inputs, output):
            index = len(calls)
            calls.append(module)
            if masks is not None and masks[index] is not None:
                mask = torch.as_tensor(masks[index], dtype=output.dtype)
                output.register_hook(lambda g: g * mask)

        handles = self._hook_all(gate_hook)
        try:
            xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            out = self.module(xt)
            picked = out[torch.arange(len(x)), torch.as_tensor(target)].sum()
            (grad,) = torch.autograd.grad(picked, xt)
        finally:
            for h in handles:
                h.remove()
        self.gate_calls = len(calls)
        return grad.numpy()

    def logits(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.tensor(x, dtype=torch.float64)).numpy()

    def frozen(self, x: np.ndarray, at: np.ndarray, masks: list | None = None) -> np.ndarray:
        """Logits at ``at`` of the map frozen at x's pattern, removed units passing nothing."""
        patterns, pools = [], []

        def record_gate(module, inputs, output):
            patterns.append(_slope_offset(module, inputs[0]))

        def record_pool(module, inputs, output):
            _, index = F.max_pool2d(
                inputs[0], module.kernel_size, module.stride, module.padding, module.dilation,
                module.ceil_mode, return_indices=True,
            )  # fmt: skip
            pools.append(index)

        handles = self._hook_all(record_gate, record_pool)
        with torch.no_grad():
            self.module(torch.tensor(x, dtype=torch.float64))
        for h in handles:
            h.remove()
        counters = {"gate": 0, "pool": 0}

        def frozen_gate(module, inputs, output):
            i = counters["gate"]
            counters["gate"] += 1
            slope, offset = patterns[i]
            out = inputs[0] * slope + offset
            if masks is not None and masks[i] is not None:
                out = out * torch.as_tensor(masks[i], dtype=out.dtype)
            return out

        def frozen_pool(module, inputs, output):
            index = pools[counters["pool"]]
            counters["pool"] += 1
            flat = inputs[0].flatten(2).gather(2, index.flatten(2))
            return flat.view_as(index)

        handles = self._hook_all(frozen_gate, frozen_pool)
        try:
            with torch.no_grad():
                return self.module(torch.tensor(at, dtype=torch.float64)).numpy()
        finally:
            for h in handles:
                h.remove()


class OnnxNet(nn.Module):
    """A float64 torch re-implementation of a small ONNX graph, written from the ONNX operator
    specifications and not from pathonnx's rewrite: Transpose, Conv, PRelu, Relu, MaxPool
    (``auto_pad`` SAME_UPPER/VALID or pads, padding with -inf), Flatten, MatMul and Add with
    constants. It computes the tensor ``output`` (for a Softmax output: the Softmax's input,
    the logits pathonnx explains), flattened per sample to (N, K) in C order, then, when
    ``readout`` (K, R) is given, ``logits @ readout`` (N, R): a position's channels or a
    region's sums. Gates are ``nn.PReLU``/``nn.ReLU`` and pools ``nn.MaxPool2d`` modules, so
    :class:`TorchOracle` and :func:`pathwise_reference` run on it as on the zoo."""

    def __init__(self, proto: onnx.ModelProto, output: str, readout: np.ndarray | None = None):
        super().__init__()
        consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        producer = {o: node for node in proto.graph.node for o in node.output}
        if output in producer and producer[output].op_type == "Softmax":
            output = producer[output].input[0]
        self.input_name, self.output = proto.graph.input[0].name, output
        self.layers = nn.ModuleList()
        self.steps = []
        for node in proto.graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            module = None
            if node.op_type == "PRelu":
                slope = consts[node.input[1]].reshape(-1)
                module = nn.PReLU(len(slope))
                module.weight.data = torch.tensor(slope, dtype=torch.float64)
            elif node.op_type == "Relu":
                module = nn.ReLU()
            elif node.op_type == "MaxPool":
                module = nn.MaxPool2d(attrs["kernel_shape"], attrs.get("strides", 1))
            if module is not None:
                self.layers.append(module)
            for name in node.input:
                if name in consts and not hasattr(self, _buffer(name)):
                    self.register_buffer(_buffer(name), torch.tensor(consts[name]).double())
            self.steps.append((node.op_type, list(node.input), node.output[0], attrs, module))
        self.readout = None if readout is None else torch.tensor(readout, dtype=torch.float64)

    def _value(self, values: dict, name: str) -> torch.Tensor:
        return values[name] if name in values else getattr(self, _buffer(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_name: x}
        for op, inputs, out, attrs, module in self.steps:
            a = self._value(values, inputs[0])
            if op == "Transpose":
                y = a.permute(*attrs["perm"])
            elif op == "Conv":
                pads = attrs.get("pads", [0, 0, 0, 0])
                a = F.pad(a, (pads[1], pads[3], pads[0], pads[2]))
                bias = self._value(values, inputs[2]) if len(inputs) > 2 else None
                y = F.conv2d(a, self._value(values, inputs[1]), bias, attrs.get("strides", 1),
                             0, attrs.get("dilations", 1), attrs.get("group", 1))  # fmt: skip
            elif op in ("PRelu", "Relu"):
                y = module(a)
            elif op == "MaxPool":
                y = module(F.pad(a, _same_pads(a, attrs), value=-INF))
            elif op == "Flatten":
                y = a.reshape(a.shape[0], -1)
            elif op == "MatMul":
                y = a @ self._value(values, inputs[1])
            elif op == "Add":
                y = a + self._value(values, inputs[1])
            elif op == "Softmax":
                continue  # only after the explained tensor
            else:
                raise NotImplementedError(op)
            values[out] = y
        logits = values[self.output].reshape(len(x), -1)
        return logits if self.readout is None else logits @ self.readout


def _buffer(name: str) -> str:
    return "c_" + "".join(c if c.isalnum() else "_" for c in name)


def _same_pads(a: torch.Tensor, attrs: dict) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) of a MaxPool: ``pads``, or SAME_UPPER's split (the
    extra row or column at the end), or none (VALID)."""
    if "pads" in attrs:
        top, left, bottom, right = attrs["pads"]
        return left, right, top, bottom
    if attrs.get("auto_pad", b"NOTSET") not in (b"SAME_UPPER", "SAME_UPPER"):
        return 0, 0, 0, 0
    out = []
    for size, k, s in zip(a.shape[2:], attrs["kernel_shape"], attrs.get("strides", [1, 1])):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        out.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = out
    return left, right, top, bottom


def pathwise_reference(
    oracle: TorchOracle, x, target, depth=None, width=None, alpha=None, forced_top=None,
    classes=None,
):  # fmt: skip
    """Algorithm 1 of the pathwise paper as its public code runs it: at every gate from the top,
    the K-row Jacobian of the logits w.r.t. the gate's output is recomputed from scratch (K
    backward passes) through the upper gates, masked with the units already chosen.
    ``classes=k``: the softmax runs over each sample's k top logits and its target, and the
    default alpha is 1 over that number of rows (pathonnx's documented approximation)."""
    x64 = torch.tensor(x, dtype=torch.float64)
    target = torch.as_tensor(np.asarray(target))
    n = len(x)
    with torch.no_grad():
        k = oracle.module(x64).shape[1]
    oracle.gradient(x, target.numpy())  # counts the gates
    gates = oracle.gate_calls
    depth = gates if depth is None else depth
    if classes is None:
        rows = [list(range(k))] * n
    else:
        with torch.no_grad():
            order = torch.argsort(-oracle.module(x64), dim=1, stable=True)[:, :classes].tolist()
        rows = [r + ([t] if t not in r else []) for r, t in zip(order, target.tolist())]
    alphas = [1.0 / len(r) if alpha is None else alpha for r in rows]
    masks: list = [None] * gates
    if forced_top is not None:  # decomposition: the top gate's mask is given
        masks[-1] = forced_top
    for level in range(gates - 1, gates - 1 - depth, -1):
        if level == gates - 1 and forced_top is not None:
            continue
        outputs = []

        def hook(module, inputs, output, outputs=outputs):
            index = len(outputs)
            outputs.append(output)
            if masks[index] is not None:
                mask = torch.as_tensor(masks[index], dtype=output.dtype)
                output.register_hook(lambda g, m=mask: g * m)

        handles = oracle._hook_all(hook)
        try:
            logits = oracle.module(x64.clone().requires_grad_(True))
            h = outputs[level]
            grads = [
                torch.autograd.grad(logits[:, c].sum(), h, retain_graph=True)[0] for c in range(k)
            ]
        finally:
            for handle in handles:
                handle.remove()
        contribution = (torch.stack(grads, 1) * h.detach()[:, None]).reshape(n, k, -1)
        importance = torch.stack([
            torch.softmax(contribution[i, rows[i]], dim=0)[rows[i].index(int(target[i]))]
            for i in range(n)
        ])  # fmt: skip
        units = importance.shape[1]
        keep_at_most = units if width is None else min(width, units)
        order = torch.sort(importance, dim=1, descending=True, stable=True).indices
        mask = torch.zeros_like(importance, dtype=torch.bool)
        for i in range(n):
            top = order[i, :keep_at_most]
            chosen = top[importance[i, top] > alphas[i]]
            mask[i, chosen if len(chosen) else top[:1]] = True
        masks[level] = mask.reshape(h.shape).numpy()
    return masks


def _gated_run(oracle: TorchOracle, x64: torch.Tensor, factors: list | None = None):
    """Logits of the network whose gate i's output is multiplied by ``factors[i]``, and each
    gate's output before and after its factor (the latter keep their autograd graph)."""
    before, after = [], []

    def hook(module, inputs, output):
        index = len(before)
        before.append(output.detach())
        scaled = output if factors is None else output * factors[index]
        after.append(scaled)
        return scaled

    handles = oracle._hook_all(hook)
    try:
        logits = oracle.module(x64)
    finally:
        for h in handles:
            h.remove()
    return logits, before, after


def greedy_pruning_reference(oracle: TorchOracle, x, target, sparsity: float, rounds: int):
    """Khakzar et al. 2021, Algorithm 1 (pathological greedy pruning), from the paper: scores
    s = |a ⊙ ∂y/∂a| on the pruned network, removal of the lowest units with s ≠ 0, rounds on a
    geometric schedule from the starting count of units with s ≠ 0 down to κ. Returns the
    per-gate boolean pathways (units kept with s ≠ 0), flattened per sample."""
    x64 = torch.tensor(x, dtype=torch.float64)
    n, target = len(x), torch.as_tensor(np.asarray(target))
    _, before, _ = _gated_run(oracle, x64)
    sizes = [b[0].numel() for b in before]
    budget = max(1, int(np.floor((1 - sparsity) * sum(sizes))))
    keep = [torch.ones((n, size), dtype=torch.bool) for size in sizes]
    first = None
    for step in range(4 * rounds + 1):
        factors = [k.reshape(b.shape).to(torch.float64) for k, b in zip(keep, before)]
        logits, _, after = _gated_run(oracle, x64.clone().requires_grad_(True), factors)
        y = logits[torch.arange(n), target].sum()
        grads = torch.autograd.grad(y, after)
        score = torch.cat([(a.detach() * g).abs().reshape(n, -1) for a, g in zip(after, grads)], 1)
        alive = torch.cat(keep, 1) & (score != 0)
        count = alive.sum(1)
        first = count.clone() if first is None else first
        if bool((count <= budget).all()) or step == 4 * rounds:
            break
        ratio = (budget / first.clamp(min=1).double()) ** (1.0 / rounds)
        goal = torch.clamp(torch.floor(first.double() * ratio ** (step + 1)), min=budget).long()
        flat = torch.cat(keep, 1)
        for i in range(n):
            if count[i] <= budget:
                continue
            drop = max(1, int(count[i] - goal[i]))
            candidates = torch.nonzero(alive[i]).flatten()
            order = torch.sort(score[i, candidates], stable=True).indices[:drop]
            flat[i, candidates[order]] = False
        keep = list(torch.split(flat, sizes, dim=1))
    return [part.numpy() for part in torch.split(alive, sizes, dim=1)]


def dgr_reference(oracle, x, init, steps: int, lr: float, gamma: float, uniform=None):
    """Distillation Guided Routing (Wang et al. 2018) as Khakzar et al. 2021 state it (Eq. 3):
    float gates λ ≥ 0 per unit, Adam on CE(p(x), p(x; λ)) + γ Σ λ, projected onto λ ≥ 0.
    ``uniform``: the starting gates (a list per gate) when not a constant. Returns the final
    gates, flattened per sample."""
    x64 = torch.tensor(x, dtype=torch.float64)
    n = len(x)
    with torch.no_grad():
        teacher = torch.softmax(oracle.module(x64), 1)
        _, before, _ = _gated_run(oracle, x64)
    if uniform is not None:
        lam = [torch.tensor(u).double().reshape(b.shape) for u, b in zip(uniform, before)]
    else:
        lam = [torch.full_like(b, float(init)) for b in before]
    for p in lam:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(lam, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        logits, _, _ = _gated_run(oracle, x64, lam)
        loss = -(teacher * torch.log_softmax(logits, 1)).sum() + gamma * sum(p.sum() for p in lam)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for p in lam:
                p.clamp_(min=0.0)
    return [p.detach().reshape(n, -1).numpy() for p in lam]


class Importance:
    """Algorithm 1's score at one gate in numpy, the statement that the device graphs of
    pathonnx/graph/choice.py are tested against: ``softmax_c(h·∂logit_c/∂h)[target]``
    (N, units), built from chunks of rows (classes) so that all K rows never need to be in
    memory at once.

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
