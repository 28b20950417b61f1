"""Pictures of explanations: one PNG per input (Pillow), a matplotlib Figure, an HTML index.

An attribution map is summed over channels and drawn with a diverging colormap over a faded
grey copy of the input: red where the pixel raises the target logit, blue where it lowers it,
both scaled by the map's 99.5th percentile of |value| (one scale per panel, shown in its title).
"""

from __future__ import annotations

import html
import json
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError
from .images import LUMA, image_layout

PANEL = 192  # smallest side of a panel, in pixels
RED, BLUE, WHITE = np.array([178, 24, 43]), np.array([33, 102, 172]), np.array([247, 247, 247])


def heat(attribution: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """An attribution shaped like one input -> a 2-D map (summed over channels)."""
    a = np.asarray(attribution, np.float64)
    if a.ndim == 3:
        return a.sum(axis=0 if layout == "NCHW" else -1)
    if a.ndim == 2:
        return a
    side = math.isqrt(a.size)
    return a.reshape(side, side) if side * side == a.size else a.reshape(1, -1)


def diverging(values: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Colours (H, W, 3) and opacity (H, W) of a signed map: blue - white - red."""
    v = np.clip(values / scale, -1, 1) if scale > 0 else np.zeros_like(values)
    t = np.abs(v)[..., None]
    end = np.where(v[..., None] >= 0, RED, BLUE)
    colour = WHITE * (1 - t) + end * t
    return colour, np.clip(np.abs(v) * 1.4, 0, 1) ** 0.8


def robust_scale(values: np.ndarray) -> float:
    m = float(np.percentile(np.abs(values), 99.5)) if values.size else 0.0
    return m if m > 0 else float(np.abs(values).max())


def overlay(image: np.ndarray | None, values: np.ndarray) -> tuple[np.ndarray, float]:
    """The map over a faded grey copy of ``image`` (H, W, 3 uint8), as uint8, and its scale."""
    scale = robust_scale(values)
    colour, alpha = diverging(values, scale)
    if image is None or image.shape[:2] != values.shape:
        base = np.full((*values.shape, 3), 255.0)
    else:
        grey = image.astype(np.float64) @ LUMA
        base = np.repeat((150 + 0.4 * grey)[..., None], 3, axis=-1)
    out = base * (1 - alpha[..., None]) + colour * alpha[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8), scale


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def _upscale(array: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor so the longer side reaches ``side``."""
    factor = max(1, side // max(array.shape[:2]))
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def _fit(text: str, width: int, draw, font) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def panels(expl) -> list[tuple[str, np.ndarray]]:
    """(title, RGB uint8 picture) for each panel of an explanation, before layout."""
    # arrays (.npy inputs) have no preprocessing: their layout is the model input's
    layout = (expl.preprocess or {}).get("layout") or image_layout(expl.x.shape) or "NCHW"
    image = expl.image
    out = []
    if image is not None:
        out.append(("input", image))
    main, scale = overlay(image, heat(expl.attribution, layout))
    out.append((f"{expl.method}  (±{scale:.2g})", main))
    for i, path in enumerate(expl.paths):
        picture, _ = overlay(image, heat(path.attribution, layout))
        out.append((f"path {i + 1}: {share_text(path.logit_share)}", picture))
    for name, attribution in expl.compare.items():
        picture, scale = overlay(image, heat(attribution, layout))
        out.append((f"{name}  (±{scale:.2g})", picture))
    return out


def compose(expl):
    """The explanation as one PIL image: a header, the panels in a row, the top-k bars."""
    pictures = panels(expl)
    side = max(PANEL, max(max(p.shape[:2]) for _, p in pictures))
    scaled = [(title, _upscale(p, side)) for title, p in pictures]
    cell = max(max(p.shape[1] for _, p in scaled), 170)
    height = max(p.shape[0] for _, p in scaled)
    bars_w, pad, title_h, head_h, foot_h = 260, 12, 22, 46, 22
    big, small = _font(15), _font(12)
    p = expl.probabilities
    head = (
        f"{_short(expl.model_source)} · {_short(expl.source)} · predicted "
        f"{expl.label(expl.prediction)} "
        f"({100 * p[expl.prediction]:.1f}%) · explaining {expl.label(expl.target)}{expl.where} "
        f"(logit {float(expl.logits[expl.target]):.3g})"
    )
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = pad + len(scaled) * (cell + pad) + bars_w + pad
    width = max(width, int(probe.textlength(head, font=big)) + 2 * pad)
    canvas = Image.new("RGB", (width, head_h + title_h + height + foot_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), _fit(head, width - 2 * pad, draw, big), fill="black", font=big)
    sub = f"{expl.method} {_params_text(expl.params)} · exact linear model error " + (
        f"{expl.completeness_error:.1e}" if np.isfinite(expl.completeness_error) else "n/a"
    )
    draw.text((pad, 27), _fit(sub, width - 2 * pad, draw, small), fill="#555555", font=small)
    x0 = pad
    for title, picture in scaled:
        draw.text((x0, head_h), _fit(title, cell, draw, small), fill="black", font=small)
        canvas.paste(Image.fromarray(picture), (x0, head_h + title_h))
        x0 += cell + pad
    _bars(draw, expl, (x0, head_h), bars_w, height + title_h, small)
    legend = "red raises the explained logit, blue lowers it; colour scale per panel (±value)"
    warning = next((n for n in expl.notes if n.startswith("warning")), None)
    colour = "#555555" if warning is None else "#b00000"
    draw.text((pad, head_h + title_h + height + 6), _fit(warning or legend, width - 2 * pad, draw,
              small), fill=colour, font=small)  # fmt: skip
    return canvas


def share_text(share: float) -> str:
    """What a pathway's linear model ``W^p·x + b^p`` is, as a share of the logit, in words.
    Above 100 % it is no error: a pathway drops units, and dropping the ones whose
    contributions are negative leaves more than the logit."""
    if not np.isfinite(share):
        return "logit is 0"
    if 0 <= share <= 1.005:
        return f"{100 * share:.0f}% of logit"
    if share > 1:
        return f"{share:.3g}x logit (negatives dropped)"
    return f"{share:.3g}x logit (opposite sign)"


def _bars(draw, expl, origin, width, height, font) -> None:
    x0, y0 = origin
    draw.text((x0, y0), "top predictions", fill="black", font=font)
    rows = expl.top_k(5)
    if all(row["index"] != expl.target for row in rows):  # always show the explained class
        rows[-1] = next(r for r in expl.top_k(len(expl.logits)) if r["index"] == expl.target)
    step = min(30, (height - 24) // max(1, len(rows)))
    for j, row in enumerate(rows):
        y = y0 + 24 + j * step
        label = _fit(row["label"], 80, draw, font)
        colour = "#b2182b" if row["index"] == expl.target else "#8c8c8c"
        draw.text((x0, y), label, fill="black", font=font)
        length = int((width - 140) * row["probability"])
        draw.rectangle((x0 + 84, y + 2, x0 + 84 + max(1, length), y + step - 8), fill=colour)
        draw.text((x0 + 90 + length, y), f"{100 * row['probability']:.1f}%", fill="black",
                  font=font)  # fmt: skip


def _short(text: str) -> str:
    return str(text).replace("\\", "/").rsplit("/", 1)[-1]


def _params_text(params: dict) -> str:
    def text(key, value):
        if value is None:
            return "all" if key in ("depth", "width", "classes") else "default"
        return value

    shown = [f"{k}={text(k, v)}" for k, v in params.items() if k != "batch"]
    return "(" + ", ".join(shown) + ")" if shown else ""


def figure(expl):
    """A matplotlib Figure with the same panels (imshow) and the top-k bar chart."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("figure() needs matplotlib: pip install matplotlib") from None
    pictures = panels(expl)
    fig, axes = plt.subplots(1, len(pictures) + 1, figsize=(3 * (len(pictures) + 1), 3.4))
    for ax, (title, picture) in zip(axes, pictures):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    rows = expl.top_k(5)[::-1]
    axes[-1].barh(
        [r["label"] for r in rows], [r["probability"] for r in rows],
        color=["#b2182b" if r["index"] == expl.target else "#8c8c8c" for r in rows],
    )  # fmt: skip
    axes[-1].set_xlim(0, 1)
    axes[-1].set_title("top predictions", fontsize=9)
    fig.suptitle(
        f"{_short(expl.source)}: predicted {expl.label(expl.prediction)}, explaining "
        f"{expl.label(expl.target)}{expl.where} with {expl.method}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def index_html(rows: list[dict]) -> str:
    """A one-page report: a table of thumbnails and results, sortable by any column."""
    head = ["picture", "input", "prediction", "probability", "target", "method", "path share",
            "error"]  # fmt: skip
    body = []
    for r in rows:
        share = "" if r.get("share") is None else f"{100 * r['share']:.0f}%"
        cells = [
            f'<a href="{html.escape(r["png"])}"><img src="{html.escape(r["png"])}" '
            'loading="lazy"></a>',
            html.escape(r["input"]),
            html.escape(r["prediction"]),
            f"{r['probability']:.3f}",
            html.escape(r["target"]),
            html.escape(r["method"]),
            share,
            f"{r['error']:.1e}",
        ]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    data = json.dumps(len(rows))
    return f"""<!doctype html>
<meta charset="utf-8"><title>pathonnx explanations</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; }}
th {{ cursor: pointer; background: #f4f4f4; text-align: left; }} img {{ height: 90px; }}
</style>
<h1>pathonnx explanations ({data} inputs)</h1>
<p>Click a column to sort; click a picture to open it.</p>
<table id="t"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>{"".join(body)}</tbody></table>
<script>
document.querySelectorAll("th").forEach((th, col) => th.onclick = () => {{
  const body = document.querySelector("#t tbody"), rows = [...body.rows];
  const up = th.dataset.up !== "1"; th.dataset.up = up ? "1" : "0";
  const key = r => {{ const t = r.cells[col].innerText; const n = parseFloat(t);
                     return isNaN(n) ? t : n; }};
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1));
  rows.forEach(r => body.appendChild(r));
}});
</script>
"""
