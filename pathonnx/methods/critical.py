"""Critical pathways (Khakzar et al., "Neural Response Interpretation through the Lens of
Critical Pathways", CVPR 2021): NeuronMCT and NeuronIntGrad.

Every unit of every gate gets a contribution score, all units of the network are ranked
together (not layer by layer), and the units above the ``sparsity`` percentile are kept. The
pathway's attribution is its gradient ``W^p`` (the pathway gradient).

- NeuronMCT: ``c = |a ⊙ ∂y/∂a|``, y the target logit; one backward pass.
- NeuronIntGrad: for each gate l, ``c = |a^l ⊙ (1/m) Σ_k ∂y(α_k a^l)/∂a^l|``, the network above
  l re-evaluated on the scaled activations ``α_k a^l``, α on a midpoint grid of m steps.
"""

from __future__ import annotations

import numpy as np

from ..engine import Critical, gate_cotangents, network_top, one_hot, percentile_rank
from ..graph.choice import accumulate_graph, intgrad_score_graph, repeat_graph
from ..progress import step
from .pathway import Pathway, network_wide_start, pathway_from_counts
from .registry import INTEGER, SPARSITY, Param, Range, family, method_params, register


def critical_pathway(
    model, x, target=None, method: str = "mct", sparsity: float = 0.9, steps: int = 50
) -> Pathway:
    """A critical pathway (Khakzar et al. 2021): every unit of every gate scored, ranked
    network-wide, and the units above the ``sparsity`` percentile kept.

    ``method="mct"`` (NeuronMCT): ``c = |a ⊙ ∂y/∂a|``, y the target logit, one backward pass.
    ``method="intgrad"`` (NeuronIntGrad): ``c = |a^l ⊙ (1/m) Σ_k ∂y(α_k a^l)/∂a^l|``, the
    network above each gate l re-evaluated on scaled activations, α on a midpoint grid of
    ``steps``. The pathway's attribution is its gradient ``W^p`` (``pathway.linear.W``).
    """
    entry = family("critical", method)
    given = {"sparsity": sparsity, "steps": steps}
    params = {k: v for k, v in given.items() if k in entry.defaults}
    return entry.fn(model, x, target, **method_params(method, params, model))


def _keep_top(model, fwd, target, method: str, sparsity: float, **scored) -> Pathway:
    """The pathway of the units scoring above the network-wide ``sparsity`` percentile, ranked
    on the device (:func:`~pathonnx.engine.network_top`); ``scored``: the cotangents at the
    gates (the score is |h ⊙ g|), or the scores."""
    # Khakzar et al. rank all neurons of the network together, not layer by layer.
    found = network_top(model.engine, fwd, model.gates, sparsity, **scored)
    return pathway_from_counts(model, fwd, target, *found, method, {"sparsity": float(sparsity)})


def _export_mct(model, sparsity):
    """The exported graph ranks every unit in the graph: its ``k`` is fixed by the model."""
    units = sum(g.units for g in model.gates)
    return Critical(float(sparsity), percentile_rank(units, sparsity))


@register("mct", SPARSITY, attribution="gradient", family="critical", export=_export_mct)
def mct(model, x, target, sparsity):
    """NeuronMCT critical pathway: its pathway gradient W^p (Khakzar et al. 2021)."""
    fwd, target = network_wide_start(model, x, target)
    grads = gate_cotangents(model, fwd, target, keep=True)
    return _keep_top(model, fwd, target, "mct", sparsity, cotangents=grads)


@register("intgrad", SPARSITY, Param("steps", 50, INTEGER, "integration steps", Range(1, 10_000)),
          attribution="gradient", family="critical")  # fmt: skip
def intgrad(model, x, target, sparsity, steps):
    """NeuronIntGrad critical pathway: its pathway gradient W^p (Khakzar et al. 2021)."""
    fwd, target = network_wide_start(model, x, target)
    scores = _intgrad_scores(model, fwd.x, target, int(steps), batch=16)
    return _keep_top(model, fwd, target, "intgrad", sparsity, scores=scores)


def _intgrad_scores(model, x: np.ndarray, target: np.ndarray, steps: int, batch: int):
    """NeuronIntGrad scores, gate by gate: |a ⊙ (1/m) Σ_k ∂y(α_k a)/∂a| with the network above
    each gate re-evaluated on the scaled activations (α on a midpoint grid of m steps).

    Everything stays on the device: the live tensors, their scaled copies (sample-major: row
    n·m + j), the suffix's pattern, the cotangents and their float64 sum (the small graphs of
    :mod:`pathonnx.graph.choice`). Returns gate name -> float32 scores, as OrtValues."""
    engine, k = model.engine, model.num_outputs
    run = engine.run_small
    cuts = engine.gate_cuts()
    crossing = {c: model.graph.live(c) for c in cuts}
    values = engine.values(x, [name for names in crossing.values() for name in names])
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)
    scores = {}
    for done, (gate, cut) in enumerate(zip(model.gates, cuts)):
        step(f"intgrad ({steps} steps): gates", done, len(cuts))
        total = None
        for lo in range(0, steps, batch):
            a = alphas[lo : lo + batch]
            feeds = {}
            for name in crossing[cut]:
                scaled = name == gate.name
                (feeds[name],) = run(("repeat", scaled), lambda s=scaled: repeat_graph(s),
                                     {"v": values.value(name), "alpha": a}, ["out"])  # fmt: skip
            fwd = engine.suffix_forward(cut, feeds)
            seeds = one_hot(np.repeat(target, len(a)), k)
            cotangents, _ = engine.stage(fwd, {"seed": seeds}, None, cut, single_row=True,
                                         keep=True)  # fmt: skip
            sums = {"ct": cotangents[f"ct:{gate.name}"], "v": values.value(gate.name)}
            first = total is None
            if not first:
                sums["total0"] = total
            (total,) = run(("accumulate", first), lambda f=first: accumulate_graph(f), sums,
                           ["total"])  # fmt: skip
        feeds = {"v": values.value(gate.name), "total": total, "steps": np.array([steps], float)}
        (scores[gate.name],) = run(("intgrad_score",), intgrad_score_graph, feeds, ["score"])
    step(f"intgrad ({steps} steps): gates", len(cuts), len(cuts))
    return scores
