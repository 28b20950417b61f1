"""Stage 2, rewrite: canonical form (BN folded, gates in one form, batch free, gates exposed)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference

from ..errors import UnsupportedModelError
from ..load import LoadedModel
from ..ops import unsupported_nodes
from .base import PassReport, rewrite_pass
from .passes import (
    PIPELINE,
    argmax_name,
    canonicalize_gates,
    drop_identity,
    expose_outputs,
    flatten_logits,
    fold_batchnorm,
    fold_constants,
    free_batch,
    strip_softmax,
)

__all__ = [
    "PIPELINE",
    "Canonical",
    "PassReport",
    "argmax_name",
    "canonicalize",
    "canonicalize_gates",
    "drop_identity",
    "expose_outputs",
    "flatten_logits",
    "fold_batchnorm",
    "fold_constants",
    "free_batch",
    "rewrite_pass",
    "strip_softmax",
]


@dataclass(frozen=True)
class Canonical:
    """The canonical model and what each pass did to get there."""

    proto: onnx.ModelProto
    reports: list[PassReport]
    logits_name: str
    reference: str
    """The tensor of the original graph that holds the same values as the logits (up to shape)."""


def canonicalize(loaded: LoadedModel, name: str = "model") -> Canonical:
    """Run every pass of :data:`PIPELINE`, then check that every node is explainable.

    Raises :class:`UnsupportedModelError` naming every node outside the vocabulary.
    """
    graph = gs.import_onnx(loaded.proto)
    reports = []
    for rewrite in PIPELINE:
        graph, report = rewrite(graph)
        reports.append(report)
    proto = gs.export_onnx(graph, do_type_check=False)
    proto.ir_version = loaded.proto.ir_version  # graphsurgeon keeps the file's, maybe older
    _carry_model_fields(loaded.proto, proto)
    del proto.graph.value_info[:]
    proto = shape_inference.infer_shapes(proto, strict_mode=False)
    # The vocabulary check reads ranks and sizes: check the graph with its shapes inferred.
    offenders = unsupported_nodes(gs.import_onnx(proto))
    if offenders:
        listed = "; ".join(f"{op} {node!r} ({why})" for node, op, why in offenders[:12])
        more = f"; and {len(offenders) - 12} more" if len(offenders) > 12 else ""
        ops = sorted({op for _, op, _ in offenders})
        raise UnsupportedModelError(
            f"{name}: {len(offenders)} node(s) cannot be explained ({', '.join(ops)}): "
            f"{listed}{more}; pathonnx explains piecewise-linear (ReLU-family) networks",
            nodes=offenders,
        )
    logits = proto.graph.output[0].name
    return Canonical(proto, reports, logits, _reference(graph, loaded.proto) or logits)


def _reference(graph: gs.Graph, original: onnx.ModelProto) -> str | None:
    """Walk back from the logits through shape-only ops to a tensor the original also has."""
    names = {out for node in original.graph.node for out in node.output}
    tensor = graph.outputs[0]
    while tensor.name not in names:
        if not tensor.inputs or tensor.inputs[0].op not in ("Flatten", "Reshape", "Squeeze"):
            return None
        tensor = tensor.inputs[0].inputs[0]
    return tensor.name


def _carry_model_fields(source: onnx.ModelProto, target: onnx.ModelProto) -> None:
    target.producer_name = source.producer_name
    target.producer_version = source.producer_version
    target.model_version = source.model_version
    target.doc_string = source.doc_string
    del target.metadata_props[:]
    target.metadata_props.extend(source.metadata_props)
