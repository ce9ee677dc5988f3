"""Activation maximization: the image that most excites a channel, a neuron, a class.

Start from a random image, then take gradient steps that increase the objective, as Lucid
does: the image lives in display space ([0, 1], RGB or grayscale) as a parameterization
(`params.py`: Fourier with decorrelated color by default), is randomly transformed each step
(`transforms.py`: pad, jitter, scale, rotate; the last 1/8 of the steps without, so that the
image also fits the model's exact pixel grid) and resampled to the model's exact input size,
preprocessed like any photo (`images.to_model_input`), and the model's input gradient
(`grad/`) is pushed back through the adjoints of all three to an Adam step (`optim.py`).

`iter_maximize` is the loop as a generator of `Step`s (for progress bars and notebooks);
`maximize` runs it to the end and returns a `Result`.

Batching: several targets on the same tensor(s) are optimized together, one image per batch
item, through one onnxruntime call per step (`objectives.per_item`), up to `batch` items per
run where the model's batch dimension is dynamic; a fixed batch of one runs them in turn.
Every target has its own random generator, seeded from (seed, the target, the variant), so a
target gets the same image alone or batched with others (up to float32 rounding of the batched
onnxruntime kernels).

No silent failure: a target whose gradient is exactly zero at the start (all its activations
dead: the "flat grey image" every AM tool produces now and then) is re-seeded with stronger
noise, then optimized through its pre-activation (the same channel before the ReLU / Clip /
HardSwish / x*sigmoid(x) and the pools after it: the redirected-ReLU idea of Lucid, applied
where the target reads the dead units) until the unit turns on, for at most half the steps.
The same happens to a target at or below zero on an activation that dips below zero (SiLU,
HardSwish, GELU): there plain ascent can slide down the far side of the dip and stall near 0.
If an objective still never moves, the result says so (a warning and `Result.fallback`). The
gradient is checked against finite differences once before a long run.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
import zlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OnnxvizError
from .model import InputContract, Model, load_model
from .objectives import (
    Channel,
    ClassLogit,
    Diversity,
    Neuron,
    Objective,
    Sum,
    channel_axis,
    parse_targets,
    per_item,
    tensor_shape,
)
from .optim import Adam
from .params import KINDS, make_param
from .transforms import Jitter, Pad, no_transforms, sample, transforms_by_name

DEFAULT_STEPS = 512
DEFAULT_SIZE = 128  # canvas side for models with dynamic height/width (Lucid's 128)
DEFAULT_BATCH = 8  # images per onnxruntime call where the batch dim is dynamic
DEFAULT_VARIANTS_WITH_DIVERSITY = 4
LONG_RUN = 64  # runs of at least this many steps get the gradient self-check first
RESEED_STD = (0.1, 0.3)  # init noise of the re-seeds of a flat start (Lucid's init: 0.01)
LUCID_SIZE = 128  # the canvas size Lucid's standard transforms were tuned for
POLISH_FRACTION = 8  # the last 1/8 of the steps run without the random transforms
POLISH_LR_GAIN = 2.0  # ... at this multiple of the step size

__all__ = ["Result", "Step", "auto_decay_power", "evaluate", "iter_maximize", "maximize",
           "preactivation"]


# ---------------------------------------------------------------- results


@dataclass
class Step:
    """One optimization step of one run (a batch of images optimized together).

    index: 0-based step within the run; values: the objective of each image of the run at
    this step (under this step's random transforms; during a redirected start, the
    pre-activation surrogate for the items in `redirected`); image: the display images
    (n, C, H, W) after the step when `every` asked for a snapshot, else None. `done` / `total`
    count steps over all runs (for a progress bar); `result` is set on the very last step.
    """

    index: int
    steps: int
    run: int
    runs: int
    items: tuple[int, ...]
    labels: tuple[str, ...]
    values: np.ndarray
    done: int
    total: int
    image: np.ndarray | None = None
    redirected: tuple[int, ...] = ()
    result: Result | None = None


@dataclass
class Result:
    """What `maximize` made: one image per target (and variant), with the numbers that judge it.

    images: (N, C, H, W) float32 display images in [0, 1] (the canvas); inputs: the final
    model inputs (N, ...) exactly as fed to the model (its layout, size, dtype); values: the
    objective of each final image (no transforms); start: of each starting image; reference:
    of the mean-gray image (0.5 everywhere), for scale; history: (steps, N) objective per step
    under the transforms; seconds: wall time of the run each image belongs to.
    """

    images: np.ndarray
    inputs: np.ndarray
    targets: list[str]
    objectives: list[Objective]
    values: np.ndarray
    start: np.ndarray
    reference: np.ndarray
    history: np.ndarray
    seconds: np.ndarray
    steps: int
    method: str
    input_name: str
    preprocess: object
    canvas: tuple[int, int]
    model_size: tuple[int, int]
    options: dict
    runs: list[tuple[int, ...]] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    variant: list[int] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Tile labels: the target and its final objective."""
        out = []
        for k, t in enumerate(self.targets):
            v = f" #{self.variant[k]}" if self.variant and self.options.get("variants", 1) > 1 \
                else ""
            out.append(f"{t}{v} = {self.values[k]:.3g}")
        return out

    def per_target(self) -> list[dict]:
        """One JSON-ready record per image: start, final, reference objective, steps, time."""
        rows = []
        for k, t in enumerate(self.targets):
            rows.append({
                "target": t, "variant": self.variant[k] if self.variant else 0,
                "start_objective": float(self.start[k]), "final_objective": float(self.values[k]),
                "mean_gray_objective": float(self.reference[k]), "steps": self.steps,
                "seconds": float(self.seconds[k]), "method": self.method,
                "batched_with": len(next((r for r in self.runs if k in r), (k,))),
                "fallback": self.fallback[k] if self.fallback else "",
            })
        return rows

    def to_dict(self) -> dict:
        return {
            "targets": self.per_target(), "method": self.method, "steps": self.steps,
            "input": self.input_name, "canvas": list(self.canvas),
            "model_input_size": list(self.model_size),
            "preprocess": self.preprocess.to_dict() if hasattr(self.preprocess, "to_dict")
            else None,
            "options": self.options, "notes": list(self.notes), "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------- the surrogate of a dead start

# Ops a channel keeps its index through, walking back from the target to its pre-activation.
_SATURATING = frozenset(("Relu", "Clip", "HardSwish", "HardSigmoid", "ThresholdedRelu"))
# Activations that dip below zero, where gradient ascent can slide away from the positive side
# (x * sigmoid(x) below -1.28, HardSwish below -1.5, ...) and get stuck near 0.
_NON_MONOTONE = frozenset(("HardSwish", "Gelu", "Mish", "Swish", "SiLU"))
_GATES = frozenset(("Sigmoid", "HardSigmoid"))  # x * gate(x): SiLU / HardSwish as exported
_POOLS = frozenset(("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"))
_PASS = frozenset(("Identity", "Dropout"))


def _activation_walk(objective: Objective, model: Model) -> tuple[str | None, bool]:
    """(the tensor before the activations that end at the objective's tensor, or None; whether
    one of them dips below zero). Walks back through activations, gated products x * gate(x),
    identities and (for a channel) pools, which all keep the channel index."""
    g = model.graph
    tensor, found, dips = objective.tensor, None, False
    pools = isinstance(objective, Channel)
    for _ in range(64):
        i = g.producer.get(tensor)
        if i is None:
            break
        node = g.nodes[i]
        op = node.op_type
        if op == "Mul" and len(node.input) == 2:
            x = next((a for a, b in (node.input, node.input[::-1])
                      if b in g.producer and g.nodes[g.producer[b]].op_type in _GATES
                      and g.nodes[g.producer[b]].input[:1] == [a]), None)
            if x is None:
                break
            tensor, found, dips = x, x, True
            continue
        if not node.input or not (op in _SATURATING or op in _NON_MONOTONE or op in _PASS
                                  or (pools and op in _POOLS)):
            break
        tensor = node.input[0]
        if op in _SATURATING or op in _NON_MONOTONE:
            found = tensor
            dips = dips or op in _NON_MONOTONE
    return found, dips


def preactivation(objective: Objective, model) -> Objective | None:
    """The same channel (neuron, unit) before the activation that zeroes it, or None.

    Walks back from the objective's tensor through Relu, Clip, HardSwish, HardSigmoid, Gelu,
    x * sigmoid(x) (SiLU as exporters write it) and, for a channel, the pools after them, which
    keep the channel index, to the tensor that feeds the first of them. Maximizing that
    tensor's channel pushes a dead unit towards the point where it turns on, which is what
    Lucid's redirected ReLU gradient does for the first steps. None when the objective is not
    a channel, neuron or unit of an (N, K) tensor, or no activation precedes it.
    """
    if not isinstance(objective, (Channel, Neuron, ClassLogit)):
        return None
    model = load_model(model)
    found, _ = _activation_walk(objective, model)
    if found is None:
        return None
    shape, old = tensor_shape(model, found), tensor_shape(model, objective.tensor)
    if shape is not None and old is not None and len(shape) != len(old):
        return None
    if isinstance(objective, ClassLogit):
        return ClassLogit(found, objective.index, objective.batch)
    axis, reason = channel_axis(model, found, len(shape) if shape is not None else None)
    if isinstance(objective, Channel):
        return Channel(found, objective.channel, axis, objective.batch, axis_reason=reason)
    return Neuron(found, objective.channel, objective.position, axis, objective.batch,
                  axis_reason=reason)


def _dips(objective: Objective, model: Model) -> bool:
    """Whether the objective reads an activation that dips below zero (see _NON_MONOTONE)."""
    if not isinstance(objective, (Channel, Neuron, ClassLogit)):
        return False
    return _activation_walk(objective, model)[1]


# ---------------------------------------------------------------- setup


def _rng_for(seed: int, label: str, variant: int) -> np.random.Generator:
    """Each image's own generator: the same (seed, target, variant) always draws the same."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(label.encode()),
                                  int(variant)])


def _fixed(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def _pair(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size),)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise OnnxvizError(f"size must be N or (H, W) of positive ints, not {size}")
    return size


def auto_decay_power(canvas: tuple[int, int]) -> float:
    """1 (Lucid's) for canvases of 128 pixels or more; log 128 / log side below, so that the
    lowest frequency still weighs ~128 times the highest, as at 128."""
    side = max(2, min(canvas))
    return 1.0 if side >= LUCID_SIZE else math.log(LUCID_SIZE) / math.log(side)


def _scaled_chain(chain: tuple, canvas: tuple[int, int]) -> tuple[tuple, str | None]:
    """Lucid's pixel amounts (pad 12, jitter 8 and 4) are for 128-pixel canvases; on a smaller
    canvas they are scaled down in proportion (at least 1 pixel), so that a 32x32 model is not
    fed a picture shrunk to 60% of its frame."""
    side = min(canvas)
    if side >= LUCID_SIZE or not chain:
        return chain, None
    f = side / LUCID_SIZE
    out = []
    for step in chain:
        if isinstance(step, Pad):
            step = Pad(max(1, round(step.width * f)), step.value)
        elif isinstance(step, Jitter):
            step = Jitter(max(1, round(step.amount * f)))
        out.append(step)
    return tuple(out), (f"transforms' pixel amounts scaled by {side}/{LUCID_SIZE} for the "
                        f"{canvas[0]}x{canvas[1]} canvas")


@dataclass
class _Setup:
    """Everything fixed for a call: model, input contract, sizes, preprocessing, options."""

    model: Model
    contract: InputContract
    contract32: InputContract
    pre: object
    channels: int
    canvas: tuple[int, int]
    model_hw: tuple[int, int]
    chain: tuple
    notes: list[str]

    def input_shape(self, n: int) -> tuple[int, ...]:
        h, w = self.model_hw
        if self.contract.layout == "NHWC":
            return (n, h, w, self.channels)
        return (n, self.channels, h, w)

    def __post_init__(self) -> None:
        """The preprocessing is affine per channel: read its gains, offsets and channel order
        off `to_model_input` once, to apply it in float32 every step."""
        from .images import to_model_input

        c = self.channels
        probe = np.zeros((c + 1, c, 1, 1), np.float64)
        probe[1:, :, 0, 0] = np.eye(c)
        out = np.asarray(to_model_input(probe, self.contract32, self.pre), np.float64)
        if self.contract.layout == "NHWC":
            out = out.transpose(0, 3, 1, 2)
        out = out[:, :, 0, 0]  # (1 + c, model channels)
        offset, delta = out[0], out[1:] - out[0]  # delta[d, m]: display d -> model m
        self._src = np.argmax(np.abs(delta), axis=0)  # model channel m reads display _src[m]
        gain = delta[self._src, np.arange(c)]
        self._gain = gain.astype(np.float32).reshape(1, c, 1, 1)
        self._offset = offset.astype(np.float32).reshape(1, c, 1, 1)

    def to_input(self, display: np.ndarray, exact: bool = False) -> np.ndarray:
        """Display images at the model's size -> the model input: float32 (every step), or
        with exact=True the model's own dtype via `images.to_model_input`."""
        if exact:
            from .images import to_model_input

            return to_model_input(display, self.contract, self.pre)
        x = np.asarray(display, np.float32)[:, self._src]
        x *= self._gain
        x += self._offset
        if self.contract.layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return x

    def grad_to_display(self, g: np.ndarray) -> np.ndarray:
        """The adjoint of `to_input`: a gradient w.r.t. the model input to one w.r.t. the
        display images (N, C, H, W), float32."""
        g = np.asarray(g, np.float32)
        if self.contract.layout == "NHWC":
            g = g.transpose(0, 3, 1, 2)
        out = np.empty(g.shape, np.float32)
        out[:, self._src] = g * self._gain
        return out


def _setup(model: Model, size, preprocess, transforms, input_name: str | None) -> _Setup:
    from .images import Preprocess, choose_preprocess, main_input

    notes: list[str] = []
    if input_name is not None:
        contract = next((c for c in model.summary.inputs if c.name == input_name), None)
        if contract is None:
            names = ", ".join(c.name for c in model.summary.inputs)
            raise OnnxvizError(f"the model has no input named {input_name!r} (inputs: {names})")
    else:
        contract = main_input(model)
    if contract.layout not in ("NCHW", "NHWC"):
        raise OnnxvizError(f"input {contract.name!r} is not an image input "
                           f"({contract.layout_reason}); activation maximization needs one")
    if not contract.dtype.startswith("float"):
        raise OnnxvizError(f"input {contract.name!r} is {contract.dtype}: an integer input has "
                           "no gradient, so it cannot be optimized; export the model with a "
                           "float input")
    channels = contract.channels
    if not channels:
        channels = 3
        notes.append("the model's channel count is unknown; optimizing 3 channels")
    elif channels not in (1, 3):
        notes.append(f"the model takes {channels} channels: all are optimized; pictures show "
                     f"the first {min(channels, 3)}")
    if isinstance(preprocess, Preprocess):
        pre = preprocess
    else:
        pre = choose_preprocess(contract, preprocess)
    notes.extend(pre.notes)
    fh, fw = _fixed(contract.height), _fixed(contract.width)
    asked = _pair(size)
    if asked is None:
        canvas = (fh or DEFAULT_SIZE, fw or DEFAULT_SIZE)
        if not (fh and fw):
            notes.append(f"dynamic spatial size: canvas and model input {canvas[0]}x{canvas[1]} "
                         f"(size {DEFAULT_SIZE}, as Lucid)")
    else:
        canvas = asked
    model_hw = (fh or canvas[0], fw or canvas[1])
    if model_hw != canvas:
        notes.append(f"the {canvas[0]}x{canvas[1]} canvas is resampled to the model's fixed "
                     f"{model_hw[0]}x{model_hw[1]} input")
    chain = transforms_by_name(transforms) if isinstance(transforms, str) else tuple(transforms)
    if isinstance(transforms, str) and transforms == "standard":
        chain, note = _scaled_chain(chain, canvas)
        if note:
            notes.append(note)
    contract32 = dataclasses.replace(contract, dtype="float32")
    return _Setup(model, contract, contract32, pre, channels, canvas, model_hw, chain, notes)


def _init_display(init, setup: _Setup) -> np.ndarray | None:
    """The starting picture (1, C, H, W) in [0, 1] at canvas size, or None for noise."""
    if init is None or (isinstance(init, str) and init == "noise"):
        return None
    from .images import load_pixels, resize_pixels, to_channels

    if isinstance(init, np.ndarray):
        a = np.asarray(init, np.float32)
        if a.ndim == 3:
            a = a[None]
        want = (setup.channels, *setup.canvas)
        if a.ndim != 4 or a.shape[0] != 1 or a.shape[1:] != want:
            raise OnnxvizError(f"an init array must be (C, H, W) = {list(want)} in [0, 1], not "
                               f"{list(a.shape)}")
        return np.clip(a, 0.0, 1.0)
    if not isinstance(init, (str, Path)) and not hasattr(init, "mode"):
        raise OnnxvizError("init must be 'noise', an image file, a PIL image or an array")
    pixels, _ = load_pixels(init)
    pixels = to_channels(pixels, setup.channels)
    resize = setup.pre.resize if setup.pre.resize != "shorter-side" else "center-crop"
    pixels = resize_pixels(pixels, setup.canvas, resize)
    return (pixels / 255.0).transpose(2, 0, 1)[None].astype(np.float32)


def _group(objectives: list[Objective], variants: int, batch: int, diversity: bool
           ) -> list[list[int]]:
    """Runs: lists of image indices optimized together (same tensors; at most `batch`; with
    diversity, exactly one target's variants)."""
    images = [(t, v) for t in range(len(objectives)) for v in range(variants)]
    if diversity:
        return [[k * variants + v for v in range(variants)] for k in range(len(objectives))]
    by_tensors: dict[tuple[str, ...], list[int]] = {}
    for idx, (t, _) in enumerate(images):
        by_tensors.setdefault(tuple(objectives[t].tensors), []).append(idx)
    runs = []
    for members in by_tensors.values():
        runs.extend(members[i:i + batch] for i in range(0, len(members), batch))
    return runs


def _rebind(base, objective: Objective):
    """A GradientFunction for another objective over the same tensors, sharing base's backend
    (and its built sessions): no second gradient model is built."""
    from .grad import GradientFunction

    if tuple(objective.tensors) != tuple(base.targets):
        raise OnnxvizError(f"internal: objective tensors {objective.tensors} differ from the "
                           f"gradient function's {base.targets}")
    return GradientFunction(base.model, objective, base.input_shape, base.input_name,
                            base.method, base.backend, list(base.notes), list(base.warnings),
                            base.providers)


class _Functions:
    """Gradient functions built once per tensor set (and reused for every run over it)."""

    def __init__(self, model: Model, setup: _Setup, method: str, providers) -> None:
        self.model, self.setup, self.method, self.providers = model, setup, method, providers
        self.cache: dict[tuple[str, ...], object] = {}
        self.warnings: list[str] = []

    def get(self, objective: Objective, n: int):
        from .grad import GradientWarning, gradient_function

        key = tuple(objective.tensors)
        base = self.cache.get(key)
        if base is None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", GradientWarning)
                base = gradient_function(self.model, objective, self.setup.input_shape(n),
                                         method=self.method, providers=self.providers,
                                         input_name=self.setup.contract.name)
            for w in caught:
                msg = str(w.message)
                if msg not in self.warnings:
                    self.warnings.append(msg)
            self.cache[key] = base
        return _rebind(base, objective)


# ---------------------------------------------------------------- the loop


def _check_options(steps, lr, param, every, batch, variants, diversity, tv, l2, blur,
                   reseeds, redirect_steps) -> None:
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise OnnxvizError(f"steps must be a positive integer, not {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise OnnxvizError(f"lr must be a positive number, not {lr!r}")
    if param not in KINDS:
        raise OnnxvizError(f"unknown parameterization {param!r}: use one of {', '.join(KINDS)}")
    if every is not None and every < 1:
        raise OnnxvizError(f"every must be a positive number of steps, not {every!r}")
    if batch is not None and batch < 1:
        raise OnnxvizError(f"batch must be at least 1, not {batch!r}")
    if variants is not None and variants < 1:
        raise OnnxvizError(f"variants must be at least 1, not {variants!r}")
    for name, w in (("tv", tv), ("l2", l2), ("blur", blur), ("diversity", diversity)):
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise OnnxvizError(f"the {name} weight must be a number >= 0, not {w!r}")
    if reseeds < 0 or (redirect_steps is not None and redirect_steps < 0):
        raise OnnxvizError("reseeds and redirect_steps must be >= 0")


def iter_maximize(model, objective, *, steps: int = DEFAULT_STEPS,
                  size: int | tuple[int, int] | None = None, lr: float = 0.05,
                  param: str = "fourier", decorrelate: bool = True,
                  transforms: str | tuple = "standard", tv: float = 0.0, l2: float = 0.0,
                  blur: float = 0.0, diversity: float = 0.0, variants: int | None = None,
                  negative: bool = False, init="noise", method: str = "auto",
                  batch: int | None = None, seed: int = 0, every: int | None = None,
                  preprocess=None, providers: Sequence[str] | None = None,
                  input_name: str | None = None, std: float = 0.01,
                  decay_power: float | None = None, check: bool = True,
                  reseeds: int = len(RESEED_STD), redirect_steps: int | None = None,
                  polish: int | None = None) -> Generator[Step, None, Result]:
    """Maximize `objective` on `model`, yielding a `Step` per step (and returning the `Result`,
    also attached to the last step as `step.result`).

    model: a path, bytes, ModelProto or Model (None: the embedded default). objective: a
    target string of the grammar in `onnxviz.objectives` (a channel range gives one image per
    channel), an Objective, or a list of them. Options (the CLI's, same names):
    steps; size: the canvas (N or (H, W); for dynamic model dims also the model input size,
    default 128; fixed dims: the model's size, the canvas resampled to it); lr (Adam); param:
    "fourier" or "pixel"; decorrelate: color decorrelation (3 channels); transforms:
    "standard", "none" or a chain of `transforms` steps; tv, l2, blur: weights of the
    regularizers (per-pixel means, subtracted from the objective); diversity: weight of Lucid's
    diversity term across the `variants` images of each target (default 4 with diversity);
    negative: minimize instead; init: "noise", an image (path or PIL) or a display array,
    e.g. a photo for DeepDream with a layer target; method: gradient backend ("auto",
    "autodiff", "numeric", "ort-training"); batch: images per onnxruntime call (default 8 where
    the batch dim is dynamic, else the model's batch); seed; every: keep a snapshot every N
    steps; preprocess: a `Preprocess`, a preset name or None (the default rule); providers:
    onnxruntime execution providers. std: initial noise; decay_power: of the Fourier
    spectrum's 1/f scaling (default: 1, Lucid's, on canvases of 128 or more; on smaller ones
    log 128 / log side, which keeps the ratio of the lowest to the highest frequency's weight
    what it is at 128, and with it the smoothness); check: run the gradient self-check
    before a long run; reseeds: re-seeds of a flat start; redirect_steps: the most steps a
    flat start is optimized through its pre-activation (default half the steps); polish: the
    last steps run without the random transforms (default 1/8 of the steps, 0 for Lucid's
    recipe throughout), at twice ``lr``: the image then fits the model's exact pixel grid,
    which raises the objective of the final, untransformed image (by 10-40% on real models)
    while the picture hardly changes.
    """
    started = time.perf_counter()
    model = load_model(model)
    _check_options(steps, lr, param, every, batch, variants, diversity, tv, l2, blur, reseeds,
                   redirect_steps)
    objectives = parse_targets(objective, model)
    setup = _setup(model, size, preprocess, transforms, input_name)
    if variants is None:
        variants = DEFAULT_VARIANTS_WITH_DIVERSITY if diversity > 0 else 1
    if diversity > 0 and variants < 2:
        raise OnnxvizError("diversity needs several images per target: set variants >= 2")
    from .grad.numeric import fixed_batch

    fixed = fixed_batch(model, setup.contract.name)
    if batch is None:
        batch = fixed if fixed else DEFAULT_BATCH
    notes = list(setup.notes)
    if polish is None:
        polish = steps // POLISH_FRACTION if setup.chain else 0
    if polish < 0:
        raise OnnxvizError(f"polish must be >= 0 steps, not {polish}")
    if decay_power is None:
        decay_power = auto_decay_power(setup.canvas)
        if decay_power != 1.0:
            notes.append(f"Fourier spectrum decay power {decay_power:.2f} for the "
                         f"{setup.canvas[0]}x{setup.canvas[1]} canvas (1 at {LUCID_SIZE} and "
                         "above)")
    if fixed and batch > fixed:
        notes.append(f"the model's batch dimension is fixed at {fixed}: each step runs the "
                     f"images in turn, {fixed} per onnxruntime call")
    options = {"steps": steps, "size": list(setup.canvas), "lr": lr, "param": param,
               "decorrelate": decorrelate,
               "transforms": transforms if isinstance(transforms, str) else "custom",
               "tv": tv, "l2": l2, "blur": blur, "diversity": diversity, "variants": variants,
               "negative": negative, "init": init if isinstance(init, str) else "image",
               "method": method, "batch": batch, "seed": seed, "std": std,
               "decay_power": decay_power, "polish": polish}
    state = _State(model, setup, objectives, variants, steps, notes, options)
    state.start_image = _init_display(init, setup)
    runs = _group(objectives, variants, batch, diversity > 0)
    functions = _Functions(model, setup, method, providers)
    knobs = _Knobs(lr=lr, param=param, decorrelate=decorrelate, tv=tv, l2=l2, blur=blur,
                   diversity=diversity, negative=negative, seed=seed, every=every, std=std,
                   decay_power=decay_power, reseeds=reseeds, polish=polish,
                   check=check and steps >= LONG_RUN,
                   redirect=redirect_steps if redirect_steps is not None else max(1, steps // 2))
    last: Step | None = None
    for r, items in enumerate(runs):
        run = _Run(state, functions, knobs, r, len(runs), items)
        for step in run.steps():
            if last is not None:
                yield last
            last = step
        knobs.check = False  # the self-check runs once, before the first run
    result = state.result([tuple(items) for items in runs])
    result.notes.append(f"{len(runs)} run(s), {time.perf_counter() - started:.1f} s in all")
    if last is not None:
        last.result = result
        yield last
    return result


@dataclass
class _Knobs:
    """The optimization options one run needs."""

    lr: float
    param: str
    decorrelate: bool
    tv: float
    l2: float
    blur: float
    diversity: float
    negative: bool
    seed: int
    every: int | None
    std: float
    decay_power: float
    reseeds: int
    polish: int
    check: bool
    redirect: int


class _State:
    """The images and numbers of a whole call, filled in run by run."""

    def __init__(self, model: Model, setup: _Setup, objectives: list[Objective], variants: int,
                 steps: int, notes: list[str], options: dict) -> None:
        self.model, self.setup, self.objectives = model, setup, objectives
        self.labels = [str(o) for o in objectives]
        n = len(objectives) * variants
        self.target_of = [k // variants for k in range(n)]
        self.variant_of = [k % variants for k in range(n)]
        self.steps, self.notes, self.options = steps, notes, options
        c, (h, w) = setup.channels, setup.canvas
        self.images = np.zeros((n, c, h, w), np.float32)
        self.inputs: list[np.ndarray | None] = [None] * n
        self.values, self.start, self.reference = np.zeros(n), np.zeros(n), np.zeros(n)
        self.seconds = np.zeros(n)
        self.history = np.zeros((steps, n))
        self.fallback = [""] * n
        self.warnings: list[str] = []
        self.method: str | None = None
        self.start_image: np.ndarray | None = None

    def warn(self, msg: str) -> None:
        from .grad import GradientWarning

        if msg not in self.warnings:
            self.warnings.append(msg)
            warnings.warn(msg, GradientWarning, stacklevel=5)

    def add_fallback(self, k: int, text: str) -> None:
        self.fallback[k] = f"{self.fallback[k]}; {text}" if self.fallback[k] else text

    def result(self, runs: list[tuple[int, ...]]) -> Result:
        return Result(
            images=self.images, inputs=np.stack(self.inputs),
            targets=[self.labels[t] for t in self.target_of],
            objectives=[self.objectives[t] for t in self.target_of], values=self.values,
            start=self.start, reference=self.reference, history=self.history,
            seconds=self.seconds, steps=self.steps, method=self.method or "?",
            input_name=self.setup.contract.name, preprocess=self.setup.pre,
            canvas=self.setup.canvas, model_size=self.setup.model_hw, options=self.options,
            runs=runs, fallback=self.fallback, notes=self.notes, warnings=self.warnings,
            variant=self.variant_of)


def _with_tensors(objective: Objective, tensors: Sequence[str]) -> Objective:
    """The objective, reading `tensors` in this order (zero-weight terms where it does not
    read one), so that every mix of targets and surrogates shares one gradient model."""
    lead = tuple((0.0, ClassLogit(t, 0)) for t in tensors)
    return Sum(lead + tuple(objective.terms if isinstance(objective, Sum)
                            else ((1.0, objective),)))


class _Run:
    """One batch of images optimized together: start (with the flat-start fallback), ascent,
    final numbers."""

    CHECK_EVERY = 4  # steps between checks whether a redirected unit has turned on

    def __init__(self, state: _State, functions: _Functions, knobs: _Knobs, index: int,
                 runs: int, items: list[int]) -> None:
        self.state, self.functions, self.knobs = state, functions, knobs
        self.index, self.runs, self.items = index, runs, list(items)
        s = state
        self.objs = [s.objectives[s.target_of[k]] for k in items]
        self.labels = tuple(s.labels[s.target_of[k]] for k in items)
        self.rngs = [_rng_for(knobs.seed, s.labels[s.target_of[k]], s.variant_of[k])
                     for k in items]
        n, setup = len(items), s.setup
        self.shape = (n, setup.channels, *setup.canvas)
        self.param = self._param(self.shape, knobs.std)
        self.plain = sample(no_transforms(), np.random.default_rng(0), setup.canvas,
                            setup.model_hw)
        self.base = per_item(self.objs)
        self.eval_fn = functions.get(self.base, n)
        for msg in functions.warnings:
            s.warn(msg)
        s.method = self.eval_fn.method
        self.extra = None  # the diversity term, added to every step's objective
        if knobs.diversity > 0:
            tensor = self.objs[0].tensors[0]
            axis = getattr(self.objs[0], "axis", None)
            if axis is None:
                axis, _ = channel_axis(s.model, tensor)
            self.extra = knobs.diversity * Diversity(tensor, axis)
        self.step_fn = self.eval_fn
        if self.extra is not None:
            self.step_fn = _rebind(self.eval_fn, self.base + self.extra)
        self.surrogates: list[Objective | None] = [None] * n
        self.dead: set[int] = set()

    def _param(self, shape: tuple[int, ...], std: float):
        k = self.knobs
        return make_param(k.param, shape, decorrelate=k.decorrelate, std=std,
                          decay_power=k.decay_power)

    def _start_params(self) -> np.ndarray:
        one = self._param((1, *self.shape[1:]), self.knobs.std)
        noise = np.concatenate([one.init(rg) for rg in self.rngs])
        if self.state.start_image is None:
            return noise
        # a photo start is the same for every image: each adds its own small noise
        return np.repeat(one.from_image(self.state.start_image), len(self.items), 0) + noise

    def _start(self, p: np.ndarray) -> np.ndarray:
        """Values and flat flags at the start; re-seeds and redirects flat images."""
        s, knobs, n = self.state, self.knobs, len(self.items)
        x0 = s.setup.to_input(self.plain.apply(self.param.image(p)))
        v0, g0 = self.eval_fn(x0)
        flat = [not np.any(g0[i]) for i in range(n)]
        start_is_noise = s.start_image is None
        tries = 0
        while any(flat) and s.start_image is None and tries < knobs.reseeds:
            std = RESEED_STD[min(tries, len(RESEED_STD) - 1)]
            strong = self._param((1, *self.shape[1:]), std)
            for i in range(n):
                if flat[i]:
                    p[i] = strong.init(self.rngs[i])[0]
            tries += 1
            x0 = s.setup.to_input(self.plain.apply(self.param.image(p)))
            v0, g0 = self.eval_fn(x0)
            for i in range(n):
                if flat[i]:
                    flat[i] = not np.any(g0[i])
                    s.fallback[self.items[i]] = f"re-seeded {tries}x (std {std:g})"
        for i, k in enumerate(self.items):
            s.start[k] = v0[i]
        self.start_values = np.asarray(v0, np.float64).copy()
        for i in range(n):
            # at or below zero on an activation that dips below zero, ascent can slide down
            # the far side of the dip and stall near 0: start through the pre-activation too
            stuck = (not flat[i] and v0[i] <= 0 and start_is_noise
                     and _dips(self.objs[i], s.model))
            if not (flat[i] or stuck):
                continue
            why = "zero gradient at the start" if flat[i] else (
                f"objective {v0[i]:.3g} <= 0 at the start on an activation that dips below 0")
            if knobs.negative:
                if flat[i]:
                    s.add_fallback(self.items[i], f"{why} (minimizing: not redirected)")
                continue
            sur = preactivation(self.objs[i], s.model)
            if sur is None:
                s.add_fallback(self.items[i], f"{why} and no pre-activation to redirect to")
                continue
            self.surrogates[i] = sur
            self.dead.add(i)
            s.add_fallback(self.items[i], f"{why}: optimized through the pre-activation {sur}")
        self.redirect_fn = self._redirect_function() if self.dead else None
        return x0

    def _redirect_function(self):
        """The gradient function of the run with the dead images on their surrogates; it reads
        every tensor of the run and its surrogates in one fixed order, so that its gradient
        model is built once however the dead set shrinks."""
        objs = [self.surrogates[i] if i in self.dead else o for i, o in enumerate(self.objs)]
        obj = per_item(objs)
        if self.extra is not None:
            obj = obj + self.extra
        everything = [*self.objs, *(o for o in self.surrogates if o is not None)]
        tensors = tuple(dict.fromkeys(t for o in everything for t in o.tensors))
        return self.functions.get(_with_tensors(obj, tensors), len(objs))

    def _self_check(self, x0: np.ndarray) -> None:
        from .grad.check import check_function

        s, fn = self.state, self.eval_fn
        try:
            res = check_function(fn, x0)
        except OnnxvizError as exc:
            s.warn(f"the gradient self-check could not run: {exc}")
            return
        if res.passed:
            s.notes.append(f"gradient self-check passed (cosine {res.cosine:.6f}, max rel. "
                           f"error {res.max_rel_error:.2g}, {res.forwards} forwards)")
        else:
            s.warn(f"the {fn.method} gradient disagrees with finite differences before the run "
                   f"(max rel. error {res.max_rel_error:.2g}, cosine {res.cosine:.4f}); the "
                   "images may not maximize the target")

    def steps(self) -> Generator[Step, None, None]:
        s, knobs, setup = self.state, self.knobs, self.state.setup
        t_run = time.perf_counter()
        p = self._start_params()
        x0 = self._start(p)
        if knobs.check:
            self._self_check(x0)
        opt = Adam(lr=knobs.lr, ascent=not knobs.negative)
        sign = -1.0 if knobs.negative else 1.0
        cols = list(self.items)
        polish_from = s.steps - knobs.polish
        for t in range(s.steps):
            if t == polish_from:
                opt.lr *= POLISH_LR_GAIN
            fn = self.redirect_fn if self.dead else self.step_fn
            img, back = self.param.image_and_vjp(p)
            sampled = _draw(setup, self.rngs) if t < polish_from else self.plain
            x = setup.to_input(sampled.apply(img))
            vals, gx = fn(x)
            g = sampled.adjoint(setup.grad_to_display(gx))
            _regularize(g, img, knobs.tv, knobs.l2, knobs.blur, sign)
            opt.step(p, back(g))
            redirected = tuple(self.items[i] for i in sorted(self.dead))
            if self.dead:
                vals = self._check_dead(x, t, vals)
            s.history[t, cols] = vals
            if t == 0 and fn.method == "numeric" and self.index == 0:
                per_step = time.perf_counter() - t_run
                s.warn(f"numeric gradients: about {per_step:.2g} s per step, so about "
                       f"{_fmt_seconds(per_step * s.steps * self.runs)} in all")
            snap = None
            if knobs.every and ((t + 1) % knobs.every == 0 or t + 1 == s.steps):
                snap = self.param.image(p)
            yield Step(index=t, steps=s.steps, run=self.index, runs=self.runs,
                       items=tuple(self.items), labels=self.labels,
                       values=np.asarray(vals, np.float64).copy(),
                       done=self.index * s.steps + t + 1, total=self.runs * s.steps,
                       image=snap, redirected=redirected)
        self._finish(p, time.perf_counter() - t_run)

    def _check_dead(self, x: np.ndarray, t: int, vals: np.ndarray) -> np.ndarray:
        """Every few steps: which redirected units turned on (their true objective moved)?
        Those go back to their own objective; at the redirect limit all do. Returns the
        values to record (the true objective where it was just measured)."""
        last = t + 1 >= self.knobs.redirect
        if (t + 1) % self.CHECK_EVERY and not last:
            return vals
        true = self.eval_fn.value(x)
        woke = {i for i in self.dead if true[i] > max(self.start_values[i], 0.0)}
        for i in woke:
            self.state.add_fallback(self.items[i], f"the unit turned on at step {t + 1}")
        if last:
            for i in self.dead - woke:
                self.state.add_fallback(self.items[i], f"still off at step {t + 1}, back to the "
                                                       "target")
            woke = set(self.dead)
        if woke:
            self.dead -= woke
            self.redirect_fn = self._redirect_function() if self.dead else None
        out = np.array(vals, np.float64)
        out[sorted(woke)] = true[sorted(woke)]
        return out

    def _finish(self, p: np.ndarray, elapsed: float) -> None:
        s, setup, n = self.state, self.state.setup, len(self.items)
        final = self.param.image(p)
        x_final = self.plain.apply(final)
        vf = self.eval_fn.value(setup.to_input(x_final))
        gray = np.full((n, setup.channels, *setup.model_hw), 0.5, np.float32)
        vref = self.eval_fn.value(setup.to_input(gray))
        exact = setup.to_input(x_final, exact=True)
        for i, k in enumerate(self.items):
            s.images[k], s.values[k], s.reference[k] = final[i], vf[i], vref[i]
            s.seconds[k], s.inputs[k] = elapsed, exact[i]
            moved = vf[i] != s.start[k] or (self.surrogates[i] is None
                                            and bool(np.ptp(s.history[:, k]) > 0))
            if not moved:
                s.warn(f"{s.labels[s.target_of[k]]}: the objective never moved from "
                       f"{s.start[k]:.4g}: its gradient was zero throughout"
                       + (f" ({s.fallback[k]})" if s.fallback[k] else "")
                       + "; the unit may be dead for every input")
                s.add_fallback(k, "never moved")


def _draw(setup: _Setup, rngs: list[np.random.Generator]):
    """One transform draw per image, each from its own generator, as one batched `Sampled`."""
    parts = [sample(setup.chain, rg, setup.canvas, setup.model_hw) for rg in rngs]
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return dataclasses.replace(first, warps=[s.warps[0] for s in parts],
                               draws=[s.draws[0] for s in parts])


def _regularize(g: np.ndarray, img: np.ndarray, tv: float, l2: float, blur: float,
                sign: float) -> None:
    """g += d(-sum of weighted penalties)/d img (ascent; for descent the penalties add)."""
    from . import regularizers

    for weight, fn in ((tv, regularizers.total_variation), (l2, regularizers.l2),
                       (blur, regularizers.blur_penalty)):
        if weight:
            _, grad = fn(img)
            g -= (sign * weight) * grad.astype(g.dtype, copy=False)


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def maximize(model, objective, **options) -> Result:
    """Run `iter_maximize` to the end and return its `Result` (see there for the options)."""
    result = None
    for step in iter_maximize(model, objective, **options):
        result = step.result
    if result is None:  # pragma: no cover - the generator always attaches it
        raise OnnxvizError("internal: the maximization produced no result")
    return result



# ---------------------------------------------------------------- judging the result


def evaluate(model, objective, images, *, size: int | tuple[int, int] | None = None,
             preprocess=None, input_name: str | None = None,
             providers: Sequence[str] | None = None) -> np.ndarray:
    """The objectives on other images, prepared exactly as `maximize` prepares its own: for
    comparing a maximized image with photos and noise.

    images: a list of image files / PIL images (resized to the model input size, cropping the
    center) or an array of display images (N, C, H, W) in [0, 1] (resampled to that size).
    Returns (objectives, images) float64: row k is objective k (a target string expands as in
    `maximize`), evaluated with one forward run per chunk of images.
    """
    from .grad.numeric import ForwardRunner
    from .images import load_pixels, resize_pixels, to_channels

    model = load_model(model)
    objectives = parse_targets(objective, model)
    setup = _setup(model, size, preprocess, "none", input_name)
    if isinstance(images, np.ndarray):
        display = np.asarray(images, np.float32)
        if display.ndim != 4 or display.shape[1] != setup.channels:
            raise OnnxvizError(f"display images must be (N, {setup.channels}, H, W), not "
                               f"{list(display.shape)}")
        if tuple(display.shape[2:]) != setup.model_hw:
            resize = sample(no_transforms(), np.random.default_rng(0), display.shape[2:],
                            setup.model_hw)
            display = resize.apply(display)
    else:
        planes = []
        for source in images:
            pixels, _ = load_pixels(source)
            pixels = to_channels(pixels, setup.channels)
            pixels = resize_pixels(pixels, setup.model_hw, "center-crop")
            planes.append((pixels / 255.0).transpose(2, 0, 1))
        display = np.stack(planes).astype(np.float32)
    tensors = list(dict.fromkeys(t for o in objectives for t in o.tensors))
    runner = ForwardRunner(model, tensors, setup.input_shape(display.shape[0]),
                           setup.contract.name, providers, chunk=16)
    acts = dict(zip(tensors, runner(setup.to_input(display)), strict=True))
    return np.stack([o.value(acts) for o in objectives])
