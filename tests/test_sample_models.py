"""The shipped sample models: explainable, small, and right about the shipped images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pathonnx

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
INDEX = json.loads((SAMPLES / "index.json").read_text())
IMAGES = json.loads((SAMPLES / "images" / "index.json").read_text())["images"]
MODELS = sorted(INDEX["models"])


def to_input(model: pathonnx.Model, path: Path) -> np.ndarray:
    """The documented preprocessing: input = (pixel · scale − mean) / std, NCHW."""
    prep = json.loads(model.metadata["pathonnx.preprocess"])
    image = Image.open(path).convert("L" if prep["color"] == "grey" else "RGB")
    pixels = np.asarray(image, np.float32)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    x = (pixels * prep["scale"] - np.asarray(prep["mean"])) / np.asarray(prep["std"])
    return x.transpose(2, 0, 1)[None].astype(np.float32)


@pytest.mark.parametrize("name", MODELS)
def test_sample_model_passes_check(name):
    path = SAMPLES / name
    assert path.stat().st_size < 2 * 2**20
    result = pathonnx.check_model(path, device="cpu")
    assert result.exit_code == 0, result.error
    assert result.completeness["passed"] and result.self_check["passed"]


def test_vgg_sample_keeps_batchnorm_unfolded_in_the_file():
    result = pathonnx.check_model(SAMPLES / "shapes_vgg.onnx", device="cpu")
    assert result.ops["BatchNormalization"] == 5 and result.batchnorm["folded"] == 5


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_sample_images_are_classified_as_labelled(image):
    info = IMAGES[image]
    for name in info["models"]:
        model = pathonnx.load(SAMPLES / name, device="cpu")
        labels = json.loads(model.metadata["pathonnx.labels"])
        logits = model.forward(to_input(model, SAMPLES / "images" / image)).logits
        assert labels[int(logits.argmax())] == info["label"], (name, image)


def test_object_masks_match_the_images():
    masks = np.load(SAMPLES / "images" / "masks.npz")
    for image, info in IMAGES.items():
        for obj in info["objects"]:
            mask = masks[obj["mask_key"]]
            assert mask.dtype == bool and mask.sum() == obj["area"], image


def test_build_script_quick_mode(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SAMPLES / "build.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in MODELS:
        model = pathonnx.load(tmp_path / name, device="cpu")
        assert model.num_outputs == len(json.loads(model.metadata["pathonnx.labels"]))
