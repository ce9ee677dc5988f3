"""What activation maximization and the gradient backends maximize: objectives as small values.

An objective reads one or more tensors of the model (its `tensors`) and, for the activations of
a batch, gives its value per batch item and its gradient with respect to each tensor it reads:
the seeds of the backward pass (d objective / d activation). Objectives combine with `+`, `-`,
scalar `*` and unary `-`.

`parse_target` reads the target grammar shared by the API and the CLI:

- `TENSOR`          mean of squares of the whole tensor (the DeepDream layer objective)
- `TENSOR:C`        mean of channel C of an (N, C, ...) tensor; for an (N, K) tensor element K
                    (a class logit)
- `TENSOR:C@Y,X`    one spatial neuron of channel C
- `TENSOR:A-B`, `TENSOR:A,B,C`, `TENSOR:0-3,8`   several channels: one target each

TENSOR is a tensor name or a node name (meaning its first output). The channel axis is decided
from the graph (see `channel_axis`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import OnnxvizError
from .text import shape_text

Activations = Mapping[str, np.ndarray]
Seeds = dict[str, np.ndarray]

# ---------------------------------------------------------------- the objective values


class Objective:
    """Base of all objectives: operators and the shared evaluation interface.

    Subclasses implement `_evaluate(acts, want_seeds)` returning (values per batch item as
    float64, seeds or None).
    """

    #: seeds do not depend on the activation values (only on their shapes)
    linear: bool = True
    #: the value of one batch item depends on other items (diversity)
    couples_batch: bool = False

    @property
    def tensors(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _evaluate(self, acts: Activations, want_seeds: bool) -> tuple[np.ndarray, Seeds | None]:
        raise NotImplementedError

    def value(self, acts: Activations) -> np.ndarray:
        """The objective per batch item, float64 of shape (N,)."""
        return self._evaluate(acts, False)[0]

    def value_and_seeds(self, acts: Activations) -> tuple[np.ndarray, Seeds]:
        """(value per batch item, {tensor: d sum(values) / d activation}), seeds in float64.

        The seeds are the gradient of the sum of the values over the batch, so a backward pass
        seeded with them gives, for each batch item, d objective / d input of that item (and
        for `Diversity`, the coupling through the other items).
        """
        values, seeds = self._evaluate(acts, True)
        return values, seeds or {}

    # ----- algebra
    def __add__(self, other: object) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum((*_terms(self), *_terms(other)))

    def __sub__(self, other: object) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-1.0) * other

    def __mul__(self, scale: object) -> Objective:
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)):
            return NotImplemented
        return Sum(tuple((w * float(scale), o) for w, o in _terms(self)))

    __rmul__ = __mul__

    def __truediv__(self, scale: object) -> Objective:
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)):
            return NotImplemented
        return self * (1.0 / float(scale))

    def __neg__(self) -> Objective:
        return self * -1.0


def _terms(obj: Objective) -> tuple[tuple[float, Objective], ...]:
    return obj.terms if isinstance(obj, Sum) else ((1.0, obj),)


def _get(acts: Activations, tensor: str) -> np.ndarray:
    try:
        return np.asarray(acts[tensor])
    except KeyError:
        raise OnnxvizError(f"no activations for tensor {tensor!r} were given to the objective "
                           f"(have: {', '.join(acts) or 'none'})") from None


def _axis(a: np.ndarray, axis: int, tensor: str) -> int:
    if a.ndim < 2:
        raise OnnxvizError(f"tensor {tensor!r} has shape {list(a.shape)}: a channel objective "
                           "needs a batch axis and a channel axis")
    ax = axis % a.ndim
    if ax == 0:
        raise OnnxvizError(f"channel axis {axis} of tensor {tensor!r} is its batch axis")
    return ax


def _check_channel(a: np.ndarray, ax: int, channel: int, tensor: str) -> None:
    n = a.shape[ax]
    if not 0 <= channel < n:
        raise OnnxvizError(f"channel {channel} is out of range: tensor {tensor!r} has {n} "
                           f"channels on axis {ax} (0-{n - 1})")


def _batch_mask(values: np.ndarray, batch: int | None, tensor: str) -> np.ndarray:
    """1 for the batch items an objective applies to (all, or the one named by `batch`)."""
    n = values.shape[0]
    if batch is None:
        return np.ones(n)
    if not 0 <= batch < n:
        raise OnnxvizError(f"objective on {tensor!r} is for batch item {batch}, but the batch "
                           f"has {n} item(s)")
    mask = np.zeros(n)
    mask[batch] = 1.0
    return mask


def _bshape(a: np.ndarray) -> tuple[int, ...]:
    return (a.shape[0],) + (1,) * (a.ndim - 1)


@dataclass(frozen=True, eq=False)
class Channel(Objective):
    """Mean of channel `channel` of `tensor` over its spatial positions (axis: channel axis)."""

    tensor: str
    channel: int
    axis: int = 1
    batch: int | None = None
    axis_reason: str = field(default="", compare=False)

    @property
    def tensors(self) -> tuple[str, ...]:
        return (self.tensor,)

    def _evaluate(self, acts, want_seeds):
        a = _get(acts, self.tensor)
        ax = _axis(a, self.axis, self.tensor)
        _check_channel(a, ax, self.channel, self.tensor)
        sl = np.take(a, self.channel, axis=ax).astype(np.float64)
        count = max(sl[0].size, 1) if sl.ndim > 1 else 1
        values = sl.reshape(sl.shape[0], -1).mean(axis=1)
        mask = _batch_mask(values, self.batch, self.tensor)
        if not want_seeds:
            return values * mask, None
        seed = np.zeros(a.shape, np.float64)
        index = [slice(None)] * a.ndim
        index[ax] = self.channel
        seed[tuple(index)] = 1.0 / count
        seed *= mask.reshape(_bshape(a))
        return values * mask, {self.tensor: seed}

    def __str__(self) -> str:
        return f"{self.tensor}:{self.channel}"


@dataclass(frozen=True, eq=False)
class ClassLogit(Objective):
    """Element `index` of an (N, K) tensor: one class logit (or score) per batch item."""

    tensor: str
    index: int
    batch: int | None = None

    @property
    def tensors(self) -> tuple[str, ...]:
        return (self.tensor,)

    def _evaluate(self, acts, want_seeds):
        a = _get(acts, self.tensor)
        if a.ndim < 2:
            raise OnnxvizError(f"tensor {self.tensor!r} has shape {list(a.shape)}; a class "
                               "logit needs an (N, K) tensor")
        flat = a.reshape(a.shape[0], -1)
        _check_channel(flat, 1, self.index, self.tensor)
        values = flat[:, self.index].astype(np.float64)
        mask = _batch_mask(values, self.batch, self.tensor)
        if not want_seeds:
            return values * mask, None
        seed = np.zeros(flat.shape, np.float64)
        seed[:, self.index] = mask
        return values * mask, {self.tensor: seed.reshape(a.shape)}

    def __str__(self) -> str:
        return f"{self.tensor}:{self.index}"


@dataclass(frozen=True, eq=False)
class Neuron(Objective):
    """One activation: channel `channel` at spatial position `position` (e.g. (y, x))."""

    tensor: str
    channel: int
    position: tuple[int, ...]
    axis: int = 1
    batch: int | None = None
    axis_reason: str = field(default="", compare=False)

    @property
    def tensors(self) -> tuple[str, ...]:
        return (self.tensor,)

    def index(self, a: np.ndarray) -> tuple:
        """The numpy index of the neuron in a batch of activations (batch axis left whole)."""
        ax = _axis(a, self.axis, self.tensor)
        _check_channel(a, ax, self.channel, self.tensor)
        spatial = [d for d in range(1, a.ndim) if d != ax]
        if len(self.position) != len(spatial):
            raise OnnxvizError(
                f"neuron position {'@' + ','.join(map(str, self.position))} has "
                f"{len(self.position)} coordinate(s) but tensor {self.tensor!r} (shape "
                f"{list(a.shape)}) has {len(spatial)} spatial axes")
        index: list = [slice(None)] * a.ndim
        index[ax] = self.channel
        for d, p in zip(spatial, self.position, strict=True):
            if not 0 <= p < a.shape[d]:
                raise OnnxvizError(f"neuron position {p} is out of range for axis {d} of "
                                   f"tensor {self.tensor!r} (size {a.shape[d]})")
            index[d] = p
        return tuple(index)

    def _evaluate(self, acts, want_seeds):
        a = _get(acts, self.tensor)
        idx = self.index(a)
        values = a[idx].astype(np.float64).reshape(a.shape[0])
        mask = _batch_mask(values, self.batch, self.tensor)
        if not want_seeds:
            return values * mask, None
        seed = np.zeros(a.shape, np.float64)
        seed[idx] = mask
        return values * mask, {self.tensor: seed}

    def __str__(self) -> str:
        return f"{self.tensor}:{self.channel}@{','.join(map(str, self.position))}"


@dataclass(frozen=True, eq=False)
class LayerL2(Objective):
    """Mean of squares of the whole tensor per batch item: the DeepDream layer objective."""

    tensor: str
    batch: int | None = None
    linear = False

    @property
    def tensors(self) -> tuple[str, ...]:
        return (self.tensor,)

    def _evaluate(self, acts, want_seeds):
        a = _get(acts, self.tensor).astype(np.float64)
        flat = a.reshape(a.shape[0], -1)
        values = np.einsum("ij,ij->i", flat, flat) / max(flat.shape[1], 1)
        mask = _batch_mask(values, self.batch, self.tensor)
        if not want_seeds:
            return values * mask, None
        seed = a * (2.0 / max(flat.shape[1], 1)) * mask.reshape(_bshape(a))
        return values * mask, {self.tensor: seed}

    def __str__(self) -> str:
        return self.tensor


def _channels_last(a: np.ndarray, ax: int) -> np.ndarray:
    """(N, P, C): positions x channels for each batch item."""
    return np.moveaxis(a, ax, -1).reshape(a.shape[0], -1, a.shape[ax])


def _from_channels_last(g: np.ndarray, shape: tuple[int, ...], ax: int) -> np.ndarray:
    moved = [s for d, s in enumerate(shape) if d != ax] + [shape[ax]]
    return np.moveaxis(g.reshape(moved), -1, ax)


@dataclass(frozen=True, eq=False)
class Direction(Objective):
    """Mean over positions of the cosine between the channel vector and `vector` (as Lucid).

    `eps` keeps the cosine differentiable where an activation vector is zero.
    """

    tensor: str
    vector: tuple[float, ...]
    axis: int = 1
    batch: int | None = None
    eps: float = 1e-8
    axis_reason: str = field(default="", compare=False)
    linear = False

    def __init__(self, tensor: str, vector: Sequence[float] | np.ndarray, axis: int = 1,
                 batch: int | None = None, eps: float = 1e-8, axis_reason: str = "") -> None:
        vec = tuple(float(v) for v in np.asarray(vector, dtype=np.float64).ravel())
        if not vec or not np.any(vec):
            raise OnnxvizError("the direction vector must have at least one nonzero element")
        for name, value in (("tensor", tensor), ("vector", vec), ("axis", axis),
                            ("batch", batch), ("eps", eps), ("axis_reason", axis_reason)):
            object.__setattr__(self, name, value)

    @property
    def tensors(self) -> tuple[str, ...]:
        return (self.tensor,)

    def _evaluate(self, acts, want_seeds):
        a = _get(acts, self.tensor)
        ax = _axis(a, self.axis, self.tensor)
        v = np.asarray(self.vector)
        if a.shape[ax] != v.size:
            raise OnnxvizError(f"the direction vector has {v.size} elements but tensor "
                               f"{self.tensor!r} has {a.shape[ax]} channels on axis {ax}")
        f = _channels_last(a.astype(np.float64), ax)  # (N, P, C)
        vn = np.linalg.norm(v)
        dots = f @ v  # (N, P)
        norms = np.sqrt(np.einsum("npc,npc->np", f, f) + self.eps)
        cos = dots / (norms * vn)
        values = cos.mean(axis=1)
        mask = _batch_mask(values, self.batch, self.tensor)
        if not want_seeds:
            return values * mask, None
        p = f.shape[1]
        g = (v[None, None, :] / (norms * vn)[..., None]
             - (dots / (norms ** 3 * vn))[..., None] * f) / p
        g *= mask[:, None, None]
        return values * mask, {self.tensor: _from_channels_last(g, a.shape, ax)}

    def __str__(self) -> str:
        return f"direction({self.tensor})"


@dataclass(frozen=True, eq=False)
class Diversity(Objective):
    """Lucid's diversity term, negated so that larger means more diverse.

    For each batch item the Gram matrix of the tensor's channels over positions is normalized
    to unit Frobenius norm; item i's value is minus the sum of its similarities (inner products
    of normalized Gram matrices) with every other item, divided by the batch size. The sum over
    the batch is minus Lucid's penalty. Zero for a batch of one.
    """

    tensor: str
    axis: int = 1
    eps: float = 1e-10
    axis_reason: str = field(default="", compare=False)
    linear = False
    couples_batch = True

    @property
    def tensors(self) -> tuple[str, ...]:
        return (self.tensor,)

    def _evaluate(self, acts, want_seeds):
        a = _get(acts, self.tensor)
        ax = _axis(a, self.axis, self.tensor)
        f = _channels_last(a.astype(np.float64), ax)  # (N, P, C)
        n = f.shape[0]
        grams = np.einsum("npc,npd->ncd", f, f)
        norms = np.sqrt(np.maximum(np.einsum("ncd,ncd->n", grams, grams), self.eps))
        unit = grams / norms[:, None, None]
        sim = np.einsum("icd,jcd->ij", unit, unit)
        np.fill_diagonal(sim, 0.0)
        values = -sim.sum(axis=1) / n
        if not want_seeds:
            return values, None
        # d(sum values)/d unit_i = -2/n * sum_{j != i} unit_j
        du = -2.0 / n * (unit.sum(axis=0)[None] - unit)
        proj = np.einsum("ncd,ncd->n", du, unit)
        dg = (du - unit * proj[:, None, None]) / norms[:, None, None]
        clipped = np.einsum("ncd,ncd->n", grams, grams) < self.eps
        dg[clipped] = du[clipped] / norms[clipped, None, None]
        df = np.einsum("npc,ncd->npd", f, dg + np.swapaxes(dg, 1, 2))
        return values, {self.tensor: _from_channels_last(df, a.shape, ax)}

    def __str__(self) -> str:
        return f"diversity({self.tensor})"


@dataclass(frozen=True, eq=False)
class Sum(Objective):
    """A weighted sum of objectives: sum of weight * objective."""

    terms: tuple[tuple[float, Objective], ...]

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return all(o.linear for _, o in self.terms)

    @property
    def couples_batch(self) -> bool:  # type: ignore[override]
        return any(o.couples_batch for _, o in self.terms)

    @property
    def tensors(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for _, o in self.terms for t in o.tensors))

    def _evaluate(self, acts, want_seeds):
        total = None
        seeds: Seeds = {}
        for w, obj in self.terms:
            values, s = obj._evaluate(acts, want_seeds)
            total = w * values if total is None else total + w * values
            for name, g in (s or {}).items():
                seeds[name] = seeds[name] + w * g if name in seeds else w * g
        return total, (seeds if want_seeds else None)

    def __str__(self) -> str:
        parts = []
        for k, (w, obj) in enumerate(self.terms):
            text = f"({obj})" if isinstance(obj, Sum) else str(obj)
            body = text if abs(w) == 1 else f"{abs(w):g}*{text}"
            sign = ("-" if w < 0 else "") if k == 0 else (" - " if w < 0 else " + ")
            parts.append(sign + body)
        return "".join(parts)


def per_item(objectives: Sequence[Objective]) -> Objective:
    """One objective per batch item (item k maximizes objectives[k]) as a single objective.

    Leaves get `batch=k`; sums are rebuilt term by term; diversity cannot be restricted to one
    item and is refused here (add it to the result instead).
    """
    def restrict(obj: Objective, k: int) -> Objective:
        if isinstance(obj, Sum):
            return Sum(tuple((w, restrict(o, k)) for w, o in obj.terms))
        if isinstance(obj, Diversity):
            raise OnnxvizError("diversity couples the whole batch and cannot belong to one item; "
                               "add it to the per-item objective instead")
        return dataclasses.replace(obj, batch=k)

    if not objectives:
        raise OnnxvizError("per_item needs at least one objective")
    return Sum(tuple((1.0, restrict(o, k)) for k, o in enumerate(objectives)))


# ---------------------------------------------------------------- the channel axis

# Ops whose outputs are channels-first in ONNX.
_NCHW_OPS = frozenset((
    "Conv ConvTranspose QLinearConv ConvInteger MaxPool AveragePool LpPool GlobalAveragePool "
    "GlobalMaxPool GlobalLpPool BatchNormalization InstanceNormalization LRN DepthToSpace "
    "SpaceToDepth MaxUnpool QLinearAveragePool QLinearGlobalAveragePool FusedConv"
).split())
# Ops whose output keeps the axes of their (first non-constant) input.
_KEEP_AXES_OPS = frozenset((
    "Relu LeakyRelu PRelu Clip Sigmoid HardSigmoid HardSwish Tanh Elu Selu Celu Softplus "
    "Softsign Erf Gelu Exp Log Sqrt Pow Abs Neg Reciprocal Add Sub Mul Div Sum Max Min Mean "
    "Where Identity Dropout Cast CastLike Pad Slice Resize Upsample QuantizeLinear "
    "DequantizeLinear Concat Split Softmax LogSoftmax Floor Ceil Round Sign Mish ThresholdedRelu "
    "Shrink HardMax Hardmax Not Expand Tile QLinearAdd QLinearMul QLinearSigmoid QLinearLeakyRelu "
    "LayerNormalization Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh IsNaN IsInf "
    "Mod"
).split())


def channel_axis(model, tensor: str, rank: int | None = None) -> tuple[int, str]:
    """The channel axis of `tensor` (non-negative) and why, decided from the graph.

    Conv-like outputs are channels-first (axis 1) in ONNX; a Transpose moves the axis (so a
    tensor after a Transpose to NHWC, as TF exporters emit, has its channels last); elementwise
    ops keep it; a graph input follows its inferred layout; Gemm/MatMul features are the last
    axis. Otherwise axis 1, ONNX's default.
    """
    from .model import load_model

    model = load_model(model)
    g = model.graph
    if rank is None:
        rank = _rank(model, tensor)
    memo: dict[str, tuple[int, str] | None] = {}

    def find(name: str, depth: int) -> tuple[int, str] | None:
        if name in memo:
            return memo[name]
        memo[name] = None  # cycles cannot happen in a valid graph; this guards depth
        found = None
        if depth > 200:
            return None
        r = _rank(model, name)
        inputs = {vi.name: k for k, vi in enumerate(g.inputs)}
        if name in inputs:
            contract = model.summary.inputs[inputs[name]]
            if contract.layout == "NHWC" and r:
                found = (r - 1, f"graph input {name!r} is NHWC ({contract.layout_reason})")
            elif contract.layout == "NCHW":
                found = (1, f"graph input {name!r} is NCHW ({contract.layout_reason})")
        elif name in g.producer:
            i = g.producer[name]
            node = g.nodes[i]
            op = node.op_type
            label = f"{op} node {g.names[i]!r}"
            if op in _NCHW_OPS:
                found = (1, f"output of {label} (channels-first in ONNX)")
            elif op in ("Gemm", "MatMul", "QLinearMatMul", "MatMulInteger") and r:
                found = (r - 1, f"output of {label} (features on the last axis)")
            elif op == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                inner = find(node.input[0], depth + 1)
                if perm is None and inner is not None and r:
                    perm = list(range(r))[::-1]
                if inner is not None and perm and inner[0] in perm:
                    new = perm.index(inner[0])
                    found = (new, f"{label} moves the channels of its input ({inner[1]}) to "
                                  f"axis {new}")
                elif perm and len(perm) == 4 and perm == [0, 2, 3, 1]:
                    found = (3, f"output of {label} to NHWC")
            elif op in _KEEP_AXES_OPS:
                for inp in node.input:
                    if not inp or inp in g.initializers or (r and _rank(model, inp) not in
                                                            (None, r)):
                        continue
                    if g.producer.get(inp) is not None and g.nodes[g.producer[inp]].op_type \
                            == "Constant":
                        continue
                    inner = find(inp, depth + 1)
                    if inner is not None:
                        found = inner
                        break
        memo[name] = found
        return found

    result = find(tensor, 0)
    if result is not None:
        return result
    if rank == 2:
        return 1, "an (N, K) tensor"
    return 1, "ONNX's default channels-first layout (the graph does not tell)"


_SHAPES: dict[str, dict] = {}


def _shapes(model) -> dict:
    """Inferred shapes of a model, cached by content hash (a few models at a time)."""
    if model.sha256 not in _SHAPES:
        from .model import inferred_shapes

        if len(_SHAPES) >= 8:
            _SHAPES.pop(next(iter(_SHAPES)))
        _SHAPES[model.sha256] = inferred_shapes(model.proto)
    return _SHAPES[model.sha256]


def _rank(model, tensor: str) -> int | None:
    shape = _shapes(model).get(tensor, (None, ""))[0]
    return len(shape) if shape is not None else None


def tensor_shape(model, tensor: str) -> list | None:
    """The inferred shape of a tensor (ints, symbolic names or None per dim), or None."""
    return _shapes(model).get(tensor, (None, ""))[0]


# ---------------------------------------------------------------- the target grammar

_INT = r"\d+"
_CHANNELS_RE = re.compile(rf"^{_INT}(?:-{_INT})?(?:,{_INT}(?:-{_INT})?)*$")
_NEURON_RE = re.compile(rf"^({_INT}(?:-{_INT})?(?:,{_INT}(?:-{_INT})?)*)@({_INT}(?:,{_INT})*)$")
GRAMMAR = ("TENSOR (mean of squares), TENSOR:C (channel or class), TENSOR:C@Y,X (neuron), "
           "TENSOR:A-B or TENSOR:A,B,C (several channels)")


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target string before it meets a graph: name, channels (None: layer), position."""

    name: str
    channels: tuple[int, ...] | None
    position: tuple[int, ...] | None = None


def _channels(text: str, spec: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = (int(x) for x in part.split("-"))
            if b < a:
                raise OnnxvizError(f"bad target {spec!r}: channel range {part} runs backwards; "
                                   "write A-B with A <= B")
            if b - a >= 1 << 16:
                raise OnnxvizError(f"bad target {spec!r}: channel range {part} is too long")
            out.extend(range(a, b + 1))
        else:
            out.append(int(part))
    return tuple(dict.fromkeys(out))


def split_target(spec: str, is_name=None) -> TargetSpec:
    """Split a target string by the grammar; `is_name(s)` tells whether s names a tensor/node.

    A whole string that is a name wins (TF tensor names contain ':'); otherwise the text after
    the last ':' must be a channel selector.
    """
    spec = spec.strip()
    if not spec:
        raise OnnxvizError(f"empty target; expected {GRAMMAR}")
    if is_name is not None and is_name(spec):
        return TargetSpec(spec, None)
    if ":" not in spec:
        if re.search(r"[@,]", spec) or (is_name is None and not spec):
            raise OnnxvizError(f"bad target {spec!r}: expected {GRAMMAR}")
        return TargetSpec(spec, None)
    name, _, suffix = spec.rpartition(":")
    if not name:
        raise OnnxvizError(f"bad target {spec!r}: no tensor name before ':'; expected {GRAMMAR}")
    m = _NEURON_RE.match(suffix)
    if m:
        return TargetSpec(name, _channels(m.group(1), spec),
                          tuple(int(p) for p in m.group(2).split(",")))
    if _CHANNELS_RE.match(suffix):
        return TargetSpec(name, _channels(suffix, spec))
    if is_name is not None and not is_name(name):
        return TargetSpec(spec, None)  # let the unknown-name error speak about the whole string
    raise OnnxvizError(f"bad target {spec!r}: cannot read {suffix!r} after ':'; expected "
                       f"{GRAMMAR}")


def parse_target(spec: str | Objective, model=None) -> list[Objective]:
    """Objectives for one target string (several for a channel range or list).

    model: a path, bytes, ModelProto or Model (None: the embedded default). Unknown names get a
    did-you-mean error; out-of-range channels and bad syntax a one-line error.
    """
    if isinstance(spec, Objective):
        return [spec]
    from .model import load_model

    model = load_model(model)
    g = model.graph

    def is_name(s: str) -> bool:
        return (s in g.node_index or s in g.producer or s in {v.name for v in g.inputs})

    parsed = split_target(str(spec), is_name)
    tensor = g.resolve_tensor(parsed.name, "tensor or node")
    shape = tensor_shape(model, tensor)
    rank = len(shape) if shape is not None else None
    if parsed.channels is None:
        return [LayerL2(tensor)]
    if rank is not None and rank < 2:
        raise OnnxvizError(f"target {spec!r}: tensor {tensor!r} has shape {shape}, with no "
                           "channel axis; use TENSOR alone for its mean of squares")
    if rank == 2 and parsed.position is None:
        _check_range(parsed.channels, shape, 1, tensor)
        return [ClassLogit(tensor, c) for c in parsed.channels]
    axis, reason = channel_axis(model, tensor, rank)
    if shape is not None:
        _check_range(parsed.channels, shape, axis, tensor)
        if parsed.position is not None:
            spatial = [d for d in range(1, len(shape)) if d != axis]
            if len(parsed.position) != len(spatial):
                raise OnnxvizError(
                    f"target {spec!r}: tensor {tensor!r} (shape {shape_text(shape)}, channels "
                    f"on axis {axis}) has {len(spatial)} spatial axes; give that many coordinates "
                    "after '@'")
            for d, p in zip(spatial, parsed.position, strict=True):
                if isinstance(shape[d], int) and p >= shape[d]:
                    raise OnnxvizError(f"target {spec!r}: position {p} is out of range for axis "
                                       f"{d} of tensor {tensor!r} (size {shape[d]})")
    if parsed.position is not None:
        return [Neuron(tensor, c, parsed.position, axis, axis_reason=reason)
                for c in parsed.channels]
    return [Channel(tensor, c, axis, axis_reason=reason) for c in parsed.channels]


def parse_targets(specs: str | Objective | Sequence[str | Objective], model=None
                  ) -> list[Objective]:
    """Expand several target strings (or objectives) into a flat list of objectives."""
    if isinstance(specs, (str, Objective)):
        specs = [specs]
    from .model import load_model

    model = load_model(model)
    out: list[Objective] = []
    for spec in specs:
        out.extend(parse_target(spec, model))
    if not out:
        raise OnnxvizError(f"no target given; expected {GRAMMAR}")
    return out


def _check_range(channels: tuple[int, ...], shape, axis: int, tensor: str) -> None:
    n = shape[axis]
    if not isinstance(n, int) or n <= 0:
        return  # unknown until the activations arrive; checked then
    bad = [c for c in channels if c >= n]
    if bad:
        what = "classes" if len(shape) == 2 else "channels"
        raise OnnxvizError(f"channel {bad[0]} is out of range: tensor {tensor!r} has {n} "
                           f"{what} (0-{n - 1}) on axis {axis}")


def describe_axis(obj: Objective) -> list[str]:
    """Notes on the channel axes an objective uses, e.g. for the CLI to print."""
    notes = []
    for o in (t for _, t in _terms(obj)) if isinstance(obj, Sum) else (obj,):
        reason = getattr(o, "axis_reason", "")
        if reason:
            notes.append(f"{o}: channel axis {o.axis} ({reason})")
    return list(dict.fromkeys(notes))
