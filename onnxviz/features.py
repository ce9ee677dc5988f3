"""Feature maps: what each layer computes for one input, from one onnxruntime run.

The chosen tensors ("taps") are exposed as extra graph outputs (`rewrite.expose_tensors`) and the
model runs once. By default a layer's tap is the tensor after its activation (walking through
BatchNormalization / constant Add, Mul... to Relu, Clip, Sigmoid, the SiLU/HardSwish/GELU
patterns x * f(x), and a QuantizeLinear after it): what the next layer reads, and exposing it
keeps onnxruntime's Conv+BN+activation fusions intact (a pre-activation tap breaks them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from PIL import Image

from .errors import OnnxvizError
from .graph import Graph, NotConstant
from .images import PreparedInputs, Preprocess, prepare_inputs
from .model import Model, inferred_shapes, load_model
from .rewrite import expose_tensors, input_dependent, resolve_exposable

ACTIVATIONS = frozenset((
    "Relu LeakyRelu PRelu Clip Sigmoid HardSigmoid HardSwish Tanh Elu Selu Celu Softplus "
    "Softsign Gelu Mish ThresholdedRelu Swish QuickGelu FastGelu BiasGelu QLinearSigmoid "
    "QLinearLeakyRelu"
).split())
# Elementwise ops with one constant operand that sit between a conv and its activation
# (bias, a BatchNormalization decomposed by the exporter, a learned scale).
AFFINE = frozenset(("Add", "Sub", "Mul", "Div"))
PASS = frozenset(("BatchNormalization", "Identity", "Cast"))
INTEGER_LAYERS = frozenset(("ConvInteger", "MatMulInteger"))
# Unary / constant-operand ops that may form the gate f(x) of an x * f(x) activation.
GATE_OPS = frozenset(("Sigmoid", "HardSigmoid", "Tanh", "Softplus", "Erf", "Relu", "Clip",
                      "Add", "Sub", "Mul", "Div", "Min", "Max", "Exp", "Neg"))
FLOAT_DTYPES = ("float32", "float16", "float64", "bfloat16")
# Producer op -> (input index of the output's scale, of its zero point).
QUANT_OUTPUT = {"QuantizeLinear": (1, 2), "QLinearConv": (6, 7), "QLinearMatMul": (6, 7),
                "QLinearAdd": (6, 7), "QLinearMul": (6, 7), "QLinearSigmoid": (3, 4),
                "QLinearLeakyRelu": (3, 4), "QLinearAveragePool": (3, 4),
                "QLinearGlobalAveragePool": (3, 4), "QLinearConcat": (0, 1)}


@dataclass
class Tap:
    """A tensor chosen for viewing and why."""

    tensor: str
    node: str  # name of the node that produces it
    op: str
    layer: str | None = None  # the layer (from `inspect`) it belongs to
    why: str = ""


@dataclass
class FeatureMap:
    """One tapped tensor's values (fp16 as float32, quantized integers dequantized)."""

    tap: Tap
    values: np.ndarray
    source_dtype: str
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- choosing taps

def _is_const(g: Graph, live: set[str], name: str) -> bool:
    return bool(name) and name not in live


def _single_user(g: Graph, tensor: str, outputs: set[str]) -> onnx.NodeProto | None:
    users = g.consumers.get(tensor, [])
    if len(users) != 1 or tensor in outputs:
        return None
    return g.nodes[users[0]]


def _gate_name(chain: list[onnx.NodeProto]) -> str:
    ops = {n.op_type for n in chain}
    if ops == {"Sigmoid"}:
        return "SiLU x*Sigmoid(x)"
    if "HardSigmoid" in ops or "Clip" in ops:
        return "HardSwish x*relu6(x+3)/6"
    if "Erf" in ops:
        return "GELU x*Phi(x)"
    if {"Tanh", "Softplus"} <= ops:
        return "Mish x*tanh(softplus(x))"
    return "gate x*f(x) with f = " + "/".join(n.op_type for n in reversed(chain))


def _gate(g: Graph, live: set[str], tensor: str, outputs: set[str]
          ) -> tuple[onnx.NodeProto, str, list[onnx.NodeProto]] | None:
    """The Mul of an x * f(x) activation on `tensor` (SiLU, HardSwish, GELU, Mish...), its
    name and the nodes of f, if the tensor's other users all belong to f."""
    users = [g.nodes[i] for i in g.consumers.get(tensor, [])]
    if tensor in outputs or len(users) < 2:
        return None
    muls = [n for n in users if n.op_type == "Mul" and tensor in n.input]
    for mul in muls:
        other = next((x for x in mul.input if x != tensor), None)
        if other is None:
            continue
        chain: list[onnx.NodeProto] = []
        cur = other
        for _ in range(6):
            if cur not in g.producer:
                break
            node = g.nodes[g.producer[cur]]
            if node.op_type not in GATE_OPS:
                break
            dynamic = [x for x in node.input if x and not _is_const(g, live, x)]
            if len(dynamic) != 1:
                break
            chain.append(node)
            cur = dynamic[0]
            if cur == tensor:
                rest = [n for n in users if n is not mul]
                if all(any(n is c for c in chain) for n in rest):
                    return mul, _gate_name(chain), chain
                break
    return None


def post_activation(g: Graph, live: set[str], tensor: str, integer: bool = False
                    ) -> tuple[str, list[str], list[str]]:
    """The tensor after the bias/BN and the activation that follow `tensor`, the ops walked,
    and the tensors passed on the way (`tensor` itself, BN outputs, activation gates: what
    onnxruntime fuses into one kernel). Stops wherever the path branches (a residual, a graph
    output). `integer`: the tensor comes from ConvInteger/MatMulInteger, whose Cast ->
    Mul(scale) dequantizes it even when the scale is computed at run time."""
    outputs = {o.name for o in g.outputs}
    path: list[str] = []
    inner: list[str] = []
    t = tensor
    for _ in range(8):
        node = _single_user(g, t, outputs)
        if node is None:
            break
        passes = node.op_type in PASS and node.input[0] == t
        affine = (node.op_type in AFFINE and list(node.input).count(t) == 1
                  and all(x == t or _is_const(g, live, x) for x in node.input))
        rescale = integer and node.op_type == "Mul" and path == ["Cast"]
        if not (passes or affine or rescale):
            break
        path.append(node.op_type)
        inner.append(t)
        t = node.output[0]
    node = _single_user(g, t, outputs)
    if node is not None and node.op_type in ACTIVATIONS and node.input[0] == t:
        path.append(node.op_type)
        inner.append(t)
        t = node.output[0]
    else:
        gate = _gate(g, live, t, outputs)
        if gate is not None:
            mul, name, chain = gate
            path.append(name)
            inner += [t, *(n.output[0] for n in chain)]
            t = mul.output[0]
            after = _single_user(g, t, outputs)  # HardSwish's /6, GELU's *0.5
            if after is not None and after.op_type in ("Div", "Mul") and _scalar_const(
                    g, live, after, t, {"Div": (6.0,), "Mul": (0.5, 1 / 6)}[after.op_type]):
                path.append(after.op_type)
                inner.append(t)
                t = after.output[0]
    node = _single_user(g, t, outputs)
    if node is not None and node.op_type == "QuantizeLinear" and node.input[0] == t:
        path.append("QuantizeLinear")
        inner.append(t)
        t = node.output[0]
    return t, path, inner


def _scalar_const(g: Graph, live: set[str], node: onnx.NodeProto, t: str,
                  values: tuple[float, ...]) -> bool:
    other = next((x for x in node.input if x != t), None)
    if other is None or not _is_const(g, live, other) or node.input[0] != t:
        return False
    try:
        v = np.asarray(g.constant(other), np.float64)
    except NotConstant:
        return False
    return v.size == 1 and any(abs(float(v.ravel()[0]) - x) < 1e-6 for x in values)


def default_taps(model: Model) -> list[Tap]:
    """The post-activation output of every layer in `inspect`'s table, in graph order."""
    g = model.graph
    live = input_dependent(g)
    taps: list[Tap] = []
    seen: set[str] = set()
    for layer in model.summary.layers:
        if layer.output not in live:
            continue
        tensor, path, _ = post_activation(g, live, layer.output, layer.op in INTEGER_LAYERS)
        if tensor in seen:
            continue
        seen.add(tensor)
        node = g.nodes[g.producer[tensor]]
        why = " -> ".join([layer.op, *path]) if path else f"{layer.op} output"
        taps.append(Tap(tensor, g.names[g.producer[tensor]], node.op_type, layer.name, why))
    return taps


def fused_internals(model: Model, live: set[str] | None = None) -> set[str]:
    """Tensors that onnxruntime computes inside one fused kernel and that exposing would split:
    each layer's output before its bias/BN/activation (and the activation's gate, e.g. the
    Sigmoid of SiLU), and float tensors that only feed a QuantizeLinear (QDQ models)."""
    g = model.graph
    live = input_dependent(g) if live is None else live
    inner: set[str] = set()
    for layer in model.summary.layers:
        if layer.output in live:
            tap, _, passed = post_activation(g, live, layer.output, layer.op in INTEGER_LAYERS)
            inner.update(t for t in passed if t != tap)
    for i, node in enumerate(g.nodes):
        if node.op_type == "QuantizeLinear" and node.input[0] in live:
            users = g.consumers.get(node.input[0], [])
            if users == [i]:
                inner.add(node.input[0])
        if node.op_type == "DequantizeLinear" and node.input[0] in live:
            inner.add(node.output[0])  # shown as the quantized tensor it reads
    return inner


def all_taps(model: Model, every: bool = False) -> list[Tap]:
    """Every floating-point tensor of rank >= 3 computed from the input, in graph order, except
    (unless `every`) the insides of fused conv -> BN -> activation chains (`fused_internals`):
    exposing those breaks onnxruntime's fusions and costs far more than the tensors
    themselves. QDQ models show their quantized activations (dequantized) instead of the
    DequantizeLinear outputs. `--layer NAME` still shows any of the skipped tensors."""
    g = model.graph
    live = input_dependent(g)
    shapes = inferred_shapes(model.proto)
    skip = set() if every else fused_internals(model, live)
    taps = []
    for i, node in enumerate(g.nodes):
        for out in node.output:
            shape, dtype = shapes.get(out, (None, ""))
            if not out or out not in live or out in skip or shape is None or len(shape) < 3:
                continue
            quantized = (not every and node.op_type == "QuantizeLinear"
                         and node.input[0] in skip)
            if dtype in FLOAT_DTYPES or quantized:
                taps.append(Tap(out, g.names[i], node.op_type, None, "--all"))
    return taps


def named_taps(model: Model, names: Sequence[str]) -> list[Tap]:
    """Taps for node or tensor names (a node name means its first output), validated."""
    g = model.graph
    by_output = {x.output: x.name for x in model.summary.layers}
    taps = []
    for tensor in resolve_exposable(g, names):  # node names first, as in `inspect`
        i = g.producer[tensor]
        taps.append(Tap(tensor, g.names[i], g.nodes[i].op_type, by_output.get(tensor),
                        "--layer"))
    return taps


def choose_taps(model: Model, layers: str | Sequence[str] | None = None) -> list[Tap]:
    """None: default layers; "all": every float tensor of rank >= 3 but the insides of fused
    layer chains (`all_taps`); "every": all of them; names: those tensors."""
    if layers is None:
        taps = default_taps(model)
        if not taps:
            raise OnnxvizError("the model has no conv or dense layers with constant weights to "
                               "show; name tensors with --layer NAME or use --all")
        return taps
    if isinstance(layers, str):
        if layers in ("all", "every"):
            taps = all_taps(model, every=layers == "every")
            if not taps:
                raise OnnxvizError("no floating-point tensor of rank >= 3 with a known type in "
                                   "the model; name tensors with --layer NAME")
            return taps
        layers = [layers]
    return named_taps(model, list(layers))


# ---------------------------------------------------------------- running

def quantization_params(g: Graph, tensor: str) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    """(scale, zero point, axis) the graph gives an integer tensor: from the op that produces
    it (QuantizeLinear, QLinearConv...) or a DequantizeLinear that reads it; None if neither."""
    candidates: list[tuple[onnx.NodeProto, int, int]] = []
    if tensor in g.producer:
        node = g.nodes[g.producer[tensor]]
        if node.op_type in QUANT_OUTPUT and node.output[0] == tensor:
            candidates.append((node, *QUANT_OUTPUT[node.op_type]))
    for i in g.consumers.get(tensor, []):
        node = g.nodes[i]
        if node.op_type == "DequantizeLinear" and node.input[0] == tensor:
            candidates.append((node, 1, 2))
    for node, si, zi in candidates:
        try:
            scale = np.asarray(g.constant(node.input[si]), np.float32)
            zp = (np.asarray(g.constant(node.input[zi]))
                  if len(node.input) > zi and node.input[zi] else None)
        except (NotConstant, IndexError):
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        return scale, zp, axis
    return None


def _dequantize(values: np.ndarray, scale: np.ndarray, zp: np.ndarray | None,
                axis: int) -> np.ndarray:
    x = values.astype(np.float32)
    z = np.zeros((), np.float32) if zp is None else zp.astype(np.float32)
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale, z = scale.reshape(shape), (z.reshape(shape) if z.size > 1 else z)
    return (x - z) * scale


def to_float(values: np.ndarray, g: Graph, tensor: str) -> tuple[np.ndarray, list[str]]:
    """fp16/bf16 to float32; integers dequantized where the graph says how."""
    dtype = values.dtype
    if dtype == np.float16 or dtype.name == "bfloat16":
        return values.astype(np.float32), []
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        q = quantization_params(g, tensor)
        if q is not None:
            return _dequantize(values, *q), [f"dequantized from {dtype} with the graph's scale "
                                             "and zero point"]
        return values, [f"{dtype} tensor kept as is (no scale/zero point in the graph)"]
    return values, []


def exposed_session(model: Model, taps: Sequence[Tap], providers: Sequence[str] | None = None,
                    threads: int | None = None):
    """An onnxruntime session of the model with the taps exposed as outputs."""
    from .runtime import make_session

    proto = expose_tensors(model, [t.tensor for t in taps], exact=True)
    return make_session(proto, providers=providers, threads=threads)


def iter_feature_maps(model: Model, feeds: dict[str, np.ndarray], taps: Sequence[Tap],
                      providers: Sequence[str] | None = None, threads: int | None = None,
                      session=None) -> Iterator[FeatureMap]:
    """Run once and yield the taps one by one, in order. Each array is released here once
    yielded, so a consumer that renders and drops layers holds one copy of the activations
    at most (onnxruntime's outputs), shrinking as it goes."""
    from .runtime import run

    if not taps:
        return
    session = session or exposed_session(model, taps, providers, threads)
    values = run(session, feeds, [t.tensor for t in taps])
    for k, tap in enumerate(taps):
        yield _take(values, k, model.graph, tap)  # no local keeps the array once yielded


def _take(values: list, k: int, g: Graph, tap: Tap) -> FeatureMap:
    raw, values[k] = values[k], None
    converted, notes = to_float(raw, g, tap.tensor)
    return FeatureMap(tap, converted, str(raw.dtype), notes)


# ---------------------------------------------------------------- statistics

@dataclass
class LayerStats:
    """Statistics of one feature map (over the batch); channels along axis 1."""

    shape: list[int]
    min: float
    max: float
    mean: float
    zero_fraction: float
    nonfinite: int
    channels: int
    dead_channels: list[int]  # all exactly zero on this input
    channel_mean: list[float]
    channel_max: list[float]

    def to_dict(self) -> dict:
        return {"shape": self.shape, "min": self.min, "max": self.max, "mean": self.mean,
                "zero_fraction": self.zero_fraction, "nonfinite": self.nonfinite,
                "channels": self.channels, "dead_channels": self.dead_channels,
                "channel_mean": self.channel_mean, "channel_max": self.channel_max}


def _r(x: float) -> float:
    return float(f"{float(x):.6g}")


def layer_stats(values: np.ndarray) -> LayerStats:
    """min/max/mean, fraction of exact zeros, dead channels, per-channel mean and max."""
    v = np.asarray(values)
    if v.size == 0:
        return LayerStats(list(v.shape), float("nan"), float("nan"), float("nan"), 0.0, 0, 0,
                          [], [], [])
    if not np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
    finite = np.isfinite(v)
    nonfinite = int(v.size - np.count_nonzero(finite))
    vf = v if nonfinite == 0 else np.where(finite, v, np.nan)
    reduce_min, reduce_max, reduce_mean = ((np.min, np.max, np.mean) if nonfinite == 0
                                           else (np.nanmin, np.nanmax, np.nanmean))
    if v.ndim >= 2:
        per = vf.reshape(v.shape[0], v.shape[1], -1)
        cmax = reduce_max(per, axis=(0, 2))
        cmin = reduce_min(per, axis=(0, 2))
        cmean = reduce_mean(per, axis=(0, 2), dtype=np.float64)
        dead = [int(c) for c in np.flatnonzero((cmax == 0) & (cmin == 0))]
        channels = v.shape[1]
    else:
        cmax = cmean = np.array([])
        dead, channels = [], 0
    return LayerStats(
        shape=list(v.shape), min=_r(reduce_min(vf)), max=_r(reduce_max(vf)),
        mean=_r(reduce_mean(vf, dtype=np.float64)),
        zero_fraction=_r(1.0 - np.count_nonzero(v) / v.size), nonfinite=nonfinite,
        channels=channels, dead_channels=dead, channel_mean=[_r(x) for x in cmean],
        channel_max=[_r(x) for x in cmax])


# ---------------------------------------------------------------- the Python API

ImageOrTensor = str | os.PathLike | Image.Image | np.ndarray | dict


def prepare(model: Model, image_or_tensor: ImageOrTensor,
            preprocess: Preprocess | str | None = None) -> PreparedInputs:
    """Feeds from an image (path or PIL image), a ready tensor for the main input (array or
    .npy path), or a dict of input name (None = main input) -> array or .npy path."""
    if isinstance(image_or_tensor, dict):
        return prepare_inputs(model, tensors=image_or_tensor)
    if isinstance(image_or_tensor, np.ndarray):
        return prepare_inputs(model, tensors={None: image_or_tensor})
    if isinstance(image_or_tensor, (str, os.PathLike)) and \
            str(image_or_tensor).lower().endswith(".npy"):
        return prepare_inputs(model, tensors={None: image_or_tensor})
    return prepare_inputs(model, image=image_or_tensor, preprocess=preprocess)


def feature_maps(model, image_or_tensor: ImageOrTensor,
                 layers: str | Sequence[str] | None = None,
                 preprocess: Preprocess | str | None = None,
                 providers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Feature maps of `model` (path, bytes, ModelProto, Model; None = the default model) for
    one image or ready tensor, keyed by tensor name, batch dimension kept.

    layers: None = the post-activation output of every layer in `inspect`'s table; "all" =
    every floating-point tensor of rank >= 3; or node/tensor names. preprocess: a `Preprocess`,
    a preset name ("unit", "imagenet", "raw255", "caffe", "tf"), or None for the default rule
    (`images.DEFAULT_RULE`). fp16 maps come back as float32, quantized ones dequantized.
    """
    loaded = load_model(model)
    prepared = prepare(loaded, image_or_tensor, preprocess)
    taps = choose_taps(loaded, layers)
    return {fm.tap.tensor: fm.values
            for fm in iter_feature_maps(loaded, prepared.feeds, taps, providers)}
