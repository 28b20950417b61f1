"""The driver of a Ray run: plan what is not yet recorded, map it through the workers, write.

Both runs go the same way. The driver reads the inputs (as the serial commands do: the
workers compute on exactly the same arrays and need no access to the files), hashes each one
with what is asked of it (:func:`~pathonnx.evaluation.evaluate.record_key`), and skips the
keys already in the Parquet dataset under ``out``. The rest become a Ray dataset, one row per
(input, method) or input, mapped in batches through an actor pool of
:mod:`.workers` (``map_batches`` with a callable class: one model per worker). The driver
writes each batch it receives, atomically, as one Parquet part; ``explain`` writes the
batch's PNG/JSON/NPZ files first, so that an index row never names a file not yet there.

**Faults.** Ray Data restarts a worker whose process dies and sends its unfinished batches
to a live one (actors with ``max_restarts=-1``, ``max_task_retries=-1``); a batch is written
once, when its result reaches the driver, so a lost worker costs the batch it was computing
and nothing is written twice. A run stopped any other way (Ctrl-C, a lost driver) keeps every
part it wrote, and the next run with the same ``out`` measures only what they lack.

**Memory.** The driver holds the decoded inputs of the run (as the serial commands do), and
Ray's object store a copy of those still to be mapped; split a larger set into runs over parts
of it with one ``out``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import Model
from ..errors import InputError
from ..evaluation.evaluate import (
    GROUPS,
    Results,
    Settings,
    check_run,
    finish,
    input_sha256,
    keeps_pathway,
    parse_record,
    pathway_bytes,
    record_key,
)
from ..explanation import Request, output_stems
from ..images import Sample
from ..io import atomic_write_bytes
from ..pictures import index_html
from .cluster import RaySettings, cause, connect, require
from .spec import ModelSpec

#: The Parquet datasets under ``out``.
RECORDS = "records.parquet"
INDEX = "index.parquet"


def _spec(model) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, (str, Path)):
        return ModelSpec(str(model))
    raise InputError(
        f"model {type(model).__name__} cannot travel to Ray workers (its onnxruntime sessions "
        "cannot be pickled); pass the model's path or a pathonnx.distributed.ModelSpec"
    )


def _map(ray, rows: list[dict], worker, kwargs: dict, batch: int, settings: RaySettings,
         receive: Callable) -> None:  # fmt: skip
    """Map ``rows`` in batches of ``batch`` through an actor pool of ``worker`` (built with
    ``kwargs``) and hand each result table to ``receive`` as it arrives."""
    batches = -(-len(rows) // batch)
    workers = settings.worker_count(ray, batches)
    try:  # about one block per batch, so that batches spread over the workers
        data = ray.data.from_items(rows, override_num_blocks=batches)
    except TypeError:  # Ray 2.9 names it parallelism
        data = ray.data.from_items(rows, parallelism=batches)
    remote = {"num_cpus": settings.cpus}
    if settings.gpus > 0:
        remote["num_gpus"] = settings.gpus
    # two batches in flight per worker: one computing, the next already sent to it
    pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2)
    mapped = data.map_batches(worker, batch_size=batch, batch_format="numpy", compute=pool,
                              fn_constructor_kwargs={**kwargs, "threads": settings.threads()},
                              **remote)  # fmt: skip
    from .parquet import raise_failure

    try:
        for table in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
            raise_failure(table)
            if table.num_rows:
                receive(table)
    except Exception as err:
        found = cause(err)
        if found is not None:
            raise found from None
        raise


def evaluate(
    model: str | Path | ModelSpec,
    loaded: list[Sample],
    methods: list[str],
    groups: list[str] | None = None,
    settings: Settings | None = None,
    masks: dict | None = None,
    labels: list[str] | None = None,
    out: str | Path = "pathonnx-eval",
    ray: RaySettings | None = None,
    progress: Callable[[int], None] | None = None,
    driver_model: Model | None = None,
) -> Results:
    """:func:`pathonnx.evaluation.evaluate.evaluate` on Ray: the same records, measured by
    Ray workers and written as rows of the Parquet dataset ``out/records.parquet``
    (:data:`~.parquet.EVALUATE`); the returned :class:`Results` are read back from it.

    ``model``: the model's path or a :class:`ModelSpec` (each worker loads its own copy);
    ``driver_model``: the driver's copy, when already loaded from the same spec. ``ray``:
    where and how wide (:class:`RaySettings`; default: a local instance, one worker per CPU).
    ``progress(n)`` hears first how many (input, method) pairs are already recorded (0 or
    more), then each batch's as it is written.
    The set metrics of the ``cnp`` group are computed on the driver from the gathered
    pathways, after every row is recorded.
    """
    require()
    spec = _spec(model)
    driver = driver_model if driver_model is not None else spec.load()
    spec = spec.shipped(driver)
    settings = settings or Settings()
    groups = list(GROUPS) if groups is None else list(groups)
    check_run(driver, methods, groups, settings)
    if not loaded:
        raise InputError("no inputs to evaluate")
    driver.require_position()
    names = labels or [str(i) for i in range(driver.num_outputs)]
    folder = Path(out) / RECORDS
    sha, size = driver.identity, pathway_bytes(driver)
    keys = {(i, m): record_key(sha, item, m, settings, groups)
            for i, item in enumerate(loaded) for m in methods}  # fmt: skip
    from . import parquet

    def usable(rows: dict, i: int, method: str) -> bool:
        row = rows.get(keys[i, method])
        if row is None or _record(row, loaded[i], method) is None:
            return False
        return not keeps_pathway(method, groups) or len(row["units"] or b"") == size

    recorded = parquet.read_rows(folder, parquet.EVALUATE)
    todo = [(i, m) for m in methods for i in range(len(loaded)) if not usable(recorded, i, m)]
    if progress:  # first, and always: what is already recorded (0 or more)
        progress(len(keys) - len(todo))
    if todo:
        rows = [{"key": keys[i, m], "method": m, "source": loaded[i].source, "x": loaded[i].x}
                for i, m in todo]  # fmt: skip

        def receive(table):
            parquet.write_part(folder, table, parquet.EVALUATE)
            if progress:
                progress(table.num_rows)

        from .workers import EvaluateWorker

        kwargs = {"spec": spec, "groups": groups, "settings": settings, "masks": masks,
                  "names": names}  # fmt: skip
        with connect(ray or RaySettings()) as ray_module:
            _map(ray_module, rows, EvaluateWorker, kwargs, max(1, settings.batch // 4),
                 ray or RaySettings(), receive)  # fmt: skip
    recorded = parquet.read_rows(folder, parquet.EVALUATE)  # the results come from the dataset
    records, units = {}, {}
    for (i, method), key in keys.items():
        if not usable(recorded, i, method):
            raise InputError(f"{loaded[i].source}: no usable {method} row in {folder} after the "
                             "run; run it again")  # fmt: skip
        row = recorded[key]
        records[i, method] = _record(row, loaded[i], method)
        if keeps_pathway(method, groups):
            units[i, method] = np.frombuffer(row["units"], np.uint8)
    return finish(driver, loaded, methods, groups, settings, masks, records, units)


def _record(row: dict, item: Sample, method: str) -> dict | None:
    """The record in a dataset row, when it is a well-formed record of ``item`` and
    ``method`` (see :func:`~pathonnx.evaluation.evaluate.cached_record`)."""
    return parse_record(row.get("record"), item, method)


@dataclass
class Explained:
    """What a Ray explain run leaves under ``out``: one index row per input, in input order
    (the columns of :data:`~.parquet.EXPLAIN`), and how many were explained now and how many
    were already there."""

    rows: list[dict]
    computed: int
    reused: int
    index: Path

    def html_rows(self) -> list[dict]:
        """The rows as :func:`pathonnx.pictures.index_html` takes them."""
        return [{"png": r["png"], "input": r["input"], "prediction": r["prediction_label"],
                 "probability": r["probability"], "target": r["target_label"],
                 "method": r["method"], "share": r["logit_share"],
                 "error": r["completeness_error"]} for r in self.rows]  # fmt: skip


def explain_key(identity: str, item: Sample, request: Request) -> str:
    """The content hash of one input's explanation: the model, the input and the request."""
    blob = json.dumps(
        [identity, item.source, input_sha256(item), item.image is not None, request.method,
         request.params, request.target, request.paths, request.compare, request.labels,
         request.preprocess],
        default=str, sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def explain(
    model: str | Path | ModelSpec,
    loaded: list[Sample],
    request: Request,
    out: str | Path = "pathonnx-out",
    ray: RaySettings | None = None,
    batch: int = 16,
    progress: Callable[[int], None] | None = None,
    driver_model: Model | None = None,
) -> Explained:
    """Explain ``loaded`` inputs as :func:`pathonnx.explanation.explain_samples` does, on
    Ray workers, ``batch`` inputs per batch; write each one's ``<stem>.png``, ``.json`` and
    ``.npz`` under ``out`` (as ``Explanation.save``) and its row of ``out/index.parquet``,
    and ``out/index.html`` for more than one input. Inputs already explained there (same
    key, files present) are skipped. ``request``: :meth:`Request.make` on the driver's model.
    ``progress(n)`` hears first how many inputs are already explained (0 or more), then each
    batch's as it is written.
    """
    require()
    spec = _spec(model)
    driver = driver_model if driver_model is not None else spec.load()
    spec = spec.shipped(driver)
    if not loaded:
        raise InputError("no inputs to explain")
    if isinstance(batch, bool) or int(batch) < 1:
        raise InputError(f"batch={batch} must be 1 or more")
    out = Path(out)
    folder = out / INDEX
    stems = output_stems([item.source for item in loaded])
    keys = [explain_key(driver.identity, item, request) for item in loaded]
    from . import parquet

    def usable(rows: dict, i: int) -> bool:
        row = rows.get(keys[i])
        return row is not None and row["png"] == f"{stems[i]}.png" and all(
            (out / row[suffix[1:]]).is_file() for suffix in parquet.FILE_COLUMNS)  # fmt: skip

    recorded = parquet.read_rows(folder, parquet.EXPLAIN)
    todo = [i for i in range(len(loaded)) if not usable(recorded, i)]
    if progress:  # first, and always: what is already recorded (0 or more)
        progress(len(loaded) - len(todo))
    if todo:
        shape = next((item.image.shape for item in loaded if item.image is not None), (1, 1, 3))
        blank = np.zeros(shape, np.uint8)
        rows = [{"key": keys[i], "stem": stems[i], "source": loaded[i].source, "x": loaded[i].x,
                 "image": blank if loaded[i].image is None else loaded[i].image,
                 "has_image": loaded[i].image is not None} for i in todo]  # fmt: skip

        def receive(table):
            columns = {c: table.column(c).to_pylist() for c in ("png", "json", "npz")}
            for suffix, column in parquet.FILE_COLUMNS.items():
                for name, data in zip(columns[suffix[1:]], table.column(column).to_pylist()):
                    atomic_write_bytes(out / name, data)
            parquet.write_part(folder, table, parquet.EXPLAIN)  # after the files it names
            if progress:
                progress(table.num_rows)

        from .workers import ExplainWorker

        with connect(ray or RaySettings()) as ray_module:
            _map(ray_module, rows, ExplainWorker, {"spec": spec, "request": request},
                 int(batch), ray or RaySettings(), receive)  # fmt: skip
    recorded = parquet.read_rows(folder, parquet.EXPLAIN)
    missing = [loaded[i].source for i in range(len(loaded)) if not usable(recorded, i)]
    if missing:
        raise InputError(f"{missing[0]}: no explanation in {folder} after the run; run it again")
    done = Explained([recorded[k] for k in keys], len(todo), len(loaded) - len(todo), folder)
    if len(loaded) > 1:
        atomic_write_bytes(out / "index.html", index_html(done.html_rows()).encode())
    return done


__all__ = ["INDEX", "RECORDS", "Explained", "evaluate", "explain", "explain_key"]
