"""Export: a model and an attribution method as one ONNX graph returning the prediction and its
explanation, which any onnxruntime runs with no pathonnx code (docs/ARCHITECTURE.md, Export).

``pathonnx.export(model, method, **params)`` returns the graph as an ``onnx.ModelProto``;
``pathonnx export MODEL -o OUT.onnx --method NAME`` writes it. The file is self-contained
(weights inside) and assembled from the pieces pathonnx's Python methods run: the forward pass,
stages of the adjoint walk and the small choice graphs (:mod:`pathonnx.engine.ingraph`, which
documents its inputs and outputs):

    inputs   <the model's input> (N, *input_shape) float32, batch dynamic
             target (N,) int64, optional: left out (or empty), the argmax of the logits
    outputs  logits (N, K), attribution (N, *input_shape);
             pathway methods: W (N, *input_shape), b (N,), units_kept (N, G) int64

Its attribution equals ``pathonnx.attribute(model, x, target, method=..., **params)``. The
methods that can be exported are those whose registry entry has an ``export`` recipe
(:func:`exportable_methods`): every baseline (integrated gradients and SmoothGrad walk their
points as one batch, so ``batch`` has no use and memory grows with ``steps`` or ``samples``),
NeuronMCT and pathwise explanation. A method without one (NeuronIntGrad, the pruning
baselines) is refused, not approximated.

The graph's metadata_props record :data:`METHOD_KEY`, :data:`PARAMS_KEY` (JSON, every
parameter with its default filled in), :data:`SOURCE_KEY` (the sha256 of the model file as
given) and :data:`VERSION_KEY`; the source model's own metadata (e.g. ``pathonnx.preprocess``,
``pathonnx.labels``) is kept; :data:`BYTES_KEY` estimates the memory the graph needs per
sample, and an export that would need more than this machine's budget is refused with what
to pass instead (e.g. ``classes=20`` for pathwise on a 1000-class model). A pathway method's
graph adds ``pathonnx.export.gates``, the
gates of ``units_kept``'s columns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .engine import Model, build_explainer, load
from .engine.memory import memory_budget, run_bytes, shown_bytes
from .errors import InputError
from .graph import CANONICAL_KEY, OUTPUT_KEY
from .io import atomic_write_bytes
from .methods import METHODS, method_params
from .version import __version__

METHOD_KEY = "pathonnx.export.method"
PARAMS_KEY = "pathonnx.export.params"
SOURCE_KEY = "pathonnx.export.source_sha256"
VERSION_KEY = "pathonnx.version"
#: The estimate of the bytes the graph holds per sample at run time (:func:`sample_bytes`).
BYTES_KEY = "pathonnx.export.bytes_per_sample"
#: Keys of the source model's metadata that describe pathonnx's canonical file, not this one.
_DROPPED = (CANONICAL_KEY, OUTPUT_KEY)


def exportable_methods() -> list[str]:
    """The registered methods that :func:`export` writes as one graph, in registry order."""
    return [m.name for m in METHODS.values() if m.exportable]


def check_exportable(method: str) -> None:
    """Raise :class:`InputError` (one line, naming the exportable methods) unless ``method``
    can be exported."""
    names = ", ".join(exportable_methods())
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; export one of {names}")
    if not METHODS[method].exportable:
        raise InputError(
            f"method {method!r} cannot be exported: it has no in-graph form yet, and pathonnx "
            f"does not approximate it; export one of {names}"
        )


def export(model: Model | str | os.PathLike, method: str, masks: bool = False, **params):
    """``model`` (a :class:`Model`, or a path loaded on the CPU) and ``method`` with ``params``
    (checked by the registry, defaults filled in) as one self-contained ``onnx.ModelProto``
    (see the module docstring). ``masks``: a pathway method's graph also returns each gate's
    mask (``mask:<gate>``). Raises :class:`InputError` for a method that cannot be
    exported or a bad parameter, and what :func:`pathonnx.load` raises for the model."""
    check_exportable(method)
    if not isinstance(model, Model):
        model = load(model, device="cpu")
    checked = method_params(method, params, model)
    recipe = METHODS[method].export(model, **checked)
    need = sample_bytes(model, recipe)
    if need > memory_budget():
        raise InputError(
            f"{method} exported this way needs about {shown_bytes(need)} per sample at run time "
            f"(over this machine's budget of {shown_bytes(memory_budget())}); "
            + _smaller(method, model)
        )
    metadata = {**_metadata(model, method, checked), BYTES_KEY: str(need)}
    return build_explainer(model.graph, recipe, metadata, masks)


def sample_bytes(model: Model, recipe) -> int:
    """About how many bytes the exported graph holds per sample (the engine's estimate,
    :mod:`pathonnx.engine.memory`): the forward pass and one adjoint row per point of the
    path (integrated gradients, SmoothGrad), or the pathwise sweep's R rows."""
    tensors = model.graph.tensor_bytes()
    rows = getattr(recipe, "rows", None)
    if rows is not None:  # pathwise: one forward pass, R cotangent rows walking down
        return run_bytes(tensors, 1, rows=False) + rows(model.num_outputs) * (
            run_bytes(tensors, 1) - run_bytes(tensors, 1, rows=False)
        )
    return run_bytes(tensors, getattr(recipe, "copies", 1))


def _smaller(method: str, model: Model) -> str:
    if method == "pathwise":
        return "pass -p classes=20 (the top-20 approximation explain uses) or a smaller -p depth"
    if method in ("integrated_gradients", "smoothgrad"):
        return "pass fewer -p steps / -p samples"
    return "export a smaller input size (--size) or raise PATHONNX_MEMORY_BUDGET"


def save_explainer(explainer, path: str | os.PathLike) -> Path:
    """Write an exported graph to ``path`` atomically; never over an input of the running
    command (:func:`pathonnx.io.atomic_write_bytes`)."""
    return atomic_write_bytes(Path(path), explainer.SerializeToString())


def _metadata(model: Model, method: str, params: dict) -> dict[str, str]:
    kept = {k: v for k, v in model.metadata.items() if k not in _DROPPED}
    return {
        **kept,
        METHOD_KEY: method,
        PARAMS_KEY: json.dumps(params, sort_keys=True),
        SOURCE_KEY: model.sha256(),
        VERSION_KEY: __version__,
    }
