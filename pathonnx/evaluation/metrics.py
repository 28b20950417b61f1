"""Metrics: how faithful an attribution is, measured on the model itself.

Definitions (docs/ARCHITECTURE.md, Semantics):

- **Insertion / deletion** (RISE, Petsiuk et al. 2018): pixels ranked by the attribution summed
  over channels (ties: lower index first). Deletion replaces the top pixels, step by step, with a
  baseline (zeros of the model's input space unless told); insertion starts from a blurred input
  (Gaussian, kernel 11, σ 5, zero padding as RISE's code) and puts the top pixels back. The score
  is the softmax probability of the target; the AUC is the trapezoid rule over the fraction of
  pixels, in [0, 1]. Higher insertion and lower deletion are better. All steps of an image run
  batched: a few onnxruntime calls per curve.
- **LeRF / MoRF** (Samek et al. 2017, as in Khakzar et al. 2021): remove (set to the baseline)
  the least / most relevant k % of pixels and report ``|p − p'| / p``. Lower LeRF and higher
  MoRF are better.
- **MPRT sanity check** (Adebayo et al. 2018; Khakzar et al. 2021, App. C.1): re-initialize the
  parametric layers in cascade from the top (weights and biases drawn from N(0, 0.01), i.e.
  σ = 0.1), recompute the attribution for the same target, and compare with the original map:
  Spearman rank correlation of the maps and of their absolute values, and SSIM of the maps
  normalized to [-1, 1]. Low similarity is good: the explanation depends on the weights.
- **Pointing game** (Zhang et al. 2016): a hit when the map's maximum lies in the target
  object's mask, dilated by a tolerance (15 px at 224, scaled to the input). **Energy-based
  pointing game** (Wang et al. 2020, Score-CAM): the share of the map's positive mass inside the
  mask.
- **Pathway faithfulness**: the target's probability when the network runs restricted to the
  pathway (every unit outside it removed, a real forward pass) against the full network's.
- **GEN-CNP's metrics** (Lin et al., "On Model Explanations with Transferable Neural
  Pathways", 2023), with p the target's softmax probability of the full network and p^path
  that of the network restricted to the pathway (as above). The paper's text is not at hand;
  where its summary is silent we follow the Average Drop / Increase in Confidence of
  Grad-CAM++ (Chattopadhyay et al. 2018), applied to the pathway instead of a masked image:
  **mDC** = mean over samples of ``max(0, p − p^path) / p`` (lower is better); **mIC** = the
  share of samples with ``p^path > p`` (higher is better); **sparsity** = the share of all
  units (of all gates) a sample's pathway removes; **acIOU** = the mean pairwise IoU of the
  pathways (units kept, all gates) of same-class samples, averaged over classes (a class needs
  two samples); **transfer accuracy** = the accuracy, on held-out samples of a class, of the
  network restricted to the class pathway: the units that at least ``threshold`` of the class's
  other pathways keep (average firing, :mod:`pathonnx.methods.transfer`; leave-one-out).
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass

import numpy as np

from ..engine import Model, load, softmax
from ..errors import InputError
from ..graph import parametric_layers, randomized  # noqa: F401  (the cascade's pieces)
from ..methods.pathway import gate_masks
from ..methods.transfer import threshold_firing

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _spatial(x: np.ndarray) -> tuple[int, int, int, str]:
    """(C, H, W, layout) of a batch of images (N, C, H, W) or (N, H, W, C)."""
    if x.ndim != 4:
        raise InputError(f"pixel metrics need image inputs (N, C, H, W); got shape {x.shape}")
    if x.shape[1] in (1, 3) or x.shape[-1] not in (1, 3):
        return x.shape[1], x.shape[2], x.shape[3], "NCHW"
    return x.shape[3], x.shape[1], x.shape[2], "NHWC"


def pixel_map(attribution: np.ndarray) -> np.ndarray:
    """Attributions (N, *image) -> per-pixel relevance (N, H, W), summed over channels."""
    _, _, _, layout = _spatial(attribution)
    return attribution.sum(axis=1 if layout == "NCHW" else 3)


def pixel_order(attribution: np.ndarray) -> np.ndarray:
    """Pixels (flat H·W index) from most to least relevant, per sample; ties: lower index first."""
    relevance = pixel_map(attribution).reshape(len(attribution), -1)
    return np.argsort(-relevance, axis=1, kind="stable")


def _replace(x: np.ndarray, source: np.ndarray, pixels: np.ndarray, layout: str) -> np.ndarray:
    """``x`` (*image) with the listed flat pixels taken from ``source``, on every channel."""
    out = x.copy()
    if layout == "NCHW":
        c = x.shape[0]
        out.reshape(c, -1)[:, pixels] = source.reshape(c, -1)[:, pixels]
    else:
        c = x.shape[-1]
        out.reshape(-1, c)[pixels] = source.reshape(-1, c)[pixels]
    return out


def gaussian_blur(x: np.ndarray, size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's blur: a normalized Gaussian kernel per channel, zero padding, same size."""
    c, h, w, layout = _spatial(x)
    t = np.arange(size) - size // 2
    k = np.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()
    planes = x if layout == "NCHW" else np.moveaxis(x, -1, 1)
    pad = size // 2
    padded = np.pad(planes, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = sum(k[i] * padded[:, :, i : i + h, :] for i in range(size))
    both = sum(k[i] * rows[:, :, :, i : i + w] for i in range(size))
    both = both.astype(np.float32)
    return both if layout == "NCHW" else np.moveaxis(both, 1, -1)


@dataclass(frozen=True)
class Curve:
    """A score curve over the fraction of pixels changed: ``fractions`` and ``scores`` (N, S),
    and the area under it per sample (N,)."""

    fractions: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        f = self.fractions
        return ((self.scores[:, 1:] + self.scores[:, :-1]) * np.diff(f)[None] / 2).sum(axis=1)


def _counts(pixels: int, steps: int | None) -> np.ndarray:
    """Pixels changed at each step: RISE's ``ceil(HW / step)`` steps of ``step`` pixels, from 0."""
    steps = int(steps) if steps is not None else None
    if steps is not None and steps < 1:
        raise InputError(f"steps {steps} must be a positive number")
    n_steps = steps or math.isqrt(pixels)
    step = math.ceil(pixels / n_steps)
    return np.minimum(np.arange(n_steps + 1) * step, pixels)


def _scores(model: Model, images: np.ndarray, target: np.ndarray, batch: int) -> np.ndarray:
    return softmax(model.logits(images, batch))[np.arange(len(images)), target]


def deletion(model, x, attribution, target, steps=None, baseline=None, batch=64) -> Curve:
    """The deletion curve: top pixels replaced by ``baseline`` (default zeros), step by step."""
    return _curve(model, x, attribution, target, steps, batch, start=x, end=baseline)


def insertion(model, x, attribution, target, steps=None, blur=(11, 5.0), batch=64) -> Curve:
    """The insertion curve: from the blurred input, top pixels put back step by step."""
    return _curve(model, x, attribution, target, steps, batch, start=None, end=x, blur=blur)


def _curve(model, x, attribution, target, steps, batch, start, end, blur=None) -> Curve:
    x = np.asarray(x, np.float32)
    _, h, w, layout = _spatial(x)
    target = model.check_target(target, len(x))
    counts = _counts(h * w, steps)
    order = pixel_order(np.asarray(attribution))
    if start is None:  # insertion: blurred input, pixels come from x
        start = gaussian_blur(x, *blur)
    elif end is None:  # deletion: pixels go to zeros
        end = np.zeros_like(x)
    end = np.broadcast_to(np.asarray(end, np.float32), x.shape)
    scores = np.empty((len(x), len(counts)))
    for i in range(len(x)):
        images = np.empty((len(counts), *x.shape[1:]), np.float32)
        current = start[i].copy()
        done = 0
        for j, count in enumerate(counts):  # each step adds to the last: no full re-copy
            current = _replace(current, end[i], order[i, done:count], layout)
            done = count
            images[j] = current
        scores[i] = _scores(model, images, np.full(len(counts), target[i]), batch)
    return Curve(counts / (h * w), scores)


def remove_fraction(model, x, attribution, target, fractions=FRACTIONS, most=False,
                    baseline=None, batch=64) -> np.ndarray:  # fmt: skip
    """``|p − p'| / p`` after removing the least (``most=False``, LeRF) or most relevant share
    of pixels, per sample and fraction: (N, F)."""
    x = np.asarray(x, np.float32)
    _, h, w, layout = _spatial(x)
    target = model.check_target(target, len(x))
    order = pixel_order(np.asarray(attribution))
    if not most:
        order = order[:, ::-1]  # least relevant first; ties keep the higher index first
    base = np.zeros_like(x) if baseline is None else np.broadcast_to(baseline, x.shape)
    out = np.empty((len(x), len(fractions)))
    for i in range(len(x)):
        images = np.stack(
            [x[i]] + [
                _replace(x[i], base[i], order[i, : int(round(f * h * w))], layout)
                for f in fractions
            ]
        )  # fmt: skip
        p = _scores(model, images, np.full(len(images), target[i]), batch)
        out[i] = np.abs(p[0] - p[1:]) / max(p[0], 1e-12)
    return out


# -- localization -------------------------------------------------------------------------------


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                y, x = ys + dy, xs + dx
                keep = (y >= 0) & (y < h) & (x >= 0) & (x < w)
                out[y[keep], x[keep]] = True
    return out


def pointing_game(attribution: np.ndarray, masks: np.ndarray, tolerance: int | None = None):
    """Per sample: 1.0 when the map's maximum lies in the (dilated) mask, else 0.0; NaN for an
    empty mask. ``tolerance`` in pixels defaults to 15 at 224, scaled to the input."""
    relevance = pixel_map(np.asarray(attribution))
    h = relevance.shape[1]
    radius = round(15 * h / 224) if tolerance is None else int(tolerance)
    out = np.full(len(relevance), np.nan)
    for i, (r, m) in enumerate(zip(relevance, masks)):
        if m.any():
            y, x = np.unravel_index(np.argmax(r), r.shape)  # first maximum
            out[i] = float(_dilate(m, radius)[y, x])
    return out


def energy_pointing(attribution: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per sample: positive relevance inside the mask over all positive relevance (NaN when the
    mask is empty or nothing is positive)."""
    relevance = np.maximum(pixel_map(np.asarray(attribution)), 0)
    out = np.full(len(relevance), np.nan)
    for i, (r, m) in enumerate(zip(relevance, masks)):
        total = r.sum()
        if m.any() and total > 0:
            out[i] = r[m].sum() / total
    return out


# -- sanity: model parameter randomization -------------------------------------------------------


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays (average ranks for ties)."""
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 2.0, window: int = 7) -> float:
    """Mean structural similarity (Wang et al. 2004) of two 2-D maps with a uniform window, the
    constants K1 = 0.01 and K2 = 0.03, and sample covariances (scikit-image's defaults)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    window = min(window, *a.shape) // 2 * 2 + 1 if min(a.shape) < window else window
    n = window * window

    def mean(v):
        c = np.cumsum(np.cumsum(np.pad(v, ((1, 0), (1, 0))), 0), 1)
        return (c[window:, window:] - c[:-window, window:] - c[window:, :-window]
                + c[:-window, :-window]) / n  # fmt: skip

    ua, ub = mean(a), mean(b)
    cov = n / (n - 1)
    vaa, vbb = cov * (mean(a * a) - ua * ua), cov * (mean(b * b) - ub * ub)
    vab = cov * (mean(a * b) - ua * ub)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (vaa + vbb + c2))
    return float(s.mean())


def normalized(relevance: np.ndarray) -> np.ndarray:
    """A map scaled to [-1, 1] by its largest magnitude (zeros stay zeros)."""
    top = np.abs(relevance).max()
    return relevance / top if top > 0 else relevance


def similarity(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Spearman (signed and of |·|) and SSIM of two attributions of one input (*image)."""
    a, b = pixel_map(before[None])[0], pixel_map(after[None])[0]
    return {
        "spearman": spearman(a, b),
        "spearman_abs": spearman(np.abs(a), np.abs(b)),
        "ssim": ssim(normalized(a), normalized(b)),
    }


def cascade_models(model: Model, seed: int = 0, layers: int | None = None) -> list[Model]:
    """The model with its top 1, 2, ... weighted layers re-initialized (see
    :func:`pathonnx.graph.randomized`), loaded like the original (same input shape and device)."""
    return list(iter_cascade(model, seed, layers))


def cascade_size(model: Model, layers: int | None = None) -> int:
    """How many models the MPRT cascade of ``model`` has."""
    count = len(model.graph.parametric_layers())
    return count if layers is None else min(int(layers), count)


def iter_cascade(model: Model, seed: int = 0, layers: int | None = None):
    """:func:`cascade_models` one model at a time, each loaded when asked for: a caller that
    keeps none holds one randomized model (its sessions and new weights) at a time."""
    readout = model.readout_of
    for j in range(1, cascade_size(model, layers) + 1):
        m = load(model.graph.randomized(j, seed), model.input_shape, model.device,
                 model.precision)  # fmt: skip
        if readout is not None:  # the same position or region of the dense output
            m = (
                m.readout(at=readout.at)
                if readout.at is not None
                else m.readout(mask=readout.weights)
            )
        yield m
        del m  # then collect it now: reference cycles would hold its sessions and weights
        gc.collect()  # until a collection that counts objects, not bytes, came by


# -- pathways ----------------------------------------------------------------------------------


def pathway_confidence(model: Model, x: np.ndarray, masks: dict, target) -> dict[str, np.ndarray]:
    """The target's probability with the network restricted to ``masks`` (units outside them
    removed, a real forward pass: gates above re-decide) and without, and the change."""
    target = model.check_target(target, len(x))
    rows = np.arange(len(x))
    full = softmax(model.logits(x))[rows, target]
    scales = {name: np.asarray(m, np.float32) for name, m in masks.items()}
    restricted = softmax(model.engine.scaled_forward(x, scales).logits)[rows, target]
    return {"full": full, "pathway": restricted, "change": restricted - full}


def confidence_drop_increase(full, restricted) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, from the target's probability ``full`` (p, of the whole network) and
    ``restricted`` (p^path, on the pathway alone): the drop ``max(0, p − p^path) / p`` and the
    increase ``[p^path > p]`` (1.0 or 0.0). Their means over samples are mDC and mIC (Lin et al.
    2023, after Grad-CAM++'s Average Drop / Increase in Confidence)."""
    p = np.asarray(full, np.float64)
    q = np.asarray(restricted, np.float64)
    drop = np.maximum(0.0, p - q) / np.maximum(p, 1e-12)
    return drop, (q > p).astype(np.float64)


#: Set bits of every byte value, for numpy versions without ``bitwise_count``.
_BITS = np.array([bin(v).count("1") for v in range(256)], np.uint8)


def popcount(packed: np.ndarray) -> np.ndarray:
    """Set bits of packed units (``np.packbits`` of bool units), summed over the last axis."""
    packed = np.asarray(packed, np.uint8)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(packed).sum(axis=-1, dtype=np.int64)
    return _BITS[packed].sum(axis=-1, dtype=np.int64)


def iou_matrix(packed: np.ndarray) -> np.ndarray:
    """(n, n) IoU of n pathways given as packed units (n, ⌈U/8⌉) uint8; two empty pathways
    have IoU 0, as :func:`pathonnx.jaccard` says."""
    packed = np.asarray(packed, np.uint8)
    sizes = popcount(packed)
    inter = np.stack([popcount(row[None] & packed) for row in packed]) if len(packed) else (
        np.zeros((0, 0), np.int64))  # fmt: skip
    union = sizes[:, None] + sizes[None, :] - inter
    return inter / np.maximum(union, 1)


def pairwise_iou(units: np.ndarray) -> float:
    """The mean IoU over all pairs of n ≥ 2 pathways ``units`` (n, U) bool (NaN for fewer)."""
    units = np.asarray(units, bool)
    n = len(units)
    if n < 2:
        return float("nan")
    iou = iou_matrix(np.packbits(units, axis=1))
    return float((iou.sum() - np.trace(iou)) / (n * (n - 1)))


def ac_iou(units: np.ndarray, classes) -> float:
    """acIOU: the mean pairwise IoU of the pathways ``units`` (N, U) bool of same-class
    samples (``classes`` (N,)), averaged over the classes that have two samples or more (NaN
    when none has)."""
    classes = np.asarray(classes)
    values = [pairwise_iou(units[classes == c]) for c in np.unique(classes)]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class ClassScores:
    """Per sample of a set: ``iou``, the mean IoU of its pathway with those of the other
    samples of its class (the class's mean of it is the class's mean pairwise IoU); and
    ``transfer``, 1.0 when the network restricted to the class pathway of the *other* samples
    of its class predicts its class, else 0.0. Both NaN for a sample alone in its class."""

    iou: np.ndarray
    transfer: np.ndarray


def class_scores(model: Model, x: np.ndarray, packed: np.ndarray, classes, threshold: float = 0.5,
                 batch: int = 16) -> ClassScores:  # fmt: skip
    """:class:`ClassScores` of the samples ``x`` (N, *input_shape), their pathways ``packed``
    (N, ⌈U/8⌉) uint8 (``np.packbits`` of :func:`~pathonnx.methods.pathway.kept_units`) and
    their ``classes`` (N,).

    Transfer is leave-one-out: sample i of class c (with n_c ≥ 2 samples) is held out, c's
    pathway is aggregated from the other n_c − 1 by average firing (units kept by at least
    ``threshold`` of them), and the network restricted to it (units outside it removed, a real
    forward pass, as :func:`pathway_confidence`) runs on x_i; a hit when its argmax is c. Memory:
    the packed units, and per batch of held-out samples their masks as float32 scales."""
    packed = np.asarray(packed, np.uint8)
    classes = np.asarray(classes, np.int64)
    n, units = len(x), sum(g.units for g in model.gates)
    iou, transfer = np.full(n, np.nan), np.full(n, np.nan)
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        m = len(members)
        if m < 2:
            continue
        matrix = iou_matrix(packed[members])
        iou[members] = (matrix.sum(axis=1) - np.diag(matrix)) / (m - 1)
        counts = np.zeros(units, np.int64)
        for i in members:
            counts += np.unpackbits(packed[i], count=units)
        for lo in range(0, m, max(1, int(batch))):
            rows = members[lo : lo + max(1, int(batch))]
            own = np.unpackbits(packed[rows], axis=1, count=units).astype(np.int64)
            kept = threshold_firing((counts[None] - own) / (m - 1), threshold)
            scales = {k: v.astype(np.float32) for k, v in gate_masks(model.gates, kept).items()}
            logits = model.engine.scaled_forward(x[rows], scales).logits
            transfer[rows] = (np.asarray(logits).argmax(axis=1) == c).astype(np.float64)
    return ClassScores(iou, transfer)
