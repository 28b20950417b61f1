"""Files: no output replaces an input, inputs are bounded regular files, and every bad file
ends in one line on stderr with exit code 2, every file left as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

import pathonnx
from pathonnx.errors import InputError
from pathonnx.images import REDUCING_GAP, read_image
from pathonnx.io import MAX_TEXT_BYTES, atomic_write_bytes, command_inputs, read_text
from pathonnx_cli.main import main

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
LABELS = [str(i) for i in range(10)]


@pytest.fixture()
def work(tmp_path):
    """A folder with the digits MLP (1x8x8, 10 classes), a digit image and a labels file."""
    shutil.copy(SAMPLES / "digits_mlp.onnx", tmp_path / "m.onnx")
    shutil.copy(SAMPLES / "images" / "digit_3.png", tmp_path / "d.png")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return tmp_path


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (symlinks as their target's bytes) by its sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *words) -> str:
    """Assert the bad-input contract: exit 2, one line on stderr, no traceback; the line."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr
    assert err.count("\n") == 1 and err.startswith("pathonnx: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


def run_process(*args, timeout=120):
    """The CLI as a real process (for inputs that could hang or fill memory in-process)."""
    command = [sys.executable, "-m", "pathonnx_cli.main", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def refused_process(done, *words) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    return done.stderr


# -- the output guard: no output replaces a file the command reads -----------------------------


def test_rewrite_never_replaces_the_models_external_data(work):
    model = onnx.load(work / "m.onnx")
    (work / "ext").mkdir()
    onnx.save_model(model, work / "ext" / "model.onnx", save_as_external_data=True,
                    location="w.bin", size_threshold=0)  # fmt: skip
    before = snapshot(work)
    result = invoke("rewrite", work / "ext" / "model.onnx", "-o", work / "ext" / "w.bin", "--force")
    refused(result, "w.bin", "external-data file of the input model", "--force")
    assert snapshot(work) == before
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    logits = pathonnx.load(work / "ext" / "model.onnx").forward(x).logits
    np.testing.assert_allclose(logits, pathonnx.load(work / "m.onnx").forward(x).logits)


def test_explain_never_replaces_the_labels_file(work):
    (work / "out").mkdir()
    labels = work / "out" / "d.json"  # the name of d.png's report
    labels.write_text(json.dumps(LABELS))
    before = snapshot(work)
    result = invoke("explain", work / "m.onnx", work / "d.png", "--labels", labels, "--out",
                    work / "out")  # fmt: skip
    refused(result, "would overwrite the input", "(the labels file)", "--out")
    assert snapshot(work) == before  # nothing written either, not even d.png's picture


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_link_to_an_input_is_the_input(work, link):
    (work / "out").mkdir()
    (link == "symlink" and os.symlink or os.link)(work / "labels.txt", work / "out" / "d.json")
    before = snapshot(work)
    result = invoke("explain", work / "m.onnx", work / "d.png", "--labels", work / "labels.txt",
                    "--out", work / "out")  # fmt: skip
    refused(result, "labels.txt (the labels file)")
    assert snapshot(work) == before


def test_evaluate_never_replaces_the_labels_or_masks_file(work):
    out = work / "out"
    out.mkdir()
    (out / "results.csv").write_text("\n".join(LABELS) + "\n")
    args = ["evaluate", work / "m.onnx", work / "d.png", "--methods", "saliency", "--metrics",
            "insertion", "-o", out]  # fmt: skip
    before = snapshot(work)
    refused(invoke(*args, "--labels", out / "results.csv"), "(the labels file)")
    assert snapshot(work) == before
    np.savez(out / "masks.npz", d__obj0=np.ones((8, 8), bool))
    shutil.move(out / "masks.npz", out / "results.json")  # a masks file that has the name
    before = snapshot(work)
    refused(invoke(*args, "--masks", out / "results.json"), "(the masks file)")
    assert snapshot(work) == before


def test_rewrite_never_replaces_the_labels_it_reads(work):
    before = snapshot(work)
    result = invoke("rewrite", work / "m.onnx", "-o", work / "labels.txt", "--set-labels",
                    work / "labels.txt", "--force")  # fmt: skip
    refused(result, "labels.txt (the labels file)", "not even --force")
    assert snapshot(work) == before
    # an output that is no input is still written, and replaced with --force only
    assert invoke("rewrite", work / "m.onnx", "-o", work / "r.onnx").exit_code == 0
    refused(invoke("rewrite", work / "m.onnx", "-o", work / "r.onnx"), "pass --force")


def test_every_write_checks_the_guard(work):
    labels = work / "labels.txt"
    with command_inputs():
        read_text(labels, "the labels file")
        with pytest.raises(InputError, match="would overwrite the input"):
            atomic_write_bytes(labels, b"report")
        atomic_write_bytes(work / "other.txt", b"report")
    assert labels.read_text().split() == LABELS
    atomic_write_bytes(labels, b"new")  # outside a command nothing is guarded
    assert labels.read_bytes() == b"new"


def test_an_unwritable_output_is_a_one_line_error(work, monkeypatch):
    before = snapshot(work)
    result = invoke("rewrite", work / "m.onnx", "-o", work / "d.png" / "x.onnx")
    refused(result, "cannot write to -o", "d.png is a file")
    refused(invoke("explain", work / "m.onnx", work / "d.png", "--out", work / "d.png" / "o"),
            "--out")  # fmt: skip
    assert snapshot(work) == before

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("pathonnx.io.tempfile.mkstemp", denied)  # as a read-only folder does
    refused(invoke("rewrite", work / "m.onnx", "-o", work / "r.onnx"), "Permission denied")
    assert snapshot(work) == before


# -- the reader: regular files only, bounded sizes ---------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_not_waited_on(work):
    os.mkfifo(work / "fifo.png")
    done = run_process("explain", work / "m.onnx", work / "fifo.png", "--out", work / "out")
    refused_process(done, "fifo.png is a FIFO")
    assert not (work / "out").exists() or not any((work / "out").iterdir())


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_as_labels_is_refused(work):
    done = run_process("explain", work / "m.onnx", work / "d.png", "--labels", "/dev/zero",
                       "--out", work / "out")  # fmt: skip
    refused_process(done, "/dev/zero is a device")
    done = run_process("rewrite", work / "m.onnx", "-o", work / "r.onnx", "--set-labels",
                       "/dev/zero")  # fmt: skip
    refused_process(done, "/dev/zero is a device")
    assert not (work / "r.onnx").exists()


def test_a_labels_file_over_the_limit_is_refused(work):
    big = work / "big.txt"
    with open(big, "wb") as handle:
        handle.truncate(MAX_TEXT_BYTES + 1)  # sparse: no disk used
    before = snapshot(work)
    result = invoke("rewrite", work / "m.onnx", "-o", work / "r.onnx", "--set-labels", big)
    refused(result, "big.txt", "16 MiB", "over the limit")
    assert snapshot(work) == before


def _npy_with_shape(path: Path, shape: tuple[int, ...]) -> Path:
    """A .npy file whose header declares ``shape`` of float32, with 256 bytes of data."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}".ljust(117)
    path.write_bytes(b"\x93NUMPY\x01\x00v\x00" + header.encode() + b"\n" + bytes(256))
    return path


def _npz_renamed(path: Path) -> Path:
    np.savez(path.with_suffix(".npz"), x=np.zeros((1, 1, 8, 8), np.float32))
    path.with_suffix(".npz").rename(path)
    return path


BAD_ARRAYS = {
    "header declares 10^12 samples": (
        lambda p: _npy_with_shape(p, (10**12, 1, 8, 8)),
        "declares shape (1000000000000, 1, 8, 8)",
    ),
    "an .npz renamed .npy": (_npz_renamed, "it is a .npz archive"),
    "a malformed header": (
        lambda p: p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': 'x'" + bytes(64)),
        "not a valid .npy array",
    ),
    "not a .npy file at all": (lambda p: p.write_bytes(b"garbage"), "not a valid .npy array"),
    "no samples": (lambda p: np.save(p, np.zeros((0, 1, 8, 8), np.float32)), "no samples"),
    "Python objects": (
        lambda p: np.save(p, np.full((1, 1, 8, 8), None, object), allow_pickle=True),
        "object",
    ),
    "beyond float32": (lambda p: np.save(p, np.full((1, 1, 8, 8), 1e300)), "finite numbers"),
}


@pytest.mark.parametrize("case", BAD_ARRAYS)
def test_a_bad_array_is_one_line(work, case):
    build, words = BAD_ARRAYS[case]
    build(work / "x.npy")
    before = snapshot(work)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("explain", work / "m.onnx", work / "x.npy", "--out", work / "out")
    refused(result, "x.npy", words)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert {k: v for k, v in snapshot(work).items() if not k.startswith("out")} == before
    assert not (work / "out").exists() or not any((work / "out").iterdir())


def test_a_corrupt_masks_file_is_one_line(work):
    (work / "masks.npz").write_bytes(b"PK\x03\x04 damaged")
    result = invoke("evaluate", work / "m.onnx", work / "d.png", "--methods", "saliency",
                    "--metrics", "insertion", "--masks", work / "masks.npz", "-o",
                    work / "out")  # fmt: skip
    refused(result, "masks.npz: cannot read the masks file")


# -- images --------------------------------------------------------------------------------------


def _png(path: Path, width: int, height: int) -> Path:
    """An RGB PNG of ``width`` × ``height`` black pixels, written without Pillow (a header
    can declare any size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = zlib.compress(bytes(1 + 3 * width) * height) if width * height < 1e8 else b""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def test_a_decompression_bomb_is_refused(work):
    _png(work / "bomb.png", 20000, 20000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("explain", work / "m.onnx", work / "bomb.png", "--out", work / "out")
    refused(result, "bomb.png: the image is too large to decode", "150,000,000 pixels")
    assert not caught


def test_pillows_bomb_warning_does_not_leak(work, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # d.png's 64 pixels now warn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_image(work / "d.png").shape == (8, 8, 1)
    assert not caught


def test_a_large_image_is_decoded_reduced(work):
    path = _png(work / "large.png", 2000, 1000)
    assert read_image(path).shape == (1000, 2000, 3)
    # reduced by the largest integer factor that stays REDUCING_GAP times the size asked for
    factor = min(1000 // (REDUCING_GAP * 8), 2000 // (REDUCING_GAP * 8))
    assert read_image(path, (8, 8)).shape == (-(-1000 // factor), -(-2000 // factor), 3)
    result = invoke("explain", work / "m.onnx", path, "--size", "8x8", "--color", "grey",
                    "--out", work / "out")  # fmt: skip
    assert result.exit_code == 0, result.output


def test_a_large_jpeg_is_drafted(work):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (800, 800, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(work / "large.jpg", quality=90)
    small = read_image(work / "large.jpg", (32, 32))
    assert small.shape == (100, 100, 3)  # decoded at 1/8 scale: 100 >= 3 × 32
    # it resizes to about what the full decode gives
    full = np.asarray(Image.open(work / "large.jpg").resize((32, 32), Image.BILINEAR), float)
    reduced = np.asarray(Image.fromarray(small.astype(np.uint8)).resize((32, 32)), float)
    assert np.abs(full - reduced).mean() < 8


def test_non_finite_pixels_are_one_line_without_warnings(work):
    Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F").save(work / "nan.tif")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("explain", work / "m.onnx", work / "nan.tif", "--out", work / "out")
    refused(result, "nan.tif", "NaN")
    assert not caught


# -- one line, whatever the names ----------------------------------------------------------------


def test_control_characters_in_names_are_refused_on_one_line(work):
    """A line break or escape in a file or label name: refused (issue 14), the name escaped."""
    bad = work / "bad\nname\x1b[31m.png"
    bad.write_bytes(b"not an image")
    err = refused(invoke("explain", work / "m.onnx", bad, "--out", work / "out"))
    assert "bad\\nname\\x1b[31m.png" in err and "rename the file" in err
    (work / "labels.json").write_text(json.dumps([f"class\n{i}" for i in range(10)]))
    result = invoke("explain", work / "m.onnx", work / "d.png", "--labels", work / "labels.json",
                    "--out", work / "out")  # fmt: skip
    err = refused(result, "control character")
    assert "class\\n0" in err and not (work / "out").exists()
