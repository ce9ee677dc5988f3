"""Top-k dataset examples: the image patches in a folder that most excite each channel.

Every image in the folder (recursively, every format Pillow decodes) goes through the model,
cut down to what computes the chosen layer. For each chosen channel a running top-k keeps the
images whose maximal activation is highest, with the location of that maximum; only one batch
of activations is alive at a time, so memory stays flat in the number of images. At the end,
each hit's receptive field (`receptive.py`) is mapped back through the preprocessing resize to
the original image's pixels and cropped from the few winning files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from .errors import OnnxvizError
from .features import Tap, named_taps, to_float
from .images import (
    Preprocess,
    choose_preprocess,
    load_pixels,
    main_input,
    resize_pixels,
    source_box,
    target_size,
    to_channels,
    to_model_input,
)
from .model import InputContract, Model, inferred_shapes, load_model
from .receptive import Field, receptive_fields
from .runtime import make_session, run

DEFAULT_CHANNELS = 16  # channels shown when no --channels is given
CROP_MAX = 256  # longest side of a kept crop (the JSON boxes are exact)
BATCH_CANDIDATES = (1, 4, 16, 64)  # batch sizes tried when none is given
BATCH_MEMORY = 512 << 20  # rough bytes a batch may take in onnxruntime
# Decoded images wait in groups of one input size (dynamic-size models) until a group fills a
# batch; past this many bytes of waiting inputs, the fullest group runs as a partial batch.
BUFFER_BYTES = 128 << 20


# ---------------------------------------------------------------- results

@dataclass
class Hit:
    """One image's maximal activation of a channel, where it is, and the patch around it."""

    file: Path
    value: float
    location: tuple[int, int] | None  # (y, x) in the feature map; None for a vector layer
    input_size: tuple[int, int]  # (H, W) the image was resized to for the model
    input_box: tuple[int, int, int, int]  # receptive field in model-input pixels (t, l, b, r)
    image_size: tuple[int, int]  # (H, W) of the original image (EXIF orientation applied)
    box: tuple[int, int, int, int]  # the same field in original-image pixels (t, l, b, r)
    crop: np.ndarray | None = None  # (h, w, 1 or 3) uint8, longest side <= CROP_MAX

    def to_dict(self, root: Path | None = None) -> dict:
        name = self.file.relative_to(root).as_posix() if root else str(self.file)
        return {"file": name, "value": float(f"{self.value:.6g}"),
                "location": list(self.location) if self.location else None,
                "image_size": list(self.image_size), "box": list(self.box),
                "input_size": list(self.input_size), "input_box": list(self.input_box)}


@dataclass
class ChannelExamples:
    channel: int
    hits: list[Hit]  # highest activation first

    @property
    def all_zero(self) -> bool:
        """The channel's maximum over every image is exactly 0 (a dead ReLU on this data):
        the hits are then ties, in file order, and show nothing the channel likes."""
        return bool(self.hits) and self.hits[0].value == 0.0

    def to_dict(self, root: Path | None = None) -> dict:
        return {"channel": self.channel, "all_zero": self.all_zero,
                "hits": [h.to_dict(root) for h in self.hits]}


@dataclass
class Skipped:
    file: Path
    reason: str


@dataclass
class Progress:
    """Reported after each batch: files handled (run or skipped) of the total."""

    done: int
    total: int
    images: int
    skipped: int
    seconds: float
    batch: int

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ExamplesResult:
    model: str
    model_sha256: str
    images_dir: Path
    tap: Tap
    map_shape: list  # (C, H, W) or (C,) for the first image; H, W vary with dynamic sizes
    total_channels: int
    channels: list[ChannelExamples]
    images: int  # images that went through the model
    files: int  # files found
    skipped: list[Skipped]
    preprocess: Preprocess
    top: int
    batch: int
    seconds: float
    timings: dict[str, float]  # decode, run (incl. the top-k update), crops: seconds
    receptive_field: Field | None = None  # at the first input size; None for a vector layer
    input_channels: int | None = None  # of the model's image input
    notes: list[str] = field(default_factory=list)

    @property
    def layer(self) -> str:
        return self.tap.tensor

    def to_dict(self) -> dict:
        return {
            "model": self.model, "model_sha256": self.model_sha256,
            "images_dir": str(self.images_dir), "layer": self.tap.tensor, "node": self.tap.node,
            "op": self.tap.op, "map_shape": self.map_shape,
            "total_channels": self.total_channels, "top": self.top,
            "images": self.images, "files": self.files,
            "skipped": [{"file": s.file.relative_to(self.images_dir).as_posix(),
                         "reason": s.reason} for s in self.skipped],
            "preprocess": self.preprocess.to_dict(), "input_channels": self.input_channels,
            "batch": self.batch,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images / self.seconds, 1) if self.seconds else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "receptive_field": None if self.receptive_field is None else {
                "size": list(self.receptive_field.size),
                "jump": list(self.receptive_field.jump),
                "whole_image": self.receptive_field.whole_image},
            "boxes": "(top, left, bottom, right), bottom/right exclusive; box in the original "
                     "image's pixels (EXIF orientation applied), input_box in the resized "
                     "model input; location is (y, x) in the feature map",
            "notes": list(self.notes),
            "channels": [c.to_dict(self.images_dir) for c in self.channels],
        }


# ---------------------------------------------------------------- channel spec

def parse_channels(spec: str | Sequence[int] | None, total: int | None
                   ) -> tuple[list[int] | None, str | None]:
    """'0-15', '1,5,9', '0-3,8', 'all' or a list of ints -> channel indices (in the order
    given, duplicates dropped), and a note when the default cap applies. None = the first
    DEFAULT_CHANNELS channels. With `total` unknown, the indices are returned unchecked
    (None for the default and 'all')."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        if total is None:
            return None, None
        if spec is None and total > DEFAULT_CHANNELS:
            return list(range(DEFAULT_CHANNELS)), (
                f"showing channels 0-{DEFAULT_CHANNELS - 1} of {total} (--channels to choose, "
                f"e.g. --channels {DEFAULT_CHANNELS}-{min(total, 2 * DEFAULT_CHANNELS) - 1} "
                "or all)")
        return list(range(total)), None
    if isinstance(spec, str):
        out: list[int] = []
        for part in spec.replace(" ", "").split(","):
            try:
                if "-" in part[1:]:
                    a, b = part.split("-", 1) if not part.startswith("-") else ("", part)
                    lo, hi = int(a), int(b)
                    if hi < lo:
                        raise ValueError
                    out.extend(range(lo, hi + 1))
                else:
                    out.append(int(part))
            except ValueError:
                raise OnnxvizError(f"bad channel spec {spec!r}: use a range like 0-15, a list "
                                   "like 1,5,9, both (0-3,8), or all") from None
    else:
        out = [int(c) for c in spec]
    if not out:
        raise OnnxvizError("no channels given; use e.g. --channels 0-15")
    if min(out) < 0:
        raise OnnxvizError(f"channel {min(out)} is negative; channels count from 0")
    if total is not None and max(out) >= total:
        raise OnnxvizError(f"channel {max(out)} is out of range: the layer has {total} "
                           f"channels (0-{total - 1})")
    return list(dict.fromkeys(out)), None


# ---------------------------------------------------------------- files and geometry

def list_files(root: Path) -> list[Path]:
    """Every file under `root` (recursively, symlinks to folders not followed, names starting
    with '.' skipped), sorted by relative path so runs are reproducible."""
    found: list[tuple[list[str], str]] = []  # (path components, path): cheap to sort
    base = len(os.fspath(root).rstrip(os.sep)) + 1
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        parts = folder[base:].split(os.sep) if len(folder) >= base else []
        found.extend(([*parts, f], os.path.join(folder, f)) for f in files
                     if not f.startswith("."))
    found.sort(key=lambda item: item[0])
    return [Path(path) for _, path in found]


def to_original(input_box: tuple[int, int, int, int], size: tuple[int, int],
                image_hw: tuple[int, int], mode: str) -> tuple[int, int, int, int]:
    """A (top, left, bottom, right) box in model-input pixels to the original image's pixels
    (the smallest whole-pixel box covering it), through the preprocessing resize."""
    left0, top0, right0, bottom0 = source_box(image_hw, size, mode)
    sy, sx = (bottom0 - top0) / size[0], (right0 - left0) / size[1]
    t, le, b, r = input_box
    h_img, w_img = image_hw
    top = min(h_img - 1, max(0, math.floor(top0 + t * sy + 1e-6)))
    left = min(w_img - 1, max(0, math.floor(left0 + le * sx + 1e-6)))
    bottom = max(top + 1, min(h_img, math.ceil(top0 + b * sy - 1e-6)))
    right = max(left + 1, min(w_img, math.ceil(left0 + r * sx - 1e-6)))
    return top, left, bottom, right


@dataclass
class _Decoded:
    index: int  # position in the file list
    tensor: np.ndarray  # (1, ...) model input
    image_hw: tuple[int, int]
    input_hw: tuple[int, int]


def _decode(index: int, path: Path, contract: InputContract, pre: Preprocess,
            channels: int) -> _Decoded:
    pixels, _ = load_pixels(path)
    image_hw = (pixels.shape[0], pixels.shape[1])
    pixels = to_channels(pixels, channels)
    size, _ = target_size(image_hw, contract, pre)
    display = (resize_pixels(pixels, size, pre.resize) * (1 / 255.0)).transpose(2, 0, 1)
    return _Decoded(index, to_model_input(display[None], contract, pre), image_hw, size)


DECODE_ERRORS = (OnnxvizError, OSError, ValueError, SyntaxError, EOFError, MemoryError,
                 Image.DecompressionBombError)


# ---------------------------------------------------------------- running top-k

class _TopK:
    """Per channel, the `top` best (value, image, location) seen so far, ties broken by file
    order then location, so the result does not depend on batching. Holds only small arrays:
    the kept entries and the per-image maxima of at most MERGE_EVERY recent images, merged in
    one sort to keep the per-batch cost low."""

    MERGE_EVERY = 256

    def __init__(self, channels: int, top: int) -> None:
        self.value = np.full((channels, 0), -np.inf)
        self.image = np.zeros((channels, 0), np.int64)
        self.pos = np.zeros((channels, 0), np.int64)
        self.geom = np.zeros((channels, 0, 4), np.int64)  # image h, w, input h, w
        self.top = top
        self.pending: list[tuple[np.ndarray, ...]] = []
        self.pending_images = 0

    def update(self, acts: np.ndarray, images: np.ndarray, geom: np.ndarray) -> None:
        """acts: (B, K, S) activations of the chosen channels, S flattened positions."""
        pos = acts.argmax(axis=2)  # (B, K)
        val = np.take_along_axis(acts, pos[:, :, None], axis=2)[:, :, 0]
        if np.isnan(val).any():  # NaN never wins: rank it below everything
            clean = np.where(np.isnan(acts), -np.inf, acts)
            pos = clean.argmax(axis=2)
            val = np.take_along_axis(clean, pos[:, :, None], axis=2)[:, :, 0]
        self.pending.append((val, pos, images, geom))
        self.pending_images += len(images)
        if self.pending_images >= self.MERGE_EVERY:
            self.merge()

    def merge(self) -> None:
        if not self.pending:
            return
        k = self.value.shape[0]
        val = np.concatenate([p[0] for p in self.pending]).T.astype(np.float64)  # (K, n)
        pos = np.concatenate([p[1] for p in self.pending]).T
        images = np.concatenate([p[2] for p in self.pending])
        geom = np.concatenate([p[3] for p in self.pending])
        self.pending, self.pending_images = [], 0
        value = np.concatenate([self.value, val], axis=1)
        image = np.concatenate([self.image, np.broadcast_to(images, (k, len(images)))], axis=1)
        pos_all = np.concatenate([self.pos, pos], axis=1)
        geom_all = np.concatenate([self.geom, np.broadcast_to(geom, (k, *geom.shape))], axis=1)
        order = np.lexsort((pos_all, image, -value), axis=1)[:, :self.top]
        self.value = np.take_along_axis(value, order, axis=1)
        self.image = np.take_along_axis(image, order, axis=1)
        self.pos = np.take_along_axis(pos_all, order, axis=1)
        self.geom = np.take_along_axis(geom_all, order[:, :, None], axis=1)


class _BatchSizer:
    """Chooses the batch size by measuring: each candidate runs three times (the first run of
    a new shape warms onnxruntime up; the faster of the other two counts), and the next larger
    one is tried while the time per input pixel keeps falling by 10% or more. Every run
    processes real images, and batching never changes the results."""

    RUNS = 3

    def __init__(self, fixed: int | None, limit: int) -> None:
        self.candidates = [fixed] if fixed else [c for c in BATCH_CANDIDATES if c <= limit] or [1]
        self.stage = 0
        self.times: list[float] = []
        self.cost: dict[int, float] = {}
        self.settled = len(self.candidates) == 1

    @property
    def size(self) -> int:
        return self.candidates[self.stage]

    def record(self, batch: int, pixels: int, seconds: float) -> None:
        if self.settled or batch != self.size:
            return
        self.times.append(seconds / max(1, pixels))
        if len(self.times) < self.RUNS:
            return
        self.cost[batch] = min(self.times[1:])
        self.times = []
        prev = self.candidates[self.stage - 1] if self.stage else None
        if prev is not None and self.cost[batch] > 0.9 * self.cost[prev]:
            self.stage -= 1 if self.cost[prev] < self.cost[batch] else 0
            self.settled = True
        elif self.stage + 1 < len(self.candidates):
            self.stage += 1
        else:
            self.settled = True

    def give_up(self) -> None:
        """Batches of more than one image failed in onnxruntime: use 1 from now on."""
        self.candidates, self.stage, self.settled = [1], 0, True


# ---------------------------------------------------------------- the run

def _resolve_preprocess(contract: InputContract, preprocess: Preprocess | str | None
                        ) -> Preprocess:
    if isinstance(preprocess, Preprocess):
        return preprocess
    return choose_preprocess(contract, preprocess)


def _check_model(model: Model) -> InputContract:
    contract = main_input(model)
    if contract.layout not in ("NCHW", "NHWC"):
        raise OnnxvizError(f"input {contract.name!r} is not an image input "
                           f"({contract.layout_reason}); examples feeds images only")
    others = [c.name for c in model.summary.inputs if c.name != contract.name]
    if others:
        raise OnnxvizError(f"the model has other inputs besides the image ({', '.join(others)}); "
                           "examples can feed only an image")
    return contract


def _layer_shape(model: Model, tensor: str) -> list | None:
    shape, _ = inferred_shapes(model.proto).get(tensor, (None, ""))
    if shape is not None and len(shape) not in (2, 4):
        raise OnnxvizError(f"{tensor!r} has rank {len(shape)} {shape}; examples needs a "
                           "feature map (N, C, H, W) or a vector (N, C); pick a conv layer or "
                           "its activation (onnxviz inspect MODEL lists them)")
    return shape


def examples(model: str | os.PathLike | bytes | onnx.ModelProto | Model | None,
             images_dir: str | os.PathLike, layer: str,
             channels: str | Sequence[int] | None = None, top: int = 9,
             preprocess: Preprocess | str | None = None,
             providers: Sequence[str] | None = None, batch: int | None = None,
             progress: Callable[[Progress], None] | None = None) -> ExamplesResult:
    """The `top` images in `images_dir` that most excite each channel of `layer`, with the
    location of each maximum and the crop of its receptive field in the original image.

    model: path, bytes, ModelProto or Model (None = the embedded default). layer: node or
    tensor name (a node name means its first output). channels: '0-15', '1,5,9', 'all', a list,
    or None for the first 16. preprocess: a `Preprocess`, a preset name, or None for the default
    rule. batch: images per onnxruntime run (None = measured: the fastest of 1, 4, 16, 64 that
    fits; a fixed batch dimension is always used as it is). progress: called after every batch.
    Files Pillow cannot decode are skipped and listed in `result.skipped`.
    """
    started = time.perf_counter()
    loaded = load_model(model)
    contract = _check_model(loaded)
    pre = _resolve_preprocess(contract, preprocess)
    root = Path(images_dir)
    if not root.exists():
        raise OnnxvizError(f"no such folder: {root}")
    if not root.is_dir():
        raise OnnxvizError(f"{root} is a file; give a folder of images")
    if top < 1:
        raise OnnxvizError(f"top must be at least 1, not {top}")
    (tap,) = named_taps(loaded, [layer])
    shape = _layer_shape(loaded, tap.tensor)
    total_channels = shape[1] if shape and isinstance(shape[1], int) else None
    chosen, channel_note = parse_channels(channels, total_channels)
    files = list_files(root)
    if not files:
        raise OnnxvizError(f"no files in {root}; give a folder that holds images")

    fixed_batch = contract.shape[0] if contract.shape and isinstance(
        contract.shape[0], int) and contract.shape[0] > 0 else None
    if batch is not None:
        if batch < 1:
            raise OnnxvizError(f"batch must be at least 1, not {batch}")
        if fixed_batch and batch != fixed_batch:
            raise OnnxvizError(f"the model's batch dimension is fixed at {fixed_batch}; leave "
                               f"batch unset or give {fixed_batch}")
    channels_in = contract.channels or 3
    session = make_session(layer_model(loaded, tap.tensor), providers=providers)
    state = _Run(loaded, contract, pre, tap, session, top, channels, chosen,
                 fixed_batch or batch, progress, len(files), started)
    for index, path in enumerate(files):
        t0 = time.perf_counter()
        try:
            item = _decode(index, path, contract, pre, channels_in)
        except DECODE_ERRORS as exc:
            state.timings["decode"] += time.perf_counter() - t0
            state.skip(path, exc)
            continue
        state.timings["decode"] += time.perf_counter() - t0
        state.add(item)
    state.flush_all()
    if state.images == 0:
        example = "; ".join(f"{s.file.name}: {s.reason}" for s in state.skipped[:2])
        raise OnnxvizError(f"none of the {len(files)} file(s) in {root} is an image Pillow can "
                           f"decode ({example})")
    t0 = time.perf_counter()
    result_channels = _collect(state, files, pre)
    state.timings["crops"] = time.perf_counter() - t0
    notes = list(pre.notes)
    if state.channel_note or channel_note:
        notes.append(state.channel_note or channel_note)
    if len(state.map_shape) == 1:
        notes.append("a vector layer: each value depends on the whole image, so the crops "
                     "are what the model saw of each image")
    elif any(f.whole_image for f in state.fields.values()):
        notes.append("every unit of this layer sees the whole image (a global pool or dense "
                     "layer on the way), so the crops are what the model saw of each image")
    notes += state.notes
    return ExamplesResult(
        model=loaded.label, model_sha256=loaded.sha256, images_dir=root, tap=tap,
        map_shape=state.map_shape, total_channels=state.total_channels,
        channels=result_channels, images=state.images, files=len(files),
        skipped=state.skipped, preprocess=pre, top=top, batch=state.sizer.size,
        seconds=time.perf_counter() - started, timings=dict(state.timings),
        receptive_field=next(iter(state.fields.values()), None),
        input_channels=contract.channels, notes=notes)


def layer_model(model: Model, tensor: str) -> onnx.ModelProto:
    """The model cut down to what computes `tensor`: the nodes it depends on, in their order,
    with `tensor` as the only output. The layer's values come from the same nodes as in the
    whole model, and nothing after the layer runs (for an early layer of a detector, most of
    the network)."""
    from .rewrite import expose_tensors

    proto = expose_tensors(model, [tensor], exact=True)
    g = model.graph
    needed, keep = {tensor}, []
    for i in range(len(g.nodes) - 1, -1, -1):  # nodes are in topological order
        node = g.nodes[i]
        if any(o in needed for o in node.output):
            keep.append(i)
            needed.update(x for x in node.input if x)
            needed.update(_subgraph_reads(node))
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    del graph.node[:]
    graph.node.extend(proto.graph.node[i] for i in reversed(keep))
    outputs = [o for o in proto.graph.output if o.name == tensor]
    del graph.output[:]
    graph.output.extend(outputs)
    weights = {t.name for t in proto.graph.initializer}
    kept_inputs = [v for v in proto.graph.input if v.name not in weights or v.name in needed]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    kept_weights = [t for t in proto.graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept_weights)
    return out


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names that the If/Loop/Scan bodies of `node` read (from the outer scope, among others)."""
    names: set[str] = set()
    for a in node.attribute:
        for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                    list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
            for n in sub.node:
                names.update(x for x in n.input if x)
                names |= _subgraph_reads(n)
    return names


class _Run:
    """The streaming state: decoded images waiting in groups of one input size, the running
    top-k, counts and timings."""

    def __init__(self, model: Model, contract: InputContract, pre: Preprocess, tap: Tap,
                 session, top: int, channel_spec, chosen: list[int] | None,
                 batch: int | None, progress: Callable[[Progress], None] | None, total: int,
                 started: float) -> None:
        self.model, self.contract, self.pre, self.tap = model, contract, pre, tap
        self.session, self.top, self.progress = session, top, progress
        self.channel_spec, self.chosen = channel_spec, chosen
        self.fixed_batch = contract.shape[0] if contract.shape and isinstance(
            contract.shape[0], int) and contract.shape[0] > 0 else None
        self.sizer: _BatchSizer | None = _BatchSizer(batch, 1) if batch else None
        self.total, self.started = total, started
        self.pending: dict[tuple[int, int], list[_Decoded]] = {}
        self.pending_bytes = 0
        self.topk: _TopK | None = None
        self.channel_note: str | None = None
        self.total_channels = 0
        self.map_shape: list = []
        self.fields: dict[tuple[int, int], Field] = {}
        self.map_hw: dict[tuple[int, int], tuple[int, ...]] = {}
        self.select: slice | list[int] = slice(None)
        self.images = 0
        self.done = 0
        self.skipped: list[Skipped] = []
        self.timings = {"decode": 0.0, "run": 0.0, "crops": 0.0}
        self.notes: list[str] = []

    # -- input side
    def skip(self, path: Path, exc: BaseException) -> None:
        reason = " ".join(str(exc).split()).split("; give a PNG")[0][:200] or type(
            exc).__name__
        self.skipped.append(Skipped(path, reason))
        self.done += 1
        self._report()

    def add(self, item: _Decoded) -> None:
        if self.sizer is None:  # memory bound: ~32x the input per image in onnxruntime
            self.sizer = _BatchSizer(None, max(1, BATCH_MEMORY // (32 * item.tensor.nbytes)))
        group = self.pending.setdefault(item.input_hw, [])
        group.append(item)
        self.pending_bytes += item.tensor.nbytes
        if len(group) >= self.sizer.size:
            self._flush(item.input_hw)
        elif self.pending_bytes > BUFFER_BYTES:
            self._flush(max(self.pending, key=lambda k: len(self.pending[k])))

    def flush_all(self) -> None:
        while self.pending:
            self._flush(next(iter(self.pending)))

    # -- model side
    def _flush(self, key: tuple[int, int]) -> None:
        items = self.pending.pop(key)
        self.pending_bytes -= sum(d.tensor.nbytes for d in items)
        while items:
            n = self.sizer.size
            self._run_chunk(items[:n])
            items = items[n:]

    def _run_chunk(self, chunk: list[_Decoded]) -> None:
        n = self.fixed_batch or len(chunk)
        tensors = [d.tensor for d in chunk]
        tensors += [tensors[-1]] * (n - len(chunk))  # a fixed batch dimension: pad, ignore
        x = np.concatenate(tensors, axis=0)
        t0 = time.perf_counter()
        try:
            (acts,) = run(self.session, {self.contract.name: x}, [self.tap.tensor])
        except OnnxvizError:
            if len(chunk) == 1 or self.fixed_batch:
                raise
            self.sizer.give_up()
            self.notes.append(f"the model failed on a batch of {len(chunk)} images; ran them "
                              "one at a time")
            del x
            for d in chunk:
                self._run_chunk([d])
            return
        del x
        self._update(acts[:len(chunk)], chunk)
        del acts
        seconds = time.perf_counter() - t0
        self.timings["run"] += seconds
        h, w = chunk[0].input_hw
        self.sizer.record(len(chunk), len(chunk) * h * w, seconds)
        self.images += len(chunk)
        self.done += len(chunk)
        self._report()

    def _update(self, raw: np.ndarray, chunk: list[_Decoded]) -> None:
        acts, notes = to_float(raw, self.model.graph, self.tap.tensor)
        if acts.ndim not in (2, 4):
            raise OnnxvizError(f"{self.tap.tensor!r} has shape {list(acts.shape)}; examples "
                               "needs a feature map (N, C, H, W) or a vector (N, C)")
        if self.topk is None:
            self._start(acts, notes)
        self.map_hw.setdefault(chunk[0].input_hw, acts.shape[2:])
        flat = acts.reshape(acts.shape[0], acts.shape[1], -1)
        flat = flat[:, self.select]
        images = np.array([d.index for d in chunk], np.int64)
        geom = np.array([(*d.image_hw, *d.input_hw) for d in chunk], np.int64)
        self.topk.update(flat, images, geom)

    def _start(self, acts: np.ndarray, notes: list[str]) -> None:
        self.total_channels = acts.shape[1]
        self.map_shape = list(acts.shape[1:])
        if self.chosen is None:
            self.chosen, self.channel_note = parse_channels(self.channel_spec, acts.shape[1])
        elif max(self.chosen) >= acts.shape[1]:
            raise OnnxvizError(f"channel {max(self.chosen)} is out of range: the layer has "
                               f"{acts.shape[1]} channels (0-{acts.shape[1] - 1})")
        self.topk = _TopK(len(self.chosen), self.top)
        lo = self.chosen[0]  # a run of consecutive channels is a view, not a copy
        contiguous = self.chosen == list(range(lo, lo + len(self.chosen)))
        self.select = slice(lo, lo + len(self.chosen)) if contiguous else self.chosen
        self.notes += notes

    def field(self, hw: tuple[int, int]) -> Field:
        """The layer's receptive field for an input of size `hw`: computed for the sizes of
        the winning images only, and once for all sizes when no op on the way to the layer
        has a geometry that depends on the size."""
        if hw not in self.fields:
            if self.fields and not _size_dependent(self.model, self.tap.tensor):
                self.fields[hw] = next(iter(self.fields.values()))
            else:
                fields = receptive_fields(self.model.proto, self.contract.name, hw,
                                          layout=self.contract.layout)
                self.fields[hw] = fields.get(self.tap.tensor,
                                             Field((1.0, 1.0), (1.0, 1.0), (0.0, 0.0), True))
        return self.fields[hw]

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(Progress(self.done, self.total, self.images, len(self.skipped),
                                   time.perf_counter() - self.started,
                                   self.sizer.size if self.sizer else 1))


def _size_dependent(model: Model, tensor: str) -> bool:
    """Whether a receptive field at `tensor` may change with the input size: some op before
    it pads by the size (auto_pad SAME_*), resizes, or slices."""
    g = model.graph
    seen, stack = set(), [tensor]
    while stack:
        t = stack.pop()
        if t in seen or t not in g.producer:
            continue
        seen.add(t)
        node = g.nodes[g.producer[t]]
        auto = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
        if node.op_type in ("Resize", "Upsample", "Slice") or auto.startswith(b"SAME"):
            return True
        stack.extend(x for x in node.input if x)
    return False


# ---------------------------------------------------------------- boxes and crops

def _collect(state: _Run, files: list[Path], pre: Preprocess) -> list[ChannelExamples]:
    topk = state.topk
    topk.merge()
    per_channel: list[ChannelExamples] = []
    wanted: dict[int, list[Hit]] = {}
    for k, channel in enumerate(state.chosen):
        hits = []
        for j in range(topk.value.shape[1]):
            value = float(topk.value[k, j])
            if value == -np.inf:
                continue
            idx, pos = int(topk.image[k, j]), int(topk.pos[k, j])
            ih, iw, h, w = (int(v) for v in topk.geom[k, j])
            if len(state.map_shape) == 1:
                location, input_box = None, (0, 0, h, w)
            else:
                field_ = state.field((h, w))
                location = divmod(pos, int(state.map_hw[(h, w)][1]))
                input_box = field_.box(location[0], location[1], h, w)
            box = to_original(input_box, (h, w), (ih, iw), pre.resize)
            hit = Hit(files[idx], value, location, (h, w), input_box, (ih, iw), box)
            hits.append(hit)
            wanted.setdefault(idx, []).append(hit)
        per_channel.append(ChannelExamples(channel, hits))
    for idx, hits in wanted.items():
        try:
            _crop_file(files[idx], hits)
        except DECODE_ERRORS as exc:
            state.notes.append(f"{files[idx].name} could not be read again for its crop "
                               f"({' '.join(str(exc).split())[:80]})")
    return per_channel


def _crop_file(path: Path, hits: list[Hit]) -> None:
    """Set each hit's crop from the file, read as `load_pixels` reads it (EXIF orientation,
    mode conversions), converting only the cropped pixels."""
    from PIL import ImageOps

    with Image.open(path) as opened:
        opened.load()
        try:
            img = ImageOps.exif_transpose(opened)
        except Exception:  # as load_pixels: a broken EXIF block means the stored orientation
            img = opened
        if img.mode == "F":  # float images are scaled by their own maximum: convert it whole
            pixels, _ = load_pixels(img)
            crops = [pixels[h.box[0]:h.box[2], h.box[1]:h.box[3]] for h in hits]
        else:
            crops = [load_pixels(img.crop((h.box[1], h.box[0], h.box[3], h.box[2])))[0]
                     for h in hits]
        size = (img.height, img.width)
    for hit, pixels in zip(hits, crops, strict=True):
        if size == hit.image_size:  # the file did not change since it was run
            hit.crop = _small_uint8(pixels)


def _small_uint8(pixels: np.ndarray) -> np.ndarray:
    patch = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    h, w = patch.shape[:2]
    if max(h, w) <= CROP_MAX:
        return patch
    f = CROP_MAX / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    img = Image.fromarray(patch[:, :, 0] if patch.shape[2] == 1 else patch)
    small = np.asarray(img.resize(size, Image.BOX))
    return small[:, :, None] if small.ndim == 2 else small


# ---------------------------------------------------------------- picture

def examples_image(result: ExamplesResult, tile: int = 112) -> Image.Image:
    """The result as one picture: a row per channel, its top crops left to right, each
    labelled with the activation value and the file (relative to the folder)."""
    from .render import font, render_examples

    f = font(11)

    def name(path: Path) -> str:  # the path in the folder if it fits the tile, else the name
        rel = path.relative_to(result.images_dir).as_posix()
        return rel if f.getlength(rel) <= tile - 2 else path.name

    rows, labels = [], []
    for ch in result.channels:
        rows.append([h.crop for h in ch.hits])
        labels.append([f"{h.value:.4g}\n{name(h.file)}" for h in ch.hits])
    row_labels = [f"ch {ch.channel}" + ("\nall 0" if ch.all_zero else "")
                  for ch in result.channels]
    title = (f"{result.model}  {result.tap.tensor}  {list(result.map_shape)}: top {result.top} "
             f"of {result.images} images per channel")
    notes = [f"crops: the receptive field of each image's maximal activation, in the original "
             f"image ({_field_words(result)}); labels: activation value, file",
             result.preprocess.describe(result.input_channels)]
    if result.skipped:
        notes.append(f"{len(result.skipped)} of {result.files} files skipped (not decodable "
                     "images)")
    dead = [str(ch.channel) for ch in result.channels if ch.all_zero]
    if dead:
        notes.append(f"'all 0': channel(s) {', '.join(dead)} never fire on these images (0 "
                     "everywhere); their tiles are ties in file order")
    notes += [n for n in result.notes if not n.startswith("preset ")]
    return render_examples(rows, labels, row_labels, tile=tile, title=title, notes=notes)


def _field_words(result: ExamplesResult) -> str:
    sizes = sorted({h.input_size for ch in result.channels for h in ch.hits})
    if not sizes:
        return "no hits"
    if len(sizes) == 1:
        where = f"the {sizes[0][0]}x{sizes[0][1]} model input"
    else:
        where = "the model input (its size follows each image)"
    f = result.receptive_field
    if f is None or f.whole_image:
        return f"all of {where}"
    return f"{f.size[0]:g}x{f.size[1]:g} px of {where}, clipped at its borders"


