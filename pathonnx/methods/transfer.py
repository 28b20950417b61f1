"""Transferable class pathways (Lin et al., "On Model Explanations with Transferable Neural
Pathways", 2023): a class's pathway aggregated from its samples' pathways, saved, and used to
explain new samples of the class.

**Aggregation by average firing.** Any pathway method (mct, intgrad, greedy, dgr, pathwise, or
a learned one) gives each sample n of class c a pathway, a set of kept units over all gates
(a gate without a mask is kept whole). The *firing* of unit u in class c is the share of c's
samples whose pathway keeps u, ``firing_c(u) = (1/|c|) Σ_{n ∈ c} [u ∈ pathway_n]``, and the
class pathway keeps the units with ``firing_c(u) ≥ threshold`` (default 0.5: at least half of
the class's pathways keep it). The paper averages firing patterns and thresholds them; it does
not say whether the threshold is strict or where it lies: ``≥ 0.5`` is our choice.

**Explaining with it** (method ``class_pathway``): a new sample x with target class c gets c's
pathway as its masks; ``W^p, b^p`` are the frozen map at x's own pattern through those units
(:meth:`pathonnx.Model.linearize`), and its attribution is the pathway gradient ``W^p``, as for
the critical pathways. A class pathway may keep units that are inactive at x: ``dead_share``
reports them (they pass nothing in the frozen map at x).

**The file** (``.npz``, written atomically) holds ``header``, UTF-8 JSON as uint8 bytes
(format, version, the model's sha256 and identity, the source method and its parameters, the
threshold, the model's class names, the gates' names and shapes, the samples aggregated per
class), and per class k present ``class_<k>``, its mask over all U units packed 8 to a byte
(:func:`numpy.packbits`, units in gate order, each gate in C order). Loading checks it against
the model it is used with: one-line errors for another model, another output, changed gates.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..engine import as_batch
from ..errors import InputError
from ..io import atomic_write_bytes, note_input, read_arrays
from ..version import __version__
from .pathway import Pathway, gate_masks, kept_units, network_wide_start
from .registry import METHODS, TEXT, Param, method_params, register

#: The ``format`` field of a class pathways file's header, and its version.
FORMAT = "pathonnx.class_pathways"
VERSION = 1
#: The default share of a class's pathways that must keep a unit.
THRESHOLD = 0.5
#: The model metadata key of its class names (as `pathonnx rewrite --set-labels` writes it).
LABELS_KEY = "pathonnx.labels"
#: What a class pathways file is called in messages.
WHAT = "the class pathways file"


def average_firing(units: np.ndarray, classes) -> dict[int, np.ndarray]:
    """Per class c present in ``classes`` (N,) ints: the share of its samples whose pathway
    keeps each unit, (U,) float64, from ``units`` (N, U) bool (:func:`kept_units`)."""
    units = np.asarray(units, bool)
    classes = np.asarray(classes)
    return {int(c): units[classes == c].mean(axis=0) for c in np.unique(classes)}


def threshold_firing(firing: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """The class pathway of a firing pattern: the units with ``firing ≥ threshold``."""
    return np.asarray(firing) >= threshold


def check_threshold(threshold) -> float:
    """``threshold`` as a float in (0, 1], or a one-line InputError."""
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(
        threshold, (int, float, np.integer, np.floating)
    ):
        raise InputError(f"threshold={threshold!r} must be a number in (0, 1]")
    if not 0 < float(threshold) <= 1:
        raise InputError(f"threshold={threshold!r} must be in (0, 1]")
    return float(threshold)


@dataclass(frozen=True)
class ClassPathways:
    """Class pathways of one model: per class k present, ``masks[k]`` (U,) bool over all units
    of all gates (in gate order, each gate's units in C order), aggregated by average firing
    from ``counts[k]`` samples' pathways of ``method`` (with ``params``) at ``threshold``.
    ``labels``: the model's class names in logit order; ``gates``: (name, shape) per gate;
    ``firing``: per class the average firing (U,) float, when built here (not saved)."""

    model_sha256: str
    model_identity: str
    method: str
    params: dict
    threshold: float
    labels: list[str]
    gates: list[tuple[str, tuple[int, ...]]]
    counts: dict[int, int]
    masks: dict[int, np.ndarray]
    firing: dict[int, np.ndarray] | None = None
    source: str = field(default="class pathways", compare=False)

    @property
    def units(self) -> int:
        """U, the units of all gates."""
        return int(sum(np.prod(shape, dtype=np.int64) for _, shape in self.gates))

    @property
    def classes(self) -> list[int]:
        """The classes that have a pathway, in order."""
        return sorted(self.masks)

    def name(self, k: int) -> str:
        return self.labels[k] if 0 <= k < len(self.labels) else str(k)

    def masks_for(self, classes) -> dict[str, np.ndarray]:
        """The masks of each sample's class, gate name -> (N, *gate.shape) bool, for
        ``classes`` (N,) ints; an InputError names a class the file has no pathway for."""
        classes = np.asarray(classes, np.int64).reshape(-1)
        missing = sorted({int(c) for c in classes} - set(self.masks))
        if missing:
            k = missing[0]
            have = ", ".join(f"{self.name(c)} ({c})" for c in self.classes) or "none"
            raise InputError(
                f"class {self.name(k)!r} ({k}) has no pathway in {self.source}; it has {have}: "
                "build them from samples of every class you explain"
            )
        units = np.stack([self.masks[int(c)] for c in classes]) if len(classes) else (
            np.zeros((0, self.units), bool))  # fmt: skip
        return gate_masks([_Gate(n, s) for n, s in self.gates], units)

    def check_model(self, model) -> str | None:
        """Why these class pathways do not fit ``model`` (None when they do)."""
        sha = model.sha256()
        if self.model_sha256 != sha:
            return (
                f"was made for another model (sha256 {self.model_sha256[:12]}…, this one is "
                f"{sha[:12]}…); build class pathways for this model with pathonnx class-pathways"
            )
        if self.model_identity != model.identity:
            return (
                "was made for another output or readout of this model; build class pathways "
                "with the same --output/--at/--target-mask"
            )
        gates = [(g.name, tuple(g.shape)) for g in model.gates]
        if gates != [(n, tuple(s)) for n, s in self.gates]:
            return (
                "lists other gates than this model has (made by another pathonnx version?); "
                "build class pathways again"
            )
        return None

    def header(self) -> dict:
        """The JSON header written into the file."""
        return {
            "format": FORMAT, "version": VERSION, "pathonnx": __version__,
            "model_sha256": self.model_sha256, "model_identity": self.model_identity,
            "method": self.method, "params": self.params, "threshold": self.threshold,
            "labels": list(self.labels),
            "gates": [{"name": n, "shape": list(s)} for n, s in self.gates],
            "counts": {str(k): int(v) for k, v in sorted(self.counts.items())},
        }  # fmt: skip

    def to_dict(self) -> dict:
        """A summary for reports: the header, and per class its samples, units kept and share
        of all units kept."""
        total = max(self.units, 1)
        classes = {
            self.name(k): {"class": k, "samples": int(self.counts.get(k, 0)),
                           "units_kept": int(self.masks[k].sum()),
                           "kept_share": float(self.masks[k].sum() / total)}
            for k in self.classes
        }  # fmt: skip
        head = self.header()
        del head["counts"], head["gates"]
        return {**head, "units": self.units, "classes": classes}

    def save(self, path) -> Path:
        """Write the file atomically (temp file, then rename); returns its path."""
        arrays = {"header": np.frombuffer(json.dumps(self.header()).encode(), np.uint8)}
        for k in self.classes:
            arrays[f"class_{k}"] = np.packbits(self.masks[k])
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path, model=None) -> ClassPathways:
        """Read a class pathways file (checked against ``model`` when given); one-line
        InputErrors for a file that is not one, is damaged, or was made for another model."""
        path = Path(path)
        try:
            status = os.stat(path)
            key = (str(path.resolve()), status.st_mtime_ns, status.st_size)
        except OSError:
            key = None
        found = _read(*key) if key is not None else _parse(path)
        if key is not None:
            note_input(path, WHAT)  # read from the cache: still an input of the command
        found = _with_source(found, str(path))
        if model is not None:
            reason = found.check_model(model)
            if reason is not None:
                raise InputError(f"{path}: {WHAT} {reason}")
        return found


@dataclass(frozen=True)
class _Gate:
    """A gate as :func:`gate_masks` reads it: its name, shape and units."""

    name: str
    shape: tuple[int, ...]

    @property
    def units(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _with_source(found: ClassPathways, source: str) -> ClassPathways:
    return ClassPathways(**{**found.__dict__, "source": source})


@lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> ClassPathways:
    """A file read once per version (path, modification time, size): evaluate and explain
    load it for every batch."""
    return _parse(Path(path))


def _parse(path: Path) -> ClassPathways:
    arrays = read_arrays(path, WHAT)
    bad = f"{path} is not a class pathways file"
    how = "make one with pathonnx class-pathways"
    if "header" not in arrays or arrays["header"].dtype != np.uint8:
        raise InputError(f"{bad} (no pathonnx header); {how}")
    try:
        head = json.loads(arrays["header"].tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{bad} (its header is not JSON); {how}") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise InputError(f"{bad} (its header is not of {FORMAT}); {how}")
    if not isinstance(head.get("version"), int) or head["version"] > VERSION:
        raise InputError(
            f"{path}: {WHAT} has format version {head.get('version')!r}, newer than this "
            f"pathonnx reads ({VERSION}); update pathonnx"
        )
    try:
        gates = [(str(g["name"]), tuple(int(d) for d in g["shape"])) for g in head["gates"]]
        counts = {int(k): int(v) for k, v in head["counts"].items()}
        labels = [str(v) for v in head["labels"]]
        threshold = float(head["threshold"])
        found = ClassPathways(
            str(head["model_sha256"]), str(head["model_identity"]), str(head["method"]),
            dict(head["params"]), threshold, labels, gates, counts, {}, None, str(path),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InputError(f"{path}: {WHAT} has a damaged header; build it again") from None
    units = found.units
    for k in counts:
        packed = arrays.get(f"class_{k}")
        if packed is None or packed.dtype != np.uint8 or packed.shape != (-(-units // 8),):
            raise InputError(f"{path}: {WHAT} has no valid mask for class {k}; build it again")
        found.masks[k] = np.unpackbits(packed, count=units).astype(bool)
    return found


def class_pathways(
    model,
    x,
    labels=None,
    method: str = "mct",
    threshold: float = THRESHOLD,
    names: list[str] | None = None,
    chunk: int = 16,
    progress=None,
    **params,
) -> ClassPathways:
    """Class pathways of ``model`` from the samples ``x`` (N, *input_shape) float32.

    Each sample's pathway comes from the pathway ``method`` (any registered one: "mct",
    "intgrad", "greedy", "dgr", "pathwise", ...; ``params`` are its parameters, e.g.
    ``sparsity=0.9``) for its class as the target; the pathways of each class are aggregated
    by average firing, keeping the units that at least ``threshold`` (in (0, 1], default 0.5)
    of the class's pathways keep.

    ``labels``: each sample's class, (N,) ints (e.g. from sub-folder names, see
    :func:`pathonnx.images.folder_classes`); default the model's predictions. ``names``: the
    class names written in the file (default the model's ``pathonnx.labels`` metadata, else the
    indices). ``chunk``: samples per method call; ``progress(n)`` is called after each chunk.
    Every other keyword is the method's (checked by the registry, one-line InputErrors).
    Returns :class:`ClassPathways`; its ``.save(path)`` writes the file that
    ``method="class_pathway"`` reads (``pathways=path``). Memory: one int64 count per unit and
    class present while aggregating.

    Example::

        found = pathonnx.class_pathways(model, x, labels, method="mct", sparsity=0.9)
        found.save("classes.npz")
        pathonnx.explain(model, "photo.png", method="class_pathway", pathways="classes.npz")
    """
    if method not in METHODS or METHODS[method].kind != "pathway" or method == "class_pathway":
        known = [m.name for m in METHODS.values() if m.kind == "pathway" and m.name != NAME]
        raise InputError(f"method {method!r} is not a pathway method; use one of "
                         f"{', '.join(known)}")  # fmt: skip
    params = method_params(method, params, model)
    threshold = check_threshold(threshold)
    names = _class_names(model, names)
    x = as_batch(x, model.input_shape)
    if len(x) == 0:
        raise InputError("no samples to build class pathways from")
    if labels is None:
        labels = model.logits(x).argmax(axis=1)
    labels = model.check_target(labels, len(x))
    fn = METHODS[method].fn
    totals: dict[int, np.ndarray] = {}
    size = max(1, int(chunk))
    for lo in range(0, len(x), size):
        rows = slice(lo, lo + size)
        pathway = fn(model, x[rows], labels[rows], **params)
        units = kept_units(model.gates, pathway.masks, len(x[rows]))
        for c in np.unique(labels[rows]):
            kept = units[labels[rows] == c].sum(axis=0, dtype=np.int64)
            totals[int(c)] = totals[int(c)] + kept if int(c) in totals else kept
        if progress is not None:
            progress(len(x[rows]))
    counts = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    firing = {c: totals[c] / counts[c] for c in sorted(totals)}
    masks = {c: threshold_firing(f, threshold) for c, f in firing.items()}
    gates = [(g.name, tuple(g.shape)) for g in model.gates]
    return ClassPathways(model.sha256(), model.identity, method, _plain(params), threshold,
                         names, gates, counts, masks, firing)  # fmt: skip


def _plain(params: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def _class_names(model, names) -> list[str]:
    """``names`` (one per output), else the model's ``pathonnx.labels``, else the indices."""
    k = model.num_outputs
    if names is None:
        try:
            names = json.loads(model.metadata.get(LABELS_KEY, "null"))
        except ValueError:
            names = None
        if not isinstance(names, list) or len(names) != k:
            names = [str(i) for i in range(k)]
    names = [str(n) for n in names]
    if len(names) != k:
        raise InputError(f"{len(names)} class names given but the model has {k} outputs")
    return names


# -- the method ----------------------------------------------------------------------------------

NAME = "class_pathway"


def _fits(model, path) -> str | None:
    """Why the file ``path`` does not fit ``model`` (None if it does)."""
    try:
        found = ClassPathways.load(path)
    except InputError as err:
        return f"cannot be used: {err}"
    return found.check_model(model)


PATHWAYS = Param("pathways", None, TEXT,
                 "the class pathways file (required; .npz, made by pathonnx class-pathways)",
                 fits=_fits, required=True)  # fmt: skip


@register(NAME, PATHWAYS, attribution="gradient", family="class")
def class_pathway(model, x, target, pathways) -> Pathway:
    """Class pathway: the target class's pathway, aggregated over its samples' pathways; W^p."""
    found = ClassPathways.load(pathways, model)
    fwd, target = network_wide_start(model, x, target)
    masks = found.masks_for(target)
    linear = model.linearize(fwd.x, target, masks, fwd=fwd)
    kept, share = {}, {}
    for gate in model.gates:
        mask = masks[gate.name].reshape(len(target), -1)
        inactive = ~(np.asarray(fwd.activations[gate.name]).reshape(len(target), -1) > 0)
        kept[gate.name] = mask.sum(axis=1)
        share[gate.name] = (mask & inactive).sum(axis=1) / np.maximum(kept[gate.name], 1)
    params = {"pathways": str(pathways), "source_method": found.method,
              "threshold": found.threshold}  # fmt: skip
    stats = {"units_kept": kept, "dead_share": share}
    return Pathway(masks, target, linear, NAME, params, stats)
