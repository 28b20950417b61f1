"""Procedural "shapes" image set: coloured shapes on textured backgrounds, with object masks.

Every image holds one or two objects of distinct classes, drawn with a random size, position,
rotation and colour on a random background (smooth colour noise, soft stripes or a checker
pattern). For two-object images the label is the object with the larger mask area; the generator
only accepts pairs whose areas differ by at least ``MIN_AREA_RATIO`` so the label is unambiguous.
The objects never overlap, so each object's mask is exactly the pixels it covers.

Only numpy and PIL are used; everything is reproducible from the seed::

    data = generate(1000, size=32, seed=1)
    data.images[0]        # (32, 32, 3) uint8
    data.labels[0]        # class index of the label object
    data.classes[0]       # class indices of all objects, label object first
    data.masks[0]         # (K, 32, 32) bool, same order as data.classes[0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "cross", "star", "ring")

SUPERSAMPLE = 4  # shapes are drawn 4x larger and box-filtered down, giving anti-aliased edges
MIN_AREA_RATIO = 1.5  # larger / smaller object area in two-object images
MIN_CONTRAST = 0.4  # RGB distance (0..1 scale) between an object and the background under it
NOISE_SIGMA = 0.02  # per-pixel Gaussian noise, so no image is perfectly flat


@dataclass
class ShapeSet:
    """A generated image set; lists are indexed like ``images``."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64 class index of the label (largest) object
    classes: list[tuple[int, ...]]  # class indices of the objects, label object first
    masks: list[np.ndarray]  # (K, H, W) bool object masks, same order as ``classes``

    def __len__(self) -> int:
        return len(self.labels)


def generate(n: int, size: int = 32, seed: int = 0, two_object_fraction: float = 0.35) -> ShapeSet:
    """Generate ``n`` images of ``size`` x ``size`` pixels from ``seed``."""
    rng = np.random.default_rng(seed)
    images, labels, classes, masks = [], [], [], []
    for _ in range(n):
        n_objects = 2 if rng.random() < two_object_fraction else 1
        image, obj_classes, obj_masks = _make_image(rng, size, n_objects)
        images.append(image)
        labels.append(obj_classes[0])
        classes.append(obj_classes)
        masks.append(obj_masks)
    return ShapeSet(np.stack(images), np.array(labels, dtype=np.int64), classes, masks)


def _make_image(
    rng: np.random.Generator, size: int, n_objects: int
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    background = _background(rng, size)
    while True:  # retry until the objects fit without overlapping (rarely needs more than a few)
        layout = _layout(rng, size, n_objects)
        if layout is not None:
            break
    obj_classes, alphas = layout
    image = background
    for alpha in alphas:
        colour = _contrasting_colour(rng, background, alpha >= 0.5)
        image = image * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    image = image + rng.normal(0.0, NOISE_SIGMA, image.shape)
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return image, obj_classes, np.stack([alpha >= 0.5 for alpha in alphas])


def _layout(
    rng: np.random.Generator, size: int, n_objects: int
) -> tuple[tuple[int, ...], list[np.ndarray]] | None:
    """Pick classes, sizes and positions; return (classes, alpha maps), largest object first."""
    obj_classes = rng.choice(len(CLASSES), size=n_objects, replace=False)
    if n_objects == 1:
        radii = [rng.uniform(0.22, 0.40) * size]
    else:  # two objects must fit side by side, and one should be clearly bigger
        big = rng.uniform(0.20, 0.28) * size
        radii = [big, big * rng.uniform(0.5, 0.75)]
    alphas: list[np.ndarray] = []
    occupied = np.zeros((size, size), dtype=bool)
    for cls, radius in zip(obj_classes, radii):
        alpha = _place(rng, CLASSES[cls], radius, size, occupied)
        if alpha is None:
            return None
        alphas.append(alpha)
        occupied |= _dilate(alpha > 0.0)  # keep a one-pixel gap between objects
    areas = [float((alpha >= 0.5).sum()) for alpha in alphas]
    if n_objects == 2 and max(areas) < MIN_AREA_RATIO * min(areas):
        return None
    order = np.argsort(areas)[::-1]  # label object (largest) first
    return tuple(int(obj_classes[i]) for i in order), [alphas[i] for i in order]


def _place(
    rng: np.random.Generator, name: str, radius: float, size: int, occupied: np.ndarray
) -> np.ndarray | None:
    """Try a few random positions for a shape that avoid ``occupied``; return its alpha map."""
    theta = rng.uniform(0.0, 2.0 * math.pi)
    margin = radius + 0.5
    for _ in range(30):
        cx, cy = rng.uniform(margin, size - margin, size=2)
        alpha = _render(name, cx, cy, radius, theta, size)
        if not (occupied & (alpha > 0.0)).any():
            return alpha
    return None


def _render(name: str, cx: float, cy: float, r: float, theta: float, size: int) -> np.ndarray:
    """Draw one shape at SUPERSAMPLE resolution and return its (size, size) alpha in [0, 1]."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = cx * s, cy * s, r * s
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif name == "ring":
        inner = 0.55 * r
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    else:
        draw.polygon(_polygon(name, cx, cy, r, theta), fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _polygon(name: str, cx: float, cy: float, r: float, theta: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape with circumradius ``r`` rotated by ``theta``."""
    if name == "square":
        local = _regular(4, r, math.pi / 4)
    elif name == "triangle":
        local = _regular(3, r, 0.0)
    elif name == "star":  # five points, alternating outer and inner radius
        outer, inner = _regular(5, r, 0.0), _regular(5, 0.45 * r, math.pi / 5)
        local = [p for pair in zip(outer, inner) for p in pair]
    elif name == "cross":  # a plus sign with arms of half-width w and half-length r
        w = 0.3 * r
        quarter = [(-w, -r), (w, -r), (w, -w)]
        local = [(x * c - y * si, x * si + y * c) for c, si in _RIGHT_ANGLES for x, y in quarter]
    else:
        raise ValueError(f"unknown shape {name!r}")
    cos, sin = math.cos(theta), math.sin(theta)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in local]


_RIGHT_ANGLES = ((1, 0), (0, 1), (-1, 0), (0, -1))  # (cos, sin) of 0, 90, 180, 270 degrees


def _regular(n: int, r: float, phase: float) -> list[tuple[float, float]]:
    angles = [phase + 2.0 * math.pi * k / n for k in range(n)]
    return [(r * math.sin(a), -r * math.cos(a)) for a in angles]


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float background in [0, 1]: smooth noise, soft stripes or checker."""
    # Two related colours: the texture is visible but weaker than object edges in most images.
    base = rng.uniform(0.0, 1.0, 3)
    other = np.clip(base + rng.uniform(-0.35, 0.35, 3), 0.0, 1.0)
    kind = rng.integers(3)
    if kind == 0:  # smooth colour noise: a coarse random grid upsampled bicubically
        cells = int(rng.integers(3, 7))
        coarse = rng.uniform(0.0, 1.0, (cells, cells, 3))
        coarse = base * (1.0 - coarse) + other * coarse
        img = Image.fromarray(np.round(coarse * 255.0).astype(np.uint8))
        img = img.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.float64) / 255.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if kind == 1:  # soft stripes at a random angle and period
        angle = rng.uniform(0.0, math.pi)
        period = rng.uniform(4.0, 10.0)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        along = xx * math.cos(angle) + yy * math.sin(angle)
        t = 0.5 + 0.5 * np.sin(2.0 * math.pi * along / period + phase)
    else:  # axis-aligned checker with a random cell size and offset
        cell = int(rng.integers(3, 9))
        ox, oy = rng.integers(0, cell, size=2)
        t = (((xx + ox) // cell + (yy + oy) // cell) % 2).astype(np.float64)
    return base * (1.0 - t[..., None]) + other * t[..., None]


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray, mask: np.ndarray):
    """A random colour that stands out from the mean background colour under ``mask``."""
    under = background[mask].mean(axis=0) if mask.any() else background.mean(axis=(0, 1))
    for _ in range(50):
        colour = rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(colour - under) >= MIN_CONTRAST:
            return colour
    return np.where(under < 0.5, 1.0, 0.0)  # fallback: the opposite corner of the RGB cube
