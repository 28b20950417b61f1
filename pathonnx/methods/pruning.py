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

from ..engine import gate_cotangents, softmax
from ..errors import InputError
from .pathway import Pathway, network_wide_start, pathway_from_masks
from .registry import INTEGER, NUMBER, NUMBER_OR_UNIFORM, SEED, SPARSITY, Param, family, register


def pruned_pathway(
    model, x, target=None, method: str = "greedy", sparsity: float = 0.9, **params
) -> Pathway:
    """A pathway chosen by the pruning objective: ``method="greedy"`` (``rounds=20``) or
    ``method="dgr"`` (``init=1.0`` or ``"uniform"``, ``steps=50``, ``lr=0.05``,
    ``gamma=1e-3``, ``seed=0``). It keeps ``1 − sparsity`` of all units of all gates."""
    return family("pruning", method).fn(model, x, target, sparsity=sparsity, **params)


def _pruned(name: str, solver, model, x, target, sparsity: float, params: dict) -> Pathway:
    """Run ``solver`` at x and make the Pathway ``name`` of the units it keeps."""
    fwd, target = network_wide_start(model, x, target, sparsity)
    flat, extra = solver(model, fwd, target, float(sparsity), **params)
    params = {"sparsity": float(sparsity), **params}
    return pathway_from_masks(model, fwd, target, flat, name, params, extra)


def _budget(model, sparsity: float) -> int:
    """κ: the units a pathway of this sparsity keeps, over all gates."""
    return max(1, math.floor((1.0 - sparsity) * sum(g.units for g in model.gates)))


def _shaped(model, flat: dict, n: int, dtype) -> dict:
    return {g.name: flat[g.name].reshape(n, *g.shape).astype(dtype) for g in model.gates}


def _greedy(model, fwd0, target, sparsity: float, rounds: int = 20):
    """Algorithm 1 of Khakzar et al.: rounds of Taylor scoring on the pruned network and
    removal of the lowest non-dead units, on a geometric schedule from the units with s ≠ 0 at
    the start down to κ in ``rounds`` rounds (a few more if turned-on units need them)."""
    if int(rounds) < 1:
        raise InputError(f"rounds {rounds} must be a positive number")
    n, gates, engine = len(fwd0.x), model.gates, model.engine
    budget = _budget(model, sparsity)
    keep = {g.name: np.ones((n, g.units), bool) for g in gates}
    sizes = np.cumsum([0] + [g.units for g in gates])
    first = None
    for step in range(4 * int(rounds) + 1):
        fwd = engine.scaled_forward(fwd0.x, _shaped(model, keep, n, np.float32))
        grads = gate_cotangents(model, fwd, target, masks=_shaped(model, keep, n, bool))
        score = np.concatenate(
            [
                np.abs(keep[g.name] * fwd.activations[g.name].reshape(n, -1))
                * np.abs(grads[g.name].reshape(n, -1))
                for g in gates
            ],
            axis=1,
        )
        alive = np.concatenate([keep[g.name] for g in gates], axis=1) & (score != 0)
        count = alive.sum(axis=1)
        first = count if first is None else first
        if (count <= budget).all() or step == 4 * int(rounds):
            break
        ratio = (budget / np.maximum(first, 1)) ** (1.0 / int(rounds))
        goal = np.maximum(budget, np.floor(first * ratio ** (step + 1))).astype(int)
        for i in np.flatnonzero(count > budget):
            drop = max(1, int(count[i] - goal[i]))
            candidates = np.flatnonzero(alive[i])
            order = np.argsort(score[i, candidates], kind="stable")[:drop]
            for g, lo, hi in zip(gates, sizes[:-1], sizes[1:]):
                hit = candidates[order]
                hit = hit[(hit >= lo) & (hit < hi)] - lo
                keep[g.name][i, hit] = False
    for i in np.flatnonzero(count > budget):  # out of rounds: the κ best scores
        worst = np.argsort(-np.where(alive[i], score[i], -np.inf), kind="stable")[budget:]
        alive[i, worst] = False
    chosen = {g.name: alive[:, lo:hi] for g, lo, hi in zip(gates, sizes[:-1], sizes[1:])}
    return chosen, {"rounds": step + 1}


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
    if int(steps) < 1:
        raise InputError(f"steps {steps} must be a positive number")
    n, gates, engine = len(fwd0.x), model.gates, model.engine
    rng = np.random.default_rng(seed)
    if init == "uniform":
        lam = {g.name: rng.uniform(0.0, 1.0, (n, g.units)) for g in gates}
    else:
        try:
            value = float(init)
        except (TypeError, ValueError):
            raise InputError(f"init {init!r} must be a number or 'uniform'") from None
        lam = {g.name: np.full((n, g.units), value) for g in gates}
    first = {g.name: np.zeros((n, g.units)) for g in gates}
    second = {g.name: np.zeros((n, g.units)) for g in gates}
    teacher = softmax(fwd0.logits)
    losses = []
    for t in range(1, int(steps) + 1):
        scales = _shaped(model, lam, n, np.float32)
        fwd = engine.scaled_forward(fwd0.x, scales)
        student = softmax(fwd.logits)
        losses.append(-(teacher * np.log(np.maximum(student, 1e-300))).sum(axis=1))
        seeds = (student - teacher).astype(np.float32)  # ∂CE/∂logits
        grads = gate_cotangents(model, fwd, seeds=seeds, scales=scales)
        for g in gates:
            grad = fwd.activations[g.name].reshape(n, -1) * grads[g.name].reshape(n, -1) + gamma
            first[g.name] = 0.9 * first[g.name] + 0.1 * grad
            second[g.name] = 0.999 * second[g.name] + 0.001 * grad * grad
            denom = np.sqrt(second[g.name] / (1 - 0.999**t)) + 1e-8
            lam[g.name] = np.maximum(lam[g.name] - lr / (1 - 0.9**t) * first[g.name] / denom, 0.0)
    values = np.concatenate([lam[g.name] for g in gates], axis=1)
    threshold = np.percentile(values, 100 * sparsity, axis=1)
    chosen = {g.name: lam[g.name] > threshold[:, None] for g in gates}
    return chosen, {"gates": lam, "loss": np.stack(losses, axis=1)}


@register("greedy", SPARSITY, Param("rounds", 20, INTEGER, "pruning rounds"),
          attribution="gradient", family="pruning")  # fmt: skip
def greedy(model, x, target, sparsity, rounds=20):
    """Greedy Taylor pruning with the dead-unit tweak: its pathway gradient W^p (Khakzar et al.)."""
    return _pruned("greedy", _greedy, model, x, target, sparsity, {"rounds": rounds})


@register(
    "dgr", SPARSITY,
    Param("init", 1.0, NUMBER_OR_UNIFORM, "initial gate value, or 'uniform' for U[0, 1)"),
    Param("steps", 50, INTEGER, "optimization steps"),
    Param("lr", 0.05, NUMBER, "Adam learning rate"),
    Param("gamma", 1e-3, NUMBER, "weight of the l1 term on the gates"),
    SEED, attribution="gradient", family="pruning",
)  # fmt: skip
def dgr(model, x, target, sparsity, init=1.0, steps=50, lr=0.05, gamma=1e-3, seed=0):
    """Distillation Guided Routing gates learned per image: its pathway gradient W^p."""
    params = {"init": init, "steps": steps, "lr": lr, "gamma": gamma, "seed": seed}
    return _pruned("dgr", _dgr, model, x, target, sparsity, params)
