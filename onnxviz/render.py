"""Arrays to pictures: tiles, grids, symmetric weight scaling, colormaps, annotated PNGs.

Nothing here reads a model or writes a file; everything takes numpy arrays and returns PIL
images (`outputs.py` writes them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (24, 26, 32)
TEXT = (235, 235, 235)
NOTE = (255, 200, 90)
PAD = 2


def font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def symmetric_scale(w: np.ndarray, per_filter: bool) -> np.ndarray:
    """Map weights to [0, 1], zero at 0.5: by one max-abs, or each filter (axis 0) by its own."""
    w = np.asarray(w, np.float64)
    w = np.where(np.isfinite(w), w, 0.0)
    if per_filter:
        m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).reshape(-1, *([1] * (w.ndim - 1)))
    else:
        m = np.abs(w).max()
    m = np.where(m > 0, m, 1.0)
    return np.clip(0.5 + 0.5 * w / m, 0.0, 1.0)


def to_uint8(tile: np.ndarray) -> np.ndarray:
    return np.round(np.clip(tile, 0.0, 1.0) * 255).astype(np.uint8)


def upscale(tile: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling so each weight becomes a visible scale x scale block."""
    if scale <= 1:
        return tile
    return np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)


def auto_scale(tile_hw: tuple[int, int], target: int = 56, limit: int = 24) -> int:
    """An integer zoom that makes a tile about `target` pixels on its longer side."""
    return int(max(1, min(limit, round(target / max(1, max(tile_hw))))))


def _as_rgb(tile: np.ndarray) -> np.ndarray:
    t = to_uint8(tile)
    if t.ndim == 2:
        t = np.repeat(t[:, :, None], 3, axis=2)
    elif t.shape[2] == 1:
        t = np.repeat(t, 3, axis=2)
    return t


def render_grid(tiles: Sequence[np.ndarray], cols: int | None = None, scale: int = 1,
                labels: Sequence[str] | None = None, title: str | None = None,
                notes: Sequence[str] = (), pad: int = PAD,
                background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Tiles (H x W or H x W x 3, values in [0, 1]) in a near-square grid, with text around it."""
    tiles = [upscale(_as_rgb(t), scale) for t in tiles]
    if not tiles:
        raise ValueError("render_grid needs at least one tile")
    n = len(tiles)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    f = font(11)
    label_h = 14 if labels else 0
    if labels:
        tw = max(tw, *(int(f.getlength(s)) + 2 for s in labels))
    grid_w = cols * (tw + pad) + pad
    grid_h = rows * (th + label_h + pad) + pad
    canvas = np.empty((grid_h, grid_w, 3), np.uint8)
    canvas[:] = background
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        y = pad + r * (th + label_h + pad)
        x = pad + c * (tw + pad) + (tw - t.shape[1]) // 2
        canvas[y:y + t.shape[0], x:x + t.shape[1]] = t
    img = Image.fromarray(canvas)
    if labels:
        draw = ImageDraw.Draw(img)
        for k, s in enumerate(labels):
            r, c = divmod(k, cols)
            y = pad + r * (th + label_h + pad) + th + 1
            x = pad + c * (tw + pad)
            draw.text((x, y), s, fill=TEXT, font=f)
    return annotate(img, title, notes)


def render_rows(rows: Sequence[Sequence[np.ndarray]], scale: int = 1,
                row_labels: Sequence[str] | None = None, title: str | None = None,
                notes: Sequence[str] = (), pad: int = PAD) -> Image.Image:
    """One row of tiles per item (e.g. a filter's input channels), labelled on the left."""
    f = font(11)
    label_w = max((int(f.getlength(s)) for s in row_labels), default=0) + 6 if row_labels else 0
    prepared = [[upscale(_as_rgb(t), scale) for t in row] for row in rows]
    th = max(t.shape[0] for row in prepared for t in row)
    tw = max(t.shape[1] for row in prepared for t in row)
    ncols = max(len(row) for row in prepared)
    width = label_w + ncols * (tw + pad) + pad
    height = len(prepared) * (th + pad) + pad
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    for r, row in enumerate(prepared):
        for c, t in enumerate(row):
            y = pad + r * (th + pad)
            x = label_w + pad + c * (tw + pad)
            canvas[y:y + t.shape[0], x:x + t.shape[1]] = t
    img = Image.fromarray(canvas)
    if row_labels:
        draw = ImageDraw.Draw(img)
        for r, s in enumerate(row_labels):
            y = pad + r * (th + pad) + max(0, (th - 11) // 2)
            draw.text((2, y), s, fill=TEXT, font=f)
    return annotate(img, title, notes)


def _wrap(text: str, f: ImageFont.ImageFont, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        trial = f"{line} {w}".strip()
        if f.getlength(trial) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = w
    if line:
        lines.append(line)
    return lines


def annotate(img: Image.Image, title: str | None, notes: Sequence[str] = (),
             min_width: int = 360) -> Image.Image:
    """Add a title line above and wrapped notes below a picture."""
    if not title and not notes:
        return img
    ft, fn = font(13), font(11)
    width = max(img.width, min_width)
    title_lines = _wrap(title, ft, width - 8) if title else []
    note_lines = [ln for n in notes for ln in _wrap(n, fn, width - 8)]
    top = 6 + 17 * len(title_lines) if title_lines else 0
    bottom = 4 + 14 * len(note_lines) + 4 if note_lines else 0
    out = Image.new("RGB", (width, img.height + top + bottom), BACKGROUND)
    out.paste(img, ((width - img.width) // 2, top))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(title_lines):
        draw.text((4, 3 + 17 * k), line, fill=TEXT, font=ft)
    for k, line in enumerate(note_lines):
        draw.text((4, top + img.height + 4 + 14 * k), line, fill=NOTE, font=fn)
    return out


def render_filters(weights: np.ndarray, normalize: str = "global", channel_order: str = "RGB",
                   image_space: bool = True, scale: int | None = None, max_inputs: int = 16,
                   title: str | None = None, notes: Sequence[str] = ()) -> Image.Image:
    """Filters (O, C, kh, kw) as pictures: color tiles for C=3, grayscale for C=1, and one
    grayscale row per filter (a tile per input channel) otherwise. Zero is mid-gray."""
    w = np.asarray(weights, np.float32)
    if w.ndim != 4:
        raise ValueError(f"filters must be (O, C, kh, kw), got shape {w.shape}")
    if normalize not in ("global", "filter"):
        raise ValueError("normalize must be 'global' or 'filter'")
    unit = symmetric_scale(w, per_filter=normalize == "filter")
    o, c, kh, kw = w.shape
    scale = scale or auto_scale((kh, kw))
    notes = list(notes)
    if c == 3 or c == 1:
        if c == 3:
            tiles = unit.transpose(0, 2, 3, 1)
            if channel_order.upper() == "BGR":
                tiles = tiles[..., ::-1]
        else:
            tiles = unit[:, 0]
        if not image_space:
            notes.append("These filters read feature maps, not pixels: they do not live in image "
                         "space.")
        return render_grid(list(tiles), scale=scale, title=title, notes=notes)
    shown = min(c, max_inputs)
    rows = [[unit[i, j] for j in range(shown)] for i in range(o)]
    if shown < c:
        notes.append(f"showing the first {shown} of {c} input channels per filter "
                     "(--max-inputs to change)")
    if not image_space:
        notes.append("Rows are filters, columns their input channels. These filters read feature "
                     "maps, not pixels: they do not live in image space.")
    else:
        notes.append("Rows are filters, columns their input channels (grayscale per channel).")
    return render_rows(rows, scale=scale, row_labels=[str(i) for i in range(o)], title=title,
                       notes=notes)
