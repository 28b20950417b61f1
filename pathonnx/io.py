"""Safe file output: atomic writes that never replace an input file, and strict JSON."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask is process-wide


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def json_text(data, indent: int | None = 2) -> str:
    """``data`` as strict JSON (RFC 8259), the one way pathonnx writes JSON: numpy values
    become plain numbers and lists. JSON has no NaN or infinity: where ``data`` holds one, this
    raises InputError naming where, instead of writing a ``NaN`` token no strict parser reads.
    (Values a report leaves undefined, e.g. a correlation of a constant map, are None: null.)"""
    try:
        return json.dumps(data, indent=indent, default=_plain, allow_nan=False)
    except ValueError:
        where, value = _non_finite(data) or ("an unknown place", "a non-finite number")
        raise InputError(
            f"the result has {value} at {where}, which JSON cannot hold: the model or its input "
            "gives non-finite numbers (pathonnx check MODEL tests the model)"
        ) from None


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _non_finite(data, where: str = "") -> tuple[str, str] | None:
    """(where, value) of the first NaN or infinity in ``data``, ``where`` written like
    ``summary.pathwise.insertion.mean`` or ``records[3].curve[7]``; None if there is none."""
    if isinstance(data, dict):
        children = ((f"{where}.{k}" if where else str(k), v) for k, v in data.items())
    elif isinstance(data, (list, tuple)):
        children = ((f"{where}[{i}]", v) for i, v in enumerate(data))
    elif isinstance(data, (float, np.floating)):
        return None if math.isfinite(data) else (where or "the top", str(data))
    elif isinstance(data, np.ndarray) and data.dtype.kind == "f" and not np.isfinite(data).all():
        index = [int(i) for i in np.argwhere(~np.isfinite(data))[0]]
        return f"{where}{index}", str(data[tuple(index)])
    else:
        return None
    return next((found for path, v in children if (found := _non_finite(v, path))), None)
