"""The Pathway value: per-gate masks, their target, their linear model and statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine import Linear


@dataclass(frozen=True)
class Pathway:
    """A pathway: one boolean mask per gate it restricts, ``(N, *gate.shape)``, its target (N,)
    and its linear model ``linear`` (``W^p`` shaped like x, ``b^p`` (N,)). ``stats`` holds the
    units kept per gate (N,) and the share of kept units that were dead (inactive) at x, and
    for decomposed paths the top gate's unit each path starts from (``seed_unit``, (N,))."""

    masks: dict[str, np.ndarray]
    target: np.ndarray
    linear: Linear
    method: str = "pathwise"
    params: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def attribution(self, x: np.ndarray) -> np.ndarray:
        """``W^p ⊙ x``, shaped like x."""
        return self.linear.attribution(x)

    def take(self, rows) -> Pathway:
        """The pathway restricted to some samples of its batch (an index or a slice)."""
        linear = self.linear
        pick = Linear(linear.W[rows], linear.b[rows], linear.target[rows], linear.logits[rows])
        stats = {
            key: {g: v[rows] for g, v in value.items()} if isinstance(value, dict) else value[rows]
            for key, value in self.stats.items()
        }
        masks = {g: m[rows] for g, m in self.masks.items()}
        return Pathway(masks, self.target[rows], pick, self.method, self.params, stats)


def network_wide_start(model, x, target):
    """The forward pass at x and the targets (default: the prediction) of the network-wide
    pathway methods."""
    fwd = model.forward(x)
    return fwd, fwd.targets(target)


def pathway_from_counts(model, fwd, target, masks: dict, kept: dict, dead: dict, method: str,
                        params: dict) -> Pathway:  # fmt: skip
    """The Pathway of per-gate masks chosen on the device (gate name -> (N, *gate.shape)), with
    the units kept and the inactive ones among them counted there: its linear model at x, then
    the masks as numpy."""
    linear = model.linearize(fwd.x, target, masks, fwd=fwd)
    host = {name: model.engine.dev.host(mask) for name, mask in masks.items()}
    share = {name: dead[name] / np.maximum(kept[name], 1) for name in kept}
    stats = {"units_kept": kept, "dead_share": share}
    return Pathway(host, target, linear, method, params, stats)


def jaccard(a: Pathway, b: Pathway) -> np.ndarray:
    """Per-sample Jaccard overlap of two pathways' kept units (gates without a mask count whole)."""
    names = sorted(set(a.masks) | set(b.masks))
    inter, union = 0, 0
    for name in names:
        ma, mb = a.masks.get(name), b.masks.get(name)
        shape = (ma if ma is not None else mb).shape
        ma = np.ones(shape, bool) if ma is None else ma
        mb = np.ones(shape, bool) if mb is None else mb
        inter = inter + (ma & mb).reshape(len(ma), -1).sum(1)
        union = union + (ma | mb).reshape(len(ma), -1).sum(1)
    return inter / np.maximum(union, 1)


def kept_units(gates, masks: dict, n: int) -> np.ndarray:
    """(N, U) bool: every unit of ``gates`` (in their order, each gate's units in C order, U
    units in all), True where the pathway ``masks`` keeps it; a gate without a mask is kept
    whole, as everywhere (:func:`jaccard`)."""
    parts = []
    for gate in gates:
        mask = masks.get(gate.name)
        if mask is None:
            parts.append(np.ones((n, gate.units), bool))
        else:
            parts.append(np.broadcast_to(np.asarray(mask, bool), (n, *gate.shape)).reshape(n, -1))
    return np.concatenate(parts, axis=1)


def gate_masks(gates, units: np.ndarray) -> dict[str, np.ndarray]:
    """The inverse of :func:`kept_units`: (N, U) bool -> gate name -> (N, *gate.shape)."""
    out, lo = {}, 0
    for gate in gates:
        out[gate.name] = units[:, lo : lo + gate.units].reshape(len(units), *gate.shape)
        lo += gate.units
    return out
