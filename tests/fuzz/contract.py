"""The bad-input contract (DESIGN.md §5-6, issue 14), clause by clause, and how a run is judged.

A fuzz case is a :class:`Run`: a command line, the exit codes the contract allows for it, the
files it reads and the paths it may write. The child process that runs it reports an
observation (a dict, see ``fuzz.child``); :func:`judge` turns the two into the broken clauses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field

#: Each clause of the contract, as the failure messages and the summary name it.
CLAUSES = {
    "exit-code": "the exit code is one the contract allows (0 valid, 1 not explainable, 2 bad "
    "input or usage)",
    "internal-error": "no 'internal error': every bad input gets a named error",
    "traceback": "no traceback (unless --debug)",
    "stderr-lines": "a failure says what is wrong in exactly one line on stderr ('note:' lines "
    "aside; `check` may report on stdout instead)",
    "warnings": "no Python warning and no library log line reaches stderr (or stdout)",
    "input-changed": "every file the command reads is byte-identical afterwards",
    "wrote-outside-out": "nothing is created, changed or removed outside the chosen output",
    "json": "JSON output (--json, and every .json written) is strict JSON (no NaN/Infinity)",
    "memory": "memory stays under the cap (no MemoryError, peak RSS below the cap)",
    "api-error": "pathonnx.load on the same model raises only pathonnx's errors (ModelLoadError, "
    "UnsupportedModelError, InputError), each one line",
    "hang": "the case finishes within its time limit",
    "crash": "the process survives (no signal, no abort)",
}

#: Peak resident memory a case may reach, in bytes (the child's address space is capped too).
RSS_CAP = 1 << 30
#: The child processes' address-space limit (RLIMIT_AS), in bytes.
ADDRESS_SPACE_CAP = 4 << 30

#: A line as Python's warnings module prints it: "file.py:12: RuntimeWarning: message".
_WARNING = re.compile(r":\d+: [A-Z]\w*Warning: ")
#: A line of onnx-graphsurgeon's logger, which prints to stdout ("[W] ...", "[C] ...").
_LIBRARY_LOG = re.compile(r"^\[[VIWEC]\] ")


@dataclass(frozen=True)
class Run:
    """One fuzz case, ready to run: ``argv`` for the ``pathonnx`` command, the exit codes
    ``expect``\\ ed, the files it reads (``inputs``), the files or folders it may write
    (``outputs``), ``why`` the contract expects that, and the folder it runs in (``cwd``).
    ``debug``: argv has --debug, so a traceback is allowed (the exit code still counts).
    ``api_load``: a model that ``pathonnx.load`` is also given, in the same process.
    ``timeout``: seconds the case may run, where not the default (a FIFO blocks forever on a
    reader that does not refuse it: no need to wait long to see that).
    ``skip``: why the case cannot run here (then nothing else counts)."""

    argv: tuple[str, ...]
    expect: tuple[int, ...]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    why: str = ""
    cwd: str = ""
    debug: bool = False
    api_load: str = ""
    timeout: float = 0
    skip: str = ""

    @property
    def command(self) -> str:
        return next((a for a in self.argv if not a.startswith("-")), "")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Run:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class Verdict:
    """The clauses a case broke, each with a detail, and the observation behind them."""

    run: Run
    observation: dict
    broken: list[tuple[str, str]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """exit 0/1/2, another code, hang or crash: the summary's first grouping."""
        obs = self.observation
        if obs.get("hang"):
            return "hang"
        if obs.get("crash"):
            return "crash"
        return f"exit {obs.get('exit_code')}"


# -- what the child records ----------------------------------------------------------------


def strict_json_error(text: str) -> str | None:
    """None if ``text`` is strict JSON, else why not (NaN and Infinity are not JSON)."""

    def reject(token):
        raise ValueError(f"non-standard token {token}")

    try:
        json.loads(text, parse_constant=reject)
    except ValueError as err:
        return str(err)[:200]
    return None


def digest(path: str) -> str:
    """The content hash of a regular file, else what the path is (never opened: a FIFO or a
    device would block or never end)."""
    try:
        info = os.stat(path)
    except OSError as err:
        return f"unreadable: {err.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"special: {stat.filemode(info.st_mode)}"
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def snapshot(roots: list[str]) -> dict[str, tuple]:
    """Every path under ``roots`` (symlinks not followed) with its type, size, mtime and inode:
    enough to see any file created, rewritten, replaced or removed."""
    out = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    out[path] = ("dir",)
                else:
                    out[path] = (
                        stat.S_IFMT(info.st_mode),
                        info.st_size,
                        info.st_mtime_ns,
                        info.st_ino,
                    )
    return out


def changes(before: dict, after: dict) -> list[tuple[str, str]]:
    """(path, "created" | "changed" | "removed") between two snapshots."""
    out = [(p, "created") for p in after if p not in before]
    out += [(p, "removed") for p in before if p not in after]
    out += [(p, "changed") for p in after if p in before and before[p] != after[p]]
    return sorted(out)


def allowed(path: str, outputs: tuple[str, ...]) -> bool:
    """Whether ``path`` lies in a chosen output: the output itself or a path below it (a folder
    output). A temp file left beside a file output is a write outside it."""
    return any(path == out or path.startswith(out.rstrip(os.sep) + os.sep) for out in outputs)


# -- judging ---------------------------------------------------------------------------------


def judge(run: Run, obs: dict) -> Verdict:
    """The clauses of :data:`CLAUSES` that ``obs`` (what the child saw) breaks for ``run``."""
    verdict = Verdict(run, obs)
    broken = verdict.broken
    if obs.get("hang"):
        broken.append(("hang", obs["hang"]))
    if obs.get("crash"):
        broken.append(("crash", obs["crash"]))
    for path, change in obs.get("inputs_changed", []):
        broken.append(("input-changed", f"{path} {change}"))
    for path, change in obs.get("outside", []):
        broken.append(("wrote-outside-out", f"{path} {change}"))
    if obs.get("hang") or obs.get("crash"):
        return verdict
    code, stderr = obs["exit_code"], obs["stderr"]
    everything = "\n".join((obs["stdout"], stderr, obs["native"]))
    if code not in run.expect:
        expected = " or ".join(map(str, run.expect))
        broken.append(("exit-code", f"expected {expected}, got {code}"))
    if not run.debug and "internal error" in stderr:
        broken.append(("internal-error", _first(stderr, "internal error")))
    if not run.debug and "Traceback (most recent call last)" in everything:
        broken.append(("traceback", _first(everything, "Error")))
    # lines as a terminal shows them: only "\n" ends one (str.splitlines also splits on the
    # control characters a mutated name may hold)
    lines = [line for line in stderr.split("\n") if line.strip()]
    errors = [line for line in lines if not line.startswith("note:")]
    if code != 0 and not run.debug:
        counts = (0, 1) if run.command == "check" else (1,)
        if len(errors) not in counts:
            broken.append(("stderr-lines", f"{len(errors)} lines: {errors[:4]!r}"))
    noisy = [line for line in lines if _WARNING.search(line)]
    noisy += [line for line in obs["stdout"].split("\n") + lines if _LIBRARY_LOG.match(line)]
    noisy += [line for line in obs["native"].split("\n") if line.strip()]
    if noisy:
        broken.append(("warnings", noisy[0][:300]))
    if obs.get("api_error"):
        broken.append(("api-error", obs["api_error"][:300]))
    for what, error in obs.get("json_errors", []):
        broken.append(("json", f"{what}: {error}"))
    if "MemoryError" in everything:
        broken.append(("memory", "MemoryError"))
    rss = obs.get("peak_rss")
    if rss is not None and rss > RSS_CAP:
        broken.append(("memory", f"peak RSS {rss / 2**20:.0f} MiB > {RSS_CAP / 2**20:.0f} MiB"))
    return verdict


def _first(text: str, word: str) -> str:
    """The first line of ``text`` that holds ``word`` (else its last line), shortened."""
    lines = [line for line in text.splitlines() if line.strip()]
    hits = [line for line in lines if word in line]
    return ((hits or lines or [""])[0 if hits else -1])[:300]


def summary(verdicts: list[Verdict]) -> dict:
    """Case counts by outcome, and failing cases by clause."""
    outcomes: dict[str, int] = {}
    clauses: dict[str, int] = {}
    for v in verdicts:
        outcomes[v.outcome] = outcomes.get(v.outcome, 0) + 1
        for clause in sorted({c for c, _ in v.broken}):
            clauses[clause] = clauses.get(clause, 0) + 1
    failed = sum(bool(v.broken) for v in verdicts)
    return {
        "cases": len(verdicts),
        "passed": len(verdicts) - failed,
        "failed": failed,
        "outcomes": dict(sorted(outcomes.items())),
        "failures_by_clause": {c: clauses[c] for c in CLAUSES if c in clauses},
    }


def summary_text(data: dict, seconds: float) -> str:
    lines = [
        f"{data['cases']} cases in {seconds:.0f} s: {data['passed']} kept the contract, "
        f"{data['failed']} broke it",
        "outcomes: " + ", ".join(f"{k}: {n}" for k, n in data["outcomes"].items()),
    ]
    if data["failures_by_clause"]:
        lines.append("cases failing each clause:")
        lines += [
            f"  {c:<18} {n:>4}  ({CLAUSES[c]})" for c, n in data["failures_by_clause"].items()
        ]
    return "\n".join(lines)


def shorten(text: str, roots: dict[str, str]) -> str:
    """``text`` with each root path replaced by its short name (CASE, SHARED), for messages."""
    for path, name in sorted(roots.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, name)
    return text
