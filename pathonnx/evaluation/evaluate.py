"""Evaluation: every method × every metric on a set of inputs, resumable.

:func:`evaluate` attributes each input with each method (batched), measures it with
:mod:`pathonnx.metrics`, caches one JSON record per (input, method) under ``cache/`` so that an
interrupted run continues where it stopped, and summarizes each metric per method as the mean
and a 95 % confidence half-width ``1.96 · s / √n`` (normal approximation).

**Metrics over a set of inputs** (the ``cnp`` group: acIOU and transfer accuracy) are not
properties of one input, so they do not live in the cache. They come in two passes. The first
pass, per input as every other metric, measures what one input has on its own (mIC's
indicator, mDC's drop, sparsity) and keeps the input's pathway: the units it keeps, packed 8 to
a byte, cached beside its record as ``<key>.units.npy``. After every input is measured, the
second pass reads those pathways for the whole set, groups them by class (the target: the
model's prediction, as every metric here takes it) and writes into each record its share of
the set metrics: ``class_iou``, the mean IoU of its pathway with the others of its class, and
``transfer_accuracy``, 1 or 0 as the network restricted to the class pathway of the *other*
inputs of its class (leave-one-out) predicts its class. Those two are recomputed on every run,
from the cached pathways, so a record never holds a value of another set. The summary then
reads: transfer accuracy = the mean of the records' values (the accuracy over all held-out
inputs; n = inputs in classes of two or more); acIOU = the mean over classes of the class's
mean ``class_iou`` (= its mean pairwise IoU), with its CI over classes (n = classes). Memory:
one packed pathway (U/8 bytes) per input and pathway method. Method ``class_pathway`` gives
every input of a class the same pathway (its file's): its acIOU is 1 by construction, and its
transfer accuracy is that of the file's class pathways on these inputs (held out when the file
was built on other data).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine import Model
from ..errors import InputError
from ..images import Sample
from ..io import atomic_write_bytes, json_text, read_text
from ..methods import METHODS, method_params
from ..methods.pathway import kept_units
from ..methods.registry import INTEGER, NUMBER, Param, Range, at_least
from ..methods.transfer import THRESHOLD
from . import metrics as M

#: Metric name -> (what it reports, whether higher is better).
METRICS = {
    "insertion": ("insertion AUC (probability of the target)", True),
    "deletion": ("deletion AUC", False),
    "lerf": ("LeRF: mean |p - p'| / p, least relevant removed", False),
    "morf": ("MoRF: mean |p - p'| / p, most relevant removed", True),
    "mprt_spearman": ("MPRT: mean Spearman over the cascade (best: nearest 0)", False),
    "mprt_spearman_abs": ("MPRT: mean Spearman of |map| over the cascade", False),
    "mprt_ssim": ("MPRT: mean SSIM over the cascade", False),
    "pointing": ("pointing game hit rate", True),
    "energy": ("energy-based pointing game", True),
    "pathway_probability": ("target probability on the pathway alone", True),
    "pathway_change": ("that minus the full network's", True),
    # GEN-CNP's metrics (Lin et al. 2023; definitions in pathonnx.evaluation.metrics)
    "mIC": ("mIC: share of inputs whose target probability rises on the pathway alone", True),
    "mDC": ("mDC: mean max(0, p - p_path) / p, confidence lost on the pathway alone", False),
    "sparsity": ("share of all units the pathway removes (no better direction)", None),
    "acIOU": ("acIOU: mean pairwise IoU of same-class pathways, averaged over classes", True),
    "transfer_accuracy": ("accuracy on the class pathway of the other inputs of the class", True),
}
GROUPS = {  # what --metrics names, and the table columns each gives
    "insertion": ["insertion"],
    "deletion": ["deletion"],
    "lerf": ["lerf"],
    "morf": ["morf"],
    "mprt": ["mprt_spearman", "mprt_spearman_abs", "mprt_ssim"],
    "pointing": ["pointing"],
    "energy": ["energy"],
    "pathway": ["pathway_probability", "pathway_change"],
    "cnp": ["mIC", "mDC", "sparsity", "acIOU", "transfer_accuracy"],
}
#: What --help says of the groups whose name does not say it.
GROUP_HELP = {"cnp": "GEN-CNP's mIC, mDC, sparsity, acIOU, transfer accuracy; pathway methods"}


def _within_pixels(model: Model, steps: int) -> str | None:
    """Why ``steps`` insertion/deletion steps do not fit ``model``'s images (None if they do):
    more steps than pixels would only repeat points of the curve."""
    shape = (1, *model.input_shape)
    if len(shape) != 4:
        return None  # not images: the pixel metrics refuse the inputs themselves
    _, h, w, _ = M._spatial(np.broadcast_to(np.float32(0), shape))
    return None if steps <= h * w else f"must be <= {h * w}, the pixels of an input (H·W)"


#: The run's own settings, declared like method parameters (kind, range, limits that depend
#: on the model): :class:`Settings` checks them, and `pathonnx evaluate`'s --steps,
#: --mprt-layers, --seed and --batch come from them.
SETTINGS = (
    Param("steps", None, INTEGER, "insertion/deletion steps (default √(H·W))", at_least(1),
          fits=_within_pixels),
    Param("mprt_layers", None, INTEGER,
          "MPRT: randomize only the top N weighted layers (default all)", at_least(1)),
    Param("seed", 0, INTEGER, "seed of the MPRT re-initialization", at_least(0)),
    Param("batch", 64, INTEGER, "inputs per onnxruntime call in the metrics", at_least(1)),
    Param("class_threshold", THRESHOLD, NUMBER,
          "for cnp's transfer accuracy: the share of a class's other pathways that must keep "
          "a unit",
          Range(0, 1, lo_open=True)),
)  # fmt: skip


@dataclass
class Settings:
    """What a run measures; part of every cache key. The values of :data:`SETTINGS` are
    checked when it is made (InputError)."""

    steps: int | None = None
    fractions: tuple[float, ...] = M.FRACTIONS
    seed: int = 0
    mprt_layers: int | None = None
    batch: int = 64
    class_threshold: float = THRESHOLD
    params: dict = field(default_factory=dict)  # per method

    def __post_init__(self):
        for param in SETTINGS:
            setattr(self, param.name, param.check(getattr(self, param.name)))

    def check_model(self, model: Model) -> None:
        """Raise InputError where a setting does not fit ``model``."""
        for param in SETTINGS:
            param.check_model(model, getattr(self, param.name))


@dataclass
class Results:
    """Per-input records (one dict per input and method) and the summary per method/metric."""

    records: list[dict]
    methods: list[str]
    columns: list[str]

    def summary(self) -> dict[str, dict[str, dict]]:
        """Per method and column: the mean, its 95 % CI half-width and n. acIOU is over
        classes (the mean of each class's mean ``class_iou``), every other column over
        inputs."""
        out = {}
        for method in self.methods:
            rows = [r for r in self.records if r["method"] == method]
            out[method] = {}
            for column in self.columns:
                if column == "acIOU":
                    values = _class_means(rows, "class_iou")
                else:
                    values = np.array([_number(r.get(column)) for r in rows], np.float64)
                out[method][column] = _mean_ci(values[np.isfinite(values)])
        return out

    def curves(self, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Mean ``name`` curve ("insertion" or "deletion") per method: (fractions, scores)."""
        out = {}
        for method in self.methods:
            rows = [r for r in self.records if r["method"] == method and f"{name}_curve" in r]
            if rows:
                scores = np.mean([r[f"{name}_curve"] for r in rows], axis=0)
                out[method] = (np.asarray(rows[0][f"{name}_fractions"]), scores)
        return out

    def winners(self) -> dict[str, str]:
        """The best method per column (by the mean, in the column's better direction)."""
        best, summary = {}, self.summary()
        for column in self.columns:
            higher = METRICS[column][1]
            if higher is None:  # sparsity: a trade-off, not a score
                continue
            signed = column == "mprt_spearman"  # a signed correlation: best near 0
            scored = [(abs(s[column]["mean"]) if signed else s[column]["mean"], m)
                      for m, s in summary.items() if s[column]["mean"] is not None]  # fmt: skip
            if scored:
                best[column] = (max if higher else min)(scored)[1]
        return best


def _number(value) -> float:
    """A record's value as a float: NaN where it is missing or undefined (None)."""
    return np.nan if value is None else float(value)


def _class_means(rows: list[dict], key: str) -> np.ndarray:
    """Per class (the records' target), the mean of ``key`` over its records that have one."""
    by_class: dict[int, list[float]] = {}
    for r in rows:
        value = _number(r.get(key))
        if np.isfinite(value):
            by_class.setdefault(r["target"], []).append(value)
    return np.array([np.mean(v) for _, v in sorted(by_class.items())], np.float64)


def _mean_ci(values: np.ndarray) -> dict:
    """The mean, the 95 % CI half-width ``1.96 · s / √n`` and n of ``values``; a mean of no
    values and a CI of fewer than two are undefined: None (null in reports)."""
    n = len(values)
    mean = float(values.mean()) if n else None
    half = float(1.96 * values.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    return {"mean": mean, "ci95": half, "n": n}


def _defined(value: float) -> float | None:
    """``value``, or None where a metric is undefined (NaN): the Spearman correlation or SSIM
    of a constant map, a pointing game without an object. Reports hold null, never NaN."""
    return float(value) if np.isfinite(value) else None


def columns_for(groups: list[str], methods: list[str], has_masks: bool) -> list[str]:
    cols = []
    for group in groups:
        if group in ("pointing", "energy") and not has_masks:
            continue
        if group in ("pathway", "cnp") and not any(METHODS[m].pathway for m in methods):
            continue
        cols += GROUPS[group]
    return cols


def target_masks(masks: dict, stem: str, label: str, shape: tuple[int, int]) -> np.ndarray:
    """The union of ``stem``'s object masks of class ``label`` (masks.npz layout of the samples:
    ``<stem>__obj<k>`` and ``<stem>__classes``), resized (nearest) to ``shape``; empty if none."""
    classes = masks.get(f"{stem}__classes")
    out = np.zeros(shape, bool)
    if classes is None:
        return out
    for k, name in enumerate(np.atleast_1d(classes)):
        mask = masks.get(f"{stem}__obj{k}")
        if str(name) == label and mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != shape:
                mask = np.asarray(Image.fromarray(mask).resize(shape[::-1], Image.NEAREST))
            out |= mask
    return out


def check_run(model: Model, methods: list[str], groups: list[str], settings: Settings) -> None:
    """What :func:`evaluate` checks before it measures anything: the metric ``groups``, each
    method's parameters (``settings.params``) and the settings, against ``model``."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(sorted(unknown))}; use {', '.join(GROUPS)}")
    for method in methods:
        method_params(method, settings.params.get(method, {}), model)
    settings.check_model(model)


def _refuse(token: str):
    """For json.loads: NaN and Infinity are not JSON (older versions wrote them)."""
    raise ValueError(f"{token} is not JSON")


def input_sha256(item: Sample) -> str:
    """The content hash of one input as the model sees it (its array's bytes)."""
    return hashlib.sha256(item.x.tobytes()).hexdigest()


def record_key(model_sha: str, item: Sample, method: str, settings: Settings, groups) -> str:
    """The content hash that names the record of ``item`` and ``method``: the model's
    identity, the input's source and array, the method's parameters and what is measured.
    An input already recorded under this key is not measured again (the serial cache's
    file names, the Parquet dataset's ``key`` column)."""
    blob = json.dumps(
        [model_sha, item.source, input_sha256(item), method,
         settings.params.get(method, {}), settings.steps, list(settings.fractions),
         settings.seed, settings.mprt_layers, sorted(groups)],
        default=str,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def evaluate(
    model: Model,
    loaded: list[Sample],
    methods: list[str],
    groups: list[str] | None = None,
    settings: Settings | None = None,
    masks: dict | None = None,
    labels: list[str] | None = None,
    cache: Path | None = None,
    progress=None,
) -> Results:
    """Measure ``methods`` on ``loaded`` inputs with the metric ``groups`` (default all).

    Targets are the model's predictions. ``masks``: object masks (see :func:`target_masks`) for
    the localization metrics. ``cache``: a folder for the per-(input, method) records; records
    already there are reused. ``progress(n)`` is called as inputs × methods complete. With the
    ``cnp`` group, the set metrics (acIOU, transfer accuracy) are computed after every input
    is measured, from each pathway method's pathways of the whole set (see the module).
    """
    settings = settings or Settings()
    groups = list(GROUPS) if groups is None else list(groups)
    check_run(model, methods, groups, settings)
    if not loaded:
        raise InputError("no inputs to evaluate")
    model.require_position()
    sha = model.identity
    run = Run(model, groups, settings, masks, labels or [str(i) for i in range(model.num_outputs)])
    records: dict[tuple[int, str], dict] = {}
    units: dict[tuple[int, str], np.ndarray] = {}  # packed pathways, for the set metrics
    keeps = {m: keeps_pathway(m, groups) for m in methods}
    size = pathway_bytes(model)
    todo: dict[str, list[int]] = {m: [] for m in methods}
    files: dict[tuple[int, str], Path] = {}  # the cache file of each (input, method)
    for i, item in enumerate(loaded):
        for method in methods:
            if cache is not None:
                key = record_key(sha, item, method, settings, groups)
                files[i, method] = cache / f"{key}.json"
            record = cached_record(files.get((i, method)), item, method)
            kept = _cached_units(files.get((i, method)), size) if keeps[method] else None
            if record is not None and (kept is not None or not keeps[method]):
                records[i, method] = record
                if kept is not None:
                    units[i, method] = kept
                if progress:
                    progress(1)
                continue
            todo[method].append(i)
    step = max(1, settings.batch // 4)
    for method, indices in todo.items():
        params = method_params(method, settings.params.get(method, {}))
        for lo in range(0, len(indices), step):
            chunk = indices[lo : lo + step]
            found, packed = run.measure([loaded[i] for i in chunk], method, params)
            for j, (i, record) in enumerate(zip(chunk, found)):
                records[i, method] = record
                if keeps[method]:
                    units[i, method] = packed[j]
                if cache is not None:
                    if keeps[method]:  # first: a record is never cached without its pathway
                        atomic_write_bytes(_units_path(files[i, method]), _npy(packed[j]))
                    atomic_write_bytes(files[i, method], json_text(record, None).encode())
            if progress:
                progress(len(chunk))
    return finish(model, loaded, methods, groups, settings, masks, records, units)


def keeps_pathway(method: str, groups) -> bool:
    """Whether ``method``'s records come with their packed pathway (a pathway method, with
    the ``cnp`` group: the set metrics need every input's pathway)."""
    return "cnp" in groups and METHODS[method].pathway is not None


def pathway_bytes(model: Model) -> int:
    """Bytes of one packed pathway of ``model``: ⌈U/8⌉, U its units per sample."""
    return -(-sum(g.units for g in model.gates) // 8)


def finish(model: Model, loaded: list[Sample], methods: list[str], groups: list[str],
           settings: Settings, masks: dict | None, records: dict,
           units: dict) -> Results:  # fmt: skip
    """:class:`Results` from every (input index, method) record (and, for the set metrics,
    packed pathway) of a run, however they were measured: the set metrics' second pass
    (see the module), then the records in input order."""
    for method in methods:
        if keeps_pathway(method, groups):
            _set_metrics(model, loaded, method, records, units, settings)
    ordered = [records[i, m] for i in range(len(loaded)) for m in methods]
    return Results(ordered, list(methods), columns_for(groups, methods, bool(masks)))


def _set_metrics(model: Model, loaded: list[Sample], method: str, records: dict, units: dict,
                 settings: Settings) -> None:  # fmt: skip
    """The second pass (see the module): each record of ``method`` gets ``class_iou`` and
    ``transfer_accuracy`` from the pathways of every input, grouped by target."""
    n = len(loaded)
    x = np.stack([item.x for item in loaded]).astype(np.float32)
    classes = np.array([records[i, method]["target"] for i in range(n)])
    packed = np.stack([units[i, method] for i in range(n)])
    found = M.class_scores(model, x, packed, classes, settings.class_threshold,
                           max(1, settings.batch // 4))  # fmt: skip
    for i in range(n):
        records[i, method]["class_iou"] = _defined(found.iou[i])
        records[i, method]["transfer_accuracy"] = _defined(found.transfer[i])


def _units_path(record: Path) -> Path:
    """Where the packed pathway of a cached record lies: beside it, ``<key>.units.npy``."""
    return record.with_suffix(".units.npy")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _cached_units(record: Path | None, size: int) -> np.ndarray | None:
    """The packed pathway cached beside ``record``: (``size``,) uint8, else None (missing,
    torn or of another model: the input is measured again)."""
    path = None if record is None else _units_path(record)
    if path is None or not path.is_file():
        return None
    try:  # the cache is the run's own output, not an input: read without noting it
        with open(path, "rb") as handle:
            array = np.load(handle, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return array if array.dtype == np.uint8 and array.shape == (size,) else None


def cached_record(path: Path | None, item: Sample, method: str) -> dict | None:
    """The record cached at ``path`` for ``item`` and ``method``; None when there is none or
    it is damaged (torn by an interrupted run, edited, not JSON, not a record of this input
    and method, a value that is not a number): such a record is measured again and
    replaced. A folder in its place is an error: it would not be replaced."""
    if path is None or not path.exists():
        return None
    if not path.is_file():
        raise InputError(f"{path} is in the cache's place for a record, but not a file; remove it")
    try:  # the cache is the run's own output, not an input: it may be written again
        text = read_text(path, "a cache record", note=False)
    except (ValueError, InputError):  # UnicodeDecodeError is a ValueError
        return None
    return parse_record(text, item, method)


def parse_record(text: str | None, item: Sample, method: str) -> dict | None:
    """The record in the JSON ``text`` (a cache file's, a Parquet row's), when it is a
    well-formed record of ``item`` and ``method``; else None (measured again)."""
    if not isinstance(text, str):
        return None
    try:
        record = json.loads(text, parse_constant=_refuse)  # NaN: written by an older version
    except ValueError:
        return None
    return record if _is_record(record, item, method) else None


def _is_record(record, item: Sample, method: str) -> bool:
    """Whether ``record`` is a well-formed record of ``method`` on ``item``: its keys name
    them, its metrics are numbers and its curves lists of numbers."""
    if not isinstance(record, dict) or record.get("input") != item.source:
        return False
    if record.get("method") != method or not isinstance(record.get("label"), str):
        return False
    if not isinstance(record.get("target"), int) or isinstance(record.get("target"), bool):
        return False
    for key, value in record.items():
        listed = key.endswith(("_curve", "_fractions", "_cascade")) or key == "fractions"
        if (key in METRICS and not _is_number(value)) or (listed and not _is_numbers(value)):
            return False
    for name in ("insertion", "deletion"):  # a curve as long as its fractions
        curve = record.get(f"{name}_curve")
        if curve is not None and len(curve) != len(record.get(f"{name}_fractions") or ()):
            return False
    return True


def _is_number(value) -> bool:
    """A number, or None: a metric undefined on this input (JSON's null)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _is_numbers(value) -> bool:
    return isinstance(value, list) and all(_is_number(v) for v in value)


#: Most bytes of weights (the model's, times the cascade's length) for which the MPRT cascade
#: is kept in memory between batches and methods.
CASCADE_KEPT = 1 << 30


@dataclass
class Run:
    """What every batch of one run shares: the model, what is measured, the object masks and
    the class names. :meth:`measure` is the batch function, (model, batch) → records, of
    both the serial :func:`evaluate` and a Ray run (:mod:`pathonnx.distributed`), where each
    worker holds its own Run on its own copy of the model."""

    model: Model
    groups: list[str]
    settings: Settings
    masks: dict | None
    names: list[str]
    _cascade: list | None = None

    def cascade(self):
        """The MPRT cascade of randomized models. Kept after first use when its weights are
        small (below :data:`CASCADE_KEPT` bytes in all); otherwise loaded again each time,
        one model at a time: a 54-layer cascade of ResNet-50 held at once took over 18 GB."""
        if self._cascade is not None:
            return self._cascade
        seed, layers = self.settings.seed, self.settings.mprt_layers
        count = M.cascade_size(self.model, layers)
        if self.model.graph.weights.nbytes * count > CASCADE_KEPT:
            return M.iter_cascade(self.model, seed, layers)
        self._cascade = M.cascade_models(self.model, seed, layers)
        return self._cascade

    def measure(self, items: list[Sample], method: str,
                params: dict) -> tuple[list[dict], np.ndarray | None]:  # fmt: skip
        """One record per input of ``items`` (a batch): ``method``'s attribution (with
        ``params``, completed by :func:`~pathonnx.methods.method_params`) measured with
        every metric group;
        and for a pathway method with the ``cnp`` group, the pathways as packed units
        (N, ⌈U/8⌉) uint8 (``np.packbits`` of :func:`kept_units`), else None."""
        model, groups, settings, masks = self.model, self.groups, self.settings, self.masks
        x = np.stack([item.x for item in items]).astype(np.float32)
        n = len(x)
        target = model.logits(x).argmax(axis=1)  # the prediction
        attribution, pathway = METHODS[method].with_pathway(model, x, target, **params)
        out = [
            {"input": item.source, "method": method, "target": int(t), "label": self.names[int(t)]}
            for item, t in zip(items, target)
        ]
        batch = settings.batch
        if "insertion" in groups:
            curve = M.insertion(model, x, attribution, target, settings.steps, batch=batch)
            for r, auc, s in zip(out, curve.auc, curve.scores):
                r.update(insertion=float(auc), insertion_curve=s.tolist(),
                         insertion_fractions=curve.fractions.tolist())  # fmt: skip
        if "deletion" in groups:
            curve = M.deletion(model, x, attribution, target, settings.steps, batch=batch)
            for r, auc, s in zip(out, curve.auc, curve.scores):
                r.update(deletion=float(auc), deletion_curve=s.tolist(),
                         deletion_fractions=curve.fractions.tolist())  # fmt: skip
        for name, most in (("lerf", False), ("morf", True)):
            if name in groups:
                change = M.remove_fraction(model, x, attribution, target, settings.fractions, most,
                                           batch=batch)  # fmt: skip
                for r, c in zip(out, change):
                    r.update({name: float(c.mean()), f"{name}_curve": c.tolist(),
                              "fractions": list(settings.fractions)})  # fmt: skip
        if "mprt" in groups:
            sims = [[] for _ in range(n)]
            for randomized in self.cascade():
                again = METHODS[method].run(randomized, x, target, **params)
                del randomized  # freed before the next model loads (M.iter_cascade)
                for i in range(n):
                    sims[i].append(M.similarity(attribution[i], again[i]))
            for r, layer_sims in zip(out, sims):
                for key in ("spearman", "spearman_abs", "ssim"):
                    series = np.array([s[key] for s in layer_sims], np.float64)
                    found = series[np.isfinite(series)]
                    r[f"mprt_{key}"] = float(found.mean()) if len(found) else None
                    r[f"mprt_{key}_cascade"] = [_defined(s) for s in series]
        if masks and ("pointing" in groups or "energy" in groups):
            _, h, w, _ = M._spatial(x)
            stems = [Path(item.source.split("[")[0]).stem for item in items]
            object_masks = np.stack([target_masks(masks, s, r["label"], (h, w))
                                     for s, r in zip(stems, out)])  # fmt: skip
            if "pointing" in groups:
                for r, v in zip(out, M.pointing_game(attribution, object_masks)):
                    r["pointing"] = _defined(v)
            if "energy" in groups:
                for r, v in zip(out, M.energy_pointing(attribution, object_masks)):
                    r["energy"] = _defined(v)
        packed = None
        if pathway is not None and ("pathway" in groups or "cnp" in groups):
            conf = M.pathway_confidence(model, x, pathway.masks, target)
            if "pathway" in groups:
                for r, p, c in zip(out, conf["pathway"], conf["change"]):
                    r.update(pathway_probability=float(p), pathway_change=float(c))
            if "cnp" in groups:
                drop, rise = M.confidence_drop_increase(conf["full"], conf["pathway"])
                kept = kept_units(model.gates, pathway.masks, n)
                for r, d, u, k in zip(out, drop, rise, kept.mean(axis=1)):
                    r.update(mIC=float(u), mDC=float(d), sparsity=float(1.0 - k))
                packed = np.packbits(kept, axis=1)
        return out, packed


def _heading(column: str) -> str:
    if column == "mprt_spearman":
        return column + " →0"
    higher = METRICS[column][1]
    return column if higher is None else column + (" ↑" if higher else " ↓")


def _cell(s: dict) -> str:
    """A summary entry as ``mean ± ci95`` (3 decimals; n/a when there is no mean)."""
    text = "n/a" if s["mean"] is None else f"{s['mean']:.3f}"
    return text + (f" ± {s['ci95']:.3f}" if s["ci95"] is not None else "")


def table_text(results: Results) -> str:
    """The summary as an aligned text table: methods × metrics, mean ± 95 % CI."""
    summary, best = results.summary(), results.winners()
    head = ["method"] + [_heading(c) for c in results.columns]
    rows = []
    for method in results.methods:
        cells = [method]
        for column in results.columns:
            text = _cell(summary[method][column])
            cells.append(text + (" *" if best.get(column) == method else ""))
        rows.append(cells)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def table_markdown(results: Results) -> str:
    summary, best = results.summary(), results.winners()
    head = ["method"] + [_heading(c) for c in results.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for method in results.methods:
        cells = [f"`{method}`"]
        for column in results.columns:
            text = _cell(summary[method][column])
            cells.append(f"**{text}**" if best.get(column) == method else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(results: Results) -> str:
    lines = ["method,metric,mean,ci95,n,higher_is_better"]
    for method, row in results.summary().items():
        for column, s in row.items():
            mean, ci95 = (_csv_number(s[k]) for k in ("mean", "ci95"))
            higher = METRICS[column][1]  # None: no better direction (sparsity), left empty
            lines.append(f"{method},{column},{mean},{ci95},{s['n']},"
                         f"{'' if higher is None else str(higher).lower()}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _csv_number(value: float | None) -> str:
    """A summary number for CSV: 6 significant digits, ``nan`` where it is undefined (as
    before; pandas and spreadsheets read it as missing)."""
    return "nan" if value is None else f"{value:.6g}"


def has_curves(results: Results) -> bool:
    """Whether ``results`` hold insertion or deletion curves to draw."""
    return any(results.curves(name) for name in ("insertion", "deletion"))


def curves_png(results: Results) -> bytes | None:
    """Insertion and deletion curves per method (mean over inputs) as PNG; None without
    matplotlib (see :func:`has_curves`) or without curves. matplotlib's own log (a warning
    where its cache folder under HOME cannot be written) is kept to errors."""
    if not has_curves(results):
        return None
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # before its first import
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [(name, results.curves(name)) for name in ("insertion", "deletion")]
    panels = [(name, c) for name, c in panels if c]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    summary = results.summary()
    for ax, (name, curves) in zip(axes[0], panels):
        for method, (f, s) in curves.items():
            auc = _cell({**summary[method][name], "ci95": None})
            ax.plot(f, s, label=f"{method} (AUC {auc})")
        ax.set_xlabel("fraction of pixels " + ("inserted" if name == "insertion" else "deleted"))
        ax.set_ylabel("probability of the target")
        ax.set_title(f"{name} ({'higher' if name == 'insertion' else 'lower'} is better)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
