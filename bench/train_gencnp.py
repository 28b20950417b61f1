"""Benchmark: train GEN-CNP generators (`pathonnx learn`) for the shipped shapes models.

The training data is the shapes models' own: ``sample_models/shapes.py`` with the seed and
count ``sample_models/build.py`` trains on (seed 1, 5000 images, 32×32), written as PNGs in
class sub-folders (``circle/``, ``square/``...) of a temporary folder (or ``--data``, kept),
so the labels come from the folder names. For each model the script runs what
``pathonnx learn MODEL DATA -o GENERATOR.onnx`` runs (reading the folder, training,
exporting) and prints the time of each part and the final losses: the best epoch's training
KD and l2 terms, and on the held-out 10% with the hard masks the KD loss, the share of the
model's units kept and the agreement of the pathway network's prediction with the model's.
Then, on ``sample_models/eval`` (60 images the models never saw), the ``gencnp`` pathways
from the exported file: the share of the model's units they keep, and how much of the frozen
pathway's target logit ``W^p·x + b^p`` its input term carries, |W^p·x| / (|W^p·x| + |b^p|)
(0 when nothing of the input reaches the logit along the pathway), next to NeuronMCT's
pathways at sparsity 0.9.

Run with no arguments; ``--quick`` trains on 512 images for 2 epochs (a smoke run);
``--out DIR`` keeps the generators.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

import pathonnx  # noqa: E402
from pathonnx.explanation import model_labels  # noqa: E402
from pathonnx.images import collect, load_inputs, resolve_preprocess  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
MODELS = ("shapes_vgg", "shapes_resnet")
TRAIN_SEED, TRAIN_IMAGES, SIZE = 1, 5000, 32  # as sample_models/build.py trains the models


def shapes_module():
    spec = importlib.util.spec_from_file_location("pathonnx_sample_shapes", SAMPLES / "shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_training_images(folder: Path, count: int) -> int:
    """The shapes training set as ``folder/<class>/<index>.png``; returns the count."""
    shapes = shapes_module()
    data = shapes.generate(count, SIZE, seed=TRAIN_SEED)
    for name in shapes.CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(data.images, data.labels)):
        Image.fromarray(image).save(folder / shapes.CLASSES[label] / f"{i:05d}.png")
    return len(data)


def pathway_shares(model, pathway, x) -> tuple[float, float]:
    """(mean share of the model's units kept, mean input share of the frozen logit)."""
    n, units = len(x), sum(g.units for g in model.gates)
    kept = sum(pathway.masks[g.name].reshape(n, -1).sum(axis=1) for g in model.gates) / units
    term = np.abs((pathway.linear.W * x).reshape(n, -1).sum(axis=1))
    share = term / np.maximum(term + np.abs(pathway.linear.b), 1e-12)
    return float(kept.mean()), float(share.mean())


def eval_inputs(model) -> np.ndarray:
    pre = resolve_preprocess(model.input_shape, model.metadata)
    files = collect([SAMPLES / "eval"])
    return np.stack([load_inputs(f, pre, model.input_shape)[0].x for f in files])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--data", type=Path, help="write (or reuse) the training PNGs here")
    parser.add_argument("--out", type=Path, help="keep the generators in this folder")
    parser.add_argument("--images", type=int, default=TRAIN_IMAGES)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--sparsity", type=float, default=None, help="λ (default: learn's)")
    parser.add_argument("--granularity", default="channel")
    parser.add_argument("--quick", action="store_true", help="512 images, 2 epochs")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from pathonnx.learn import Examples, Settings, export_generator, train

    if args.quick:
        args.images, args.epochs = 512, 2
    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or Path(scratch) / "shapes-train"
        t0 = time.perf_counter()
        present = len(list(data.rglob("*.png"))) if data.exists() else 0
        if present != args.images:
            write_training_images(data, args.images)
        print(f"training data: {args.images} images in {data} ({time.perf_counter() - t0:.1f} s)")
        out = args.out or Path(scratch)
        rows = []
        for name in args.models.split(","):
            model = pathonnx.load(SAMPLES / f"{name}.onnx", device="cpu")
            t0 = time.perf_counter()
            pre = resolve_preprocess(model.input_shape, model.metadata)
            examples = Examples.from_folder(model, data, pre, model_labels(model))
            read = time.perf_counter() - t0
            given = {"epochs": args.epochs, "granularity": args.granularity}
            if args.sparsity is not None:
                given["sparsity"] = args.sparsity
            settings = Settings(**given)

            def show(event, name=name):
                if event["phase"] == "epoch":
                    print(f"  {name} epoch {event['epoch']:>2}: kd {event['kd']:.4f} "
                          f"l2 {event['l2']:.3f} | val kd {event['val_kd']:.4f} units kept "
                          f"{event['val_units_kept']:.3f} agreement {event['val_agreement']:.3f}"
                          f"{'  (stopping)' if event['stopped'] else ''}", flush=True)  # fmt: skip

            trained = train(model, examples, settings, progress=show)
            t1 = time.perf_counter()
            file = out / f"{name}.gencnp.onnx"
            export_generator(trained, model, file)
            exported = time.perf_counter() - t1
            x = eval_inputs(model)
            gencnp = pathonnx.METHODS["gencnp"].fn(model, x, None, str(file))
            mct = pathonnx.critical_pathway(model, x, method="mct", sparsity=0.9)
            shares = (*pathway_shares(model, gencnp, x), *pathway_shares(model, mct, x))
            rows.append((name, examples, trained, read, exported, shares))
    print()
    print(
        f"{'model':<15}{'images':>7}{'epochs':>7}{'best':>5}{'read s':>8}{'train s':>9}"
        f"{'s/epoch':>8}{'export s':>9}{'kd':>8}{'l2':>7}{'val kd':>8}{'kept':>7}{'agree':>7}"
    )
    for name, examples, trained, read, exported, _ in rows:
        losses, epochs = trained.losses, len(trained.history)
        print(f"{name:<15}{len(examples):>7}{epochs:>7}{trained.best_epoch:>5}{read:>8.1f}"
              f"{trained.seconds:>9.1f}{trained.seconds / max(epochs, 1):>8.1f}{exported:>9.1f}"
              f"{losses['kd']:>8.4f}{losses['l2']:>7.3f}{losses['val_kd']:>8.4f}"
              f"{losses['val_units_kept']:>7.3f}{losses['val_agreement']:>7.3f}")  # fmt: skip
    print(
        "kd, l2: training terms of the best epoch (soft masks); val kd, kept (share of the "
        "model's units), agree (pathway network's prediction = model's): held-out inputs, "
        "hard masks"
    )
    print()
    print(f"{'on sample_models/eval':<24}{'gencnp kept':>12}{'input share':>12}"
          f"{'mct kept':>10}{'input share':>12}")  # fmt: skip
    for name, *_, shares in rows:
        print(f"{name:<24}{shares[0]:>12.3f}{shares[1]:>12.3f}{shares[2]:>10.3f}"
              f"{shares[3]:>12.3f}")  # fmt: skip
    print(
        "kept: share of the model's units; input share: |W^p·x| / (|W^p·x| + |b^p|) of "
        "the frozen pathway's target logit (mct: sparsity 0.9)"
    )


if __name__ == "__main__":
    main()
