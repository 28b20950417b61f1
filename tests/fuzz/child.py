"""Runs fuzz cases in one long-lived process, each through click's CliRunner, and records them.

``python -m fuzz.child CASES RESULTS`` reads a JSON list of ``{"id", "run", "roots"}`` from
CASES and appends one JSON line per event to RESULTS: ``{"startup": ...}`` once, then for each
case ``{"start": id}`` and ``{"id": id, "observation": ...}``. The parent (``fuzz.harness``)
restarts it after a hang or a crash with the cases not yet done.

Starting Python and importing pathonnx costs a second or two, so cases share the process; what
a fresh `pathonnx` process would have to itself is reset or measured per case: the working
folder, the warning filters (a warning shows again in every case), the peak RSS
(``/proc/self/clear_refs``), and the C-level stdout/stderr, captured separately so that a
library's own log lines are seen. The address space is capped (RLIMIT_AS) before the import.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings

from fuzz.contract import ADDRESS_SPACE_CAP, Run, allowed, changes, digest, snapshot
from fuzz.contract import strict_json_error as json_error


class CaseTimeout(BaseException):
    """Raised by SIGALRM when a case runs past its limit (a BaseException, so that the CLI's
    own ``except Exception`` does not turn it into an exit code)."""


def _alarm(signum, frame):
    raise CaseTimeout


def _peak_rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class NativeCapture:
    """Redirects file descriptors 1 and 2 to a file for the duration of a case."""

    def __init__(self, folder: str):
        self.file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (lives with the child)
        self.saved: list[int] = []

    def __enter__(self):
        self.file.seek(0)
        self.file.truncate()
        for fd in (1, 2):
            self.saved.append(os.dup(fd))
            os.dup2(self.file.fileno(), fd)
        return self

    def __exit__(self, *exc):
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)
        self.saved = []

    def text(self) -> str:
        self.file.seek(0)
        return self.file.read(1 << 16).decode("utf-8", "replace")


def run_case(
    main, runner, run: Run, roots: list[str], home: str, capture: NativeCapture, timeout: float
) -> dict:
    """Run one case (for ``run.timeout``, else ``timeout`` seconds): the observation that
    ``fuzz.contract.judge`` reads. What it writes under ``home`` is kept apart
    (``obs["home"]``): a library's cache is written once per process, so it is reported for
    the whole run rather than held against one case."""
    obs: dict = {"exit_code": None, "stdout": "", "stderr": "", "native": ""}
    timeout = run.timeout or timeout
    inputs = {path: digest(path) for path in run.inputs}
    os.chdir(run.cwd)
    before, home_before = snapshot(roots), snapshot([home])
    measured = _peak_rss_reset()
    started = time.monotonic()
    signal.alarm(max(1, round(timeout)))
    try:
        with capture, warnings.catch_warnings():
            result = runner.invoke(main, list(run.argv), catch_exceptions=True)
    except CaseTimeout:
        obs["hang"] = f"still running after {timeout:.0f} s"
        result = None
    finally:
        signal.alarm(0)
    obs["seconds"] = round(time.monotonic() - started, 3)
    obs["native"] = capture.text()
    if result is not None:
        obs["exit_code"] = result.exit_code
        obs["stdout"] = result.stdout
        obs["stderr"] = result.stderr
        escaped = result.exception
        if escaped is not None and not isinstance(escaped, SystemExit):
            # what Python would print if the exception left a real `pathonnx` process
            obs["stderr"] += "".join(traceback.format_exception(*result.exc_info))
    if run.api_load and result is not None:
        obs["api_error"] = _api_load(run.api_load, capture, timeout)
    obs["peak_rss"] = _peak_rss() if measured else None
    after = snapshot(roots)
    obs["home"] = _files(changes(home_before, snapshot([home])))
    obs["inputs_changed"] = [
        (path, f"was {was[:16]}, now {now[:16]}")
        for path, was in inputs.items()
        if (now := digest(path)) != was
    ]
    obs["outside"] = [
        (path, change)
        for path, change in changes(before, after)
        if not allowed(path, run.outputs)
        and path not in inputs
        and not (change == "changed" and before[path] == ("dir",))
    ]
    obs["json_errors"] = []
    if "--json" in run.argv and obs["stdout"].strip():
        error = json_error(obs["stdout"])
        if error:
            obs["json_errors"].append(("stdout", error))
    for path, change in changes(before, after):
        if change != "removed" and path.endswith(".json") and os.path.isfile(path):
            with open(path, "rb") as handle:
                error = json_error(handle.read().decode("utf-8", "replace"))
            if error:
                obs["json_errors"].append((path, error))
    for key in ("stdout", "stderr", "native"):
        obs[key] = obs[key][-8000:]
    return obs


def _api_load(path: str, capture: NativeCapture, timeout: float) -> str | None:
    """What ``pathonnx.load(path)`` raised, if it is not a one-line pathonnx error."""
    import pathonnx

    signal.alarm(max(1, round(timeout)))
    try:
        with capture, warnings.catch_warnings():
            pathonnx.load(path)
    except CaseTimeout:
        return f"pathonnx.load still running after {timeout:.0f} s"
    except pathonnx.PathonnxError as err:
        if "\n" in str(err):
            return f"{type(err).__name__} in several lines: {str(err)[:200]!r}"
    except Exception as err:
        return f"{type(err).__module__}.{type(err).__name__}: {err}"
    finally:
        signal.alarm(0)
    return None


def _files(found: list[tuple[str, str]]) -> list[str]:
    """The changes of files only (a new folder shows through the files in it)."""
    return [f"{path} {change}" for path, change in found if not os.path.isdir(path)]


def main() -> None:
    cases_file, results_file = sys.argv[1], sys.argv[2]
    timeout = float(os.environ.get("PATHONNX_FUZZ_TIMEOUT", "20"))
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))
    with open(cases_file) as handle:
        cases = json.load(handle)
    home, tmp = os.environ["HOME"], os.environ["TMPDIR"]
    before = snapshot([home, tmp])
    from click.testing import CliRunner

    from pathonnx_cli.main import main as cli

    startup = _files(changes(before, snapshot([home, tmp])))
    signal.signal(signal.SIGALRM, _alarm)
    capture = NativeCapture(os.environ["PATHONNX_FUZZ_PRIVATE"])
    with open(results_file, "a") as out:

        def record(entry):
            out.write(json.dumps(entry) + "\n")
            out.flush()

        record({"startup": startup})
        for case in cases:
            record({"start": case["id"]})
            run = Run.from_dict(case["run"])
            obs = run_case(cli, CliRunner(), run, [*case["roots"], tmp], home, capture, timeout)
            record({"id": case["id"], "observation": obs})
            if obs.get("hang"):
                sys.exit(3)  # a fresh process for the rest: the hung call may hold state


if __name__ == "__main__":
    main()
