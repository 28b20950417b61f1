"""How fast a model that cannot be explained is refused, against the full rewrite's refusal.

Models (built in a temporary folder, or ``--folder``):

  alexnet        the onnx package's bundled light_bvlc_alexnet.onnx (LRN ×2; its weights are
                 ConstantOfShape nodes, which constant folding materializes: 0.24 GB)
  vgg16bn+LRN    VGG-16-BN (bench/archs.py, 0.55 GB, legacy exporter) with an LRN inserted
                 after its first ReLU
  vgg16bn+SiLU   the same network with every nn.ReLU swapped for nn.SiLU at export (Sigmoid and
                 Mul ×15 each)

For each, the median of ``--repeats`` runs of:

  screen s       ``pathonnx.load``: read the file, refuse from the graph as read (the default)
  full s         ``load_model(early=False)`` then ``canonicalize``: the weights registered, every
                 pass run (constant folding on onnxruntime), then the vocabulary check; what
                 pathonnx did before the screen, measured in the same run
  cli s          ``pathonnx check MODEL`` as a subprocess: Python's start and imports included

Both ways must refuse with the same nodes; the script checks it. ``--size 64`` exports VGG at
64x64 (smaller head, same convolutions) for a quick run.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from torch import nn

import pathonnx
from pathonnx.graph import canonicalize, load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import archs  # noqa: E402  (a sibling file, not an installed package)

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


def swap_relu(module: nn.Module, make) -> nn.Module:
    """Replace every nn.ReLU of ``module`` (in place) by ``make()``."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, make())
        else:
            swap_relu(child, make)
    return module


def insert_lrn(source: Path, target: Path) -> None:
    """``source`` with an LRN (size 5) right after its first Relu."""
    model = onnx.load(source)
    nodes = model.graph.node
    index = next(i for i, n in enumerate(nodes) if n.op_type == "Relu")
    out = nodes[index].output[0]
    nodes[index].output[0] = f"{out}__before_lrn"
    lrn = onnx.helper.make_node("LRN", [f"{out}__before_lrn"], [out], name="inserted_lrn", size=5)
    nodes.insert(index + 1, lrn)
    onnx.save(model, target)


def build(folder: Path, size: int) -> dict[str, Path]:
    shape = (3, size, size)
    plain, silu = folder / "vgg16bn.onnx", folder / "vgg16bn_silu.onnx"
    archs.export_legacy(archs.vgg16(batch_norm=True, input_size=size), shape, plain)
    insert_lrn(plain, folder / "vgg16bn_lrn.onnx")
    plain.unlink()
    archs.export_legacy(swap_relu(archs.vgg16(batch_norm=True, input_size=size), nn.SiLU),
                        shape, silu)  # fmt: skip
    return {
        "alexnet": LIGHT / "light_bvlc_alexnet.onnx",
        "vgg16bn+LRN": folder / "vgg16bn_lrn.onnx",
        "vgg16bn+SiLU": silu,
    }


def refused(fn) -> tuple[float, pathonnx.UnsupportedModelError]:
    gc.collect()
    start = time.perf_counter()
    try:
        fn()
    except pathonnx.UnsupportedModelError as err:
        seconds = time.perf_counter() - start
        err.__traceback__ = None  # its frames hold the model: let it go before the next run
        return seconds, err
    raise AssertionError("the model was not refused")


def median_of(fn, repeats: int):
    times = []
    for _ in range(repeats):
        seconds, err = refused(fn)
        times.append(seconds)
    return statistics.median(times), err


def cli_seconds(path: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pathonnx_cli.main", "check", str(path)],
                              capture_output=True, text=True)  # fmt: skip
        times.append(time.perf_counter() - start)
        assert done.returncode == 1, done.stdout + done.stderr
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224, help="VGG input size (multiple of 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, help="keep the built models here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        models = build(folder, args.size)
        print(f"{'model':<14} {'MB':>6} {'screen s':>9} {'full s':>8} {'ratio':>6} {'cli s':>6}  "
              "refusal")  # fmt: skip
        for name, path in models.items():
            screen_s, early = median_of(lambda p=path: pathonnx.load(p, device="cpu"), args.repeats)
            full_s, full = median_of(
                lambda p=path: canonicalize(load_model(p, early=False), str(p)), args.repeats
            )
            assert early.nodes == full.nodes, name
            cli_s = cli_seconds(path, args.repeats)
            size_mb = path.stat().st_size / 1e6
            summary = ", ".join(f"{g['kind']} ×{g['count']}" for g in early.groups)
            print(f"{name:<14} {size_mb:>6.0f} {screen_s:>9.2f} {full_s:>8.2f} "
                  f"{full_s / screen_s:>6.1f} {cli_s:>6.2f}  {summary}")  # fmt: skip


if __name__ == "__main__":
    main()
