"""Explanations: one object per input that the CLI renders and the API returns.

:func:`explain` runs a registered method (default: pathwise) on images or arrays, optionally
decomposes its pathway into paths and runs other methods beside it, and returns
:class:`Explanation` objects: the prediction, the attribution(s), per-path statistics, the
completeness error of the exact linear model, timings, and the preprocessing used. Inputs are
batched through onnxruntime.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engine import Model, as_batch, load, softmax
from .errors import InputError, has_control
from .images import (
    Preprocess,
    Sample,
    image_layout,
    load_inputs,
    read_mask,
    resolve_preprocess,
)
from .io import atomic_write_bytes, json_text, read_text
from .methods import METHODS, Pathway, method_params
from .pictures import compose, figure

#: Metadata key of a model's class names (a JSON list), written by ``pathonnx rewrite``.
LABELS_KEY = "pathonnx.labels"
#: Above this many multiply-accumulates for all K rows (K × one forward pass), a method that
#: carries every class down the network (exact pathwise) is approximated by default with the
#: top :data:`AUTO_CLASSES` logits: 3e11 is about 10 s on 2 CPU cores (a 1000-class VGG-16 at
#: 224×224 is 1.5e13, 541 s exact). ``exact=True`` (``--exact``) runs the exact sweep anyway.
EXACT_MACS = 3e11
AUTO_CLASSES = 20


#: What ``path_logit`` and ``logit_share`` are, in every report that shows them.
PATH_LOGIT_MEANS = (
    "path_logit = W^p·x + b^p, the pathway's own linear model at x (units outside the pathway "
    "removed); logit_share = path_logit / logit (null where the logit is 0). It can exceed 1 "
    "or be negative: the pathway drops units, and dropping units whose contributions are "
    "negative leaves more than the logit"
)


@dataclass(frozen=True)
class PathSummary:
    """One pathway of an explanation: its attribution (shaped like one input), units kept per
    gate, ``W^p·x``, ``b^p`` and the share of the target logit they make, ``(W^p·x + b^p) /
    logit``. ``seed`` is the top gate's unit a decomposed path starts from."""

    attribution: np.ndarray
    units_kept: dict[str, int]
    dead_share: dict[str, float]
    wx: float
    bias: float
    logit_share: float
    seed: int | None = None

    def to_dict(self) -> dict:
        return {
            "seed_unit": self.seed,
            "wx": self.wx,
            "bias": self.bias,
            "path_logit": self.wx + self.bias,
            "logit_share": self.logit_share if np.isfinite(self.logit_share) else None,
            "path_logit_means": PATH_LOGIT_MEANS,
            "units_kept": self.units_kept,
            "units_kept_total": int(sum(self.units_kept.values())),
            "dead_share": self.dead_share,
        }


@dataclass
class Explanation:
    """Why the model said what it said about one input (see :func:`explain`).

    ``model_source`` is the model's file (or ``<bytes>``/``<ModelProto>``)."""

    model_source: str
    model_sha256: str
    source: str
    x: np.ndarray
    image: np.ndarray | None
    preprocess: dict | None
    labels: list[str]
    logits: np.ndarray
    prediction: int
    target: int
    method: str
    params: dict
    attribution: np.ndarray
    pathway: PathSummary | None = None
    paths: list[PathSummary] = field(default_factory=list)
    compare: dict[str, np.ndarray] = field(default_factory=dict)
    completeness_error: float = float("nan")
    device: str = "cpu"
    precision: str = "exact"
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    output: dict | None = None
    """What the logits are (:meth:`pathonnx.Model.describe_output`): the model output's name,
    per-sample shape and channel axis, and for a dense output the position (``at``) or
    region whose channels the logits are."""

    @property
    def probabilities(self) -> np.ndarray:
        return softmax(self.logits)

    @property
    def where(self) -> str:
        """Where in a dense output the explained logits are, for titles: " at (3, 4) of
        'softmax'", " over 12 positions of 'softmax'", or "" for a classifier."""
        info = self.output or {}
        if info.get("at") is not None:
            return f" at ({', '.join(map(str, info['at']))}) of {info['name']!r}"
        if info.get("region_positions") is not None:
            return f" summed over {info['region_positions']} positions of {info['name']!r}"
        return ""

    def element(self) -> list[int] | None:
        """The explained output element, its index in the output's own layout (the position
        with the target channel at the channel axis), when the logits read one position."""
        info = self.output or {}
        if info.get("at") is None:
            return None
        index = list(info["at"])
        index.insert(info["channel_axis"], self.target)
        return index

    def label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)

    def top_k(self, k: int = 5) -> list[dict]:
        order = np.argsort(-self.logits, kind="stable")[:k]
        p = self.probabilities
        return [
            {"index": int(i), "label": self.label(int(i)), "probability": float(p[i]),
             "logit": float(self.logits[i])}
            for i in order
        ]  # fmt: skip

    @property
    def stem(self) -> str:
        """A file name for this input's outputs, from its source."""
        return output_stem(self.source)

    def to_dict(self) -> dict:
        p = self.probabilities
        return {
            "model": self.model_source,
            "model_sha256": self.model_sha256,
            "input": self.source,
            "preprocess": self.preprocess,
            "explains": f"the logits{self.where} (a trailing Softmax is removed)",
            "output": None if self.output is None else {**self.output, "element": self.element()},
            "prediction": {"index": self.prediction, "label": self.label(self.prediction),
                           "probability": float(p[self.prediction])},
            "target": {"index": self.target, "label": self.label(self.target),
                       "probability": float(p[self.target]),
                       "logit": float(self.logits[self.target])},
            "top_k": self.top_k(),
            "method": self.method,
            "params": self.params,
            "attribution_sum": float(self.attribution.sum()),
            "pathway": None if self.pathway is None else self.pathway.to_dict(),
            "paths": [path.to_dict() for path in self.paths],
            "compare": sorted(self.compare),
            "completeness_error": self.completeness_error,
            "device": self.device,
            "precision": self.precision,
            "timings_s": self.timings,
            "notes": self.notes,
        }  # fmt: skip

    def to_json(self) -> str:
        return json_text(self.to_dict())

    def picture(self):
        """The explanation as a PIL image (what ``save`` writes as PNG)."""
        return compose(self)

    def figure(self):
        """The explanation as a matplotlib Figure (needs matplotlib)."""
        return figure(self)

    def files(self) -> dict[str, bytes]:
        """What :meth:`save` writes, by suffix: ``.png`` (the picture), ``.json`` (the
        report) and ``.npz`` (the attribution arrays). A Ray worker renders them where it
        explains, and the driver writes them."""
        report = self.to_json().encode()  # first: a report JSON cannot hold writes nothing
        png = io.BytesIO()
        self.picture().save(png, format="PNG")
        arrays = io.BytesIO()
        np.savez_compressed(
            arrays, attribution=self.attribution, x=self.x,
            **{f"path_{i + 1}": p.attribution for i, p in enumerate(self.paths)},
            **{f"compare_{k}": v for k, v in self.compare.items()},
        )  # fmt: skip
        return {".png": png.getvalue(), ".json": report, ".npz": arrays.getvalue()}

    def save(self, folder, stem: str | None = None) -> list[Path]:
        """Write ``<stem>.png`` (the picture), ``<stem>.json`` (the report) and ``<stem>.npz``
        (the attribution arrays) into ``folder``, each atomically. Returns the paths. ``stem``
        defaults to the input's file name."""
        folder, stem = Path(folder), stem or self.stem
        return [atomic_write_bytes(folder / f"{stem}{suffix}", data)
                for suffix, data in self.files().items()]  # fmt: skip


def output_stem(source: str) -> str:
    """The file name (no suffix) of an input's outputs: ``photo.png`` -> ``photo``,
    ``batch.npy[3]`` -> ``batch_3``, other characters than letters, digits, ``-_.`` -> ``_``."""
    name = Path(source.split("[")[0]).stem or "input"
    if "[" in source:
        name += "_" + source.rsplit("[", 1)[1].rstrip("]")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def output_stems(sources: list[str]) -> list[str]:
    """The file name (no suffix) of each input's outputs: its own name, with "_" added where
    two inputs share one (the same name from two folders)."""
    stems: list[str] = []
    taken: set[str] = set()
    for source in sources:
        stem = output_stem(source)
        while stem in taken:
            stem += "_"
        taken.add(stem)
        stems.append(stem)
    return stems


def model_labels(model: Model, labels=None) -> list[str]:
    """Class names: ``labels`` (a list, or a file with one per line or a JSON list), else the
    model's ``pathonnx.labels`` metadata, else the indices."""
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        text = read_text(path, "the labels file")
        try:
            labels = json.loads(text)
        except ValueError:
            labels = [line.strip() for line in text.splitlines() if line.strip()]
    elif labels is None and LABELS_KEY in model.metadata:
        try:
            labels = json.loads(model.metadata[LABELS_KEY])
        except ValueError:
            labels = None
    labels = [str(v) for v in labels] if isinstance(labels, list) else []
    broken = next((label for label in labels if has_control(label)), None)
    if broken is not None:
        raise InputError(
            f"the label {broken!r} holds a line break or control character, which no report "
            "can carry; give each label on one line"
        )
    if labels and len(labels) != model.num_outputs:
        raise InputError(
            f"{len(labels)} labels given but the model has {model.num_outputs} outputs; give "
            "one label per output"
        )
    return labels or [str(i) for i in range(model.num_outputs)]


def target_index(target, labels: list[str], num_outputs: int):
    """A target given as an index or a label name -> the index (None stays None)."""
    if target is None or isinstance(target, (int, np.integer)):
        return target
    text = str(target)
    if text in labels:
        return labels.index(text)
    try:
        return int(text)
    except ValueError:
        shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
        raise InputError(
            f"target {text!r} is neither a class index (0..{num_outputs - 1}) nor a label ({shown})"
        ) from None


@dataclass(frozen=True)
class Request:
    """What to explain about every input, checked once: the ``method`` and its ``params``
    (completed with defaults), the ``target`` (an index, or None for the prediction), the
    number of ``paths`` to decompose into, the ``compare`` methods and their params, the class
    ``labels``, and what the reports record (``model_sha256``, ``preprocess``)."""

    method: str
    params: dict
    target: int | None
    paths: int | None
    compare: dict[str, dict]
    labels: list[str]
    model_sha256: str
    preprocess: dict | None
    notes: tuple[str, ...] = ()

    @classmethod
    def make(cls, model: Model, method: str = "pathwise", target=None, paths=None, compare=(),
             preprocess: Preprocess | None = None, labels=None, params=None,
             exact: bool = False):  # fmt: skip
        """Check everything against ``model`` and the registry. ``compare``: method names, or
        a mapping from names to their params. Unless ``exact``, methods that carry every class
        approximate with the top :data:`AUTO_CLASSES` logits when the exact sweep would cost
        more than :data:`EXACT_MACS` (a note says so)."""
        target_model(model)  # a dense output needs a position or region first
        params = method_params(method, dict(params or {}), model)
        given = compare if isinstance(compare, dict) else dict.fromkeys(compare, {})
        compare = {n: method_params(n, dict(p or {}), model) for n, p in given.items()
                   if n != method}  # fmt: skip
        notes = [] if exact else [
            note for name, chosen in ((method, params), *compare.items())
            if (note := approximate(model, name, chosen))
        ]  # fmt: skip
        if paths is not None and METHODS[method].decompose is None:
            split = [m.name for m in METHODS.values() if m.decompose is not None]
            use = " or ".join(f"method={name!r}" for name in split)
            raise InputError(f"paths={paths} decomposes a pathway into paths; use {use}")
        if paths is not None and (isinstance(paths, bool) or int(paths) < 1):
            raise InputError(f"paths {paths} must be a positive number of paths")
        names = model_labels(model, labels)
        target = target_index(target, names, model.num_outputs)
        if target is not None:
            model.check_target(target, 1)
        pre = None if preprocess is None else preprocess.to_dict()
        return cls(method, params, target, None if paths is None else int(paths), compare, names,
                   model.sha256(), pre, tuple(notes))  # fmt: skip


def approximate(model: Model, name: str, params: dict) -> str | None:
    """Set ``params["classes"]`` to :data:`AUTO_CLASSES` where method ``name`` would carry all
    K classes at a cost above :data:`EXACT_MACS`; the note that says so, else None."""
    k, cost = model.num_outputs, model.num_outputs * model.graph.macs
    if not METHODS[name].carries_classes or params.get("classes") is not None:
        return None
    if k <= AUTO_CLASSES or cost <= EXACT_MACS:
        return None
    params["classes"] = AUTO_CLASSES
    return (
        f"{name} is approximated: its softmax runs over the top {AUTO_CLASSES} of {k} logits "
        f"plus the target (classes={AUTO_CLASSES}), so the sweep carries {AUTO_CLASSES + 1} rows "
        f"instead of {k}; the exact one costs about {k // (AUTO_CLASSES + 1)}x more "
        f"({cost / 1e12:.1f} TMAC, minutes on a CPU): pass --exact (exact=True) for it"
    )


def explain(
    model,
    inputs,
    method: str = "pathwise",
    target=None,
    paths: int | None = None,
    compare=(),
    preprocess: Preprocess | dict | str | None = None,
    labels=None,
    batch: int = 16,
    exact: bool = False,
    output: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    at=None,
    mask=None,
    **params,
):
    """Explain ``inputs`` with ``method`` (any name in ``pathonnx.METHODS``; default pathwise,
    with ``depth``, ``width``, ``alpha``). Returns one :class:`Explanation`, or a list when
    ``inputs`` holds several.

    ``model``: a :class:`Model` or a path. ``inputs``: an image path, a .npy path, a list of
    them, or an array (one sample ``(*input_shape)`` or a batch). ``target``: index or label
    name (default: the prediction). ``paths=M`` also decomposes the pathway into M paths (for
    methods that have a decomposition: pathwise). ``compare``: other method names run beside
    it. ``preprocess``: a :class:`Preprocess`, a dict of its fields, or a preset's name (as the
    CLI's ``--preset``, e.g. ``"imagenet"``; default: the model's metadata, else a default from
    its input shape). ``labels``: a list or a file (default: the
    model's metadata).

    ``output``, ``input_shape``: as for :func:`pathonnx.load` when ``model`` is a path (a
    ``preprocess`` size also sets a dynamic image size). On a dense output, e.g. (H, W, C),
    ``at=(y, x)`` explains the channels at one position and ``mask`` (an array of the
    output's positions, or a .npy or image file) the channels summed over a region:
    ``target`` is then a channel (see :func:`target_model`).

    On a large model with many classes, exact pathwise carries all K classes down the network
    (minutes on a CPU); unless ``exact=True`` it then runs over the top 20 logits instead
    (``classes=20``), and every Explanation's ``notes`` says so. Pass ``classes`` to choose.
    """
    model = target_model(_loaded(model, output, input_shape, preprocess), at, mask)
    model.check_memory(1)  # before inputs are read at the model's size
    single = False
    if isinstance(inputs, (str, Path)):
        inputs, single = [inputs], True
    if isinstance(inputs, np.ndarray):
        single = tuple(inputs.shape) == tuple(model.input_shape)
        array = as_batch(inputs[None] if single else inputs, model.input_shape)
        samples = [Sample(array[i], None, f"array[{i}]") for i in range(len(array))]
        single = single or len(array) == 1
        pre = None  # arrays are already in the model's input space
    else:
        pre = preprocess
        if isinstance(pre, str):
            pre = image_preprocess(model, pre)
        elif isinstance(pre, dict) or pre is None:
            pre = image_preprocess(model, **(pre or {}))
        elif not isinstance(pre, Preprocess):
            raise InputError(
                f"preprocess {pre!r} is not understood; pass a preset's name (e.g. 'imagenet'), "
                "a dict of Preprocess fields, or a Preprocess"
            )
        samples = [item for path in inputs for item in load_inputs(path, pre, model.input_shape)]
        single = single and len(samples) == 1
    request = Request.make(model, method, target, paths, compare, pre, labels, params, exact)
    out = explain_samples(model, samples, request, batch)
    return out[0] if single else out


def _loaded(model, output, input_shape, preprocess) -> Model:
    """``model`` as a :class:`Model`: loaded from a path with ``output`` and ``input_shape``
    (and a dynamic image size from ``preprocess``), or checked against them."""
    if isinstance(model, Model):
        if output is not None and output != model.output_name:
            raise InputError(
                f"output={output!r} but the model was loaded with output {model.output_name!r}; "
                "pass output= to pathonnx.load, or a path here"
            )
        if input_shape is not None and tuple(input_shape) != tuple(model.input_shape):
            raise InputError(
                f"input_shape={tuple(input_shape)} but the model was loaded with "
                f"{model.input_shape}; pass input_shape= to pathonnx.load, or a path here"
            )
        return model
    size = None
    if isinstance(preprocess, Preprocess):
        size = preprocess.size
    elif isinstance(preprocess, dict) and preprocess.get("size") is not None:
        size = tuple(np.atleast_1d(preprocess["size"]).tolist() * 2)[:2]
    return load(model, input_shape, output=output, size=size)


def target_model(model: Model, at=None, mask=None) -> Model:
    """The model whose logits are what is explained: ``model`` itself, or for a dense output
    its :meth:`~pathonnx.Model.readout` at position ``at`` (e.g. (y, x)) or over the region
    ``mask`` (an array, or a .npy or image file of the output's positions: non-zero pixels).

    A dense output (more than one position) needs one of them: a class index alone does not
    say where, so that is an error saying what to give."""
    if at is not None and mask is not None:
        raise InputError("give a position (--at, at=) or a region (--target-mask, mask=), not both")
    if isinstance(mask, (str, Path)):
        mask = read_mask(Path(mask))
    if at is not None or mask is not None:
        return model.readout(at=at, mask=mask)
    model.require_position()
    return model


def image_preprocess(model: Model, preset: str | None = None, **given) -> Preprocess | None:
    """The preprocessing of images for ``model`` (None when its input is not image-like and
    nothing is asked for). Bad preprocessing metadata raises, naming the field."""
    if preset is None and not given and image_layout(model.input_shape) is None:
        return None
    return resolve_preprocess(model.input_shape, model.metadata, preset, **given)


def explain_samples(
    model: Model, samples: list[Sample], request: Request, batch: int = 16, progress=None
) -> list[Explanation]:
    """:func:`explain` on inputs already read; ``progress(n)`` is called after each batch."""
    out = []
    step = max(1, int(batch))
    for lo in range(0, len(samples), step):
        part = samples[lo : lo + step]
        out += _explain_batch(model, part, request)
        if progress is not None:
            progress(len(part))
    return out


def _timed(timings: dict, key: str, run):
    t0 = time.perf_counter()
    value = run()
    timings[key] = time.perf_counter() - t0
    return value


def _explain_batch(model: Model, part: list[Sample], request: Request) -> list[Explanation]:
    x = as_batch(np.stack([item.x for item in part]), model.input_shape)
    n, timings = len(x), {}
    fwd = _timed(timings, "forward", lambda: model.forward(x))
    targets = fwd.targets(request.target)
    method = METHODS[request.method]
    attribution, pathway = _timed(
        timings, "method", lambda: method.with_pathway(model, x, targets, **request.params)
    )
    decomposed = []
    if request.paths is not None:
        decomposed = _timed(timings, "paths", lambda: method.decompose(
            model, x, targets, request.paths, **request.params))  # fmt: skip
    path_maps = [method.from_pathway(p, x) for p in decomposed]
    others = {
        name: _timed(timings, f"compare:{name}",
                     lambda name=name, p=p: METHODS[name].run(model, x, targets, **p))
        for name, p in request.compare.items()
    }  # fmt: skip
    t0 = time.perf_counter()
    full = model.linearize(x, targets, fwd=fwd)
    logit = fwd.logits[np.arange(n), targets].astype(np.float64)
    err = np.abs(full.output(x) - logit) / np.maximum(np.abs(logit), 1.0)
    timings["completeness"] = time.perf_counter() - t0
    timings = {k: v / n for k, v in timings.items()}
    shown = _jsonable(request.params)
    warnings = [_warnings(request, fwd.logits[i], attribution[i]) for i in range(n)]
    output = model.describe_output()
    out = []
    for i, item in enumerate(part):
        out.append(
            Explanation(
                model_source=str(model.source), model_sha256=request.model_sha256,
                source=item.source, x=x[i], image=item.image,
                preprocess=request.preprocess if item.image is not None else None,
                labels=request.labels, logits=fwd.logits[i], prediction=int(fwd.prediction[i]),
                target=int(targets[i]), method=request.method, params=dict(shown),
                attribution=attribution[i],
                pathway=None if pathway is None else _summary(
                    pathway, attribution, x, i, logit[i]
                ),
                paths=[
                    _summary(p, a, x, i, logit[i], int(p.stats["seed_unit"][i]))
                    for p, a in zip(decomposed, path_maps)
                ],
                compare={k: v[i] for k, v in others.items()},
                completeness_error=float(err[i]), device=model.device,
                precision=model.precision, timings=dict(timings),
                notes=list(request.notes) + warnings[i], output=output,
            )
        )  # fmt: skip
    return out


#: Logits whose largest magnitude is below this carry no signal in float32 arithmetic.
NOISE = 1e-6


def _warnings(request: Request, logits: np.ndarray, attribution: np.ndarray) -> list[str]:
    """Warnings about one explanation: an all-zero map, logits at float noise, tied top
    classes. Each starts with "warning:"."""
    out = []
    if not np.any(attribution):
        out.append(
            f"warning: the {request.method} map is all zero: nothing of the input reaches the "
            "explained logit along it (try another method, e.g. saliency, or a smaller sparsity)"
        )
    scale = float(np.abs(logits).max()) if logits.size else 0.0
    if scale < NOISE:
        out.append(
            f"warning: the logits are at float noise (largest |logit| {scale:.2g}); the "
            "model's output carries no signal at this input, and neither does its explanation"
        )
    top = float(logits.max()) if logits.size else 0.0
    tied = np.flatnonzero(np.isclose(logits, top, rtol=1e-6, atol=NOISE * 1e-3))
    if len(tied) > 1:
        names = ", ".join(request.labels[i] for i in tied[:5]) + (", ..." if len(tied) > 5 else "")
        which = f"all {len(tied)} classes" if len(tied) == len(logits) else f"{len(tied)} classes"
        out.append(
            f"warning: the top classes tie: {which} ({names}) share the highest logit "
            f"{top:.4g}; the prediction is the first of them by index"
        )
    return out


def _jsonable(params: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def _summary(pathway: Pathway, attribution, x, i: int, logit: float, seed=None) -> PathSummary:
    W, b = pathway.linear.W[i], float(pathway.linear.b[i])
    wx = float((W.astype(np.float64) * x[i]).sum())
    return PathSummary(
        attribution=attribution[i],
        units_kept={k: int(v[i]) for k, v in pathway.stats["units_kept"].items()},
        dead_share={k: float(v[i]) for k, v in pathway.stats["dead_share"].items()},
        wx=wx,
        bias=b,
        logit_share=(wx + b) / logit if logit != 0 else float("nan"),
        seed=seed,
    )
