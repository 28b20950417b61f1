"""Benchmark: `explain` and `evaluate` on the shipped eval images, serial and on Ray.

In one run on one machine: the serial path (what `pathonnx explain`/`evaluate` do without
--ray: one process, onnxruntime on every core, files written as it goes) and Ray Data with 1
and 2 workers (each a Ray actor with one CPU, one onnxruntime thread and its own copy of the
model; `pathonnx.distributed`), on a local Ray instance started once. Each configuration runs
``--repeats`` times into a fresh output folder (nothing is reused); the table shows medians.

Columns:
- ``run s``: the whole call, as a user waits for it: for Ray, the actor pool's start and each
  worker's model load included (the Ray instance's own start is printed once, apart);
- ``inputs/s``: inputs (explain) or (input, method) records (evaluate) per second of ``run s``;
- ``steady/s``: the rate once the first batch is in, (rows − first batch) / (last − first
  arrival): what a long run approaches, and what the projection in the README scales;
- ``overhead/batch``: for Ray, the median time between two batches reaching the driver, less
  the time the worker spent in the batch function (its ``seconds`` column): scheduling,
  moving the batch and its result, and the driver's writes not hidden behind the next batch;
- ``driver/input``: the driver's own time per input spent writing (Parquet parts, and for
  explain the PNG/JSON/NPZ files): the ceiling of one driver is 1 / this.

``--device cuda`` runs the model on CUDA and gives each Ray worker one GPU (``--gpus``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pathonnx
from pathonnx import distributed
from pathonnx.distributed import parquet, runs
from pathonnx.evaluation.evaluate import Settings, evaluate
from pathonnx.explanation import Request, explain_samples, image_preprocess, output_stems
from pathonnx.images import Sample, collect, load_inputs

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "sample_models" / "shapes_vgg.onnx"
EVAL = ROOT / "sample_models" / "eval"
EVALUATE_METHODS = ["saliency", "pathwise"]
EVALUATE_GROUPS = ["insertion", "deletion", "pathway"]


class Clock:
    """Arrival times of a Ray run's batches, and the rows of each (its progress callback,
    whose first call is what was already recorded: 0 here, a fresh folder)."""

    def __init__(self):
        self.started = False
        self.times: list[float] = []
        self.rows: list[int] = []

    def __call__(self, n: int) -> None:
        if not self.started:
            self.started = True
            return
        self.times.append(time.perf_counter())
        self.rows.append(n)

    def steady(self) -> float | None:
        """Rows per second after the first batch."""
        if len(self.times) < 2:
            return None
        return sum(self.rows[1:]) / (self.times[-1] - self.times[0])

    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])]


class DriverTime:
    """Seconds the driver spends in its writes during a Ray run (wrapped, then restored)."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self.saved = (runs.atomic_write_bytes, parquet.write_part)

        def timed(fn):
            def run(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - t0

            return run

        runs.atomic_write_bytes = timed(self.saved[0])
        parquet.write_part = timed(self.saved[1])
        return self

    def __exit__(self, *exc):
        runs.atomic_write_bytes, parquet.write_part = self.saved


def machine() -> str:
    import onnxruntime as ort
    import ray

    return (
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, Ray {ray.__version__}"
    )


def inputs(model, repeat: int) -> list[Sample]:
    """The eval images, ``repeat`` times over (each copy a source of its own)."""
    pre = image_preprocess(model)
    base = [s for f in collect([str(EVAL)]) for s in load_inputs(f, pre, model.input_shape)]
    return [Sample(s.x, s.image, f"{s.source}#{k}" if k else s.source)
            for k in range(repeat) for s in base]  # fmt: skip


def serial_explain(model, loaded, request, batch, folder: Path) -> float:
    t0 = time.perf_counter()
    explained = explain_samples(model, loaded, request, batch)
    for expl, stem in zip(explained, output_stems([s.source for s in loaded])):
        expl.save(folder, stem)
    return time.perf_counter() - t0


def serial_evaluate(model, loaded, settings, folder: Path) -> float:
    t0 = time.perf_counter()
    evaluate(model, loaded, EVALUATE_METHODS, EVALUATE_GROUPS, settings, cache=folder / "cache")
    return time.perf_counter() - t0


def ray_run(task: str, model, loaded, request, settings, batch, ray_settings, folder: Path):
    """(run seconds, clock, driver seconds, worker seconds per batch) of one Ray run."""
    spec = distributed.ModelSpec(str(MODEL), device=model.device)
    clock = Clock()
    with DriverTime() as driver:
        t0 = time.perf_counter()
        if task == "explain":
            distributed.explain(spec, loaded, request, folder, ray_settings, batch, clock,
                                driver_model=model)  # fmt: skip
            schema, name = parquet.EXPLAIN, distributed.INDEX
        else:
            distributed.evaluate(spec, loaded, EVALUATE_METHODS, EVALUATE_GROUPS, settings,
                                 out=folder, ray=ray_settings, progress=clock,
                                 driver_model=model)  # fmt: skip
            schema, name = parquet.EVALUATE, distributed.RECORDS
        seconds = time.perf_counter() - t0
    rows = parquet.read_rows(folder / name, schema).values()
    per_batch: dict[str, float] = {}  # a batch's rows share their worker and seconds
    for row in rows:
        key = f"{row['worker']}:{row['seconds']}"
        per_batch[key] = per_batch.get(key, 0.0) + row["seconds"]
    return seconds, clock, driver.seconds, statistics.median(per_batch.values())


def _median(values: list[float], form: str, scale: float = 1.0) -> str:
    return form.format(scale * statistics.median(values)) if values else "-"


def table(lines: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in
                     enumerate(zip(row, widths))).rstrip() for row in lines]  # fmt: skip
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    parser.add_argument("--repeat-inputs", type=int, default=4,
                        help="explain the 60 eval images this many times over")  # fmt: skip
    parser.add_argument("--batch", type=int, default=8, help="inputs per Ray batch")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--gpus", type=float, default=1.0, help="GPUs per worker on cuda")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 repeat, the eval images once, explain only")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.repeat_inputs = 1, 1
    import ray

    print(f"bench_ray: {machine()}")
    model = pathonnx.load(MODEL, device=args.device)
    many = inputs(model, args.repeat_inputs)
    once = inputs(model, 1)
    request = Request.make(model, "pathwise", preprocess=image_preprocess(model))
    settings = Settings(steps=16, batch=4 * args.batch)  # evaluate: batch inputs per Ray batch
    tasks = {"explain": many} if args.quick else {"explain": many, "evaluate": once}
    for task, loaded in tasks.items():
        what = "pathwise" if task == "explain" else (
            f"{'+'.join(EVALUATE_METHODS)} × {','.join(EVALUATE_GROUPS)}, 16 steps")  # fmt: skip
        print(f"{task}: {len(loaded)} inputs of {MODEL.name} ({what}), batch {args.batch}")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # as pathonnx's own start does
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), num_gpus=None, include_dashboard=False,
             logging_level="error", log_to_driver=False)  # fmt: skip
    print(f"Ray's local instance started in {time.perf_counter() - t0:.1f} s (not in the table)")
    gpus = args.gpus if args.device == "cuda" else 0.0
    configs = [("serial", None), ("ray", 1), ("ray", 2)]
    if gpus:
        count = int(ray.cluster_resources().get("GPU", 0) // gpus)
        configs = [("serial", None)] + [("ray", n) for n in (1, 2) if n <= max(count, 1)]
    head = ["task", "path", "workers", "run s", "inputs/s", "steady/s", "overhead/batch",
            "driver/input"]  # fmt: skip
    lines = [head]
    try:
        for task, loaded in tasks.items():
            unit = len(loaded) * (len(EVALUATE_METHODS) if task == "evaluate" else 1)
            for path, workers in configs:
                runs_s, steady, overhead, driver = [], [], [], []
                for _ in range(args.repeats):
                    with tempfile.TemporaryDirectory() as folder:
                        if path == "serial" and task == "explain":
                            runs_s.append(serial_explain(model, loaded, request, args.batch,
                                                         Path(folder)))  # fmt: skip
                        elif path == "serial":
                            runs_s.append(serial_evaluate(model, loaded, settings, Path(folder)))
                        else:
                            on = distributed.RaySettings(workers=workers, gpus=gpus)
                            s, clock, d, work = ray_run(task, model, loaded, request, settings,
                                                        args.batch, on, Path(folder))  # fmt: skip
                            runs_s.append(s)
                            steady.append(clock.steady() or float("nan"))
                            gaps = clock.intervals()
                            if workers == 1 and gaps:
                                overhead.append(statistics.median(gaps) - work)
                            driver.append(d / len(loaded))
                run_s = statistics.median(runs_s)
                lines.append([
                    task, path if path == "serial" else f"ray ({'GPU' if gpus else 'CPU'})",
                    "-" if workers is None else str(workers), f"{run_s:.2f}",
                    f"{unit / run_s:.1f}", _median(steady, "{:.1f}"),
                    _median(overhead, "{:.0f} ms", 1000), _median(driver, "{:.1f} ms", 1000),
                ])  # fmt: skip
                print(f"  {task} {path} {workers or ''}: {run_s:.2f} s", file=sys.stderr)
    finally:
        ray.shutdown()
    print(table(lines))
    print("serial: onnxruntime on every core; ray: 1 CPU and 1 thread per worker. "
          "evaluate's rate counts (input, method) records.")  # fmt: skip


if __name__ == "__main__":
    main()
