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


# ==================================================================== feature maps
# Activations (one sample of a tapped tensor) as pictures: a grid of channel tiles through a
# matplotlib colormap, and the channel-mean heat map over the input image.

MAX_TILE = {4: 256, 16: 160, 64: 112}  # tiles shown -> longest tile side in pixels


def colormap_lut(name: str = "viridis") -> np.ndarray:
    """A matplotlib colormap as a (256, 3) float table (matplotlib imported only here)."""
    import matplotlib

    from .errors import unknown_name

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise unknown_name("colormap", name, list(matplotlib.colormaps),
                           "See matplotlib's colormap list (viridis, magma, gray...).") from None
    return np.asarray(cmap(np.linspace(0.0, 1.0, 256)))[:, :3]


def apply_colormap(unit: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) to colors (H, W, 3) in [0, 1]; NaN shows as the low end."""
    idx = np.round(np.nan_to_num(np.clip(unit, 0.0, 1.0)) * (len(lut) - 1)).astype(np.intp)
    return lut[idx]


def picture_kind(shape: Sequence[int]) -> tuple[str | None, str]:
    """How a tensor (with batch dim) can be drawn: "2d" (N, C, H, W), "1d" (N, C, L),
    "3d" (N, C, D, H, W), or None and the reason there is no picture."""
    rank = len(shape)
    if rank == 4 and shape[2] * shape[3] > 1:
        return "2d", ""
    if rank == 3 and shape[2] > 1:
        return "1d", ""
    if rank == 5 and shape[3] * shape[4] > 1:
        return "3d", ""
    if rank == 4 or rank == 3 or rank == 5:
        return None, "spatial size 1: one value per channel, no map to draw (see summary.json)"
    if rank == 2:
        return None, f"a vector of {shape[1]} values (dense layer), no spatial map to draw"
    return None, f"a rank-{rank} tensor, not a feature map (batch, channels, space...)"


def channel_order_by(values: np.ndarray, sort: str) -> np.ndarray:
    """Channel indices (axis 0) ordered by "index", or by "mean" / "max" descending."""
    if sort == "index":
        return np.arange(values.shape[0])
    flat = np.nan_to_num(values.reshape(values.shape[0], -1).astype(np.float64),
                         nan=-np.inf, posinf=np.inf, neginf=-np.inf)
    key = flat.mean(axis=1) if sort == "mean" else flat.max(axis=1)
    if sort not in ("mean", "max"):
        raise ValueError(f"sort must be index, mean or max, not {sort!r}")
    return np.argsort(-key, kind="stable")


def _unit_range(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo
    if not np.isfinite(span) or span <= 0:
        return np.zeros_like(x, dtype=np.float64)
    return (x.astype(np.float64) - lo) / span


ROBUST = (0.5, 99.5)  # percentiles that set a color range, so a few outliers do not wash it out


def robust_range(x: np.ndarray) -> tuple[float, float]:
    """The 0.5th..99.5th percentile range of the finite values (0, 0 if there are none)."""
    finite = np.asarray(x)[np.isfinite(x)]
    if not finite.size:
        return 0.0, 0.0
    if finite.size > 1 << 20:  # a strided sample is plenty for a color range
        finite = finite[:: finite.size // (1 << 20) + 1]
    lo, hi = np.percentile(finite, ROBUST)
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    return float(lo), float(hi)


def channel_ranges(x: np.ndarray) -> np.ndarray:
    """`robust_range` of each channel (axis 0) at once: an (n, 2) array of (low, high)."""
    import warnings

    flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    finite = np.isfinite(flat)
    if finite.all():
        q = np.percentile(flat, ROBUST, axis=1).T
        lo_hi = np.stack([flat.min(axis=1), flat.max(axis=1)], axis=1)
    else:
        masked = np.where(finite, flat, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
            q = np.nanpercentile(masked, ROBUST, axis=1).T
            lo_hi = np.stack([np.nanmin(masked, axis=1), np.nanmax(masked, axis=1)], axis=1)
    q = np.where((q[:, 1:] > q[:, :1]), q, lo_hi)  # flat percentiles: fall back to min..max
    return np.nan_to_num(q)


def _resize_plane(plane: np.ndarray, size: tuple[int, int], smooth: bool) -> np.ndarray:
    """Resize an (H, W) float plane to (h, w): nearest when enlarging pixels, box when shrinking
    (smooth=False), or bilinear (smooth=True)."""
    h, w = size
    if plane.shape == (h, w):
        return plane
    img = Image.fromarray(np.ascontiguousarray(plane, np.float32), mode="F")
    method = Image.BILINEAR if smooth else Image.NEAREST if h >= plane.shape[0] else Image.BOX
    return np.asarray(img.resize((w, h), method), np.float64)


def _tile_size(hw: tuple[int, int], shown: int) -> tuple[int, int]:
    h, w = hw
    longest = next((v for k, v in MAX_TILE.items() if shown <= k), 80)
    # shrink big maps; enlarge small ones by an integer factor so each value stays a crisp block
    f = longest / max(h, w) if max(h, w) > longest else max(1, longest // max(h, w))
    return max(1, round(h * f)), max(1, round(w * f))


def _colorbar(lut: np.ndarray, left: str, right: str, width: int = 240) -> Image.Image:
    bar = np.repeat(lut[None, np.linspace(0, len(lut) - 1, width).astype(int)], 10, axis=0)
    f = font(11)
    lw, rw = int(f.getlength(left)), int(f.getlength(right))
    out = Image.new("RGB", (lw + rw + width + 16, 14), BACKGROUND)
    out.paste(Image.fromarray(to_uint8(bar)), (lw + 8, 2))
    draw = ImageDraw.Draw(out)
    draw.text((2, 1), left, fill=TEXT, font=f)
    draw.text((lw + width + 12, 1), right, fill=TEXT, font=f)
    return out


def _stack(top: Image.Image, bottom: Image.Image) -> Image.Image:
    out = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height + 4),
                    BACKGROUND)
    out.paste(top, (0, 0))
    out.paste(bottom, (4, top.height + 2))
    return out


def render_feature_maps(fmap: np.ndarray, title: str | None = None, normalize: str = "channel",
                        max_channels: int = 64, sort: str = "index", colormap: str = "viridis",
                        notes: Sequence[str] = ()) -> Image.Image:
    """One sample's feature maps as a grid of colormapped channel tiles.

    fmap: (C, H, W), (C, L) (drawn as one row per channel) or (C, D, H, W) (middle depth slice).
    normalize: "channel" (each tile its own min..max) or "layer" (one range for all).
    Channels beyond `max_channels` (after sorting) are left out, with a note saying so.
    """
    if normalize not in ("channel", "layer"):
        raise ValueError("normalize must be 'channel' or 'layer'")
    x = np.asarray(fmap)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    notes = list(notes)
    dead = ~np.any(x.reshape(x.shape[0], -1), axis=1) if x.size else np.zeros(0, bool)
    if x.ndim == 4:
        d = x.shape[1] // 2
        notes.append(f"3-D feature map: showing depth slice {d} of {x.shape[1]}")
        x = x[:, d]
    if x.ndim not in (2, 3):
        raise ValueError(f"feature maps must be (C, H, W), (C, L) or (C, D, H, W), got {x.shape}")
    lut = colormap_lut(colormap)
    c = x.shape[0]
    order = channel_order_by(x, sort)[:max_channels]
    shown = len(order)
    lo, hi = robust_range(x) if normalize == "layer" else (0.0, 0.0)
    ranges = channel_ranges(x[order]) if normalize == "channel" else None
    labels, tiles = [], []
    if x.ndim == 2:
        x = x[:, None, :]
    size = _tile_size(x.shape[1:], shown) if x.shape[1] > 1 else (  # 1-D: a 12-px strip
        12, max(x.shape[2], min(512, x.shape[2] * max(1, 256 // x.shape[2]))))
    for k, ch in enumerate(order):
        plane = x[ch]
        unit = _unit_range(plane, *(ranges[k] if ranges is not None else (lo, hi)))
        tiles.append(apply_colormap(_resize_plane(unit, size, smooth=False), lut))
        labels.append(f"{ch}" + (" dead" if dead[ch] else ""))
    if shown < c:
        notes.append(f"showing {shown} of {c} channels ({'first' if sort == 'index' else 'top'} "
                     f"by {sort}; --max-channels to change)")
    elif sort != "index":
        notes.append(f"channels sorted by {sort}, highest first")
    if normalize == "channel":
        notes.append("colors: each channel scaled to its own range (0.5th..99.5th "
                     "percentile); 'dead' = all zero")
        bar = _colorbar(lut, "channel low", "channel high")
    else:
        notes.append(f"colors: one scale for the whole layer, {lo:.4g} .. {hi:.4g} (0.5th.."
                     "99.5th percentile); 'dead' = all zero")
        bar = _colorbar(lut, f"{lo:.4g}", f"{hi:.4g}")
    if x.shape[1] == 1:  # 1-D maps: one row per channel
        grid = render_rows([[t] for t in tiles], row_labels=labels, title=title, notes=notes)
    else:
        grid = render_grid(tiles, labels=labels, title=title, notes=notes)
    return _stack(grid, bar)


def channel_mean_heat(fmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The channel mean of (C, H, W) scaled to [0, 1] and upsampled (bilinear) to `size`."""
    m = np.asarray(fmap, np.float64).mean(axis=0)
    m = np.nan_to_num(m)
    unit = _unit_range(m, *robust_range(m))
    return np.clip(_resize_plane(unit, size, smooth=True), 0.0, 1.0)


def render_overlay(display: np.ndarray, fmap: np.ndarray, title: str | None = None,
                   colormap: str = "viridis", alpha: float = 0.55, min_side: int = 224,
                   notes: Sequence[str] = ()) -> Image.Image:
    """The input image (C, H, W) in [0, 1] beside the same image under a heat map of the
    channel-mean activation of `fmap` (C, h, w), upsampled to the image."""
    img = np.clip(np.asarray(display, np.float64), 0.0, 1.0)
    rgb = np.repeat(img[:1], 3, axis=0) if img.shape[0] != 3 else img
    rgb = rgb.transpose(1, 2, 0)
    h, w = rgb.shape[:2]
    zoom = max(1, int(np.ceil(min_side / max(1, min(h, w)))))
    rgb = upscale(rgb, zoom)
    heat = apply_colormap(channel_mean_heat(fmap, rgb.shape[:2]), colormap_lut(colormap))
    blend = (1 - alpha) * rgb + alpha * heat
    pair = render_grid([rgb, blend], cols=2, labels=["input", "channel-mean activation"])
    notes = [*notes, f"heat map: mean over {fmap.shape[0]} channels of a {fmap.shape[1]}x"
             f"{fmap.shape[2]} map, scaled to its 0.5th..99.5th percentile, upsampled to {h}x{w}"]
    lut = colormap_lut(colormap)
    return _stack(annotate(pair, title, notes), _colorbar(lut, "low", "high"))


# ==================================================================== dataset examples
# Top-k image patches per channel (examples.py): one row per channel, crops left to right,
# each fitted into a square tile and labelled with its activation value and file name.

MISSING = (60, 60, 66)
SUBTLE = (170, 172, 180)


def fit_tile(crop: np.ndarray | None, tile: int) -> np.ndarray:
    """A crop (h, w, 1 or 3) uint8 fitted into a tile x tile RGB uint8 square, aspect kept:
    crops up to half the tile enlarged by a whole factor (pixels stay crisp blocks), others
    resampled to fill the tile; the rest of the square is background."""
    out = np.empty((tile, tile, 3), np.uint8)
    out[:] = BACKGROUND
    if crop is None or crop.size == 0:
        out[tile // 4: -(tile // 4), tile // 4: -(tile // 4)] = MISSING
        return out
    c = np.asarray(crop)
    c = np.repeat(c[:, :, :1], 3, axis=2) if c.ndim == 3 and c.shape[2] == 1 else (
        np.repeat(c[:, :, None], 3, axis=2) if c.ndim == 2 else c[:, :, :3])
    h, w = c.shape[:2]
    if 2 * max(h, w) <= tile:
        c = upscale(c, tile // max(h, w))
    elif max(h, w) != tile:
        f = tile / max(h, w)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        c = np.asarray(Image.fromarray(c).resize(size, Image.LANCZOS))
    h, w = c.shape[:2]
    top, left = (tile - h) // 2, (tile - w) // 2
    out[top:top + h, left:left + w] = c
    return out


def fit_text(text: str, f: ImageFont.ImageFont, width: int) -> str:
    """`text`, shortened in the middle with an ellipsis until it fits `width` pixels."""
    if f.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        head = (keep + 1) // 2
        short = text[:head] + "\u2026" + text[len(text) - (keep - head):]
        if f.getlength(short) <= width:
            return short
    return text[:1] + "\u2026"


def render_examples(rows: Sequence[Sequence[np.ndarray | None]],
                    tile_labels: Sequence[Sequence[str]], row_labels: Sequence[str],
                    tile: int = 112, title: str | None = None,
                    notes: Sequence[str] = ()) -> Image.Image:
    """One row per channel: its crops left to right in `tile`-pixel squares, each with up to
    two label lines below (e.g. the value and the file name, separated by a newline), and the
    row's label (e.g. the channel) on the left."""
    if not rows:
        raise ValueError("render_examples needs at least one row")
    f = font(11)
    fr = font(13)
    gap, line = 4, 13
    label_w = max((int(fr.getlength(s)) for lab in row_labels for s in lab.split("\n")),
                  default=0) + 12
    ncols = max(1, max(len(r) for r in rows))
    row_h = tile + 2 * line + 4
    width = label_w + ncols * (tile + gap) + gap
    height = len(rows) * (row_h + gap) + gap
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for r, (crops, labels) in enumerate(zip(rows, tile_labels, strict=True)):
        y = gap + r * (row_h + gap)
        for k, s in enumerate(row_labels[r].split("\n")):
            draw.text((6, y + tile // 2 - 8 + 15 * k), s, fill=TEXT, font=fr)
        for c, crop in enumerate(crops):
            x = label_w + gap + c * (tile + gap)
            img.paste(Image.fromarray(fit_tile(crop, tile)), (x, y))
            text = labels[c] if c < len(labels) else ""
            for k, s in enumerate(text.split("\n")[:2]):
                draw.text((x + 1, y + tile + 2 + line * k), fit_text(s, f, tile - 2),
                          fill=TEXT if k == 0 else SUBTLE, font=f)
    return annotate(img, title, notes, min_width=480)
