"""A heat map of layer scores, like RAM's supplementary Fig. 4: rows are blocks, columns kinds of layer.

Drawing only: the scores come from :mod:`ramir.mac` (or any ``{layer: score}`` mapping).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from torch import nn

from ramir.fileio import atomic_path
from ramir.layers import unwrap

__all__ = ["heatmap_grid", "save_heatmap"]


_VIRIDIS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def _colour(v: float) -> tuple[int, int, int]:
    """A viridis-like colour for v in [0, 1] (linear interpolation between five anchors)."""
    pos = min(max(v, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(pos), len(_VIRIDIS) - 2)
    c = _VIRIDIS[i] + (pos - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i])
    return (round(c[0]), round(c[1]), round(c[2]))


def _block_and_kind(name: str, shared_roots: set[str] = frozenset()) -> tuple[str, str]:
    """Split a layer name into a block (a row of the heat map) and a kind of layer (a column).

    At the last numeric component that is not the last component:
    ``layers.0.residual_group.blocks.1.attn.qkv`` -> (``layers.0.residual_group.blocks.1``, ``attn.qkv``).
    Otherwise at the first component if other layers share it (``noise_level3.attn.qkv`` ->
    (``noise_level3``, ``attn.qkv``); ``prompt1`` -> (``prompt1``, "")). Anything else (``conv_first``,
    ``down1_2.body.0``) is a row of its own with kind "".
    """
    parts = name.split(".")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[: i + 1]), ".".join(parts[i + 1 :])
    if parts[0] in shared_roots:
        return parts[0], ".".join(parts[1:])
    return name, ""


def heatmap_grid(scores: Mapping[str, float]) -> tuple[list[str], list[str], np.ndarray]:
    """Rows (blocks, network order), columns (layer kinds, first-seen order; "" = the row's own layer)
    and a matrix of scores (NaN where a block has no layer of that kind)."""
    roots: dict[str, int] = {}
    for name in scores:
        if _block_and_kind(name)[1] == "":
            root = name.split(".")[0]
            roots[root] = roots.get(root, 0) + 1
    shared = {root for root, count in roots.items() if count > 1}
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[tuple[str, str], float] = {}
    for name, score in scores.items():
        block, kind = _block_and_kind(name, shared)
        if block not in rows:
            rows.append(block)
        if kind not in cols:
            cols.append(kind)
        cells[(block, kind)] = float(score)
    if "" in cols:  # single layers first
        cols.remove("")
        cols.insert(0, "")
    grid = np.full((len(rows), len(cols)), np.nan)
    for (block, kind), score in cells.items():
        grid[rows.index(block), cols.index(kind)] = score
    return rows, cols, grid


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def save_heatmap(path: str | Path, scores: Mapping[str, float], model: nn.Module | None = None) -> None:
    """Draw the scores as a PNG grid (rows = blocks, columns = layer kind, colour = normalised log10 score).

    Zero scores are dark grey, absent cells light grey. ``model`` (optional) names the network in the title.
    """
    from PIL import Image, ImageDraw

    if not scores:
        raise ValueError("no scores to draw")
    rows, cols, grid = heatmap_grid(scores)
    positive = grid[np.isfinite(grid) & (grid > 0)]
    lo, hi = (np.log10(positive.min()), np.log10(positive.max())) if positive.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0

    font, small = _font(12), _font(10)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str, f) -> tuple[int, int]:
        box = measure.textbbox((0, 0), text, font=f)
        return box[2] - box[0], box[3] - box[1]

    cell, pad = 16, 8
    col_labels = [c or "(layer)" for c in cols]
    row_w = max(text_size(r, small)[0] for r in rows) + 2 * pad
    col_h = max(text_size(c, small)[0] for c in col_labels) + 2 * pad
    title = "MAC layer importance (log10 score, normalised)"
    spec_name = None
    if model is not None:
        from ramir.archs import network_spec

        spec = network_spec(model)
        spec_name = spec.arch if spec is not None else type(unwrap(model)).__name__
    if spec_name:
        title = f"{spec_name}: {title}"
    title_h = text_size(title, font)[1] + 2 * pad
    bar_h = 3 * cell + 2 * pad
    width = max(row_w + len(cols) * cell + pad, text_size(title, font)[0] + 2 * pad, 260)
    height = title_h + col_h + len(rows) * cell + bar_h
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), title, fill="black", font=font)

    # column labels, rotated so long kind names fit above narrow cells
    top = title_h + col_h
    for j, label in enumerate(col_labels):
        tw, th = text_size(label, small)
        strip = Image.new("RGB", (tw + 4, th + 6), "white")
        ImageDraw.Draw(strip).text((2, 0), label, fill="black", font=small)
        strip = strip.rotate(90, expand=True)
        image.paste(strip, (row_w + j * cell + (cell - strip.width) // 2, top - pad // 2 - strip.height))

    for i, block in enumerate(rows):
        y = top + i * cell
        tw, th = text_size(block, small)
        draw.text((row_w - pad - tw, y + (cell - th) // 2 - 1), block, fill="black", font=small)
        for j in range(len(cols)):
            v = grid[i, j]
            if np.isnan(v):
                colour: tuple[int, int, int] = (235, 235, 235)
            elif v <= 0:
                colour = (60, 60, 60)
            else:
                colour = _colour((math.log10(v) - lo) / span)
            x = row_w + j * cell
            draw.rectangle((x, y, x + cell - 2, y + cell - 2), fill=colour)

    # colour bar with its end values
    y0 = top + len(rows) * cell + pad
    bar_w = max(min(width - 2 * pad - 120, 300), 60)
    for k in range(bar_w):
        draw.line((pad + 60 + k, y0, pad + 60 + k, y0 + cell), fill=_colour(k / (bar_w - 1)))
    draw.text((pad, y0 + 2), f"{10 ** lo:.2g}", fill="black", font=small)
    draw.text((pad + 60 + bar_w + 6, y0 + 2), f"{10 ** hi:.2g}", fill="black", font=small)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
