"""The linear engine: the exact linear model ``W x + b`` of a network at x, run by onnxruntime.

:class:`LinearEngine` owns every onnxruntime session of one model: the forward pass that reads
the pattern, the adjoint graphs of :mod:`pathonnx.engine.adjoint` (whole, staged, masked,
scaled, with a backward variant), the frozen graph, and the scaled and suffix forward passes
that pruning and NeuronIntGrad need. Sessions are built on first use and reused.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..graph import Canonical, boundary
from ..ops import GRADIENT, Backward
from .adjoint import build_adjoint, build_frozen, build_fused
from .forward import (
    Forward,
    as_batch,
    check_target,
    finite_logits,
    one_hot,
    pattern,
    pattern_outputs,
)
from .memory import ROW_BYTES_PER_ELEMENT, check_run, largest_batch
from .resident import Device, OnDevice, OrtValue, device_value, running
from .session import device_memory, make_session, node_providers, provider_names
from .sparse import SparseWalker


@dataclass(frozen=True)
class Linear:
    """The linear model of the network at x for ``target``: ``W`` shaped like x, ``b`` (N,).

    With masks, these are the pathway's ``W^p`` and ``b^p``. ``logits`` are the model's own
    logits at x (N, K); ``(W * x).sum() + b`` equals ``logits[n, target[n]]`` without masks.
    """

    W: np.ndarray
    b: np.ndarray
    target: np.ndarray
    logits: np.ndarray

    def attribution(self, x: np.ndarray) -> np.ndarray:
        """``W ⊙ x`` (docs/ARCHITECTURE.md, Semantics)."""
        return self.W * x

    def output(self, x: np.ndarray) -> np.ndarray:
        """``Σ W ⊙ x + b`` per sample: the linear model evaluated at ``x``."""
        return (self.W * x).reshape(len(x), -1).sum(axis=1, dtype=np.float64) + self.b


def _scale_feed(scales: dict, info):
    """The feed of a ``scale:<gate>`` input: ``scales[gate]`` (an OrtValue as it is, an array
    as float32), else 1 (broadcast)."""
    value = scales.get(info.name.partition(":")[2])
    if isinstance(value, OrtValue):
        return value
    return np.ascontiguousarray(np.ones((1,) * len(info.shape)) if value is None else value,
                                np.float32)  # fmt: skip


def _store_budget() -> int:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2 << 30
    return int(min(5 << 30, max(1 << 30, memory // 4)))


class LinearEngine:
    """Runs one canonical model's graphs on ``providers``; built once, sessions reused."""

    #: Bytes of activations a single adjoint call may hold; rows are chunked to stay below.
    #: Sized for a 24 GB CPU machine; on CUDA, half the GPU's free memory (see __init__).
    memory_budget = 1 << 30
    #: Bytes of cotangent rows a sweep may keep between its stages (see
    #: :class:`pathonnx.engine.sweep.RowStore`); beyond it, rows are walked again instead of
    #: kept. A quarter of the machine's memory, at most 5 GiB: on a 24 GB machine the exact
    #: 1000-class sweep of VGG-16-BN at 224×224 peaked at 3.3 GB with 2 GiB and 5.6 GB with
    #: 4 GiB (bench/bench_real.py). On CUDA, a quarter of the GPU's free memory: the store's
    #: rows stay on the device.
    store_budget = _store_budget()

    def __init__(self, graph: Canonical, providers: list):
        self.graph = graph
        self.providers = providers
        first = provider_names(providers)[0]
        self.device = "cuda" if first == "CUDAExecutionProvider" else "cpu"
        """Where the sessions run and bound outputs stay: "cuda" or "cpu"."""
        self.dev = Device(self.device)
        self._sessions: dict[tuple, tuple] = {}
        self._sparse: SparseWalker | None = None
        self._tensor_bytes: list[int] | None = None
        free = device_memory() if self.device == "cuda" else None
        if free:  # all K rows of a sweep in as few calls as the GPU holds
            self.memory_budget = free // 2
            self.store_budget = free // 4

    def _cached(self, key: tuple, build):
        """(graph, onnxruntime session) for ``key``, built by ``build()`` on first use."""
        if key not in self._sessions:
            with boundary(self.graph.source, f"build the {key[0]} graph"):
                proto = self.graph.weights.strip(build())
                session = make_session(proto, self.providers, weights=self.graph.weights)
            self._sessions[key] = (proto, session)
        return self._sessions[key]

    def run_small(self, key: tuple, build, feeds: dict, outputs: list[str]) -> list:
        """Run one of the sweeps' small graphs (:mod:`pathonnx.graph.choice`), built by
        ``build()`` once per ``key``: OrtValues or arrays in, OrtValues on the device out."""
        _, session = self._cached(key, build)
        return self.dev.run(session, feeds, outputs)

    @property
    def walks_sparse(self) -> bool:
        """Whether sweeps may walk few rows sparse in numpy below narrow gates: on the CPU,
        where numpy reads the runtime's memory in place; on CUDA the dense walk stays on the
        device instead."""
        return self.device == "cpu"

    def fallback_nodes(self, x) -> Counter:
        """Nodes of the fused forward + adjoint graph that onnxruntime ran on another provider
        than the first one asked for (CUDA), by (op type, provider), from one profiled run at
        ``x``; empty when every node ran where asked (always on the CPU)."""
        x = as_batch(x, self.graph.input_shape)
        proto, _ = self._fused_session(False, GRADIENT)
        seed = one_hot(np.zeros(len(x), np.int64), self.graph.num_outputs)
        feeds = {self.graph.input_name: x, "seed": seed}
        found = node_providers(proto, self.providers, feeds, self.graph.weights)
        first = provider_names(self.providers)[0]
        return Counter({key: n for key, n in found.items() if key[1] != first})

    def session_providers(self) -> list[tuple[str, list[str]]]:
        """(kind of session, the providers onnxruntime gave it) for every session built so far,
        e.g. ("adjoint", ["CUDAExecutionProvider", "CPUExecutionProvider"])."""
        return [(key[0], session.get_providers()) for key, (_, session) in self._sessions.items()]

    # -- forward passes ---------------------------------------------------------------------------

    @property
    def session(self):
        """The canonical model's session: logits and the whole pattern in one run."""
        return self._cached(("forward",), lambda: self.graph.proto)[1]

    def forward(self, x) -> Forward:
        """Run once: ``x`` float32 (N, *input_shape) -> logits (N, K), every gate's output, the
        inputs of LeakyRelu/PRelu gates and every max-pool's argmax (the frozen pattern).

        The pattern stays on the device (:class:`~pathonnx.engine.resident.OnDevice`): the
        adjoint calls bind it where it is, and it comes to numpy only where code reads it."""
        x = as_batch(x, self.graph.input_shape)
        self.check_memory(len(x), rows=False)
        session = self.session  # built first: a provider that fails says so before any copy
        names, on = pattern_outputs(self.graph), self.dev.put(x)
        found = self.dev.run(session, {self.graph.input_name: on}, names)
        values = OnDevice(self.dev, {**dict(zip(names, found)), self.graph.input_name: on})
        logits = finite_logits(self.dev.host(values.value(self.graph.logits_name)), x)
        return pattern(self.graph, x, values, logits)

    def logits(self, x, batch: int = 64) -> np.ndarray:
        """Logits only, (N, K), ``batch`` samples per onnxruntime call, fewer where that many
        would not fit the memory budget."""
        x = as_batch(x, self.graph.input_shape)
        self.check_memory(1, rows=False)
        fits = largest_batch(self.tensor_bytes, rows=False)
        name, step = self.graph.logits_name, max(1, min(int(batch), fits))
        _, session = self._cached(("logits",), self.graph.logits_only)
        with running():
            runs = [
                session.run([name], {self.graph.input_name: x[i : i + step]})[0]
                for i in range(0, len(x), step)
            ]
        return finite_logits(np.concatenate(runs), x)

    def scaled_forward(self, x: np.ndarray, scales: dict) -> Forward:
        """The forward pass with each gate's output multiplied by ``scales[gate]`` (float,
        broadcastable to (N, *gate.shape), an array or an OrtValue; 1 where not given): logits
        and activation pattern of that network, on the device. The pattern's ``activations``
        are the gate outputs before their scale."""
        graph, dev = self.graph, self.dev
        _, session = self._cached(("scaled",), graph.scaled)
        x = np.ascontiguousarray(x, np.float32)
        feeds = {graph.input_name: dev.put(x)}
        for info in session.get_inputs()[1:]:
            feeds[info.name] = _scale_feed(scales, info)
        outputs = [o.name for o in session.get_outputs()]
        values = {**dict(zip(outputs, dev.run(session, feeds, outputs))),
                  graph.input_name: feeds[graph.input_name]}  # fmt: skip

        def read(name):  # a gate reading another gate reads it scaled
            return f"{name}__scaled" if f"{name}__scaled" in values else name

        logits = dev.host(values[graph.logits_name])
        return pattern(graph, x, OnDevice(dev, values), logits, read)

    def values(self, x: np.ndarray, names: list[str]) -> OnDevice:
        """The named intermediate tensors of the forward pass at ``x`` (and x itself), on the
        device."""
        names = sorted(set(names) - {self.graph.input_name})
        _, session = self._cached(("values", tuple(names)),
                                  lambda: self.graph.with_outputs(names))  # fmt: skip
        found = dict(zip(names, self.dev.run(session, {self.graph.input_name: x}, names)))
        return OnDevice(self.dev, {**found, self.graph.input_name: self.dev.put(x)})

    def suffix_forward(self, cut: int, feeds: dict) -> Forward:
        """The network above ``cut`` run on the tensors live there (``feeds``, OrtValues or
        arrays): its logits and the pattern made above the cut, on the device. Its ``x`` is an
        empty placeholder (N, 0)."""
        _, session = self._cached(("suffix", cut), lambda: self.graph.suffix(cut))
        outputs = [o.name for o in session.get_outputs()]
        got = dict(zip(outputs, self.dev.run(session, feeds, outputs)))
        graph, values = self.graph, OnDevice(self.dev, got)
        logits = self.dev.host(got[outputs[0]])
        return Forward(
            x=np.empty((len(logits), 0)),
            logits=logits,
            activations=values.select((g.name, g.name) for g in graph.gates),
            preactivations=values.select((g.name, g.input) for g in graph.gates),
            argmax=values.select((p.name, p.argmax) for p in graph.maxpools),
        )

    # -- the adjoint ------------------------------------------------------------------------------

    @property
    def adjoint_graph(self):
        """The general adjoint graph (any number of rows, every gate masked)."""
        return self._adjoint_session()[0]

    @property
    def frozen_graph(self):
        return self._frozen_session()[0]

    def _adjoint_session(self, single_row=False, masked=True, start=None, stop: int = 0,
                         backward: Backward = GRADIENT, scaled: bool = False):  # fmt: skip
        cpu = self.device == "cpu"  # MaxUnpool: the CPU provider has it, CUDA's does not
        proto = self.graph.proto
        return self._cached(
            ("adjoint", single_row, masked, start, stop, backward.name, scaled),
            lambda: build_adjoint(proto, single_row, masked, start, stop, backward, scaled, cpu),
        )

    def _fused_session(self, masked: bool, backward: Backward, single_row: bool = True):
        proto, cpu = self.graph.proto, self.device == "cpu"
        build = lambda: build_fused(proto, single_row, masked, backward, cpu)  # noqa: E731
        return self._cached(("fused", masked, backward.name, single_row), build)

    def _frozen_session(self):
        return self._cached(("frozen",), lambda: build_frozen(self.graph.proto))

    @property
    def sparse_walker(self) -> SparseWalker:
        """The sparse walk below narrow gates (:mod:`pathonnx.engine.sparse`), built once."""
        if self._sparse is None:
            self._sparse = SparseWalker(self.graph)
        return self._sparse

    def gate_cuts(self) -> list[int]:
        """Positions in node order right after each gate: where a staged walk can stop to act
        on the cotangent at that gate's output (in the order of the model's gates)."""
        return list(self.graph.gate_cuts)

    def stage(
        self,
        fwd: Forward,
        cotangents: dict,
        start: int | None,
        stop: int,
        masks: dict | None = None,
        single_row: bool = False,
        scales: dict | None = None,
        keep: bool = False,
    ) -> tuple[dict, np.ndarray]:
        """Run the walk over nodes ``[stop, start)``: cotangents (rows, *shape) of the tensors live
        at ``start`` (the key ``"seed"`` for the logits) -> those live at ``stop`` (key ``"grad"``
        for the input), and the bias (rows,) met in between. ``scales`` (gate name -> float
        (N, *gate.shape)) multiply the gates instead of boolean ``masks``.

        Cotangents and masks may be OrtValues on the device. With ``keep`` the cotangents at
        ``stop`` stay there as OrtValues (the next stage binds them where they are); only the
        bias comes back to numpy."""
        masks = self.masks(masks, len(fwd.x))
        scaled = scales is not None
        _, session = self._adjoint_session(single_row, True, start, stop, scaled=scaled)
        feeds = self._feeds(session, fwd, masks, scales)
        inputs = {info.name for info in session.get_inputs()}
        for key, value in cotangents.items():
            name = key if key == "seed" else key.replace("ct:", "upstream:", 1)
            if name not in inputs and "seed" in inputs:  # a cut at the top: the logits are a
                name = "seed"  # gate's output, and the walk from there starts at the seed
            feeds[name] = value if isinstance(value, OrtValue) else np.asarray(value, np.float32)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, self.dev.run(session, feeds, names)))
        bias = self.dev.host(values.pop("bias"))
        if not keep:
            values = {k: self.dev.host(v) for k, v in values.items()}
        return values, bias

    # -- inputs -----------------------------------------------------------------------------------

    def masks(self, masks: dict | None, n: int) -> dict[str, np.ndarray]:
        """Validate masks (gate name -> bool, shape gate.shape or (N, *gate.shape)) as bool
        arrays. OrtValues (masks a sweep made on the device) pass as they are."""
        gates = {g.name: g for g in self.graph.gates}
        out = {}
        for name, mask in (masks or {}).items():
            if isinstance(mask, OrtValue) and name in gates:
                out[name] = mask
                continue
            if name not in gates:
                known = ", ".join(list(gates)[:8])
                raise InputError(f"mask for unknown gate {name!r}; gates are: {known}, ...")
            mask = np.asarray(mask)
            shape = gates[name].shape
            if mask.shape == shape:
                mask = mask[None]
            if mask.shape not in ((1, *shape), (n, *shape)):
                raise InputError(
                    f"mask for gate {name!r} has shape {mask.shape}; give {shape} or "
                    f"({n}, {', '.join(map(str, shape))})"
                )
            out[name] = mask.astype(bool)
        return out

    def _feeds(self, session, fwd: Forward, masks: dict[str, np.ndarray], scales=None) -> dict:
        feeds = {}
        for info in session.get_inputs():
            kind, _, name = info.name.partition(":")
            if kind == "h":
                feeds[info.name] = device_value(fwd.activations, name)
            elif kind == "z":
                feeds[info.name] = device_value(fwd.preactivations, name)
            elif kind == "argmax":
                feeds[info.name] = device_value(fwd.argmax, name)
            elif kind == "mask":
                rank = len(info.shape)
                feeds[info.name] = masks.get(name, np.ones((1,) * rank, bool))
            elif kind == "scale":
                feeds[info.name] = _scale_feed(scales or {}, info)
        return feeds

    # -- running ----------------------------------------------------------------------------------

    def rows_per_call(self, n: int) -> int:
        largest = max([int(np.prod(self.graph.input_shape))] + [g.units for g in self.graph.gates])
        # onnxruntime holds about a dozen tensors the size of the largest cotangent at once
        # (measured on VGG-16), 4 bytes each: 64 bytes per element and row.
        return max(1, int(self.memory_budget // (ROW_BYTES_PER_ELEMENT * largest * n)))

    @property
    def tensor_bytes(self) -> list[int]:
        """Bytes per sample of every tensor the forward pass computes (from the shapes)."""
        if self._tensor_bytes is None:
            self._tensor_bytes = self.graph.tensor_bytes()
        return self._tensor_bytes

    def check_memory(self, batch: int, rows: bool = True) -> None:
        """Raise :class:`InputError` when a run at ``batch`` samples is estimated to need more
        memory than the budget (:mod:`pathonnx.engine.memory`), before it allocates; without
        ``rows``, a forward pass alone."""
        shape = "x".join(map(str, self.graph.input_shape))
        check_run(self.tensor_bytes, batch, f"{self.graph.source} at input {shape}", rows)

    def largest_batch(self) -> int:
        """The most samples a run may take within the memory budget (0: not one)."""
        return largest_batch(self.tensor_bytes)

    def vjp(self, fwd: Forward, seeds: np.ndarray, masks: dict | None = None,
            backward: Backward = GRADIENT):  # fmt: skip
        """Cotangent rows through the frozen, masked map at ``fwd``'s pattern.

        ``seeds`` (N, R, K) -> ``grad`` (N, R, *input_shape) = seedsᵀ·W, ``bias`` (N, R) =
        seedsᵀ·b. Rows are chunked to keep memory within :attr:`memory_budget`.
        """
        n = len(fwd.x)
        masks = self.masks(masks, n)
        single = seeds.shape[1] == 1 or self.rows_per_call(n) == 1
        _, session = self._adjoint_session(single, bool(masks), backward=backward)
        feeds = self._feeds(session, fwd, masks)
        return self._by_rows(seeds, lambda part: self._run_bound(session, {**feeds, "seed": part},
                                                                 ["grad", "bias"]))  # fmt: skip

    def vjp_at(self, x, seeds: np.ndarray, masks: dict | None = None,
               backward: Backward = GRADIENT):  # fmt: skip
        """:meth:`vjp` at ``x`` with the forward pass in the same onnxruntime call (the fused
        graph) when all rows fit :attr:`memory_budget` at once: the pattern stays in the
        runtime, and only ``grad`` and ``bias`` come back. When the rows need several calls,
        one forward pass and the chunked :meth:`vjp` (each call would redo the forward)."""
        x = as_batch(x, self.graph.input_shape)
        self.check_memory(len(x))
        if seeds.shape[1] > self.rows_per_call(len(x)):
            return self.vjp(self.forward(x), seeds, masks, backward)
        masks, single = self.masks(masks, len(x)), seeds.shape[1] == 1
        return self._by_rows(seeds, lambda part: self._fused_run(
            x, part, masks, backward, single, ["grad", "bias"]))  # fmt: skip

    def _by_rows(self, seeds: np.ndarray, run) -> tuple[np.ndarray, np.ndarray]:
        """``run(seed rows (N·R', K))`` -> (grad, bias) over chunks of R' rows per sample that
        fit :attr:`memory_budget`; returns grad (N, R, *input_shape) and bias (N, R)."""
        n, r, k = seeds.shape
        chunk = self.rows_per_call(n)
        grads, biases = [], []
        for start in range(0, r, chunk):
            part = np.ascontiguousarray(seeds[:, start : start + chunk], np.float32)
            grad, bias = run(part.reshape(-1, k))
            rows = part.shape[1]
            grads.append(grad.reshape(n, rows, *self.graph.input_shape))
            biases.append(bias.reshape(n, rows))
        return np.concatenate(grads, axis=1), np.concatenate(biases, axis=1)

    def frozen_logits(self, fwd: Forward, x, masks: dict | None = None) -> np.ndarray:
        """Logits (N, K) of the map frozen at ``fwd``'s pattern (and masked), evaluated at ``x``."""
        x = np.ascontiguousarray(x, np.float32)
        masks = self.masks(masks, len(x))
        _, session = self._frozen_session()
        feeds = self._feeds(session, fwd, masks)
        feeds[self.graph.input_name] = x
        return self._run_bound(session, feeds, ["logits"])[0]

    def _run_bound(self, session, feeds: dict, outputs: list[str]) -> list[np.ndarray]:
        """Run ``session`` with IOBinding: host inputs are copied in once, OrtValues bound where
        they are, every intermediate stays where the provider made it, and only ``outputs``
        come back as numpy arrays."""
        return [self.dev.host(v) for v in self.dev.run(session, feeds, outputs)]

    def linearize_at(self, x, target, masks: dict | None = None,
                     backward: Backward = GRADIENT) -> Linear:  # fmt: skip
        """The (pathway's) linear model at ``x`` for ``target`` in one onnxruntime call: the
        forward pass and the adjoint walk run as one graph (:func:`build_fused`), so the
        pattern never leaves the runtime; only the logits, W and b come back."""
        x = as_batch(x, self.graph.input_shape)
        n, k = len(x), self.graph.num_outputs
        self.check_memory(n)
        target = check_target(target, n, k)
        outputs = [self.graph.logits_name, "grad", "bias"]
        logits, grad, bias = self._fused_run(x, one_hot(target, k), self.masks(masks, n),
                                             backward, True, outputs)  # fmt: skip
        finite_logits(logits, x)
        return Linear(W=grad, b=bias.astype(np.float64), target=target, logits=logits)

    def _fused_run(self, x, seed, masks: dict, backward: Backward, single_row: bool,
                   outputs: list[str]) -> list[np.ndarray]:  # fmt: skip
        """One call of the fused graph at ``x`` with cotangent rows ``seed`` (rows, K) and
        checked ``masks``; returns the named ``outputs``."""
        _, session = self._fused_session(bool(masks), backward, single_row)
        feeds = self._feeds(session, None, masks)
        feeds[self.graph.input_name], feeds["seed"] = x, seed
        return self._run_bound(session, feeds, outputs)

    def linearize(self, fwd: Forward, target, masks: dict | None = None) -> Linear:
        """The (pathway's) linear model at ``fwd``'s input for ``target`` (see :class:`Linear`)."""
        n = len(fwd.x)
        target = check_target(target, n, self.graph.num_outputs)
        grad, bias = self.vjp(fwd, one_hot(target, self.graph.num_outputs, rows=1), masks)
        return Linear(
            W=grad[:, 0], b=bias[:, 0].astype(np.float64), target=target, logits=fwd.logits
        )
