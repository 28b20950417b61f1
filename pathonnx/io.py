"""Safe files: bounded reads of regular files, atomic writes that never replace an input, and
strict JSON.

Every file pathonnx reads goes through :func:`open_input` (or :func:`read_bytes`,
:func:`read_text`, :func:`read_array`, :func:`read_arrays`): it must be a regular file (a FIFO
or a device such as ``/dev/zero`` is refused before a byte is read), no larger than a
documented limit, and it is recorded as an input of the running command. A command runs
inside :func:`command_inputs` (the CLI opens one per invocation), and every output goes
through :func:`atomic_write_bytes`, which refuses a path that is one of those inputs: the same
file, compared by identity (device and inode), so a symlink or a hard link to an input counts,
with or without ``--force``. :func:`check_outputs` makes the same check before any work, for
the paths a command is about to write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
import tokenize
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import InputError, has_control

#: Most bytes read from a text or JSON file: labels, sample indexes, cache records.
MAX_TEXT_BYTES = 16 << 20
#: Most bytes of an object-mask file (``--masks`` .npz, ``--target-mask`` .npy).
MAX_MASK_BYTES = 1 << 30
#: Most bytes of an input array file (.npy).
MAX_ARRAY_BYTES = 4 << 30

#: What a write that would replace an input is told to do.
CHOOSE_ANOTHER = "choose another output path (no flag, not even --force, replaces an input)"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask is process-wide


class Inputs:
    """The files one command reads: (device, inode) -> (the path as given, what it is)."""

    def __init__(self):
        self.files: dict[tuple[int, int], tuple[str, str]] = {}

    def add(self, path, what: str, status: os.stat_result | None = None) -> None:
        """Record ``path`` (``what`` it is, e.g. "the labels file"); a missing path is skipped."""
        try:
            status = status or os.stat(path)
        except OSError:
            return
        self.files.setdefault((status.st_dev, status.st_ino), (str(path), what))

    def named_by(self, path) -> tuple[str, str] | None:
        """(input path, what) of the input that ``path`` names (itself, a symlink or a hard
        link to it), else None."""
        try:
            status = os.stat(path)
        except OSError:
            return None
        return self.files.get((status.st_dev, status.st_ino))


_RUNNING: list[Inputs] = []  # the inputs of the commands running now (innermost last)


@contextlib.contextmanager
def command_inputs():
    """Record, for the duration of a command, every file it reads, and refuse any write over
    one of them (:func:`atomic_write_bytes`). Yields the :class:`Inputs`."""
    inputs = Inputs()
    _RUNNING.append(inputs)
    try:
        yield inputs
    finally:
        _RUNNING.remove(inputs)


def note_input(path, what: str, status: os.stat_result | None = None) -> None:
    """Record ``path`` as an input of the running command (none running: nothing to do)."""
    for inputs in _RUNNING:
        inputs.add(path, what, status)


def replaced_input(path) -> str | None:
    """Why writing ``path`` would replace an input of the running command, or None."""
    for inputs in _RUNNING:
        found = inputs.named_by(path)
        if found is not None:
            name, what = found
            return f"{path} would overwrite the input {name} ({what})"
    return None


def check_outputs(paths, advice: str = CHOOSE_ANOTHER) -> None:
    """Raise :class:`InputError` if writing any of ``paths`` would replace an input of the
    running command, saying ``advice``."""
    for path in paths:
        reason = replaced_input(path)
        if reason is not None:
            raise InputError(f"{reason}; {advice}")


def check_writable_folder(folder, what: str) -> None:
    """Make ``folder`` (and its parents) if missing and check that a file can be made in it;
    else raise :class:`InputError` naming ``what`` (e.g. "--out pathonnx-out")."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not existing.is_dir():
        raise InputError(f"cannot write to {what}: {existing} is a file; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputError(
            f"cannot write to {what} ({err.strerror or err}); choose a writable folder"
        ) from None


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename. Refuses
    (:class:`InputError`) a path that names an input of the running command, and turns a
    failed write (permissions, a read-only or full disk) into an :class:`InputError`."""
    path = Path(path)
    check_outputs([path])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise InputError(
            f"cannot write {path} ({err.strerror or err}); choose a writable location"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise InputError(
                f"cannot write {path} ({err.strerror or err}); choose a writable location"
            ) from None
        raise
    return path


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size(count: int) -> str:
    """A byte count for messages: 16 MiB, 3.2 GiB, 812 bytes."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            value = count / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{count} bytes"


def open_input(path, what: str, limit: int | None, error=InputError, note: bool = True) -> BinaryIO:
    """``path`` opened for reading in binary, once checked to be a regular file of at most
    ``limit`` bytes (None: any size), and (with ``note``) recorded as an input of the running
    command. ``what`` names it in messages ("the labels file"); ``error`` is the exception
    raised."""
    if has_control(os.fspath(path)):
        raise error(
            f"{path}: the name of {what} holds a line break or control character, which no "
            "report or output name can carry; rename the file"
        )
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file; check the path") from None
    except OSError as err:
        note_input(path, what)  # unreadable, yet an input: no output may replace it
        raise error(f"{path}: cannot read {what} ({err.strerror or err})") from None
    status = os.fstat(fd)
    if note:
        note_input(path, what, status)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise error(f"{path} is {_kind(status.st_mode)}; give {what} as a regular file")
    if limit is not None and status.st_size > limit:
        os.close(fd)
        raise error(
            f"{path}: {what} is {_size(status.st_size)}, over the limit of {_size(limit)}; "
            "give a smaller file"
        )
    return os.fdopen(fd, "rb")


def read_bytes(
    path, what: str, limit: int | None = MAX_TEXT_BYTES, error=InputError, note: bool = True
) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` (see :func:`open_input`)."""
    with open_input(path, what, limit, error, note) as handle:
        # a file may be larger than its size said (one that grows, or one in /proc)
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise error(f"{path}: {what} is over the limit of {_size(limit)}; give a smaller file")
    return data


def read_text(path, what: str, limit: int = MAX_TEXT_BYTES, note: bool = True) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes (see
    :func:`open_input`)."""
    data = read_bytes(path, what, limit, note=note)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: {what} is not UTF-8 text; save it as UTF-8") from None


def _npy_header(handle: BinaryIO, available: int, name: str, what: str, kinds: str) -> None:
    """Check the .npy header at ``handle``'s position: an array of a dtype kind in ``kinds``
    (no Python objects) whose data, as the header declares it, fits in the ``available``
    bytes that follow. Leaves the position after the header."""
    start = handle.tell()
    try:
        version = np.lib.format.read_magic(handle)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
        if read is None:
            raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported")
        shape, _, dtype = read(handle)
    except (ValueError, SyntaxError, TypeError, EOFError, OSError, tokenize.TokenError) as err:
        handle.seek(start)
        zipped = handle.read(4) == b"PK\x03\x04"
        hint = "it is a .npz archive; rename it .npz" if zipped else "save it with numpy.save"
        raise InputError(f"{name}: {what} is not a valid .npy array ({err}); {hint}") from None
    if dtype.hasobject or dtype.kind not in kinds:
        raise InputError(f"{name}: {what} holds {dtype}; give an array of numbers or booleans")
    declared = math.prod(shape) * dtype.itemsize
    if declared > available - (handle.tell() - start):
        raise InputError(
            f"{name}: the .npy header of {what} declares shape {tuple(shape)} of {dtype} "
            f"({_size(declared)}) but the file holds {_size(available)}; the file is damaged"
        )


def read_array(path, what: str, limit: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """The array in the .npy file ``path`` (at most ``limit`` bytes): its header is checked
    before anything is allocated (numbers or booleans only, data as large as declared)."""
    with open_input(path, what, limit) as handle:
        size = os.fstat(handle.fileno()).st_size
        _npy_header(handle, size, str(path), what, "biuf")
        handle.seek(0)
        try:
            return np.load(handle, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise InputError(
                f"{path}: cannot read {what} ({err}); save it with numpy.save"
            ) from None


def read_arrays(path, what: str, limit: int = MAX_MASK_BYTES) -> dict[str, np.ndarray]:
    """The arrays of the .npz archive ``path`` by name (numbers, booleans or strings); the
    archive, and the arrays unpacked from it, hold at most ``limit`` bytes, and each array's
    header is checked first."""
    with open_input(path, what, limit) as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                members = [i for i in archive.infolist() if i.filename.endswith(".npy")]
                unpacked = sum(info.file_size for info in members)
                if unpacked > limit:
                    raise InputError(
                        f"{path}: {what} unpacks to {_size(unpacked)}, over the limit of "
                        f"{_size(limit)}; give a smaller file"
                    )
                arrays = {}
                for info in members:
                    name = f"{path}[{info.filename[:-4]}]"
                    with archive.open(info) as member:
                        _npy_header(member, info.file_size, name, what, "biufU")
                    with archive.open(info) as member:
                        arrays[info.filename[:-4]] = np.lib.format.read_array(
                            member, allow_pickle=False
                        )
                return arrays
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as err:
            raise InputError(
                f"{path}: cannot read {what} ({err}); give a .npz file (numpy.savez)"
            ) from None


def json_text(data, indent: int | None = 2) -> str:
    """``data`` as strict JSON (RFC 8259), the one way pathonnx writes JSON: numpy values
    become plain numbers and lists. JSON has no NaN or infinity: where ``data`` holds one, this
    raises InputError naming where, instead of writing a ``NaN`` token no strict parser reads.
    (Values a report leaves undefined, e.g. a correlation of a constant map, are None: null.)"""
    try:
        return json.dumps(data, indent=indent, default=_plain, allow_nan=False)
    except ValueError:
        where, value = _non_finite(data) or ("an unknown place", "a non-finite number")
        raise InputError(
            f"the result has {value} at {where}, which JSON cannot hold: the model or its input "
            "gives non-finite numbers (pathonnx check MODEL tests the model)"
        ) from None


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _non_finite(data, where: str = "") -> tuple[str, str] | None:
    """(where, value) of the first NaN or infinity in ``data``, ``where`` written like
    ``summary.pathwise.insertion.mean`` or ``records[3].curve[7]``; None if there is none."""
    if isinstance(data, dict):
        children = ((f"{where}.{k}" if where else str(k), v) for k, v in data.items())
    elif isinstance(data, (list, tuple)):
        children = ((f"{where}[{i}]", v) for i, v in enumerate(data))
    elif isinstance(data, (float, np.floating)):
        return None if math.isfinite(data) else (where or "the top", str(data))
    elif isinstance(data, np.ndarray) and data.dtype.kind == "f" and not np.isfinite(data).all():
        index = [int(i) for i in np.argwhere(~np.isfinite(data))[0]]
        return f"{where}{index}", str(data[tuple(index)])
    else:
        return None
    return next((found for path, v in children if (found := _non_finite(v, path))), None)
