"""`pathonnx check`: can this model be explained, and does the rewrite reproduce it exactly?"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .engine import Model, make_session, running, softmax
from .errors import PathonnxError, UnsupportedModelError
from .graph import canonicalize, load_model

#: The rewritten model must match the original to this fraction of the logit scale.
RELATIVE_TOLERANCE = 1e-5
#: W·x + b must give the logit to this fraction of the logit scale (docs/ARCHITECTURE.md).
COMPLETENESS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SelfCheck:
    """Result of comparing the canonical model with the original on random inputs.

    ``compared`` is "logits" when the original graph has a tensor equal to the logits (the usual
    case), else "output": its output, through a softmax when one was stripped.
    """

    max_abs_diff: float
    logit_scale: float
    tolerance: float
    batch: int
    compared: str
    passed: bool

    def to_dict(self) -> dict:
        """As a dict for reports; a number the model made NaN or infinite (e.g. NaN weights)
        reads null, as strict JSON requires (the check has failed then: ``passed`` is False)."""
        out = asdict(self)
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in out.items()}  # fmt: skip


def self_check(model: Model, batch: int = 2, seed: int = 0) -> SelfCheck:
    """Run original and canonical models on ``batch`` standard-normal inputs and compare.

    The original runs one sample at a time (its batch is pinned to 1); the canonical runs the
    whole batch at once, which also checks that the batch axis was freed correctly.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *model.input_shape)).astype(np.float32)
    proto, compared = model.graph.original_with_logits()
    session = make_session(proto, ["CPUExecutionProvider"], weights=model.graph.weights)
    name = model.reference_name if compared == "logits" else session.get_outputs()[0].name
    with running():
        expected = np.concatenate(
            [session.run([name], {model.input_name: x[i : i + 1]})[0] for i in range(batch)]
        ).reshape(batch, -1)
    got = model.forward(x).logits
    if compared == "output" and model.softmax_stripped:
        got = softmax(got)
    diff = float(np.abs(got - expected).max())
    scale = float(max(np.abs(expected).max(), 1e-12))
    tolerance = RELATIVE_TOLERANCE * scale
    return SelfCheck(diff, scale, tolerance, batch, compared, bool(diff <= tolerance))


@dataclass
class CheckResult:
    """What ``pathonnx check`` reports for one model file."""

    model: str
    explainable: bool = False
    error: str | None = None
    exit_code: int = 0
    unsupported: list[dict] = field(default_factory=list)
    """Every node that cannot be explained: ``node``, ``op``, ``reason``."""
    unsupported_kinds: list[dict] = field(default_factory=list)
    """The same nodes by kind (SiLU, GELU, an op and its reason), most frequent first: ``kind``,
    ``label``, ``why``, ``count`` (places), ``example``, ``nodes``."""
    ops: dict[str, int] = field(default_factory=dict)
    canonical_ops: dict[str, int] = field(default_factory=dict)
    input_shape: list[int] | None = None
    num_outputs: int | None = None
    output: dict | None = None
    """The output explained (:meth:`pathonnx.Model.describe_output`): name, per-sample shape
    in its own layout, channel axis, and every output the file declares."""
    gates: int = 0
    units: int = 0
    gate_kinds: dict[str, int] = field(default_factory=dict)
    maxpools: int = 0
    batchnorm: dict[str, int] = field(default_factory=dict)
    softmax_stripped: bool = False
    opset_upgraded_from: int | None = None
    self_check: dict | None = None
    completeness: dict | None = None
    device: str | None = None
    precision: str | None = None
    passes: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check_model(
    path: str | os.PathLike,
    input_shape: tuple[int, ...] | None = None,
    device: str = "auto",
    precision: str = "exact",
    output: str | None = None,
    size: tuple[int, int] | None = None,
) -> CheckResult:
    """Load, canonicalize and self-check one model; never raises for a bad model file.

    ``output`` and ``size`` are those of :func:`pathonnx.load` (the output to check on a model
    with several; the size of a dynamic image input). For a dense output the checks run on
    all its elements, flattened to logits.

    ``exit_code`` follows the exit codes of docs/ARCHITECTURE.md: 0 explainable and reproduced,
    1 not explainable or the self-check failed, 2 unreadable (or a bad ``input_shape``, or no
    ``output`` chosen among several).
    """
    result = CheckResult(model=str(path))
    try:
        model = _load(path, input_shape, device, precision, output, size, result)
        _describe(model, result)
        _self_checks(model, result)
    except UnsupportedModelError as err:
        result.error, result.exit_code = str(err), err.exit_code
        result.unsupported = [{"node": n, "op": op, "reason": why} for n, op, why in err.nodes]
        result.unsupported_kinds = err.groups
        result.ops = result.ops or err.ops  # refused while reading: the graph as read
    except PathonnxError as err:  # unreadable, or the checks cannot run it (memory, runtime)
        result.error, result.exit_code = str(err), err.exit_code
    return result


def _load(path, input_shape, device, precision, output, size, result: CheckResult) -> Model:
    """The model of ``path``, with what reading it tells recorded in ``result``."""
    file = load_model(path, input_shape, output, size)
    result.ops = dict(file.op_histogram())
    result.opset_upgraded_from = file.opset_upgraded_from
    result.input_shape = list(file.input_shape)
    return Model(canonicalize(file, Path(path).name), device, precision)


def _describe(model: Model, result: CheckResult) -> None:
    """Record what the rewrite made of an explainable model: gates, ops, passes."""
    result.explainable = True
    result.device, result.precision = model.device, model.precision
    result.canonical_ops = dict(model.op_histogram())
    result.num_outputs = model.num_outputs
    result.output = model.describe_output()
    result.gates = len(model.gates)
    result.units = sum(g.units for g in model.gates)
    result.gate_kinds = dict(Counter(g.kind for g in model.gates))
    result.maxpools = len(model.maxpools)
    result.softmax_stripped = model.softmax_stripped
    result.passes = [r.to_dict() for r in model.reports]
    bn = next(r for r in model.reports if r.name == "fold_batchnorm")
    result.batchnorm = {
        "folded": sum(c.startswith("folded") for c in bn.changed),
        "kept_affine": sum(c.startswith("kept") for c in bn.changed),
    }


def _self_checks(model: Model, result: CheckResult) -> None:
    """The self-check, then the completeness check, on two samples where memory allows."""
    model.check_memory(1)  # before the checks draw their inputs: one sample must fit
    batch = min(2, model.engine.largest_batch())
    check = self_check(model, batch)
    result.self_check = check.to_dict()
    if not check.passed:
        result.exit_code = 1
        result.error = (
            f"the rewritten model differs from the original by {check.max_abs_diff:.3g} "
            f"(tolerance {check.tolerance:.3g}); please report this model"
        )
        return
    result.completeness = completeness_check(model, batch)
    if not result.completeness["passed"]:
        result.exit_code = 1
        result.error = (
            f"W·x + b misses the logit by {result.completeness['max_abs_error']:.3g} "
            f"(tolerance {result.completeness['tolerance']:.3g}); please report this model"
        )


def completeness_check(model: Model, batch: int = 2, seed: int = 0) -> dict:
    """Σ W⊙x + b against the logit of the predicted class, on random inputs."""
    x = np.random.default_rng(seed).standard_normal((batch, *model.input_shape))
    x = x.astype(np.float32)
    fwd = model.forward(x)
    target = fwd.logits.argmax(axis=1)
    linear = model.linearize(x, target, fwd=fwd)
    error = float(np.abs(linear.output(x) - fwd.logits[np.arange(batch), target]).max())
    scale = float(max(np.abs(fwd.logits).max(), 1e-12))
    tolerance = COMPLETENESS_TOLERANCE * scale
    return {
        "max_abs_error": error,
        "relative_error": error / scale,
        "tolerance": tolerance,
        "batch": batch,
        "passed": bool(error <= tolerance),
    }
