"""Real models at real size: what a new user's first commands cost (issue 13's goals table).

The models are torchvision's architectures as ``archs.py`` writes them (ResNet-50, DenseNet-121,
VGG-16-BN; random weights, 224×224, 1000 classes), exported once with torch's TorchScript
exporter into ``--models`` (default ``~/.cache/pathonnx-bench``). Every measurement runs in a
process of its own, as a user would run it: its wall time includes starting Python and loading
the model, and its peak memory is that process's peak resident set (``wait4``'s ``ru_maxrss``).

The exact pathwise rows compare against the K-backward bound, measured in the same run: torch
autograd's input gradient of R single logits (one forward, R backward passes), scaled to all K
classes, on the same architecture with the same weights; and pathonnx's own walk of K rows
through the network without any selection (``LinearEngine.vjp``, R rows scaled to K). The
exact sweep carries all K rows down once, so the bound is what it cannot beat.

    python bench/bench_real.py                 # the goals table (about 25 minutes on 2 cores)
    python bench/bench_real.py --memory        # also every method's peak memory on each model
    python bench/bench_real.py --quick         # defaults, check and load only (about 2 minutes)
    python bench/bench_real.py --memory-only   # only the memory table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGE = ROOT / "sample_models" / "images" / "shapes_007_circle+star.png"
MODELS = {
    "resnet50": ("ResNet-50", "resnet50"),
    "densenet121": ("DenseNet-121", "densenet121"),
    "vgg16bn": ("VGG-16-BN", "vgg16"),
}
GIB = 1 << 30


def export(folder: Path, name: str) -> Path:
    """The model's ONNX file in ``folder``, exported on first use (in a child process, so that
    torch's memory is not this one's)."""
    path = folder / f"{name}.onnx"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        factory = MODELS[name][1]
        extra = "batch_norm=True" if name == "vgg16bn" else ""
        code = (
            f"import sys; sys.path.insert(0, {str(HERE)!r}); import archs; "
            f"archs.export_legacy(archs.{factory}({extra}), (3, 224, 224), {str(path)!r})"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
    return path


def run(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak resident GiB, stdout) of one child process."""
    t0 = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0,):
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {child.returncode}:\n{out[-2000:]}")
    return seconds, usage.ru_maxrss * 1024 / GIB, out


CLI = "import sys; from pathonnx_cli.main import main; sys.exit(main())"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", CLI, *args]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


EXACT = """
import json, time, numpy as np, pathonnx
model = pathonnx.load({path!r}, device="cpu")
x = np.random.default_rng(0).random((1, 3, 224, 224), np.float32)
t0 = time.perf_counter()
p = pathonnx.pathwise(model, x)
print(json.dumps({{"seconds": time.perf_counter() - t0,
                  "units": int(sum(int(v[0]) for v in p.stats["units_kept"].values()))}}))
"""

WALK = """
import json, time, numpy as np, pathonnx
model = pathonnx.load({path!r}, device="cpu")
x = np.random.default_rng(0).random((1, 3, 224, 224), np.float32)
fwd = model.forward(x)
seeds = np.eye(model.num_outputs, dtype=np.float32)[None, :{rows}]
model.engine.vjp(fwd, seeds[:, :1])  # sessions built
t0 = time.perf_counter()
model.engine.vjp(fwd, seeds)
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""

TORCH = """
import json, sys, time, numpy as np, torch
sys.path.insert(0, {here!r})
import archs
torch.set_num_threads({threads})
module = archs.{factory}({extra})
x = torch.from_numpy(np.random.default_rng(0).random((1, 3, 224, 224), np.float32))
x.requires_grad_(True)
logits = module(x)
torch.autograd.grad(logits[0, 0], x, retain_graph=True)  # warm
t0 = time.perf_counter()
for k in range({rows}):
    torch.autograd.grad(logits[0, k], x, retain_graph=True)
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""

LOAD = """
import json, time, pathonnx
t0 = time.perf_counter()
pathonnx.load({path!r}, device="cpu")
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""


def last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "pathonnx-bench")
    parser.add_argument("--rows", type=int, default=20, help="rows timed for the bound (× K/R)")
    parser.add_argument("--memory", action="store_true", help="every method's peak memory")
    parser.add_argument("--quick", action="store_true", help="defaults, check and load only")
    parser.add_argument("--memory-only", action="store_true", help="only the memory table")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    paths = {name: export(args.models, name) for name in MODELS}
    out = Path(tempfile.mkdtemp(prefix="bench-real-"))
    if args.memory_only:
        memory_table(paths, out)
        return
    rows: list[tuple[str, str, str, str]] = []

    def add(measure: str, seconds: float | None, peak: float | None, note: str = "") -> None:
        rows.append((measure, "" if seconds is None else f"{seconds:.1f} s",
                     "" if peak is None else f"{peak:.2f} GiB", note))  # fmt: skip
        print(f"  {measure}: {rows[-1][1]} {rows[-1][2]} {note}", file=sys.stderr, flush=True)

    explain = ["explain", str(IMAGE), "--size", "224", "-o", str(out)]
    for name in ("resnet50", "densenet121", "vgg16bn"):
        seconds, peak, text = run(cli(explain[0], str(paths[name]), *explain[1:]))
        add(f"`explain` {MODELS[name][0]}, defaults", seconds, peak,
            "top-20 approximation, noted" if "approximated" in text else "exact")  # fmt: skip
    seconds, peak, _ = run(cli(explain[0], str(paths["resnet50"]), *explain[1:], "--classes",
                               "20", "--paths", "3", "--compare",
                               "saliency,integrated_gradients,gradcam"))  # fmt: skip
    add("`explain` ResNet-50 `--classes 20 --paths 3 --compare saliency,integrated_gradients,"
        "gradcam`", seconds, peak)  # fmt: skip
    seconds, peak, _ = run(cli("check", str(paths["vgg16bn"])))
    add("`check` VGG-16-BN", seconds, peak)
    seconds, peak, text = run(python(LOAD.format(path=str(paths["vgg16bn"]))))
    add("`pathonnx.load` VGG-16-BN", last_json(text)["seconds"], peak, f"process {seconds:.1f} s")
    if not args.quick:
        for name in ("vgg16bn", "resnet50"):
            label, factory = MODELS[name]
            extra = "batch_norm=True" if name == "vgg16bn" else ""
            code = TORCH.format(here=str(HERE), threads=threads, factory=factory, extra=extra,
                                rows=args.rows)  # fmt: skip
            torch_k = last_json(run(python(code))[2])["seconds"] * 1000 / args.rows
            walk = python(WALK.format(path=str(paths[name]), rows=args.rows))
            walk_k = last_json(run(walk)[2])["seconds"] * 1000 / args.rows
            seconds_p, peak, text = run(python(EXACT.format(path=str(paths[name]))))
            exact = last_json(text)["seconds"]
            bound = min(torch_k, walk_k)
            add(f"exact pathwise {label}, 1000 classes", exact, peak,
                f"{exact / bound:.2f}x the K-backward bound {bound:.0f} s (torch autograd "
                f"{torch_k:.0f} s, pathonnx's plain K-row walk {walk_k:.0f} s)")  # fmt: skip
        seconds, peak, _ = run(cli(explain[0], str(paths["resnet50"]), *explain[1:],
                                   "--method", "intgrad"))  # fmt: skip
        add("NeuronIntGrad ResNet-50 (`explain --method intgrad`)", seconds, peak)
    mtcnn_rows(add, out)
    print(f"\n{machine()}\n")
    print("| measure | time | peak RSS | note |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.memory:
        memory_table(paths, out)


#: MTCNN's heads: (net, input size, output, extra flags).
HEADS = [
    ("pnet", (36, 44), "softmax", ["--target", "1", "--at", "6,8"]),
    ("pnet", (36, 44), "conv2d_4", ["--target", "0", "--at", "6,8"]),
    ("rnet", (24, 24), "softmax_1", []),
    ("rnet", (24, 24), "dense_2", []),
    ("onet", (48, 48), "softmax_2", []),
    ("onet", (48, 48), "dense_5", []),
    ("onet", (48, 48), "dense_6", []),
]


def mtcnn_rows(add, out: Path) -> None:
    """MTCNN's trained P/R/O-Nets (keras2onnx, NHWC, PReLU), fetched from PyPI as the tests do
    (``tests/thirdparty.py``): every head explained on a synthetic face, with its flags."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_mtcnn import face
        from thirdparty import mtcnn

        paths = {net: mtcnn(f"{net}.onnx") for net in ("pnet", "rnet", "onet")}
    except BaseException as err:  # pytest's skip is a BaseException
        add("MTCNN P/R/O-Net", None, None, f"not measured: cannot fetch the models ({err})")
        return
    from PIL import Image

    inputs = out / "inputs"  # apart from the outputs: explain never writes over an input
    inputs.mkdir(exist_ok=True)
    for net, (h, w), output, flags in HEADS:
        picture = inputs / f"face_{h}x{w}.png"
        Image.fromarray(face(2 * h, 2 * w, 3)).save(picture)
        seconds, peak, text = run(cli("explain", str(paths[net]), str(picture), "--output", output,
                                      "--size", f"{h}x{w}", "--scale", "1", "--mean", "127.5",
                                      "--std", "128", "-o", str(out), *flags))  # fmt: skip
        error = text.rsplit("exact-model error", 1)[-1].split("->")[0].strip()
        add(f"MTCNN {net} `--output {output}` {' '.join(flags)}".strip(), seconds, peak,
            f"explained; exact-model error {error}")  # fmt: skip


def memory_table(paths: dict, out: Path) -> None:
    """Peak resident memory of every registered method's `explain` (defaults, batch 1), of
    `check` and of `evaluate` (two inputs, the default metrics), per model."""
    from pathonnx.methods import METHODS

    names = sorted(METHODS)
    print("\n| run | " + " | ".join(MODELS[m][0] for m in paths) + " |")
    print("|---|" + "---|" * len(paths))
    lines = {}
    for method in names:
        cells = []
        for name in paths:
            seconds, peak, _ = run(cli("explain", str(paths[name]), str(IMAGE), "--size", "224",
                                       "-o", str(out), "--method", method))  # fmt: skip
            cells.append(f"{peak:.2f} GiB, {seconds:.0f} s")
        lines[method] = cells
        print(f"| `explain --method {method}` | " + " | ".join(cells) + " |", flush=True)
    cells = []
    for name in paths:
        seconds, peak, _ = run(cli("check", str(paths[name])))
        cells.append(f"{peak:.2f} GiB, {seconds:.0f} s")
    print("| `check` | " + " | ".join(cells) + " |", flush=True)
    cells = []
    for name in paths:  # default methods and metrics (MPRT re-initializes every layer)
        seconds, peak, _ = run(cli("evaluate", str(paths[name]), str(IMAGE), "--size", "224",
                                   "-o", str(out / f"eval-{name}")))  # fmt: skip
        cells.append(f"{peak:.2f} GiB, {seconds:.0f} s")
    print("| `evaluate` (one input, defaults) | " + " | ".join(cells) + " |", flush=True)


def machine() -> str:
    sys.path.insert(0, str(HERE))
    from common import machine as describe

    return describe()


if __name__ == "__main__":
    main()
