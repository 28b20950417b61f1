"""A trained generator as an ONNX file that onnxruntime alone runs (the format is in
:mod:`pathonnx.methods.learned`), and the hook where class pathways join it.

torch's TorchScript-based exporter (``dynamo=False``) writes it: it needs nothing beyond
torch (the dynamo exporter needs onnxscript, which the ``learn`` extra does not bring), and
the generator is a plain feed-forward module whose loops unroll at the gates' fixed sizes.
The batch axis is free. pathonnx's metadata (gates, granularity, the model's sha256,
settings, final losses, version) is added to the file's metadata_props.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ..graph.auxiliary import stamp_metadata
from ..io import atomic_write_bytes
from ..methods.learned import generator_metadata, input_name, output_name

#: The opset of exported generators.
OPSET = 17


@contextlib.contextmanager
def quiet_export():
    """Silence torch.onnx.export's noise (deprecation and tracer warnings, progress prints,
    registry log lines): not the user's concern, nor the tests' (tests/zoo.py uses it)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_generator(trained, model, path: str | Path | None = None) -> bytes:
    """The serialized ONNX generator of ``trained`` (a :class:`~pathonnx.learn.Trained`) for
    ``model``; written atomically to ``path`` when given."""
    generator = copy.deepcopy(trained.generator).eval().float()
    count = len(model.gates)
    example = tuple(torch.zeros(2, *g.shape) for g in model.gates)
    names_in = [input_name(i) for i in range(count)]
    names_out = [output_name(i) for i in range(count)]
    buffer = io.BytesIO()
    with quiet_export(), torch.no_grad():
        torch.onnx.export(
            generator, example, buffer, dynamo=False, opset_version=OPSET,
            input_names=names_in, output_names=names_out,
            dynamic_axes={name: {0: "N"} for name in names_in + names_out},
        )  # fmt: skip
    losses = {**trained.losses, "best_epoch": trained.best_epoch,
              "epochs_run": len(trained.history), "stopped_early": trained.stopped_early,
              **trained.split}  # fmt: skip
    metadata = generator_metadata(model, trained.settings.granularity,
                                  trained.settings.to_dict(), losses)  # fmt: skip
    data = stamp_metadata(buffer.getvalue(), metadata)
    if path is not None:
        atomic_write_bytes(Path(path), data)
    return data


def write_class_pathways(model, generator_path, examples, out, threshold: float = 0.5,
                         chunk: int = 64, progress=None) -> list[Path]:  # fmt: skip
    """The class pathways beside the generator (issue 16, item 3): each training input's
    GEN-CNP pathway for its label, aggregated per class by average firing (the units at least
    ``threshold`` of the class's pathways keep; :func:`pathonnx.methods.transfer.class_pathways`),
    written to ``<out>`` with ``.classes.npz`` for ``.onnx`` (e.g. ``vgg.gencnp.classes.npz``),
    the file ``--method class_pathway -p pathways=...`` reads. ``progress(n)`` as inputs
    are done. Returns the files written."""
    from ..methods.transfer import class_pathways

    everything = np.arange(len(examples))  # decoded at once: the training set fit in memory
    found = class_pathways(model, examples.batch(everything), examples.labels, method="gencnp",
                           threshold=threshold, chunk=chunk, progress=progress,
                           generator=str(generator_path))  # fmt: skip
    path = Path(out)
    target = path.with_name(path.name.removesuffix(".onnx") + ".classes.npz")
    found.save(target)
    return [target]
