"""Runs fuzz cases in a few child processes (``fuzz.child``) and collects their observations.

Each worker thread owns one child at a time, fed a share of the cases. It watches the child's
results file: a case that outlives its limit by a grace period is killed as a hang (the child's
own SIGALRM covers blocking system calls; this covers code that never returns to Python), a
child that dies marks its case as a crash. Either way a fresh child takes the remaining cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

#: Seconds past a case's own limit before the parent kills its child.
GRACE = 20.0


def run_all(
    cases: list[dict], folder: Path, workers: int, timeout: float
) -> tuple[dict[str, dict], list[str] | None]:
    """Run ``cases`` (``{"id", "run", "roots"}``) in ``workers`` children under ``folder``;
    returns each case's observation by id and what the first child's import wrote to its
    fresh HOME and TMPDIR (None when no child ran)."""
    shares = [cases[i::workers] for i in range(workers)]
    observations: dict[str, dict] = {}
    startups: list[list[str]] = [[] for _ in shares]
    threads = [
        threading.Thread(
            target=_work, args=(share, folder / f"worker{i}", timeout, observations, startups[i])
        )
        for i, share in enumerate(shares)
        if share
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return observations, (startups[0] if cases else None)


def _work(cases, folder: Path, timeout: float, observations: dict, startup: list) -> None:
    home, tmp, private = folder / "home", folder / "tmp", folder / "private"
    for path in (home, tmp, private):
        path.mkdir(parents=True, exist_ok=True)
    tests = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "PATHONNX_FUZZ_PRIVATE": str(private),
        "PATHONNX_FUZZ_TIMEOUT": str(timeout),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tests), os.environ.get("PYTHONPATH")])),
    }
    env.pop("PYTHONWARNINGS", None)  # a `pathonnx` process sees Python's default filters
    pending, starts = list(cases), 0
    limits = {case["id"]: case["run"].get("timeout") or timeout for case in cases}
    while pending:
        starts += 1
        cases_file = folder / f"cases{starts}.json"
        results_file = folder / f"results{starts}.jsonl"
        cases_file.write_text(json.dumps(pending))
        log = open(folder / f"child{starts}.log", "wb")  # noqa: SIM115 (closed below)
        child = subprocess.Popen(
            [sys.executable, "-m", "fuzz.child", str(cases_file), str(results_file)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        current, since, killed = None, 0.0, None
        first = startup if starts == 1 else []  # what the import wrote to a fresh HOME
        while True:
            code = child.poll()
            current, since = _read(results_file, current, since, observations, first)
            if code is not None:
                break
            if current is not None and time.monotonic() - since > limits[current] + GRACE:
                child.kill()
                child.wait()
                killed = f"killed after {limits[current] + GRACE:.0f} s without returning"
                break
            time.sleep(0.05)
        log.close()
        current, _ = _read(results_file, current, since, observations, first)
        if current is not None:
            if killed:
                observations[current] = {"hang": killed}
            else:
                observations[current] = {"crash": _death(child.returncode, folder, starts)}
        elif code not in (0, 3) and not killed:
            # the child died before its first case: every remaining case fails the same way
            for case in pending:
                observations.setdefault(case["id"], {"crash": _death(code, folder, starts)})
        pending = [case for case in pending if case["id"] not in observations]


def _read(results_file: Path, current, since, observations: dict, startup: list):
    """Take in a child's results so far: (the case in flight, since when)."""
    if not results_file.exists():
        return current, since
    for line in results_file.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if "startup" in entry:
            startup[:] = entry["startup"]
        elif "start" in entry:
            if entry["start"] not in observations and entry["start"] != current:
                current, since = entry["start"], time.monotonic()
        elif "id" in entry:
            observations[entry["id"]] = entry["observation"]
            if entry["id"] == current:
                current = None
    return current, since


def _death(code: int, folder: Path, starts: int) -> str:
    reason = f"signal {-code}" if code < 0 else f"exit status {code}"
    log = (folder / f"child{starts}.log").read_text(errors="replace").strip().splitlines()
    return f"the process died ({reason}){': ' + log[-1][:300] if log else ''}"
