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
        cases_file.write_text(json.dumps(pending))
        # only the first child of a worker sees a fresh HOME: it says what the import writes
        results = _Results(folder / f"results{starts}.jsonl", observations,
                           startup if starts == 1 else [])  # fmt: skip
        with open(folder / f"child{starts}.log", "wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "fuzz.child", str(cases_file), str(results.path)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            killed = None
            while child.poll() is None:
                results.read()
                if results.current and results.running() > limits[results.current] + GRACE:
                    child.kill()
                    child.wait()
                    killed = f"killed after {results.running():.0f} s without returning"
                time.sleep(0.05)
        results.read()
        if results.current is not None:
            died = killed or _death(child.returncode, folder, starts)
            observations[results.current] = {"hang" if killed else "crash": died}
        elif child.returncode not in (0, 3):
            # the child died before its first case: every remaining case fails the same way
            for case in pending:
                observations.setdefault(case["id"], {"crash": _death(child.returncode, folder,
                                                                     starts)})  # fmt: skip
        pending = [case for case in pending if case["id"] not in observations]


class _Results:
    """A child's results file, read as it grows: observations, and the case in flight."""

    def __init__(self, path: Path, observations: dict, startup: list):
        self.path, self.observations, self.startup = path, observations, startup
        self.offset, self.current, self.since = 0, None, 0.0

    def running(self) -> float:
        """Seconds since the case in flight started."""
        return time.monotonic() - self.since

    def read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a last line may still be being written
        self.offset += len(complete)
        for line in complete.splitlines():
            entry = json.loads(line)
            if "startup" in entry:
                self.startup[:] = entry["startup"]
            elif "start" in entry:
                self.current, self.since = entry["start"], time.monotonic()
            else:
                self.observations[entry["id"]] = entry["observation"]
                self.current = None


def _death(code: int, folder: Path, starts: int) -> str:
    reason = f"signal {-code}" if code < 0 else f"exit status {code}"
    log = (folder / f"child{starts}.log").read_text(errors="replace").strip().splitlines()
    return f"the process died ({reason}){': ' + log[-1][:300] if log else ''}"
