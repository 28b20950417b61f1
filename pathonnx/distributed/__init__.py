"""Beyond one machine: `explain` and `evaluate` on a Ray cluster, results in Parquet.

Ray Data maps batches of inputs through a pool of actors, each holding its own copy of the
model (onnxruntime sessions cannot be pickled, so each worker loads the model once, in its
constructor). The batch function is the serial commands' own; Ray only schedules. Results are
Parquet rows under the run's output folder, keyed by content hashes: a rerun skips what is
recorded, and a worker that dies costs only the batch it was computing (:mod:`.runs`).

Needs the optional extra ``pathonnx[ray]`` (ray[data] and pyarrow); this package imports
without it, and a run without it raises one :class:`~pathonnx.InputError` naming the extra.

    from pathonnx.distributed import RaySettings, evaluate, explain
    results = evaluate("model.onnx", samples, ["saliency"], out="eval", ray=RaySettings("auto"))
"""

from __future__ import annotations

from .cluster import EXTRA, ClusterError, RaySettings, parse_address, require
from .runs import INDEX, RECORDS, Explained, evaluate, explain, explain_key
from .spec import ModelSpec

__all__ = [
    "EXTRA",
    "INDEX",
    "RECORDS",
    "ClusterError",
    "Explained",
    "ModelSpec",
    "RaySettings",
    "evaluate",
    "explain",
    "explain_key",
    "parse_address",
    "require",
]
