"""Pathway baselines: pathways chosen by the pruning objective, which the critical pathways
paper (Khakzar et al., CVPR 2021, §3.2) criticizes.

The pruning objective keeps the network's response with few units:
``argmin_m L(Φ(x), Φ(x; m ⊙ a))`` subject to ``‖m‖₀ ≤ κ``. Its solutions need not be critical:
removing active units can turn originally dead units on, and a pathway that contains them does
not reflect how x was encoded. Two solvers are here, both measured by the share of originally
dead units they keep (``stats["dead_share"]``), which NeuronMCT and NeuronIntGrad keep at 0:

- ``greedy``: the paper's Algorithm 1, pathological greedy pruning. Score every kept unit of the
  pruned network by ``s = |a ⊙ ∂y/∂a|`` and remove the lowest scoring ones *that are not dead*
  (``s ≠ 0``), recomputing scores between rounds, until κ units with ``s ≠ 0`` remain.
- ``dgr``: Distillation Guided Routing (Wang et al., CVPR 2018) as the paper states it (Eq. 3):
  a float gate ``λ ≥ 0`` per unit multiplies each activation, learned per image by minimizing
  the distillation loss ``CE(softmax Φ(x), softmax Φ(x; λ ⊙ a))`` plus ``γ‖λ‖₁``; the pathway
  is the top ``1 − sparsity`` of λ, ranked network-wide. ``init=1`` (Wang et al.) or
  ``"uniform"`` (U[0, 1), DGR(init=r) in Khakzar et al.).

Both run the *pruned* network forward (onnxruntime, with a scale input per gate, see
:func:`pathonnx.graph.variants.scaled`), so gates above a removed unit re-decide their pattern,
and take the gradients at the gates from the engine's staged walk with those masks or scales
(``∂L/∂λ = a ⊙ ∂L/∂(λ ⊙ a)``). The returned pathway's ``linear`` is, as for every pathway, the
frozen map at x's own pattern through the kept units.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine import device_value, gate_cotangents, masks_and_counts, network_top, softmax
from ..graph.choice import adam_graph, greedy_graph
from ..progress import step as report
from .pathway import Pathway, network_wide_start, pathway_from_counts
from .registry import (
    INTEGER,
    NUMBER,
    NUMBER_OR_UNIFORM,
    SEED,
    SPARSITY,
    Param,
    Range,
    above,
    at_least,
    family,
    method_params,
    register,
)


def pruned_pathway(
    model, x, target=None, method: str = "greedy", sparsity: float = 0.9, **params
) -> Pathway:
    """A pathway chosen by the pruning objective: ``method="greedy"`` (``rounds=20``) or
    ``method="dgr"`` (``init=1.0`` or ``"uniform"``, ``steps=50``, ``lr=0.05``,
    ``gamma=1e-3``, ``seed=0``). It keeps ``1 − sparsity`` of all units of all gates."""
    params = method_params(method, {"sparsity": sparsity, **params}, model)
    return family("pruning", method).fn(model, x, target, **params)


def _pruned(name: str, solver, model, x, target, sparsity: float, params: dict) -> Pathway:
    """Run ``solver`` at x and make the Pathway ``name`` of the units it keeps: the solver
    returns per-gate masks on the device with the units kept and the inactive ones among them,
    and its own statistics."""
    fwd, target = network_wide_start(model, x, target)
    found, extra = solver(model, fwd, target, float(sparsity), **params)
    params = {"sparsity": float(sparsity), **params}
    pathway = pathway_from_counts(model, fwd, target, *found, name, params)
    pathway.stats.update(extra)
    return pathway


def _budget(model, sparsity: float) -> int:
    """κ: the units a pathway of this sparsity keeps, over all gates."""
    return max(1, math.floor((1.0 - sparsity) * sum(g.units for g in model.gates)))


def _shaped(model, flat: dict, n: int, dtype) -> dict:
    return {g.name: flat[g.name].reshape(n, *g.shape).astype(dtype) for g in model.gates}


def _greedy(model, fwd0, target, sparsity: float, rounds: int = 20):
    """Algorithm 1 of Khakzar et al.: rounds of Taylor scoring on the pruned network and
    removal of the lowest non-dead units, on a geometric schedule from the units with s ≠ 0 at
    the start down to κ in ``rounds`` rounds (a few more if turned-on units need them).

    The scores, the removals and the masks stay on the device (graph/choice.greedy_graph);
    each round brings back the count of units alive per sample."""
    n, gates, engine = len(fwd0.x), model.gates, model.engine
    budget = _budget(model, sparsity)
    put, count_gates = engine.dev.put, len(gates)
    keep = {g.name: put(np.ones((n, *g.shape), bool)) for g in gates}
    scales = {g.name: put(np.ones((n, *g.shape), np.float32)) for g in gates}
    first = None
    for step in range(4 * int(rounds) + 1):
        report("greedy: rounds (at most)", step, 4 * int(rounds) + 1)
        fwd = engine.scaled_forward(fwd0.x, scales)
        grads = gate_cotangents(model, fwd, target, masks=keep, keep=True)
        feeds = {}
        for i, g in enumerate(gates):
            feeds.update({f"h{i}": device_value(fwd.activations, g.name),
                          f"g{i}": grads[g.name], f"keep{i}": keep[g.name]})  # fmt: skip
        build = lambda: greedy_graph(count_gates, "count")  # noqa: E731
        (found,) = engine.run_small(("greedy", count_gates, "count"), build, feeds, ["count"])
        count = engine.dev.host(found).astype(np.int64)
        first = count if first is None else first
        if (count <= budget).all() or step == 4 * int(rounds):
            break
        ratio = (budget / np.maximum(first, 1)) ** (1.0 / int(rounds))
        goal = np.maximum(budget, np.floor(first * ratio ** (step + 1))).astype(int)
        drop = np.where(count > budget, np.maximum(1, count - goal), 0).astype(np.int64)
        feeds.update(drop=drop, k=np.array([max(1, int(drop.max()))], np.int64))
        names = [f"{kind}{i}" for i in range(count_gates) for kind in ("next", "scale")]
        build = lambda: greedy_graph(count_gates, "drop")  # noqa: E731
        found = engine.run_small(("greedy", count_gates, "drop"), build, feeds, names)
        for i, g in enumerate(gates):
            keep[g.name], scales[g.name] = found[2 * i], found[2 * i + 1]
    # the units alive at the last round; out of rounds, the κ best scores of them
    feeds["budget"] = np.array([budget], np.int64)
    for i, g in enumerate(gates):
        feeds[f"a{i}"] = device_value(fwd0.activations, g.name)
    build = lambda: greedy_graph(count_gates, "final")  # noqa: E731
    found = masks_and_counts(engine, gates, ("greedy", count_gates, "final"), build, feeds)
    return found, {"rounds": step + 1}


def _dgr(
    model,
    fwd0,
    target,
    sparsity: float,
    init=1.0,
    steps: int = 50,
    lr: float = 0.05,
    gamma: float = 1e-3,
    seed: int = 0,
):
    """DGR: Adam (β = 0.9, 0.999, ε = 1e-8, as torch's) on the per-unit gates, projected onto
    λ ≥ 0 after each step. Loss ``CE(p(x), p(x; λ)) + γ Σ λ`` per sample."""
    n, gates, engine = len(fwd0.x), model.gates, model.engine
    rng = np.random.default_rng(seed)
    if init == "uniform":
        lam = {g.name: rng.uniform(0.0, 1.0, (n, g.units)) for g in gates}
    else:
        lam = {g.name: np.full((n, g.units), float(init)) for g in gates}
    put = engine.dev.put
    scales = {name: put(value) for name, value in _shaped(model, lam, n, np.float32).items()}
    state = {g.name: [put(lam[g.name]), put(np.zeros((n, g.units))), put(np.zeros((n, g.units)))]
             for g in gates}  # fmt: skip
    teacher = softmax(fwd0.logits)
    losses = []
    for t in range(1, int(steps) + 1):
        report("dgr: steps", t - 1, int(steps))
        fwd = engine.scaled_forward(fwd0.x, scales)
        student = softmax(fwd.logits)
        losses.append(-(teacher * np.log(np.maximum(student, 1e-300))).sum(axis=1))
        seeds = (student - teacher).astype(np.float32)  # ∂CE/∂logits
        grads = gate_cotangents(model, fwd, seeds=seeds, scales=scales, keep=True)
        constants = {"gamma": np.array([gamma], np.float32), "c1": np.array([lr / (1 - 0.9**t)]),
                     "c2": np.array([1 - 0.999**t])}  # fmt: skip
        for g in gates:  # Adam on the device (graph/choice.adam_graph)
            feeds = {"h": device_value(fwd.activations, g.name), "g": grads[g.name], **constants}
            feeds.update(zip(("lam0", "first0", "second0"), state[g.name]))
            *state[g.name], scales[g.name] = engine.run_small(
                ("adam",), adam_graph, feeds, ["lam", "first", "second", "scale"]
            )
    lam = {g.name: state[g.name][0] for g in gates}
    chosen = network_top(engine, fwd0, gates, sparsity, scores=lam)
    gates_found = {name: engine.dev.host(value) for name, value in lam.items()}
    return chosen, {"gates": gates_found, "loss": np.stack(losses, axis=1)}


@register("greedy", SPARSITY, Param("rounds", 20, INTEGER, "pruning rounds", Range(1, 10_000)),
          attribution="gradient", family="pruning")  # fmt: skip
def greedy(model, x, target, sparsity, rounds=20):
    """Greedy Taylor pruning with the dead-unit tweak: its pathway gradient W^p (Khakzar et al.)."""
    return _pruned("greedy", _greedy, model, x, target, sparsity, {"rounds": rounds})


@register(
    "dgr", SPARSITY,
    Param("init", 1.0, NUMBER_OR_UNIFORM, "initial gate value, or 'uniform' for U[0, 1)",
          at_least(0)),  # the gates are projected onto λ ≥ 0
    Param("steps", 50, INTEGER, "optimization steps", Range(1, 100_000)),
    Param("lr", 0.05, NUMBER, "Adam learning rate", above(0)),
    Param("gamma", 1e-3, NUMBER, "weight of the l1 term on the gates", at_least(0)),
    SEED, attribution="gradient", family="pruning",
)  # fmt: skip
def dgr(model, x, target, sparsity, init=1.0, steps=50, lr=0.05, gamma=1e-3, seed=0):
    """Distillation Guided Routing gates learned per image: its pathway gradient W^p."""
    params = {"init": init, "steps": steps, "lr": lr, "gamma": gamma, "seed": seed}
    return _pruned("dgr", _dgr, model, x, target, sparsity, params)
