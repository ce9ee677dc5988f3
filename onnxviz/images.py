"""Images in, model inputs out: loading, resizing, the `Preprocess` spec and its presets.

The pipeline is   image file -> pixels (H, W, C) in 0..255 -> resized -> display (N, C, H, W) in
[0, 1] (RGB for 3 channels) -> model input (layout, channel order, scale, mean/std, dtype).
The last step is affine and is exposed on its own (`to_model_input`, its exact adjoint
`to_model_input_adjoint`, and the inverse `from_model_input`), so that activation maximization
can optimize an image in display space and push gradients back through it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import OnnxvizError, unknown_name
from .model import InputContract, Model
from .text import shape_text

RESIZE_MODES = ("shorter-side", "center-crop", "stretch")
DEFAULT_SIZE = 224
STRIDE = 32  # sides derived from the aspect ratio are rounded to a multiple of this
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as Pillow's convert("L")


# ---------------------------------------------------------------- presets

@dataclass(frozen=True)
class Preset:
    """Named preprocessing: model input = (pixel * scale - mean) / std, stats in RGB order."""

    name: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str
    description: str


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("unit", 1 / 255, (0.0,), (1.0,), "RGB", "x/255: pixels in [0, 1]"),
    Preset("imagenet", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "RGB",
           "x/255, then minus mean 0.485 0.456 0.406, divided by std 0.229 0.224 0.225 (RGB)"),
    Preset("raw255", 1.0, (0.0,), (1.0,), "RGB", "pixels as they are, 0..255"),
    Preset("caffe", 1.0, (123.0, 117.0, 104.0), (1.0,), "BGR",
           "BGR pixels 0..255 minus 104 117 123 (B, G, R)"),
    Preset("tf", 1 / 127.5, (1.0,), (1.0,), "RGB", "(x/127.5) - 1: pixels in [-1, 1]"),
)}

DEFAULT_RULE = ("unit (x/255), except raw255 when the input is an integer tensor or when the "
                "graph normalizes its input itself from pixel values (e.g. divides by 255); when "
                "the graph normalizes, no mean/std is applied outside it")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model input: input = (pixel * scale - mean) / std with pixels
    0..255 in `channel_order`, mean/std per model channel (in the model's channel order), after
    resizing with `resize` to the model's size, or to `size` where the model's dims are dynamic.

    `preset` and `notes` record how the values were chosen, so a run can be reproduced.
    """

    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"
    resize: str = "shorter-side"
    size: tuple[int, ...] | None = None
    preset: str = "unit"
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise OnnxvizError(f"unknown resize mode {self.resize!r}; use one of "
                               f"{', '.join(RESIZE_MODES)}")
        if self.channel_order.upper() not in ("RGB", "BGR"):
            raise OnnxvizError(f"channel order must be RGB or BGR, not {self.channel_order!r}")
        object.__setattr__(self, "channel_order", self.channel_order.upper())
        if not (math.isfinite(self.scale) and self.scale != 0):
            raise OnnxvizError(f"scale must be a finite non-zero number, not {self.scale}")
        if any(s == 0 or not math.isfinite(s) for s in self.std):
            raise OnnxvizError(f"std must be finite and non-zero, not {list(self.std)}")
        if self.size is not None and (len(self.size) not in (1, 2) or min(self.size) < 1):
            raise OnnxvizError(f"size must be H or (H, W) of positive ints, not {self.size}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> Preprocess:
        """A preset (stats put in its own channel order) with fields overridden."""
        if name not in PRESETS:
            raise unknown_name("preset", name, PRESETS, f"Presets: {', '.join(PRESETS)}.")
        p = PRESETS[name]
        order = p.channel_order
        spec = cls(scale=p.scale, mean=_in_order(p.mean, order), std=_in_order(p.std, order),
                   channel_order=order, preset=name)
        return dataclasses.replace(spec, **overrides)

    def channel_stats(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """mean and std as arrays of length `channels` (3 values average to 1 channel)."""
        return _per_channel(self.mean, channels, "mean"), _per_channel(self.std, channels, "std")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["size"] = list(self.size) if self.size else None
        d["mean"], d["std"], d["notes"] = list(self.mean), list(self.std), list(self.notes)
        d["formula"] = self.describe()
        return d

    def describe(self, channels: int | None = 3) -> str:
        """One line: the formula, e.g. 'preset unit: (RGB pixels * 0.00392157 - 0) / 1'."""
        mean = " ".join(f"{v:g}" for v in self.mean)
        std = " ".join(f"{v:g}" for v in self.std)
        pixels = f"{self.channel_order} pixels" if channels == 3 else "pixels"
        return (f"preset {self.preset}: ({pixels} * {self.scale:.6g} - [{mean}]) / [{std}], "
                f"resize {self.resize}")


def _in_order(rgb_values: tuple[float, ...], order: str) -> tuple[float, ...]:
    return tuple(reversed(rgb_values)) if order == "BGR" and len(rgb_values) == 3 else rgb_values


def _per_channel(values: tuple[float, ...], channels: int, what: str) -> np.ndarray:
    v = np.asarray(values, np.float64)
    if v.size == channels:
        return v
    if v.size == 1:
        return np.repeat(v, channels)
    if v.size == 3 and channels == 1:
        return np.array([v.mean()])
    raise OnnxvizError(f"{what} has {v.size} values but the model input has {channels} "
                       f"channel(s); give 1 or {channels} values")


def _graph_expects_pixels(contract: InputContract) -> bool:
    """Whether the graph's own normalization starts from 0..255 pixel values."""
    for step in contract.normalization:
        v = np.abs(np.asarray(step.value, np.float64))
        if step.op == "Div" and v.size and v.min() >= 100:
            return True
        if step.op == "Mul" and v.size and 0 < v.max() <= 0.011:
            return True
        if step.op in ("Sub", "Add", "RSub") and v.size and v.max() > 2:
            return True
    return False


def choose_preprocess(contract: InputContract | None, preset: str | None = None, *,
                      scale: float | None = None, mean: tuple[float, ...] | None = None,
                      std: tuple[float, ...] | None = None, channel_order: str | None = None,
                      resize: str | None = None, size: tuple[int, ...] | None = None
                      ) -> Preprocess:
    """The effective preprocessing for an input: a preset (or the default, see DEFAULT_RULE),
    without the parts the graph already does itself, then explicit overrides. Every decision
    is recorded in `notes`."""
    notes: list[str] = []
    integer_input = bool(contract and not contract.dtype.startswith(("float", "bfloat")))
    graph_norm = bool(contract and contract.normalization)
    pixels = bool(contract and (integer_input or _graph_expects_pixels(contract)))
    steps = ", ".join(f"{s.op} {' '.join(f'{x:g}' for x in s.value)}"
                      for s in contract.normalization) if graph_norm else ""
    if preset is None:
        name = "raw255" if pixels else "unit"
        why = ("the input is an integer tensor" if integer_input else
               f"the graph normalizes its input itself ({steps}), starting from pixel values"
               if pixels else
               f"the graph normalizes its input itself ({steps}) from [0, 1] values"
               if graph_norm else "no normalization found in the graph")
        notes.append(f"preset {name} chosen by default: {why}")
    else:
        name = preset
    spec = Preprocess.from_preset(name)
    if preset is not None and graph_norm and (spec.mean != (0.0,) or spec.std != (1.0,)
                                              or spec.scale != (1.0 if pixels else 1 / 255)):
        notes.append(f"the graph already normalizes its input ({steps}): preset {name}'s "
                     f"scale/mean/std are not applied again; feeding "
                     f"{'0..255 pixels' if pixels else 'values in [0, 1]'}")
        spec = dataclasses.replace(spec, scale=1.0 if pixels else 1 / 255, mean=(0.0,),
                                   std=(1.0,))
    order = spec.channel_order
    if channel_order:
        order = channel_order.upper()
    elif contract is not None and contract.color_order and contract.channels == 3:
        if contract.color_order != order:
            notes.append(f"channel order {contract.color_order} from the model "
                         f"({contract.color_order_reason})")
        order = contract.color_order
    if order != spec.channel_order:  # keep preset stats attached to the right colors
        spec = dataclasses.replace(spec, mean=_in_order(spec.mean, "BGR"),
                                   std=_in_order(spec.std, "BGR"))
    changes: dict = {"channel_order": order}
    explicit = {k: v for k, v in (("scale", scale), ("mean", mean), ("std", std))
                if v is not None}
    if explicit and graph_norm:
        notes.append(f"{', '.join(explicit)} applied as given, on top of the graph's own "
                     f"normalization ({steps})")
    changes.update({k: (tuple(float(x) for x in v) if k != "scale" else float(v))
                    for k, v in explicit.items()})
    if resize:
        changes["resize"] = resize
    if size:
        changes["size"] = tuple(int(x) for x in size)
    label = name if not explicit else f"{name} + {', '.join(explicit)}"
    return dataclasses.replace(spec, preset=label, notes=tuple(notes), **changes)


# ---------------------------------------------------------------- loading

def load_pixels(source: str | os.PathLike | Image.Image) -> tuple[np.ndarray, list[str]]:
    """An image as float32 (H, W, 1 or 3) pixels in 0..255 (RGB), EXIF orientation applied, and
    notes on what was done (alpha dropped, 16-bit scaled, first frame of many...)."""
    notes: list[str] = []
    if isinstance(source, Image.Image):
        img, what = source, "the image"
    else:
        what = str(source)
        if not Path(source).is_file():
            raise OnnxvizError(f"no such image file: {source}")
        try:
            img = Image.open(source)
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                Image.DecompressionBombError) as exc:
            msg = " ".join(str(exc).split())[:200]
            raise OnnxvizError(f"cannot read {what} as an image ({msg}); give a PNG, JPEG or "
                               "another format Pillow decodes, or a ready tensor with "
                               "--tensor FILE.npy") from None
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"{what} has {img.n_frames} frames; using the first")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not stop us
        notes.append("EXIF orientation unreadable; used as stored")
    return _to_pixels(img, notes), notes


def _to_pixels(img: Image.Image, notes: list[str]) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(img).astype(np.float32) / 257.0
        notes.append("16-bit image scaled to 0..255")
        return np.clip(a, 0, 255)[:, :, None]
    if mode == "F":
        a = np.asarray(img, np.float32)
        finite = a[np.isfinite(a)]
        if finite.size and finite.max() <= 1.0:
            a = a * 255.0
            notes.append("floating-point image in [0, 1] scaled to 0..255")
        return np.clip(np.nan_to_num(a), 0, 255)[:, :, None]
    if mode in ("1", "L", "LA", "La"):
        if mode in ("LA", "La"):
            notes.append("alpha channel dropped")
        return np.asarray(img.convert("L"), np.float32)[:, :, None]
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "PA"):
        notes.append("alpha channel dropped (as Pillow's convert('RGB') does)")
    return np.asarray(img.convert("RGB"), np.float32)


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, 1|3) pixels to (H, W, channels): luminance for 1, replicated gray for 3."""
    have = pixels.shape[2]
    if have == channels:
        return pixels
    if channels == 1:
        return (pixels @ LUMA)[:, :, None]
    if channels == 3 and have == 1:
        return np.repeat(pixels, 3, axis=2)
    raise OnnxvizError(f"the model input has {channels} channels; an image gives 1 or 3. Feed "
                       "a ready tensor with --tensor FILE.npy")


# ---------------------------------------------------------------- resizing

def _fixed(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def _round_stride(x: float) -> int:
    return max(STRIDE, round(x / STRIDE) * STRIDE)


def target_size(image_hw: tuple[int, int], contract: InputContract, pre: Preprocess
                ) -> tuple[tuple[int, int], list[str]]:
    """(H, W) the image is resized to, and notes saying how it was chosen."""
    h_img, w_img = image_hw
    fh, fw = _fixed(contract.height), _fixed(contract.width)
    notes: list[str] = []
    if fh and fw:
        if pre.size and tuple(pre.size) not in ((fh, fw), (fh,) if fh == fw else ()):
            raise OnnxvizError(f"the model's input is fixed at {fh}x{fw}; --size applies only "
                               "to models with dynamic height/width")
        return (fh, fw), notes
    if pre.size and len(pre.size) == 2:
        h, w = pre.size
        return (fh or h, fw or w), notes
    s = pre.size[0] if pre.size else DEFAULT_SIZE
    if not pre.size:
        notes.append(f"dynamic spatial size: default --size {DEFAULT_SIZE}")
    if pre.resize != "shorter-side":
        return (fh or s, fw or s), notes
    if fh:
        factor = fh / h_img
    elif fw:
        factor = fw / w_img
    else:
        factor = s / min(h_img, w_img)
    h = fh or (s if h_img <= w_img and not fw else _round_stride(h_img * factor))
    w = fw or (s if w_img < h_img and not fh else _round_stride(w_img * factor))
    if not fh and not fw and h_img == w_img:
        h = w = s
    notes.append(f"aspect ratio kept; the side that follows it rounded to a multiple of "
                 f"{STRIDE}")
    return (h, w), notes


def model_input_size(contract: InputContract, pre: Preprocess) -> tuple[int, int]:
    """(H, W) of an image made from scratch (activation maximization): the model's fixed
    size, else --size (H means H x H), else DEFAULT_SIZE x DEFAULT_SIZE."""
    fh, fw = _fixed(contract.height), _fixed(contract.width)
    size = tuple(pre.size) if pre.size else (DEFAULT_SIZE,)
    h, w = (size[0], size[0]) if len(size) == 1 else size
    return fh or h, fw or w


def source_box(image_hw: tuple[int, int], size: tuple[int, int], mode: str
               ) -> tuple[float, float, float, float]:
    """The region (left, top, right, bottom) of an image of `image_hw` that `resize_pixels`
    maps onto `size`: the whole image when stretching, else the centered crop that covers
    `size` with the aspect ratio kept."""
    h_img, w_img = image_hw
    h, w = size
    if mode == "stretch":
        return 0.0, 0.0, float(w_img), float(h_img)
    factor = max(h / h_img, w / w_img)
    ch, cw = h / factor, w / factor
    top, left = max(0.0, (h_img - ch) / 2), max(0.0, (w_img - cw) / 2)
    return left, top, min(float(w_img), left + cw), min(float(h_img), top + ch)


def resize_pixels(pixels: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize (H, W, C) float pixels to `size`; center-crop and shorter-side keep the aspect
    ratio by cropping the center (shorter-side differs only for dynamic dims, see target_size).
    Bilinear, antialiased when shrinking (Pillow), per channel in float precision."""
    h_img, w_img = pixels.shape[:2]
    h, w = size
    box = source_box((h_img, w_img), size, mode)
    if (h, w) == (h_img, w_img) and box == (0.0, 0.0, float(w_img), float(h_img)):
        return pixels.astype(np.float32, copy=False)
    out = np.empty((h, w, pixels.shape[2]), np.float32)
    for c in range(pixels.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(pixels[:, :, c], np.float32), mode="F")
        out[:, :, c] = np.asarray(plane.resize((w, h), Image.BILINEAR, box=box))
    return np.clip(out, 0.0, 255.0)


# ---------------------------------------------------------------- display <-> model input

def _layout(contract: InputContract) -> str:
    if contract.layout not in ("NCHW", "NHWC"):
        raise OnnxvizError(f"input {contract.name!r} is not an image input "
                           f"({contract.layout_reason}); feed it with --tensor FILE.npy")
    return contract.layout


def _affine(contract: InputContract, pre: Preprocess, channels: int
            ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per display channel: gain and offset (model = display * gain + offset, before the channel
    flip and layout) and whether channels are flipped (BGR)."""
    mean, std = pre.channel_stats(channels)
    flip = channels == 3 and pre.channel_order == "BGR"
    gain = 255.0 * pre.scale / std  # indexed by model channel
    offset = -mean / std
    if flip:
        gain, offset = gain[::-1], offset[::-1]  # indexed by display (RGB) channel
    return gain.reshape(1, -1, 1, 1), offset.reshape(1, -1, 1, 1), flip


def to_model_input(display: np.ndarray, contract: InputContract, preprocess: Preprocess
                   ) -> np.ndarray:
    """Display images (N, C, H, W) in [0, 1] (RGB for 3 channels; 1.0 = pixel value 255) to
    the exact model input: channel order, (pixel * scale - mean) / std, layout, dtype."""
    layout = _layout(contract)
    x = np.asarray(display)
    if x.ndim != 4:
        raise ValueError(f"display images must be (N, C, H, W), got shape {x.shape}")
    gain, offset, flip = _affine(contract, preprocess, x.shape[1])
    y = x.astype(np.float64) * gain + offset
    if flip:
        y = y[:, ::-1]
    if layout == "NHWC":
        y = y.transpose(0, 2, 3, 1)
    return _cast(y, contract.dtype)


def to_model_input_adjoint(grad: np.ndarray, contract: InputContract, preprocess: Preprocess
                           ) -> np.ndarray:
    """The adjoint of `to_model_input`'s linear part: a gradient with respect to the model input
    (model layout) to the gradient with respect to the display image (N, C, H, W), float64.
    The final dtype cast is treated as the identity."""
    layout = _layout(contract)
    g = np.asarray(grad, np.float64)
    if layout == "NHWC":
        g = g.transpose(0, 3, 1, 2)
    gain, _, flip = _affine(contract, preprocess, g.shape[1])
    if flip:
        g = g[:, ::-1]
    return np.ascontiguousarray(g * gain)


def from_model_input(tensor: np.ndarray, contract: InputContract, preprocess: Preprocess
                     ) -> np.ndarray:
    """The inverse of `to_model_input`: model input to display images (N, C, H, W) float32,
    not clipped (values outside [0, 1] mean the tensor holds out-of-range pixels)."""
    layout = _layout(contract)
    x = np.asarray(tensor, np.float64)
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    gain, offset, flip = _affine(contract, preprocess, x.shape[1])
    if flip:
        x = x[:, ::-1]
    return ((x - offset) / gain).astype(np.float32)


def _cast(y: np.ndarray, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype) if dtype != "bfloat16" else None
    if dt is None:
        raise OnnxvizError("bfloat16 image inputs are not supported; feed --tensor FILE.npy")
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return np.clip(np.round(y), info.min, info.max).astype(dt)
    return np.ascontiguousarray(y.astype(dt))


def display_to_pil(display: np.ndarray) -> Image.Image:
    """One display image (C, H, W) in [0, 1] to an 8-bit RGB or L picture (clipped)."""
    x = np.clip(np.asarray(display, np.float64), 0.0, 1.0)
    x = np.round(x * 255).astype(np.uint8)
    return Image.fromarray(x[0]) if x.shape[0] == 1 else Image.fromarray(x[:3].transpose(1, 2, 0))


# ---------------------------------------------------------------- tensors and feeds

def load_tensor(path: str | os.PathLike) -> np.ndarray:
    """A .npy file (no pickles) as an array, or a one-line error."""
    if not Path(path).is_file():
        raise OnnxvizError(f"no such tensor file: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:200]
        raise OnnxvizError(f"cannot read {path} as a .npy array ({msg}); save one with "
                           "numpy.save") from None
    if not isinstance(arr, np.ndarray):
        raise OnnxvizError(f"{path} is an .npz archive; give one array saved with numpy.save")
    return arr


def check_tensor(arr: np.ndarray, contract: InputContract, what: str = "the tensor") -> None:
    """The tensor must have the input's dtype exactly and its fixed dims; dynamic dims are free."""
    want = f"{contract.dtype} {shape_text(contract.shape)}"
    have = f"{arr.dtype} {list(arr.shape)}"
    if str(arr.dtype) != contract.dtype:
        raise OnnxvizError(f"{what} is {have} but input {contract.name!r} wants {want}: convert "
                           f"it with arr.astype(numpy.{contract.dtype})")
    if contract.shape is None:
        return
    ok = arr.ndim == len(contract.shape) and all(
        _fixed(d) is None or d == n for d, n in zip(contract.shape, arr.shape, strict=False))
    if not ok:
        raise OnnxvizError(f"{what} is {have} but input {contract.name!r} wants {want} "
                           "(? and named dims may be any size)")


@dataclass
class PreparedInputs:
    """Feeds for every model input, plus what the image input was made from."""

    feeds: dict[str, np.ndarray]
    image_input: str | None  # the input fed with the image or main tensor
    source: str  # the image path, tensor file(s), or "<array>"
    preprocess: Preprocess | None  # None when a ready tensor was fed
    display: np.ndarray | None  # (C, H, W) in [0, 1], for overlays; None if not an image
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "input": self.image_input,
            "feeds": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                      for k, v in self.feeds.items()},
            "preprocess": self.preprocess.to_dict() if self.preprocess else None,
            "notes": list(self.notes),
        }


def main_input(model: Model) -> InputContract:
    """The input an image goes to: the first image-like input, else the first input."""
    inputs = model.summary.inputs
    if not inputs:
        raise OnnxvizError("the model has no inputs to feed")
    return next((c for c in inputs if c.layout), inputs[0])


def image_to_input(source: str | os.PathLike | Image.Image, contract: InputContract,
                   preprocess: Preprocess) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(model input tensor, display (C, H, W) in [0, 1], notes) for one image."""
    _layout(contract)
    pixels, notes = load_pixels(source)
    channels = contract.channels
    if channels is None:
        channels = 3
        notes.append("the model's channel count is unknown; feeding 3 channels")
    pixels = to_channels(pixels, channels)
    size, size_notes = target_size(pixels.shape[:2], contract, preprocess)
    notes += size_notes
    if (pixels.shape[0], pixels.shape[1]) != size:
        notes.append(f"resized {pixels.shape[0]}x{pixels.shape[1]} -> {size[0]}x{size[1]} "
                     f"({preprocess.resize})")
    display = (resize_pixels(pixels, size, preprocess.resize) / 255.0).transpose(2, 0, 1)
    batch = _fixed(contract.shape[0]) if contract.shape else None
    n = batch or 1
    if n > 1:
        notes.append(f"the model's batch dimension is fixed at {n}: the image is repeated")
    tensor = to_model_input(np.repeat(display[None], n, axis=0), contract, preprocess)
    return tensor, display.astype(np.float32), notes


def prepare_inputs(model: Model, image: str | os.PathLike | Image.Image | None = None,
                   tensors: dict[str | None, str | os.PathLike | np.ndarray] | None = None,
                   preprocess: Preprocess | str | None = None) -> PreparedInputs:
    """Feeds for every input of the model: the image (preprocessed) for the main input, ready
    tensors (arrays or .npy paths; key None = the main input) for the others."""
    tensors = dict(tensors or {})
    contracts = {c.name: c for c in model.summary.inputs}
    main = main_input(model)
    for key in tensors:
        if key is not None and key not in contracts:
            raise unknown_name("input", key, contracts,
                               f"The model's inputs: {', '.join(contracts)}.")
    if None in tensors:
        if main.name in tensors:
            raise OnnxvizError(f"two tensors given for input {main.name!r}")
        tensors[main.name] = tensors.pop(None)
    if image is not None and main.name in tensors:
        raise OnnxvizError(f"give either an IMAGE or --tensor for input {main.name!r}, not both")
    feeds: dict[str, np.ndarray] = {}
    sources: list[str] = []
    for name, value in tensors.items():
        arr = load_tensor(value) if not isinstance(value, np.ndarray) else value
        label = str(value) if not isinstance(value, np.ndarray) else f"the array for {name!r}"
        check_tensor(arr, contracts[name], label)
        feeds[name] = arr
        sources.append(f"{name}={value}" if not isinstance(value, np.ndarray) else "<array>")
    pre: Preprocess | None = None
    display = None
    notes: list[str] = []
    if image is not None:
        if isinstance(preprocess, Preprocess):
            pre = preprocess
        else:
            pre = choose_preprocess(main, preprocess)
        tensor, display, notes = image_to_input(image, main, pre)
        notes = [*pre.notes, *notes]
        feeds[main.name] = tensor
        sources.insert(0, str(image) if not isinstance(image, Image.Image) else "<PIL image>")
    missing = [c for c in contracts.values() if c.name not in feeds]
    if missing:
        if main in missing:
            raise OnnxvizError(f"nothing to feed input {main.name!r}: give an IMAGE or a ready "
                               "tensor with --tensor FILE.npy")
        listed = ", ".join(f"{c.name!r} ({c.dtype} {shape_text(c.shape)})" for c in missing)
        raise OnnxvizError(f"the model has other inputs that need values: {listed}; pass "
                           "--tensor NAME=FILE.npy for each")
    if display is None and main.layout and main.name in feeds:
        display = _tensor_display(feeds[main.name], main)
    return PreparedInputs(feeds=feeds, image_input=main.name, source=", ".join(sources),
                          preprocess=pre, display=display, notes=notes)


def _tensor_display(tensor: np.ndarray, contract: InputContract) -> np.ndarray | None:
    """A ready image-like tensor shown min-max scaled (no preprocessing is assumed)."""
    x = np.asarray(tensor[0], np.float64)
    if contract.layout == "NHWC":
        x = x.transpose(2, 0, 1)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        return None
    lo, hi = np.nanmin(x), np.nanmax(x)
    return ((x - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
