"""How a Ray worker loads the run's model: an onnxruntime session cannot be pickled, so each
worker builds its own from the file's bytes (or its path) and the options of the driver's."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import Model, load
from ..engine.session import THREADS_ENV
from ..errors import InputError, PathonnxError
from ..explanation import target_model
from ..io import read_bytes

#: Largest model file shipped to the workers through Ray's object store; a larger one (or
#: one with external data) is read from its path on each worker's node.
SHIPPED_BYTES = 2 << 30


@dataclass(frozen=True, eq=False)  # eq: an array field
class ModelSpec:
    """What :func:`pathonnx.load` and :func:`~pathonnx.explanation.target_model` were given:
    the model's ``path``, ``input_shape``, ``device``, ``precision``, ``output`` and ``size``,
    the position ``at`` or region ``mask`` (an array) of a dense output. ``payload`` holds the
    file's bytes when they travel to the workers (:meth:`shipped`); ``identity`` is the
    driver's :attr:`Model.identity`, which every worker's copy must have."""

    path: str
    input_shape: tuple[int, ...] | None = None
    device: str = "auto"
    precision: str = "exact"
    output: str | None = None
    size: tuple[int, int] | None = None
    at: tuple[int, ...] | None = None
    mask: np.ndarray | None = None
    payload: bytes | None = None
    identity: str | None = None
    source: str | None = None

    def load(self) -> Model:
        """The model as the driver loaded it: from the payload when there is one (a worker
        on a node that does not share the driver's files), else from the path."""
        if self.payload is not None:
            try:
                model = self._finish(load(self.payload, self.input_shape, self.device,
                                          self.precision, self.output, self.size))  # fmt: skip
            except PathonnxError:  # external data beside the file: read it where it lies
                model = None
            if model is not None:
                return model
        return self._finish(load(self.path, self.input_shape, self.device, self.precision,
                                 self.output, self.size))  # fmt: skip

    def _finish(self, model: Model) -> Model:
        model.check_memory(1)
        model = target_model(model, self.at, self.mask)
        if self.identity is not None and model.identity != self.identity:
            raise InputError(
                f"the model a Ray worker loaded from {self.path} is not the driver's (another "
                "file at that path on its node?); give every node the same file"
            )
        if self.source is not None:
            model.source = self.source  # reports name the file as the driver's does
        return model

    def shipped(self, model: Model) -> ModelSpec:
        """This spec with ``model``'s identity and name, and the file's bytes where they can
        travel (a file of at most :data:`SHIPPED_BYTES`)."""
        payload = None
        path = Path(self.path)
        if path.is_file() and path.stat().st_size <= SHIPPED_BYTES:
            payload = read_bytes(path, "the input model", SHIPPED_BYTES)
        return ModelSpec(self.path, self.input_shape, self.device, self.precision, self.output,
                         self.size, self.at, self.mask, payload, model.identity,
                         str(model.source))  # fmt: skip


def for_worker(threads: int) -> None:
    """A worker's process settings before its model loads: onnxruntime's threads (the CPUs
    Ray gave it; see :data:`~pathonnx.engine.session.THREADS_ENV`)."""
    os.environ[THREADS_ENV] = str(threads)
