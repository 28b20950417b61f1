"""Build the sample ONNX models and sample images that ship in ``sample_models/``.

Usage (from the repository root)::

    python sample_models/build.py              # full build into sample_models/ (a few minutes)
    python sample_models/build.py --quick      # a few training steps, for smoke tests
    python sample_models/build.py --out DIR    # write somewhere else

It trains three small models on CPU, exports them with the legacy (TorchScript) ONNX exporter,
checks onnxruntime against torch, and writes:

* ``digits_mlp.onnx``    MLP on scikit-learn's 8x8 ``load_digits``;
* ``shapes_vgg.onnx``    VGG-style CNN on the procedural shapes set, BatchNormalization unfolded;
* ``shapes_resnet.onnx`` small ResNet on the same set, BatchNormalization folded into Conv;
* ``images/``            sample test images, their object masks (``masks.npz``) and ``index.json``;
* ``index.json``         one entry per model plus the default image for the explain demo.

Each ONNX file carries metadata_props ``pathonnx.labels`` (JSON list of class names),
``pathonnx.preprocess`` (JSON: how an image file becomes the input tensor, namely
``input = (pixel * scale - mean) / std`` per channel, NCHW, ``size`` = [height, width]) and
``pathonnx.dataset`` (text: training data and test accuracy).

Everything is seeded, so a rebuild with the same library versions gives the same models.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
OPSET = 13
SEED = 0
SHAPES_SIZE = 32
SHAPES_TRAIN_SEED, SHAPES_TEST_SEED = 1, 2  # distinct seeds: train and test never share images
DIGIT_SAMPLES = (0, 3, 7, 9)  # labels of the digit images written to images/


def load_shapes_module():
    """Import the sibling ``shapes.py`` by path, so this works however build.py is started."""
    spec = importlib.util.spec_from_file_location("pathonnx_sample_shapes", HERE / "shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


shapes = load_shapes_module()


@dataclass
class Settings:
    """Sizes of the build; ``quick`` shrinks everything so a smoke test takes seconds."""

    digits_epochs: int = 60
    shapes_train: int = 5000
    shapes_test: int = 1000
    vgg_epochs: int = 10
    resnet_epochs: int = 10

    quick_build: bool = False

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            digits_epochs=2,
            shapes_train=256,
            shapes_test=200,
            vgg_epochs=1,
            resnet_epochs=1,
            quick_build=True,
        )


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def digits_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def shapes_vgg(n_classes: int) -> nn.Module:
    """VGG-style: (conv-BN-ReLU)x2, pool, (conv-BN-ReLU)x2, pool, conv-BN-ReLU, pool, FC-ReLU-FC."""
    return nn.Sequential(
        *conv_bn_relu(3, 16),
        *conv_bn_relu(16, 16),
        nn.MaxPool2d(2),  # 16x16
        *conv_bn_relu(16, 32),
        *conv_bn_relu(32, 32),
        nn.MaxPool2d(2),  # 8x8
        *conv_bn_relu(32, 64),
        nn.MaxPool2d(2),  # 4x4
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, n_classes),
    )


class BasicBlock(nn.Module):
    """ResNet basic block; a strided 1x1 conv + BN projects the shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()  # separate module per ReLU: explainers may hook each one
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ShapesResNet(nn.Module):
    """Stem conv-BN-ReLU + maxpool, blocks (identity, 1x1 strided projection, identity), GAP, FC."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(3, 32), nn.MaxPool2d(2))  # 16x16
        self.layer1 = BasicBlock(32, 32)
        self.layer2 = BasicBlock(32, 64, stride=2)  # 8x8, projection shortcut
        self.layer3 = BasicBlock(64, 64)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    flip: bool = False,
) -> None:
    """AdamW with a one-cycle schedule; ``flip`` adds random horizontal flips (label-safe)."""
    gen = torch.Generator().manual_seed(SEED)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        start, total_loss, correct = time.perf_counter(), 0.0, 0
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            xb, yb = x[idx], y[idx]
            if flip:
                flipped = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flipped[:, None, None, None], xb.flip(-1), xb)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        print(
            f"  [{name}] epoch {epoch + 1}/{epochs}: loss {total_loss / len(x):.4f}, "
            f"train acc {correct / len(x):.4f} ({time.perf_counter() - start:.1f}s)",
            flush=True,
        )
    model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(xb) for xb in x.split(512)]).argmax(1).numpy()


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    metadata: dict[str, str],
    fold_constants: bool = True,
) -> onnx.ModelProto:
    """Export with the legacy exporter, attach metadata, check onnxruntime matches torch."""
    model.eval()
    with warnings.catch_warnings():  # the legacy exporter is deliberate; silence its notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            example,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            do_constant_folding=fold_constants,  # in eval mode, True also folds BN into Conv
        )
    proto = onnx.load(str(path))
    drop_initializer_identities(proto)
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    verify_onnx(path, model, example)
    return proto


def drop_initializer_identities(proto: onnx.ModelProto) -> None:
    """Remove Identity nodes that merely rename an initializer.

    Without constant folding the exporter routes some parameters (e.g. BN statistics) through
    Identity nodes; rewiring consumers to the initializer keeps every BatchNormalization's
    parameters directly readable as initializers.
    """
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    graph_outputs = {out.name for out in graph.output}
    rename = {}
    for node in list(graph.node):
        if (
            node.op_type == "Identity"
            and node.input[0] in initializers
            and node.output[0] not in graph_outputs
        ):
            rename[node.output[0]] = node.input[0]
            graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]


def verify_onnx(path: Path, model: nn.Module, inputs: torch.Tensor) -> None:
    """onnxruntime must reproduce torch's logits, for the whole batch and for a single image."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(inputs).numpy()
    got = session.run(["logits"], {"input": inputs.numpy()})[0]
    single = session.run(["logits"], {"input": inputs[:1].numpy()})[0]
    err = max(np.abs(got - expected).max(), np.abs(single - expected[:1]).max())
    if err > 1e-4:
        raise RuntimeError(f"{path.name}: onnxruntime differs from torch by {err:.2e}")
    print(f"  [{path.stem}] onnxruntime matches torch (max abs diff {err:.1e})", flush=True)


def count_ops(proto: onnx.ModelProto, op_type: str) -> int:
    return sum(node.op_type == op_type for node in proto.graph.node)


# --------------------------------------------------------------------------------------------
# Data and preprocessing
# --------------------------------------------------------------------------------------------


def apply_preprocess(pixels: np.ndarray, prep: dict) -> np.ndarray:
    """(N, H, W, C) uint8 pixels -> (N, C, H, W) float32 input, the formula in the metadata."""
    scale = np.float32(prep["scale"])
    mean = np.asarray(prep["mean"], dtype=np.float32)
    std = np.asarray(prep["std"], dtype=np.float32)
    x = (pixels.astype(np.float32) * scale - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_digit_data():
    """Digits as values 0..16, with a stratified, seeded 75/25 train/test split."""
    digits = load_digits()
    values = digits.images.astype(np.float32)  # (1797, 8, 8), integers 0..16
    return train_test_split(
        values, digits.target, test_size=0.25, stratify=digits.target, random_state=SEED
    )


def digits_to_png_pixels(values: np.ndarray) -> np.ndarray:
    """What a digit PNG stores: round(v * 255 / 16) as uint8, so 0 -> 0 and 16 -> 255."""
    return np.round(values * (255.0 / 16.0)).astype(np.uint8)


def shapes_preprocess(train_pixels: np.ndarray) -> dict:
    """Per-channel mean/std of pixel/255 on the training images, rounded to what we record."""
    unit = train_pixels.reshape(-1, 3).astype(np.float64) / 255.0
    return {
        "size": [SHAPES_SIZE, SHAPES_SIZE],
        "color": "rgb",
        "scale": 1.0 / 255.0,
        "mean": [round(float(m), 4) for m in unit.mean(axis=0)],
        "std": [round(float(s), 4) for s in unit.std(axis=0)],
        "layout": "NCHW",
    }


# --------------------------------------------------------------------------------------------
# Build steps
# --------------------------------------------------------------------------------------------


ARCHITECTURES = {
    "digits_mlp": "MLP: Flatten -> Linear(64,128) -> ReLU -> Linear(128,64) -> ReLU -> "
    "Linear(64,10)",
    "shapes_vgg": "VGG-style CNN: [Conv3x3-BN-ReLU]x2 (16 ch) -> MaxPool -> [Conv3x3-BN-ReLU]x2 "
    "(32 ch) -> MaxPool -> Conv3x3-BN-ReLU (64 ch) -> MaxPool -> Flatten -> Linear(1024,64) -> "
    "ReLU -> Linear(64,6)",
    "shapes_resnet": "small ResNet: stem Conv3x3-BN-ReLU (32 ch) -> MaxPool -> BasicBlock(32, "
    "identity shortcut) -> BasicBlock(32->64, stride 2, 1x1 conv+BN projection shortcut) -> "
    "BasicBlock(64, identity shortcut) -> GlobalAveragePool -> Linear(64,6); each block ends "
    "with residual Add then ReLU",
}


@dataclass
class Built:
    """One exported model and the facts that index.json records about it."""

    name: str
    model: nn.Module
    proto: onnx.ModelProto
    chw: list[int]
    labels: list[str]
    accuracy: float
    test_images: int
    prep: dict
    dataset: str

    def entry(self) -> dict:
        n_bn = count_ops(self.proto, "BatchNormalization")
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in self.model.modules())
        torch_version = torch.__version__.split("+")[0]
        return {
            "file": f"{self.name}.onnx",
            "input_shape": ["N", *self.chw],
            "classes": self.labels,
            "test_accuracy": round(self.accuracy, 4),
            "test_images": self.test_images,
            "architecture": ARCHITECTURES[self.name],
            "exporter": f"torch.onnx.export, legacy TorchScript exporter (dynamo=False), "
            f"torch {torch_version}",
            "opset": OPSET,
            "has_batchnorm": has_bn,
            "bn_folded": (n_bn == 0) if has_bn else None,
            "batchnorm_nodes": n_bn,
            "ops": sorted({node.op_type for node in self.proto.graph.node}),
            "preprocess": self.prep,
            "dataset": self.dataset,
        }


def metadata(labels: list[str], prep: dict, dataset: str) -> dict[str, str]:
    return {
        "pathonnx.labels": json.dumps(labels),
        "pathonnx.preprocess": json.dumps(prep),
        "pathonnx.dataset": dataset,
    }


def build_digits(out: Path, settings: Settings) -> tuple[Built, dict]:
    """Train and export digits_mlp; return it and its sample images' index entries."""
    print("digits_mlp: scikit-learn load_digits", flush=True)
    v_train, v_test, y_train, y_test = load_digit_data()
    # The model is trained on v / 16. A PNG stores p = round(v * 255 / 16); the recorded
    # preprocessing p * (1/255) equals v / 16 up to rounding (at most 0.5/255 ~ 0.002).
    prep = {
        "size": [8, 8],
        "color": "grey",
        "scale": 1.0 / 255.0,
        "mean": [0.0],
        "std": [1.0],
        "layout": "NCHW",
    }
    x_train = torch.from_numpy(v_train / 16.0)[:, None].float()
    x_test = torch.from_numpy(v_test / 16.0)[:, None].float()
    torch.manual_seed(SEED)
    model = digits_mlp()
    train("digits_mlp", model, x_train, torch.from_numpy(y_train), settings.digits_epochs, 32, 3e-3)
    pred = predict(model, x_test)
    acc = float((pred == y_test).mean())
    print(f"  [digits_mlp] test accuracy {acc:.4f} on {len(y_test)} images", flush=True)
    labels = [str(d) for d in range(10)]
    dataset = (
        "scikit-learn load_digits (8x8 grey, values 0..16, input v/16); stratified 75/25 split "
        f"(random_state={SEED}): {len(y_train)} train / {len(y_test)} test images; "
        f"test accuracy {acc:.4f}"
    )
    proto = export_onnx(model, x_test[:8], out / "digits_mlp.onnx", metadata(labels, prep, dataset))
    images = write_digit_images(out, v_test, y_test, pred)
    built = Built("digits_mlp", model, proto, [1, 8, 8], labels, acc, len(y_test), prep, dataset)
    return built, images


def build_shapes(out: Path, settings: Settings) -> tuple[list[Built], dict]:
    """Generate the shapes set, train and export both CNNs; return them and the image entries."""
    print("shapes: generating images", flush=True)
    train_set = shapes.generate(settings.shapes_train, SHAPES_SIZE, seed=SHAPES_TRAIN_SEED)
    test_set = shapes.generate(settings.shapes_test, SHAPES_SIZE, seed=SHAPES_TEST_SEED)
    prep = shapes_preprocess(train_set.images)
    x_train = torch.from_numpy(apply_preprocess(train_set.images, prep))
    x_test = torch.from_numpy(apply_preprocess(test_set.images, prep))
    y_train = torch.from_numpy(train_set.labels)
    labels = list(shapes.CLASSES)
    n_two = sum(len(c) == 2 for c in train_set.classes)
    data_text = (
        f"procedural shapes ({SHAPES_SIZE}x{SHAPES_SIZE} RGB, classes {', '.join(labels)}; "
        f"one or two objects on textured backgrounds, label = larger object): "
        f"{len(train_set)} train images ({n_two} with two objects, seed {SHAPES_TRAIN_SEED}) / "
        f"{len(test_set)} test images (seed {SHAPES_TEST_SEED})"
    )
    # (name, constructor, epochs, fold constants): only the VGG keeps its BatchNormalization.
    specs = [
        ("shapes_vgg", shapes_vgg, settings.vgg_epochs, False),
        ("shapes_resnet", ShapesResNet, settings.resnet_epochs, True),
    ]
    built, predictions = [], {}
    for name, factory, epochs, fold in specs:
        print(f"{name}: training", flush=True)
        torch.manual_seed(SEED)
        model = factory(len(labels))
        train(name, model, x_train, y_train, epochs, 64, 3e-3, flip=True)
        predictions[name] = predict(model, x_test)
        acc = float((predictions[name] == test_set.labels).mean())
        print(f"  [{name}] test accuracy {acc:.4f} on {len(test_set)} images", flush=True)
        dataset = f"{data_text}; test accuracy {acc:.4f}"
        path = out / f"{name}.onnx"
        proto = export_onnx(model, x_test[:8], path, metadata(labels, prep, dataset), fold)
        if not fold and count_ops(proto, "BatchNormalization") == 0:
            raise RuntimeError(f"{name}: BatchNormalization nodes were folded away")
        chw = [3, SHAPES_SIZE, SHAPES_SIZE]
        built.append(Built(name, model, proto, chw, labels, acc, len(test_set), prep, dataset))
    images = write_shape_images(out, test_set, predictions["shapes_vgg"])
    return built, images


# --------------------------------------------------------------------------------------------
# Sample images
# --------------------------------------------------------------------------------------------


def write_digit_images(out: Path, v_test: np.ndarray, y_test: np.ndarray, pred: np.ndarray) -> dict:
    """One test digit per label in DIGIT_SAMPLES, preferring ones the model gets right."""
    correct = pred == y_test
    index = {}
    for digit in DIGIT_SAMPLES:
        candidates = np.flatnonzero(y_test == digit)
        i = next((j for j in candidates if correct[j]), candidates[0])
        name = f"digit_{digit}.png"
        Image.fromarray(digits_to_png_pixels(v_test[i])).save(out / "images" / name)
        index[name] = {
            "model": "digits_mlp.onnx",
            "models": ["digits_mlp.onnx"],
            "label": str(digit),
            "objects": [],
            "stores": "round(v * 255 / 16) of the load_digits value v in 0..16",
            "test_index": int(i),
        }
    return index


def write_shape_images(out: Path, test_set, vgg_pred: np.ndarray) -> dict:
    """One single-object image per class, then three two-object images.

    Images the VGG model classifies correctly are preferred, so the demos start from a sensible
    prediction; masks go to images/masks.npz as ``<stem>__obj<k>`` (bool H x W).
    """
    order = sorted(range(len(test_set)), key=lambda i: (vgg_pred[i] != test_set.labels[i], i))
    n_images = len(shapes.CLASSES) + 3
    chosen = []
    for cls in range(len(shapes.CLASSES)):
        chosen.append(next(i for i in order if test_set.classes[i] == (cls,)))
    # Three two-object images; prefer pairs that share no class, so six classes appear.
    pairs = [i for i in order if len(test_set.classes[i]) == 2]
    used: set[int] = set()
    for i in pairs:
        if not used & set(test_set.classes[i]):
            used |= set(test_set.classes[i])
            chosen.append(i)
    chosen = chosen[:n_images]
    chosen += [i for i in pairs if i not in chosen][: n_images - len(chosen)]
    index, masks = {}, {}
    for k, i in enumerate(chosen):
        names = [shapes.CLASSES[c] for c in test_set.classes[i]]
        stem = f"shapes_{k:03d}_{'+'.join(names)}"
        Image.fromarray(test_set.images[i]).save(out / "images" / f"{stem}.png")
        objects = []
        for j, (name, mask) in enumerate(zip(names, test_set.masks[i])):
            key = f"{stem}__obj{j}"
            masks[key] = mask
            objects.append({"class": name, "mask_key": key, "area": int(mask.sum())})
        masks[f"{stem}__classes"] = np.array(names)
        index[f"{stem}.png"] = {
            "model": "shapes_vgg.onnx",
            "models": ["shapes_vgg.onnx", "shapes_resnet.onnx"],
            "label": names[0],
            "objects": objects,
            "label_mask_key": objects[0]["mask_key"],
            "test_index": int(i),
        }
    np.savez_compressed(out / "images" / "masks.npz", **masks)
    return index


def open_with_metadata(path: Path) -> tuple[ort.InferenceSession, list[str], dict]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    labels = json.loads(props["pathonnx.labels"])
    return session, labels, json.loads(props["pathonnx.preprocess"])


def check_image_files(out: Path, images: dict) -> None:
    """End-to-end check: read each PNG, apply the ONNX metadata's preprocess, run onnxruntime."""
    sessions: dict[str, tuple] = {}
    for file, info in images.items():
        info["predicted"] = {}
        for model_file in info["models"]:
            if model_file not in sessions:
                sessions[model_file] = open_with_metadata(out / model_file)
            session, labels, prep = sessions[model_file]
            mode = "L" if prep["color"] == "grey" else "RGB"
            pixels = np.asarray(Image.open(out / "images" / file).convert(mode))
            pixels = pixels[None, ..., None] if pixels.ndim == 2 else pixels[None]
            logits = session.run(["logits"], {"input": apply_preprocess(pixels, prep)})[0]
            info["predicted"][model_file] = labels[int(logits.argmax())]
        print(f"  {file}: label {info['label']}, predicted {info['predicted']}", flush=True)


def write_indexes(out: Path, models: list[Built], images: dict, settings: Settings) -> list[dict]:
    """Write images/index.json and index.json; return the model entries."""
    entries = [built.entry() for built in models]
    for entry in entries:
        entry["size_bytes"] = (out / entry["file"]).stat().st_size
    # The explain demo starts from a two-object image, where a good explanation must pick one.
    default = next(f for f, info in images.items() if len(info["objects"]) == 2)
    write_json(out / "images" / "index.json", {"images": images})
    index = {
        "default": {"model": "shapes_vgg.onnx", "image": f"images/{default}"},
        "quick_build": settings.quick_build,
        "models": {entry["file"]: entry for entry in entries},
        "images_index": "images/index.json",
        "masks": "images/masks.npz",
        "shapes_generator": {
            "module": "shapes.py",
            "size": SHAPES_SIZE,
            "train_seed": SHAPES_TRAIN_SEED,
            "test_seed": SHAPES_TEST_SEED,
            "train_images": settings.shapes_train,
            "test_images": settings.shapes_test,
        },
    }
    write_json(out / "index.json", index)
    return entries


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    parser.add_argument("--quick", action="store_true", help="train very briefly (smoke test)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    settings = Settings.quick() if args.quick else Settings()
    out: Path = args.out
    (out / "images").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    digits, digit_images = build_digits(out, settings)
    shape_models, shape_images = build_shapes(out, settings)
    images = {**digit_images, **shape_images}
    print("checking sample images through their PNG files and the ONNX metadata", flush=True)
    check_image_files(out, images)
    entries = write_indexes(out, [digits, *shape_models], images, settings)

    print("summary:", flush=True)
    for entry in entries:
        print(
            f"  {entry['file']}: test accuracy {entry['test_accuracy']:.4f}, "
            f"{entry['size_bytes'] / 1024:.0f} KiB, BatchNormalization nodes "
            f"{entry['batchnorm_nodes']}",
            flush=True,
        )
    print(f"done in {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
