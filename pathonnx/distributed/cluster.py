"""Ray for one run: the optional extra, the cluster's address, how many workers, and errors.

A run either starts a local Ray instance (no address, or ``local``) and shuts it down after,
or joins a running cluster: ``auto`` (the cluster this machine belongs to, or ``RAY_ADDRESS``),
``HOST:PORT`` (its GCS address) or ``ray://HOST:PORT`` (Ray Client). Where Ray is already
initialized in this process (``ray.init`` called by the user, or a test), the run uses that
instance and leaves it running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from dataclasses import dataclass

from ..errors import InputError, PathonnxError

#: What to install for a Ray run; every error about the missing extra names it.
EXTRA = "pip install 'pathonnx[ray]'"
#: ``HOST:PORT``, with an IPv6 host in brackets; the port is checked separately.
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d+)$")


class ClusterError(PathonnxError):
    """A Ray cluster cannot be reached or joined (a wrong address, a cluster that is down, a
    connection that timed out). Exit code 2, as for other bad arguments."""

    exit_code = 2


def require():
    """The ``ray`` module, once ray[data] and pyarrow are known to import; else one
    :class:`InputError` naming the extra."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        missing = (err.name or "ray").split(".")[0]
        raise InputError(
            f"running on Ray needs the optional extra pathonnx[ray] ({missing} is not "
            f"installed): {EXTRA}"
        ) from None
    return ray


@dataclass(frozen=True)
class Address:
    """A parsed ``--ray`` value: ``kind`` is local, auto, gcs (``HOST:PORT``) or client
    (``ray://HOST:PORT``)."""

    text: str
    kind: str
    host: str | None = None
    port: int | None = None


def parse_address(text: str | None) -> Address:
    """``text`` as an :class:`Address`, or an :class:`InputError` saying what is accepted."""
    if text is None or text.strip() in ("", "local"):
        return Address("local", "local")
    text = text.strip()
    if text == "auto":
        return Address(text, "auto")
    rest, kind = (text[len("ray://") :], "client") if text.startswith("ray://") else (text, "gcs")
    match = _HOST_PORT.match(rest)
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise InputError(
            f"--ray {text!r} is not a Ray address; give auto, HOST:PORT (a cluster's GCS), "
            "ray://HOST:PORT (Ray Client), or nothing for a local instance (write --ray last, "
            "or --ray=local, when no address follows)"
        )
    return Address(text, kind, match["v6"] or match["host"], port)


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide a Ray run goes.

    ``address``: None or ``local`` (start a local instance), ``auto``, ``HOST:PORT`` or
    ``ray://HOST:PORT`` (join a cluster; see the module). ``workers``: actors, each holding
    one copy of the model (default: the cluster's CPUs divided by ``cpus``, or its GPUs by
    ``gpus`` when ``gpus`` > 0, and no more than there are batches). ``cpus``: CPUs each
    worker holds, and its onnxruntime threads. ``gpus``: GPUs each worker holds (a fraction
    shares one). ``timeout``: seconds to wait for a cluster's address to answer.
    """

    address: str | None = None
    workers: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    timeout: float = 30.0

    def __post_init__(self):
        parse_address(self.address)
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise InputError(f"workers={self.workers} must be 1 or more")
        if not self.cpus > 0:
            raise InputError(f"cpus={self.cpus} per worker must be more than 0")
        if not self.gpus >= 0:
            raise InputError(f"gpus={self.gpus} per worker must be 0 or more")
        if not self.timeout > 0:
            raise InputError(f"timeout={self.timeout} must be more than 0 seconds")

    def threads(self) -> int:
        """onnxruntime's intra-op threads in each worker: its whole CPUs, at least one."""
        return max(1, int(self.cpus))

    def worker_count(self, ray, batches: int) -> int:
        """How many workers a run of ``batches`` batches starts on the cluster ``ray``."""
        if self.workers is not None:
            return max(1, min(self.workers, batches))
        resources = ray.cluster_resources()
        if self.gpus > 0:
            fit = int(resources.get("GPU", 0) // self.gpus)
        else:
            fit = int(resources.get("CPU", 0) // self.cpus)
        return max(1, min(fit, batches))


def _reach(address: Address, timeout: float) -> None:
    """Open and close a TCP connection to the cluster, so that a wrong or dead address is a
    one-line error within ``timeout`` seconds (Ray itself retries for minutes)."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            pass
    except TimeoutError:
        raise ClusterError(
            f"the Ray cluster at {address.text} did not answer within {timeout:g} s; check the "
            "address and that the cluster is up (ray status on its head node)"
        ) from None
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise ClusterError(
            f"cannot reach the Ray cluster at {address.text} ({why}); check the address and "
            "that the cluster is up (ray status on its head node)"
        ) from None


def _quiet(ray) -> None:
    """Ray Data's own progress bars and execution notes off: the run shows its own progress."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    for name in ("enable_operator_progress_bars", "print_on_execution_start"):
        if hasattr(context, name):
            setattr(context, name, False)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def connect(settings: RaySettings):
    """Within it, Ray is initialized as ``settings.address`` says (see the module); yields
    the ``ray`` module. A Ray instance this started is shut down on the way out."""
    ray = require()
    address = parse_address(settings.address)
    if ray.is_initialized():
        if address.kind != "local":
            raise ClusterError(
                f"Ray is already initialized in this process, so it cannot join {address.text}; "
                "leave the address out to run on that instance, or call ray.shutdown() first"
            )
        _quiet(ray)
        yield ray
        return
    if address.kind in ("gcs", "client"):
        _reach(address, settings.timeout)
    options = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        with _backend_log():
            if address.kind == "local":
                ray.init(include_dashboard=False, **options)
            else:
                ray.init(address=address.text, **options)
    except ConnectionError as err:
        hint = "check the address and that the cluster is up"
        if address.kind == "auto":
            hint = "start one with ray start --head, or set RAY_ADDRESS"
        raise ClusterError(f"cannot join a Ray cluster at {address.text}: {err}; {hint}") from None
    try:
        _quiet(ray)
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _backend_log():
    """While Ray starts: its driver's core-worker log (on the terminal) at fatal, unless the
    user set ``RAY_BACKEND_LOG_LEVEL``. At its default level it reports, as an error, that Ray
    Data's actors keep their constructor arguments in the object store: always so, and
    harmless while the driver runs. Failures still reach the driver as exceptions."""
    given = os.environ.get("RAY_BACKEND_LOG_LEVEL")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        yield
    finally:
        if given is None:
            os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)


def cause(err: BaseException) -> PathonnxError | None:
    """The pathonnx error (an input that does not fit, a model that cannot load) behind an
    error that Ray raised on the driver for a worker's batch, if there is one."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, PathonnxError) and type(err).__module__.startswith("pathonnx"):
            return err
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return None
