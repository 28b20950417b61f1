"""The callable classes that Ray Data's actor pool maps batches through.

Each worker (one Ray actor, one process) loads the model once, in its constructor, and keeps
its onnxruntime sessions for every batch it is given: the "load once per worker" that makes
Ray fit. Its ``__call__`` is the run's batch function and nothing more: the same
:meth:`pathonnx.evaluation.evaluate.Run.measure` and
:func:`pathonnx.explanation.explain_samples` that the serial commands call, on the batch's
inputs, returned as an Arrow table of :mod:`.parquet`'s columns.
"""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pyarrow as pa

from ..errors import PathonnxError
from ..evaluation.evaluate import Run, Settings, input_sha256
from ..explanation import Request, explain_samples
from ..images import Sample
from ..io import json_text
from ..methods import method_params
from . import parquet
from .spec import ModelSpec, for_worker


def _where() -> tuple[str, str]:
    """(host:pid, Ray node id) of this worker."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray (a test calling the class directly)
        node = ""
    return f"{socket.gethostname()}:{os.getpid()}", node


def _samples(batch: dict, with_images: bool = False) -> list[Sample]:
    """The batch's rows as :class:`Sample` objects, in row order."""
    out = []
    for i, source in enumerate(batch["source"]):
        image = None
        if with_images and bool(batch["has_image"][i]):
            image = np.asarray(batch["image"][i], np.uint8)
        out.append(Sample(np.asarray(batch["x"][i], np.float32), image, str(source)))
    return out


def _load(spec: ModelSpec, threads: int):
    """(model, None), or (None, the error) where the model does not load here: the error is
    then the answer to every batch (see :func:`_failure`)."""
    for_worker(threads)
    try:
        return spec.load(), None
    except PathonnxError as err:
        return None, err


def _failure(err: PathonnxError, schema: pa.Schema) -> pa.Table:
    """A pathonnx error (a model that does not load on this node, an input it refuses) as
    the batch's answer: one row whose ``error`` column names it, for the driver to raise
    as the one-line error it is. Raised here, it would reach the driver only as text inside
    Ray's own exceptions (an exception's cause does not cross processes)."""
    row = {"key": "", parquet.ERROR: f"{type(err).__name__}: {err}"}
    return pa.Table.from_pylist([row], schema=schema)


class EvaluateWorker:
    """Measures (input, method) rows: one :class:`Run` on this worker's copy of the model."""

    def __init__(self, spec: ModelSpec, groups: list[str], settings: Settings,
                 masks: dict | None, names: list[str], threads: int = 1):  # fmt: skip
        self.model, self.failed = _load(spec, threads)
        if self.model is not None:
            self.sha = self.model.sha256()
            self.run = Run(self.model, list(groups), settings, masks, list(names))
        self.worker, self.node = _where()

    def __call__(self, batch: dict) -> pa.Table:
        """``batch``: columns key, method, source, x (N, *input_shape). Rows of one method
        are measured together, as the serial run batches them."""
        schema = parquet.EVALUATE.append(pa.field(parquet.ERROR, pa.string()))
        try:
            return self._measure(batch, schema)
        except PathonnxError as err:
            return _failure(err, schema)

    def _measure(self, batch: dict, schema: pa.Schema) -> pa.Table:
        if self.failed is not None:
            raise self.failed
        items = _samples(batch)
        methods = [str(m) for m in batch["method"]]
        keys = [str(k) for k in batch["key"]]
        rows: list[dict] = [{} for _ in items]
        for method in dict.fromkeys(methods):
            which = [i for i, m in enumerate(methods) if m == method]
            params = method_params(method, self.run.settings.params.get(method, {}))
            t0 = time.perf_counter()
            records, packed = self.run.measure([items[i] for i in which], method, params)
            seconds = (time.perf_counter() - t0) / len(which)
            for j, (i, record) in enumerate(zip(which, records)):
                rows[i] = {
                    **{m: record.get(m) for m in parquet.EVALUATE.names if m in record},
                    "key": keys[i], "input": items[i].source,
                    "input_sha256": input_sha256(items[i]), "model_sha256": self.sha,
                    "method": method, "target": record["target"], "label": record["label"],
                    "seconds": seconds, "worker": self.worker, "node": self.node,
                    "units": None if packed is None else packed[j].tobytes(),
                    "record": json_text(record, None),
                }  # fmt: skip
        return pa.Table.from_pylist(rows, schema=schema)


class ExplainWorker:
    """Explains input rows as ``pathonnx explain`` does, and renders each one's files."""

    def __init__(self, spec: ModelSpec, request: Request, threads: int = 1):
        self.model, self.failed = _load(spec, threads)
        if self.model is not None:
            self.sha = self.model.sha256()
        self.request = request
        self.worker, self.node = _where()

    def __call__(self, batch: dict) -> pa.Table:
        """``batch``: columns key, stem, source, x, image (N, H, W, 3) and has_image."""
        schema = parquet.EXPLAIN
        for column in [*parquet.FILE_COLUMNS.values()]:
            schema = schema.append(pa.field(column, pa.binary()))
        schema = schema.append(pa.field(parquet.ERROR, pa.string()))
        try:
            return self._explain(batch, schema)
        except PathonnxError as err:
            return _failure(err, schema)

    def _explain(self, batch: dict, schema: pa.Schema) -> pa.Table:
        if self.failed is not None:
            raise self.failed
        items = _samples(batch, with_images=True)
        t0 = time.perf_counter()
        explained = explain_samples(self.model, items, self.request, len(items))
        rendered = [expl.files() for expl in explained]
        seconds = (time.perf_counter() - t0) / len(items)  # explaining and rendering
        rows = []
        for key, stem, item, expl, files in zip(batch["key"], batch["stem"], items, explained,
                                                rendered):  # fmt: skip
            report = json.loads(files[".json"])
            share = None if expl.pathway is None else expl.pathway.logit_share
            rows.append({
                "key": str(key), "input": item.source, "input_sha256": input_sha256(item),
                "model_sha256": self.sha, "method": expl.method, "target": expl.target,
                "target_label": expl.label(expl.target),
                "target_probability": report["target"]["probability"],
                "prediction": expl.prediction, "prediction_label": expl.label(expl.prediction),
                "probability": report["prediction"]["probability"],
                "logit_share": share if share is not None and np.isfinite(share) else None,
                "completeness_error": expl.completeness_error,
                **{suffix[1:]: f"{stem}{suffix}" for suffix in parquet.FILE_COLUMNS},
                **{column: files[suffix] for suffix, column in parquet.FILE_COLUMNS.items()},
                "seconds": seconds, "worker": self.worker, "node": self.node,
            })  # fmt: skip
        return pa.Table.from_pylist(rows, schema=schema)
