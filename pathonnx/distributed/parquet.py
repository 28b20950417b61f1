"""The Parquet datasets of Ray runs: their schemas, and parts written atomically and read back.

A dataset is a folder of ``part-<hash>.parquet`` files, one per batch the driver received,
each written whole through a temp file and a rename (:func:`pathonnx.io.atomic_write_bytes`),
so an interrupted run leaves whole parts only. A part's name is the hash of its rows' keys:
the same rows written twice replace one file. Reading takes every readable part with the
dataset's columns, and keeps one row per key (the rows of one key are the same measurement).
pandas, DuckDB, Spark or ``pyarrow.dataset`` read the folder as one table.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import errors
from ..errors import InputError
from ..evaluation.evaluate import METRICS
from ..io import atomic_write_bytes, open_input
from ..version import __version__

#: Metrics that are properties of the whole set (computed after every input, on the driver),
#: not of one row: they are not stored.
SET_METRICS = ("acIOU", "transfer_accuracy")

_IDENTITY = [
    pa.field("key", pa.string(), nullable=False),  # the content hash a resumed run skips by
    pa.field("input", pa.string()),
    pa.field("input_sha256", pa.string()),
    pa.field("model_sha256", pa.string()),
    pa.field("method", pa.string()),
]
_WHERE = [
    # the batch's time in the batch function on its worker, per input (explain: its files
    # rendered too)
    pa.field("seconds", pa.float64()),
    pa.field("worker", pa.string()),  # host:pid of the worker process
    pa.field("node", pa.string()),  # Ray's node id
]

#: One row per (input, method) of `pathonnx evaluate --ray` (``records.parquet/``): the
#: identity, the target, each metric of one input (null where not measured or undefined),
#: where and how long it ran, the packed pathway (cnp: np.packbits of the kept units), and
#: ``record``, the whole record as JSON with its curves, as results.json lists it.
EVALUATE = pa.schema(
    _IDENTITY
    + [pa.field("target", pa.int64()), pa.field("label", pa.string())]
    + [pa.field(m, pa.float64()) for m in METRICS if m not in SET_METRICS]
    + _WHERE
    + [pa.field("units", pa.binary()), pa.field("record", pa.string())]
)

#: One row per input of `pathonnx explain --ray` (``index.parquet/``): the identity, the
#: prediction and target, the pathway's share of the logit (null for other methods), the
#: completeness error, the files written under --out, and where and how long it ran.
EXPLAIN = pa.schema(
    _IDENTITY
    + [
        pa.field("target", pa.int64()),
        pa.field("target_label", pa.string()),
        pa.field("target_probability", pa.float64()),
        pa.field("prediction", pa.int64()),
        pa.field("prediction_label", pa.string()),
        pa.field("probability", pa.float64()),  # of the prediction
        pa.field("logit_share", pa.float64()),
        pa.field("completeness_error", pa.float64()),
        pa.field("png", pa.string()),
        pa.field("json", pa.string()),
        pa.field("npz", pa.string()),
    ]
    + _WHERE
)

#: The columns a worker's explain batch carries besides :data:`EXPLAIN`: the files' bytes.
FILE_COLUMNS = {".png": "png_data", ".json": "json_data", ".npz": "npz_data"}
#: The column of a worker's answer that carries a pathonnx error instead of rows
#: (``"InputError: what is wrong"``); it is never written.
ERROR = "error"


def raise_failure(table: pa.Table) -> None:
    """Raise the pathonnx error a worker answered with (see :data:`ERROR`), if any."""
    if ERROR not in table.column_names:
        return
    failed = [e for e in table.column(ERROR).to_pylist() if e]
    if failed:
        name, _, message = failed[0].partition(": ")
        kind = getattr(errors, name, None)
        if not (isinstance(kind, type) and issubclass(kind, errors.PathonnxError)):
            kind, message = errors.InputError, failed[0]
        raise kind(message)


def write_part(folder: Path, table: pa.Table, schema: pa.Schema) -> Path:
    """Write ``table``'s :data:`schema` columns as one part of the dataset in ``folder``."""
    table = table.select(schema.names).cast(schema)
    keys = "\n".join(sorted(table.column("key").to_pylist()))
    name = f"part-{hashlib.sha256(keys.encode()).hexdigest()[:24]}.parquet"
    sink = pa.BufferOutputStream()
    metadata = {b"pathonnx.version": __version__.encode()}
    pq.write_table(table.replace_schema_metadata(metadata), sink, compression="zstd")
    return atomic_write_bytes(Path(folder) / name, sink.getvalue().to_pybytes())


def read_rows(folder: Path, schema: pa.Schema) -> dict[str, dict]:
    """Key -> row (a dict of :data:`schema`'s columns) over every part in ``folder``. A part
    that cannot be read, or lacks a column, is passed over: its rows are measured again."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is in the place of the run's Parquet dataset but not a "
                         "folder; remove it or choose another --out")  # fmt: skip
    rows: dict[str, dict] = {}
    for path in sorted(folder.glob("part-*.parquet")) if folder.is_dir() else ():
        if not path.is_file():
            continue
        try:  # the dataset is the run's own output, not an input: read without noting it
            with open_input(path, "a part of the run's dataset", None, note=False) as handle:
                table = pq.read_table(handle)
            table = table.select(schema.names).cast(schema)
        except (InputError, OSError, pa.ArrowException, KeyError, ValueError):
            continue
        for row in table.to_pylist():
            if row["key"] is not None:
                rows.setdefault(row["key"], row)
    return rows
