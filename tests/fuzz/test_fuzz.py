"""The fuzz suite: every fuzz case must keep the bad-input contract (DESIGN §5-6, issue 14).

Each case (``fuzz.fixed``, ``fuzz.seeded``) is one test id, ``test_case[<family>/<name>...]``.
The corpus is built at test time under pytest's tmp path, then the cases run in a few child
processes (``fuzz.harness``), each case through click's CliRunner in the child, with its
address space capped. Each is judged clause by clause (``fuzz.contract.CLAUSES``): the exit
code, no internal error, no traceback, one line on stderr, no warnings, every input
byte-identical, nothing written outside the chosen output, strict JSON, memory under the cap,
``pathonnx.load`` raising only pathonnx's errors, no hang, no crash. ``test_home_untouched``
checks what the whole run wrote under $HOME (and $TMPDIR while importing; each child has
its own, empty at the start).

A summary (cases by outcome, failures by clause) ends pytest's report and is written, with
every observation, to ``summary.txt``, ``summary.json`` and ``results.jsonl`` in the run's
``fuzz`` tmp folder.

Environment variables:

- ``PATHONNX_FUZZ_CASES``: the number of seeded cases (default 160; the fixed ones always run).
  The larger run: ``PATHONNX_FUZZ_CASES=2000 pytest tests/fuzz``.
- ``PATHONNX_FUZZ_SEED``: the seed of those cases (default 0, so that CI is reproducible);
  a case's draws depend only on the seed and its id.
- ``PATHONNX_FUZZ_WORKERS``: child processes (default: 2, or 1 on one CPU).
- ``PATHONNX_FUZZ_TIMEOUT``: seconds a case may run (default 20; 5 for FIFOs and devices).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from fuzz import corpus, fixed, harness, seeded
from fuzz.contract import CLAUSES, Verdict, judge, shorten, summary, summary_text

SEED = int(os.environ.get("PATHONNX_FUZZ_SEED", "0"))
COUNT = int(os.environ.get("PATHONNX_FUZZ_CASES", "160"))
WORKERS = int(os.environ.get("PATHONNX_FUZZ_WORKERS", str(min(2, os.cpu_count() or 1))))
TIMEOUT = float(os.environ.get("PATHONNX_FUZZ_TIMEOUT", "20"))
CASES = [*fixed.cases(), *seeded.cases(SEED, COUNT)]
assert len({c.id for c in CASES}) == len(CASES), "two cases share an id"
SUMMARY = pytest.StashKey[str]()


#: Where matplotlib keeps its font cache under HOME (see :meth:`FuzzRun.home_writes`).
MATPLOTLIB_CACHE = "/.cache/matplotlib/"


class FuzzRun:
    """The corpus of one session, built and run once: each case's verdict by id."""

    def __init__(self, folder: Path, selected: list[corpus.Case]):
        started = time.monotonic()
        shared = corpus.Shared.make(folder / "shared")
        self.roots = {str(shared.folder): "SHARED", str(folder / "workers"): "WORKERS"}
        self.verdicts: dict[str, Verdict] = {}
        self.errors: dict[str, str] = {}
        runs, jobs = {}, []
        for i, case in enumerate(selected):
            case_folder = folder / "cases" / f"{i:04d}"
            try:
                runs[case.id] = corpus.build(case, case_folder, shared, SEED)
            except Exception as err:  # a broken case is the suite's bug: show it, run the rest
                self.errors[case.id] = f"building the case failed: {type(err).__name__}: {err}"
                continue
            self.roots[str(case_folder)] = "CASE"
            if not runs[case.id].skip:
                roots = [str(case_folder), str(shared.folder)]
                jobs.append({"id": case.id, "run": runs[case.id].to_dict(), "roots": roots})
        observations, self.startup = harness.run_all(jobs, folder / "workers", WORKERS, TIMEOUT)
        for job in jobs:
            obs = observations.get(job["id"], {"crash": "no result came back"})
            self.verdicts[job["id"]] = judge(runs[job["id"]], obs)
        self.runs = runs
        self.seconds = time.monotonic() - started
        self._write(folder)

    def _write(self, folder: Path) -> None:
        verdicts = list(self.verdicts.values())
        data = summary(verdicts)
        data["seed"], data["seeded_cases"], data["workers"] = SEED, COUNT, WORKERS
        data["home_writes"] = self.home_writes()
        self.text = summary_text(data, self.seconds)
        if data["home_writes"]:
            self.text += f"\nfiles written under $HOME: {len(data['home_writes'])}"
        self.text += f"\n(details: {folder})"
        (folder / "summary.json").write_text(json.dumps(data, indent=1))
        (folder / "summary.txt").write_text(self.text + "\n" + self.failures_text() + "\n")
        with open(folder / "results.jsonl", "w") as out:
            for case_id, v in self.verdicts.items():
                row = {"id": case_id, "run": v.run.to_dict(), "broken": v.broken,
                       "observation": v.observation}  # fmt: skip
                out.write(json.dumps(row) + "\n")

    def home_writes(self) -> list[str]:
        """Files written under $HOME: by the import (each child's first start), by a case.
        matplotlib's font cache is left out: it is matplotlib's, shared with every program that
        draws with it, and built once per machine where HOME can be written (where it cannot,
        pathonnx keeps matplotlib's warning about it off stderr: the stderr clause)."""
        writes = [f"importing pathonnx: {w}" for w in self.startup or []]
        writes += [f"{case_id}: {w}" for case_id, v in self.verdicts.items()
                   for w in v.observation.get("home", [])]  # fmt: skip
        return [shorten(w, self.roots) for w in writes if MATPLOTLIB_CACHE not in w]

    def failures_text(self) -> str:
        """Failing cases grouped by clause, one line each."""
        lines = []
        for clause in CLAUSES:
            hits = [(i, d) for i, v in self.verdicts.items() for c, d in v.broken if c == clause]
            if hits:
                lines.append(f"{clause} ({len(hits)}):")
                lines += [f"  {i}: {shorten(d, self.roots)}" for i, d in hits]
        return "\n".join(lines)

    def message(self, case_id: str) -> str:
        v = self.verdicts[case_id]
        obs, run = v.observation, v.run
        lines = [
            f"{case_id} broke the contract: {', '.join(sorted({c for c, _ in v.broken}))}",
            f"  why this is expected: {run.why}",
            f"  argv: pathonnx {' '.join(repr(a) if ' ' in a or not a else a for a in run.argv)}",
            *(f"  {clause}: {detail}" for clause, detail in v.broken),
        ]
        for key, size in (("stderr", 2000), ("native", 1000), ("stdout", 400)):
            text = obs.get(key, "").strip()
            if text:
                cut = "..." if len(text) > size else ""
                lines.append(f"  {key}: {cut}" + text[-size:].replace("\n", "\n    "))
        if obs.get("seconds") is not None:
            lines.append(
                f"  {obs['seconds']:.2f} s, peak RSS {(obs.get('peak_rss') or 0) / 2**20:.0f} MiB"
            )
        return shorten("\n".join(lines), self.roots)


@pytest.fixture(scope="session")
def fuzz_run(request, tmp_path_factory) -> FuzzRun:
    items = [item for item in request.session.items if item.originalname == "test_case"]
    chosen = {item.callspec.params["case"].id for item in items}
    selected = [case for case in CASES if case.id in chosen]
    run = FuzzRun(tmp_path_factory.mktemp("fuzz"), selected)
    request.config.stash[SUMMARY] = run.text
    return run


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(case: corpus.Case, fuzz_run: FuzzRun):
    if case.id in fuzz_run.errors:
        pytest.fail(fuzz_run.errors[case.id])
    if fuzz_run.runs[case.id].skip:
        pytest.skip(fuzz_run.runs[case.id].skip)
    if fuzz_run.verdicts[case.id].broken:
        pytest.fail(fuzz_run.message(case.id), pytrace=False)


def test_home_untouched(fuzz_run: FuzzRun):
    """Nothing is written under $HOME, neither by the import that starts every `pathonnx` run
    (onnxruntime's telemetry under ~/.cache, issue 14) nor by a command (a library's cache):
    with a read-only HOME such writes turn into warnings on stderr."""
    if fuzz_run.startup is None:
        pytest.skip("no case ran, so no child process started")
    writes = fuzz_run.home_writes()
    if writes:
        text = "\n  ".join(writes)
        pytest.fail(f"written under $HOME:\n  {text}", pytrace=False)
