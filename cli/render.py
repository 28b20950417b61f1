"""Plain-text rendering of pathonnx results for the terminal."""

from __future__ import annotations

import numpy as np

import pathonnx


def _histogram(ops: dict[str, int]) -> str:
    return " ".join(f"{op}×{n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def check_text(result: pathonnx.CheckResult, verbose: bool = False) -> str:
    lines = []
    if result.explainable and result.exit_code == 0:
        lines.append(f"{result.model}: explainable")
    elif result.explainable and result.self_check is None:  # the self-check could not run
        lines.append(f"{result.model}: explainable, but cannot be checked here: {result.error}")
    elif result.explainable:
        lines.append(f"{result.model}: FAILED self-check: {result.error}")
    elif result.unsupported:
        count, kinds = len(result.unsupported), len(result.unsupported_kinds)
        lines.append(
            f"{result.model}: NOT explainable: {count} unsupported node(s) of {kinds} kind(s)"
        )
        for kind in result.unsupported_kinds:
            lines.append(
                f"  {kind['label']} ×{kind['count']}: {kind['why']} (e.g. node {kind['example']!r})"
            )
        lines.append("  nodes:")
        lines += [f"    {u['op']} {u['node']!r}: {u['reason']}" for u in result.unsupported]
    elif result.exit_code == 1:
        lines.append(f"{result.model}: NOT explainable: {result.error}")
    else:
        lines.append(f"{result.model}: cannot be read: {result.error}")
    if result.ops:
        lines.append(f"  ops (original):  {_histogram(result.ops)}")
    if result.opset_upgraded_from is not None:
        lines.append(f"  opset upgraded from {result.opset_upgraded_from} to 13")
    if not result.explainable:
        return "\n".join(lines)
    lines.append(f"  ops (canonical): {_histogram(result.canonical_ops)}")
    shape = "x".join(map(str, result.input_shape))
    output = result.output or {}
    dims = output.get("shape") or [result.num_outputs]
    if np.prod(dims) > max(dims):  # dense: more than one position
        lines.append(
            f"  input {shape}, output {output['name']!r} {'x'.join(map(str, dims))} (channels on "
            f"axis {output['channel_axis']}): {result.num_outputs} logits"
        )
    else:
        lines.append(f"  input {shape}, {result.num_outputs} outputs (logits)")
    if len(output.get("outputs", ())) > 1:
        lines.append(
            f"  explaining output {output['name']!r} of {len(output['outputs'])}: "
            f"{', '.join(output['outputs'])}"
        )
    kinds = ", ".join(f"{k}×{n}" for k, n in result.gate_kinds.items())
    lines.append(
        f"  gates: {result.gates} ({kinds}), {result.units:,} units per sample; "
        f"max-pools: {result.maxpools}"
    )
    bn = result.batchnorm
    lines.append(f"  batchnorm: {bn['folded']} folded, {bn['kept_affine']} kept as affine")
    if result.softmax_stripped:
        lines.append("  trailing softmax removed: explanations are of the logits")
    check = result.self_check
    if check is not None:
        verdict = "ok" if check["passed"] else "FAILED"
        lines.append(
            f"  self-check: max |Δ{check['compared']}| = {check['max_abs_diff']:.2e} "
            f"(tolerance {check['tolerance']:.2e}, batch {check['batch']}) {verdict}"
        )
    complete = result.completeness
    if complete is not None:
        verdict = "ok" if complete["passed"] else "FAILED"
        lines.append(
            f"  completeness: max |W·x + b - logit| = {complete['max_abs_error']:.2e} "
            f"(relative {complete['relative_error']:.1e}, tolerance {complete['tolerance']:.2e}) "
            f"{verdict}"
        )
    if verbose:
        for report in result.passes:
            lines.append(f"  pass {report['pass']}:")
            lines += [f"    + {c}" for c in report["changed"]]
            lines += [f"    - {s}" for s in report["skipped"]]
    return "\n".join(lines)


def inspect_text(model: pathonnx.Model) -> str:
    rows = [("#", "gate", "kind", "shape", "units", "params")]
    for i, gate in enumerate(model.gates):
        params = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}[{np.size(v)}]"
            for k, v in gate.params.items()
        )
        rows.append(
            (
                str(i),
                gate.name,
                gate.kind,
                "x".join(map(str, gate.shape)),
                f"{gate.units:,}",
                params,
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    outputs = f"{model.num_outputs} outputs"
    if model.dense:
        shape = "x".join(map(str, model.output_shape))
        outputs = f"output {model.output_name!r} {shape} ({model.num_outputs} logits)"
    lines = [
        f"{model.source}: input {'x'.join(map(str, model.input_shape))}, "
        f"{outputs}, {len(model.gates)} gates"
    ]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    total = sum(g.units for g in model.gates)
    lines.append(f"total: {total:,} units per sample")
    for site in model.maxpools:
        lines.append(f"max-pool {site.name} {'x'.join(map(str, site.shape))} (argmax frozen)")
    return "\n".join(lines)


def report_text(reports: list[pathonnx.PassReport]) -> str:
    return "\n".join(r.summary() for r in reports)


class StepLine:
    """One self-overwriting line on a terminal for the steps of a long run, e.g.
    ``pathwise (21 rows): gates 12/49  8 s``: shown once a task has run ``delay`` seconds,
    cleared when it ends (a listener for :func:`pathonnx.progress.reporting`)."""

    def __init__(self, stream, delay: float = 1.0, clock=None):
        import time

        self.stream, self.delay, self.clock = stream, delay, clock or time.monotonic
        self.task, self.start, self.width = None, 0.0, 0

    def __call__(self, task: str, done: int, total: int) -> None:
        now = self.clock()
        if task != self.task:
            self.task, self.start = task, now
        if done >= total:
            self._clear()
            self.task = None
            return
        if now - self.start >= self.delay:
            line = f"{task} {done}/{total}  {now - self.start:.0f} s"
            self.stream.write("\r" + line.ljust(self.width))
            self.stream.flush()
            self.width = len(line)

    def _clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


class Throughput:
    """The progress of a Ray run (``progress(n)`` of :mod:`pathonnx.distributed`): its first
    call is the number already recorded, the later ones each batch as it is written. Shows
    done/total and the rate on a click progress ``bar`` (None: counts only); the rate counts
    the batches of this run, from the first call (Ray's start included: what the user waits)."""

    def __init__(self, bar=None, unit: str = "inputs", clock=None):
        import time

        self.bar, self.unit, self.clock = bar, unit, clock or time.monotonic
        self.start: float | None = None
        self.reused = self.done = 0

    def __call__(self, n: int) -> None:
        if self.start is None:
            self.start, self.reused = self.clock(), n
        else:
            self.done += n
        if self.bar is not None:
            self.bar.update(n, self.rate_text())

    @property
    def seconds(self) -> float:
        return 0.0 if self.start is None else self.clock() - self.start

    def rate_text(self) -> str:
        seconds = self.seconds
        rate = self.done / seconds if seconds > 0 else 0.0
        return f"{rate:.1f} {self.unit}/s"

    def summary(self, where: str) -> str:
        """One line for the end of the run, e.g. ``Ray: 40 records in 12.3 s (3.2 records/s);
        20 already in OUT/records.parquet``."""
        text = f"Ray: {self.done} {self.unit} in {self.seconds:.1f} s ({self.rate_text()})"
        return text + (f"; {self.reused} already in {where}" if self.reused else "")
