"""Write the evaluation set for `pathonnx evaluate`: procedural shapes images with object masks.

    python sample_models/make_eval_set.py            # 60 images into sample_models/eval/

The images come from ``shapes.generate`` with seed 3, which neither the training set (seed 1)
nor the test set (seed 2) of the shapes models uses. ``eval/masks.npz`` holds each object's
mask in the layout of ``images/masks.npz``: ``<stem>__obj<k>`` (bool H x W) and
``<stem>__classes`` (class names, the label object first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "eval")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import shapes  # the sibling generator

    data = shapes.generate(args.count, size=32, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    masks, index = {}, {}
    for i in range(len(data)):
        names = [shapes.CLASSES[c] for c in data.classes[i]]
        stem = f"eval_{i:03d}_{'+'.join(names)}"
        Image.fromarray(data.images[i]).save(args.out / f"{stem}.png")
        for k, mask in enumerate(data.masks[i]):
            masks[f"{stem}__obj{k}"] = mask
        masks[f"{stem}__classes"] = np.array(names)
        index[f"{stem}.png"] = {"label": names[0], "objects": names}
    np.savez_compressed(args.out / "masks.npz", **masks)
    (args.out / "index.json").write_text(json.dumps({"seed": args.seed, "images": index}, indent=1))
    print(f"wrote {len(data)} images and masks.npz to {args.out}")


if __name__ == "__main__":
    main()
