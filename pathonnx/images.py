"""Reading images and arrays into the model's input space, with a recorded preprocessing.

A :class:`Preprocess` says how an image file becomes one model input: colour (``grey``, ``rgb``
or ``bgr``), size ``(H, W)`` and how to reach it (``stretch`` to it, or scale the ``shorter``
side then center-crop), ``scale`` (multiplies the 0..255 values), per-channel ``mean`` and
``std`` (``(v·scale − mean) / std``) and ``layout`` (``NCHW`` or ``NHWC``).

Where it comes from, first match wins, field by field (:func:`resolve_preprocess`):

1. explicit arguments (the CLI's ``--size``, ``--mean``, ...) and a named ``preset``;
2. the model's metadata entry ``pathonnx.preprocess``, a JSON object with the same keys
   (``pathonnx rewrite --set-preprocess`` writes it);
3. a default read from the model's input shape: channels and size from the shape, values in
   [0, 1] (``scale`` 1/255), no resizing. Its ``notes`` say so.

Images: PNG, JPEG, BMP, TIFF, 8- or 16-bit, grey, RGB or RGBA (alpha is composited over
white). ``.npy`` files hold arrays already in the model's input space: one sample
``(*input_shape)`` or a batch ``(N, *input_shape)``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .io import MAX_ARRAY_BYTES, MAX_MASK_BYTES, open_input, read_array

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
METADATA_KEY = "pathonnx.preprocess"
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights of R, G, B in grey
#: Most pixels (width × height, as decoded) of an image: about 12,000 × 12,000.
MAX_IMAGE_PIXELS = 150_000_000
#: An image much larger than the size it is resized to is decoded reduced by an integer factor
#: first (Pillow's ``draft`` for JPEG, ``reduce`` otherwise: box averages), to no less than
#: this many times that size, as Pillow's ``reducing_gap``; the resize does the rest.
REDUCING_GAP = 3

PRESETS = {
    "imagenet": {
        "color": "rgb", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "resize": "shorter",
    },
    "unit": {"scale": 1 / 255, "mean": [0.0], "std": [1.0], "resize": "stretch"},
    "symmetric": {"scale": 2 / 255, "mean": [1.0], "std": [1.0], "resize": "stretch"},
}  # fmt: skip
FIELDS = ("size", "color", "scale", "mean", "std", "layout", "resize")


@dataclass(frozen=True)
class Preprocess:
    """How one image becomes one model input (see the module docstring)."""

    size: tuple[int, int]
    color: str = "rgb"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    resize: str = "none"
    source: dict = field(default_factory=dict, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def channels(self) -> int:
        return 1 if self.color == "grey" else 3

    def to_dict(self) -> dict:
        out = asdict(self)
        out["size"], out["mean"], out["std"] = list(self.size), list(self.mean), list(self.std)
        out["notes"] = list(self.notes)
        return out

    def metadata_json(self) -> str:
        """The ``pathonnx.preprocess`` metadata entry for this preprocessing."""
        return json.dumps({k: v for k, v in self.to_dict().items() if k in FIELDS})


def image_layout(sample) -> str | None:
    """ "NCHW" or "NHWC" for a per-sample image shape (C, H, W) or (H, W, C) with 1 or 3
    channels, else None. Dims may be unknown (None or a name): the channel axis is the first
    one that is 1 or 3, else the last one that is."""
    sample = tuple(sample)
    if len(sample) != 3:
        return None
    if sample[0] in (1, 3):
        return "NCHW"
    if sample[-1] in (1, 3):
        return "NHWC"
    return None


def _layout_of(input_shape: tuple[int, ...]) -> tuple[str, int, tuple[int, int]]:
    """(layout, channels, (H, W)) of an image-like input shape, or raise."""
    if len(input_shape) != 3:
        raise InputError(
            f"the model takes inputs of shape {input_shape}, not an image (C, H, W); pass a .npy "
            "array of that shape instead of an image file"
        )
    layout = image_layout(input_shape)
    if layout == "NCHW":
        return "NCHW", input_shape[0], (input_shape[1], input_shape[2])
    if layout == "NHWC":
        return "NHWC", input_shape[-1], (input_shape[0], input_shape[1])
    raise InputError(
        f"the model's input shape {input_shape} has no 1- or 3-channel axis first or last; pass "
        "a .npy array of that shape instead of an image file"
    )


def _floats(value, what: str = "value") -> tuple[float, ...]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        out = tuple(float(v) for v in np.atleast_1d(value))
    except (TypeError, ValueError):
        raise InputError(f"{what} {value!r} is not a list of numbers like 0.5,0.5,0.5") from None
    if not out:
        raise InputError(f"{what} is empty; give one number or one per channel")
    return out


def resolve_preprocess(
    input_shape: tuple[int, ...],
    metadata: dict[str, str] | None = None,
    preset: str | None = None,
    **given,
) -> Preprocess:
    """The preprocessing for a model with ``input_shape`` (per sample): explicit ``given``
    fields over ``preset`` over the metadata's ``pathonnx.preprocess`` over the default."""
    layout, channels, size = _layout_of(tuple(input_shape))
    fields: dict = {
        "size": size, "color": "grey" if channels == 1 else "rgb", "scale": 1 / 255,
        "mean": (0.0,), "std": (1.0,), "layout": layout, "resize": "none",
    }  # fmt: skip
    source = dict.fromkeys(fields, "model input shape")
    notes = []
    raw = (metadata or {}).get(METADATA_KEY)
    if raw:
        try:
            entry = json.loads(raw)
            assert isinstance(entry, dict)
        except (ValueError, AssertionError):
            raise InputError(
                f"the model's {METADATA_KEY} metadata is not a JSON object; fix it with "
                "pathonnx rewrite --set-preprocess"
            ) from None
        entry = {k: v for k, v in entry.items() if k in FIELDS}
        if "size" in entry and "resize" not in entry:
            entry["resize"] = "stretch"  # the model says which size it wants: go there
        fields.update(entry)
        source.update(dict.fromkeys(entry, "model metadata"))
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
        fields.update(PRESETS[preset])
        source.update(dict.fromkeys(PRESETS[preset], f"preset {preset}"))
    given = {k: v for k, v in given.items() if v is not None}
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise InputError(f"unknown preprocessing field(s): {', '.join(sorted(unknown))}")
    if "size" in given and "resize" not in given and fields["resize"] == "none":
        given["resize"] = "stretch"
    fields.update(given)
    source.update(dict.fromkeys(given, "argument"))
    if all(v == "model input shape" for v in source.values()):
        notes.append(
            "no preprocessing given (no flags, no pathonnx.preprocess metadata): pixels scaled to "
            "[0, 1], no mean/std; pass --preset or --mean/--std if the model expects otherwise"
        )
    pre = Preprocess(
        size=_field(fields, source, "size", _size, "a height and width like [224, 224]"),
        color=str(fields["color"]).lower(),
        scale=_field(fields, source, "scale", _scale, "a number like 0.00392"),
        mean=_field(fields, source, "mean", _floats, "a list of numbers like [0.5, 0.5, 0.5]"),
        std=_field(fields, source, "std", _floats, "a list of numbers like [0.2, 0.2, 0.2]"),
        layout=str(fields["layout"]).upper(),
        resize=str(fields["resize"]).lower(),
        source=source,
        notes=tuple(notes),
    )
    _validate(pre, layout, channels, size)
    return pre


def _field(fields: dict, source: dict, key: str, convert, want: str):
    """``convert(fields[key])``, or :class:`InputError` naming the key, its value and where it
    came from (flag, preset, the model's metadata)."""
    try:
        return convert(fields[key])
    except (TypeError, ValueError, OverflowError, InputError):
        shown = repr(fields[key])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InputError(
            f"preprocessing {key} is {shown} ({source[key]}), not {want}; fix it (for the "
            f"model's metadata: pathonnx rewrite --set-preprocess)"
        ) from None


def _size(value) -> tuple[int, ...]:
    """A size as integers, (height, width) when it has two; raises ValueError, TypeError."""
    return tuple(int(v) for v in np.atleast_1d(np.asarray(value, dtype=object)))[:2]


def _scale(value) -> float:
    if isinstance(value, (str, bytes, list, dict)) or value is None:
        raise ValueError("not a number")
    scale = float(value)
    if not np.isfinite(scale):
        raise ValueError("not finite")
    return scale


def _validate(pre: Preprocess, layout: str, channels: int, size: tuple[int, int]) -> None:
    if pre.color not in ("grey", "rgb", "bgr"):
        raise InputError(f"color {pre.color!r} is unknown; use grey, rgb or bgr")
    if pre.layout not in ("NCHW", "NHWC"):
        raise InputError(f"layout {pre.layout!r} is unknown; use NCHW or NHWC")
    if pre.resize not in ("none", "stretch", "shorter"):
        raise InputError(f"resize {pre.resize!r} is unknown; use none, stretch or shorter")
    if len(pre.size) != 2 or min(pre.size) <= 0:
        raise InputError(f"size {pre.size} must be two positive numbers, height x width")
    if pre.channels != channels:
        raise InputError(
            f"color {pre.color} gives {pre.channels} channel(s) but the model takes {channels}; "
            f"pass --color {'grey' if channels == 1 else 'rgb'}"
        )
    if pre.layout != layout or tuple(pre.size) != tuple(size):
        raise InputError(
            f"preprocessing gives {pre.layout} at {pre.size[0]}x{pre.size[1]} but the model "
            f"takes {layout} at {size[0]}x{size[1]}; fix --size/--layout"
        )
    for name, values in (("mean", pre.mean), ("std", pre.std)):
        if len(values) not in (1, channels):
            raise InputError(f"{name} has {len(values)} values; give 1 or {channels}")
    if any(s == 0 for s in pre.std):
        raise InputError("std contains 0; every channel's std must be non-zero")


@dataclass(frozen=True)
class Sample:
    """One input ready for the model: ``x`` (*input_shape), the ``image`` as shown (H, W, 3
    uint8, what the model sees before mean/std), and where it came from."""

    x: np.ndarray
    image: np.ndarray | None
    source: str


def read_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to float32 (H, W, C) in 0..255, C = 1 (grey) or 3 (RGB).

    ``size`` (H, W) is the size the image will be resized to: a larger image is decoded
    reduced to no less than :data:`REDUCING_GAP` times it. Images over
    :data:`MAX_IMAGE_PIXELS` are refused."""
    with open_input(path, "the image", None) as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's warnings: a bomb is refused below, EXIF moot
        try:
            with Image.open(handle) as img:
                if size is not None:  # JPEG: decode at 1/2, 1/4 or 1/8 scale
                    img.draft(None, (REDUCING_GAP * size[1], REDUCING_GAP * size[0]))
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(f"{img.width}x{img.height} pixels")
                img.load()
                pixels = _pixels(img, size)
        except Image.DecompressionBombError as err:
            raise InputError(
                f"{path}: the image is too large to decode ({err}); give one of at most "
                f"{MAX_IMAGE_PIXELS:,} pixels"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
            why = "not a format Pillow reads" if isinstance(err, UnidentifiedImageError) else err
            raise InputError(
                f"{path}: cannot decode the image ({why}); give a PNG, JPEG, BMP or TIFF file"
            ) from None
    if pixels.size == 0 or not np.isfinite(pixels).all():
        raise InputError(f"{path}: the image is empty or holds NaN or infinite values")
    return pixels


def _pixels(img: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    """The decoded image (reduced towards ``size``) as float32 (H, W, C) in 0..255; the
    file's own mode decides the value range and the channels."""
    mode = img.mode
    img = _reduced(img, size)
    with np.errstate(all="ignore"):
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(img, dtype=np.float64)
            top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
            return (array * (255.0 / top)).astype(np.float32)[..., None]
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
            alpha = rgba[..., 3:] / 255.0
            rgb = rgba[..., :3] * alpha + 255.0 * (1 - alpha)  # over white
            return rgb if mode not in ("LA",) else rgb[..., :1]
        if mode in ("L", "1"):
            return np.asarray(img.convert("L"), dtype=np.float32)[..., None]
        if mode == "F":
            return np.asarray(img, dtype=np.float32)[..., None]
        return np.asarray(img.convert("RGB"), dtype=np.float32)


def _reduced(img: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """``img`` box-averaged by the largest integer factor that keeps it at least
    :data:`REDUCING_GAP` times ``size`` (H, W) on both axes (as Pillow's ``reducing_gap``);
    unchanged when that factor is below 2. Palette and bilevel images become RGB(A) or grey
    first, 16-bit ones 32-bit: averaging needs values, not palette indices."""
    if size is None:
        return img
    factor = min(img.height // (REDUCING_GAP * size[0]), img.width // (REDUCING_GAP * size[1]))
    if factor < 2:
        return img
    if img.mode in ("P", "PA"):
        alpha = img.mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if alpha else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode.startswith("I;16"):
        img = img.convert("I")
    elif img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        img = img.convert("RGB")
    return img.reduce(factor)


def read_mask(path: Path) -> np.ndarray:
    """A region of a model's output from a file: a .npy array (booleans, or numbers that
    weigh the positions), or an image whose non-zero pixels (any channel) mark the region."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return read_array(path, "the target mask", MAX_MASK_BYTES)
    return read_image(path).max(axis=-1) > 0


def _resize(pixels: np.ndarray, pre: Preprocess, path) -> np.ndarray:
    h, w = pixels.shape[:2]
    th, tw = pre.size
    if (h, w) == (th, tw):
        return pixels
    if pre.resize == "none":
        raise InputError(
            f"{path}: the image is {h}x{w} but the model takes {th}x{tw}; pass --size {th}x{tw} "
            "to resize it (or --resize shorter to scale and center-crop)"
        )

    def scaled(array, size):  # per channel, float, bilinear (antialiased when shrinking)
        planes = [
            np.asarray(Image.fromarray(array[..., c]).resize(size[::-1], Image.BILINEAR))
            for c in range(array.shape[-1])
        ]
        return np.stack(planes, axis=-1).astype(np.float32)

    if pre.resize == "stretch":
        return scaled(pixels, (th, tw))
    factor = max(th / h, tw / w)  # shorter side to the target, then center crop
    big = (max(th, round(h * factor)), max(tw, round(w * factor)))
    out = scaled(pixels, big)
    top, left = (big[0] - th) // 2, (big[1] - tw) // 2
    return out[top : top + th, left : left + tw]


def image_to_input(pixels: np.ndarray, pre: Preprocess, path="image") -> Sample:
    """Decoded pixels (H, W, C) 0..255 -> the model input and the picture shown."""
    channels = pixels.shape[-1]
    if pre.channels == 3 and channels == 1:
        raise InputError(
            f"{path}: the image is greyscale but the model takes 3 channels; convert it to RGB, "
            "or pass --grey-to-rgb to repeat the grey channel"
        )
    if pre.channels == 1 and channels == 3:
        pixels = pixels @ LUMA.astype(np.float32)[:, None]
    pixels = _resize(pixels, pre, path)
    shown = grey_to_rgb(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    if pre.color == "bgr":
        pixels = pixels[..., ::-1]
    values = (pixels * pre.scale - np.asarray(pre.mean, np.float32)) / np.asarray(
        pre.std, np.float32
    )
    x = values.transpose(2, 0, 1) if pre.layout == "NCHW" else values
    return Sample(np.ascontiguousarray(x, np.float32), shown, str(path))


def grey_to_rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 1) -> (H, W, 3) by repeating the channel; anything else unchanged."""
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def collect(paths: list, recursive: bool = True) -> list[Path]:
    """Image and .npy files from files and folders (folders recursively, sorted)."""
    out = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            found = sorted(
                p
                for p in (entry.rglob("*") if recursive else entry.iterdir())
                if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy")
            )
            if not found:
                raise InputError(f"{entry}: no images (.png, .jpg, .bmp, ...) or .npy files in it")
            out += found
        elif entry.exists():
            out.append(entry)
        else:
            raise InputError(f"{entry}: no such file or folder")
    return out


def folder_classes(files: list, names: list[str]) -> list[int | None]:
    """Each file's class from the folder it lies in (``DATA/<class name>/image.png``): the
    index in ``names`` of its parent folder's name, or None where that names no class."""
    index = {name: k for k, name in enumerate(names)}
    return [index.get(Path(f).parent.name) for f in files]


def load_inputs(
    path: Path, pre: Preprocess | None, input_shape: tuple[int, ...], grey_ok: bool = False
) -> list[Sample]:
    """One file -> its inputs: one per image, one per sample of a .npy array."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = read_array(path, "the input array", MAX_ARRAY_BYTES)
        if tuple(array.shape) == tuple(input_shape):
            array = array[None]
        if array.ndim != len(input_shape) + 1 or tuple(array.shape[1:]) != tuple(input_shape):
            raise InputError(
                f"{path}: the array has shape {array.shape}; the model takes "
                f"({', '.join(map(str, input_shape))}) or a batch of them"
            )
        if len(array) == 0:
            raise InputError(f"{path}: the array holds no samples (shape {array.shape}); give "
                             "at least one")  # fmt: skip
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused
            array = np.asarray(array, np.float32) if array.dtype.kind in "fiu" else array
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise InputError(f"{path}: the array must hold finite numbers (within float32's range)")
        name = str(path)
        return [
            Sample(array[i], _array_picture(array[i], input_shape), f"{name}[{i}]")
            if len(array) > 1
            else Sample(array[0], _array_picture(array[0], input_shape), name)
            for i in range(len(array))
        ]
    if pre is None:
        raise InputError(f"{path}: the model does not take images; pass .npy arrays")
    pixels = read_image(path, None if pre.resize == "none" else pre.size)
    if grey_ok:
        pixels = grey_to_rgb(pixels) if pre.channels == 3 else pixels
    return [image_to_input(pixels, pre, path)]


def _array_picture(x: np.ndarray, input_shape) -> np.ndarray | None:
    """A picture of a model-space array (min-max scaled), when it looks like an image."""
    try:
        layout, _, _ = _layout_of(tuple(input_shape))
    except InputError:
        return None
    hwc = (x.transpose(1, 2, 0) if layout == "NCHW" else x).astype(np.float64)  # no overflow
    lo, hi = float(hwc.min()), float(hwc.max())
    scaled = (hwc - lo) / (hi - lo) if hi > lo else np.zeros_like(hwc)
    return grey_to_rgb(np.round(scaled * 255).astype(np.uint8))
