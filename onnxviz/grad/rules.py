"""The flat table of vector-Jacobian rules: op_type -> rule(builder, node, output grads).

A rule returns one entry per node input: the name of the gradient tensor it emitted, or None for
inputs that need none (constants, integer inputs, inputs off the differentiable path). Rules read
forward tensors where that keeps onnxruntime's forward fusions intact: Relu, Clip, Sigmoid, Tanh,
HardSigmoid, Elu, Selu, Exp, Sqrt and Reciprocal read their output Y, not their input X, so that
Conv+activation still fuses. Weights are never differentiated. Sliding-window and resampling ops
live in `spatial_rules`.

Performance notes (measured with onnxruntime 1.32 on CPU): masks are built as HardSigmoid steps
(`Builder.step`) and applied with Mul, never with Where (about 8x slower than Cast + Mul on large
tensors) nor with comparisons + Cast; HardSigmoid, Mul and Add of same-shape tensors stay in
onnxruntime's blocked NCHWc layout between convolutions, while Sub, Where, comparisons and ops
with a broadcast scalar make it insert layout reorders around them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from . import spatial_rules as sp
from .builder import Builder, attr

Grads = list[str | None]
Rule = Callable[[Builder, onnx.NodeProto, Grads], Grads]
FLOAT = onnx.TensorProto.FLOAT


def _first(n: onnx.NodeProto, g: str | None) -> Grads:
    return [g] + [None] * (len(n.input) - 1)


# ---------------------------------------------------------------- activations


def relu(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return _first(n, b.mul(g[0], b.step(n.output[0], 0.0)))


def leaky_relu(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """slope alpha + (1 - alpha) [y > 0] (read from Y when alpha > 0: same sign as X)."""
    alpha = attr(n, "alpha", 0.01)
    probe = n.output[0] if alpha > 0 else n.input[0]
    step = b.step(probe, 0.0)
    if 0.0 <= alpha <= 1.0:  # {0, 1} -> {alpha, 1} as one HardSigmoid (no broadcast constant)
        slope = b.op("HardSigmoid", [step], alpha=1.0 - alpha, beta=alpha)
    else:
        slope = b.add(b.scale(step, 1.0 - alpha), b.const(alpha))
    return _first(n, b.mul(g[0], slope))


def prelu(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x, slope = n.input[0], n.input[1]
    positive = b.step(x, 0.0)
    # slope where x <= 0, 1 where x > 0: slope + [x > 0] (1 - slope)
    factor = b.add(slope, b.mul(positive, b.sub(b.const(1.0), slope)))
    return [b.mul(g[0], factor), None]


def clip(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """Gradient 1 strictly inside (min, max), read from Y (Relu's convention at the edges)."""
    mask = _clip_mask(b, n, n.output[0])
    return _first(n, g[0] if mask is None else b.mul(g[0], mask))


def _clip_mask(b: Builder, n: onnx.NodeProto, y: str) -> str | None:
    """[min < y < max] for a tensor y of the Clip node's output values (None: no finite
    bound). The mask product reads only Y: scheduled right after the forward Clip (Y in cache),
    so the backward pays one Mul reading one mask."""
    if b.opset >= 11:
        lo = b.constant(n.input[1], "min") if len(n.input) > 1 and n.input[1] else None
        hi = b.constant(n.input[2], "max") if len(n.input) > 2 and n.input[2] else None
    else:
        lo, hi = attr(n, "min", None), attr(n, "max", None)
    steps = []
    if lo is not None and np.isfinite(lo).all():
        steps.append(b.step(y, float(np.asarray(lo).ravel()[0]), above=True))
    if hi is not None and np.isfinite(hi).all():
        steps.append(b.step(y, float(np.asarray(hi).ravel()[0]), above=False))
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else b.mul(steps[0], steps[1])


# A switch so that benchmarks/bench_gradients.py --compare can time the MaxPool rule with and
# without taking over its input activation's mask.
ACTIVATION_BEHIND_MAX_POOL = True


def max_pool(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """MaxPool (see `spatial_rules.max_pool`). When its input is the output of a Relu or Clip
    that nothing else reads, that activation's mask is applied here, to the pooled gradient (4x
    fewer elements behind a stride-2 pool), and the activation's rule is skipped: each window's
    gradient goes to one of its maxima x_i == y, where the mask is the same function of x_i as
    of y, so masking before or after the pool's routing gives the same result exactly."""
    x, y = n.input[0], n.output[0]
    i = b.graph.producer.get(x)
    act = b.graph.nodes[i] if i is not None else None
    if ACTIVATION_BEHIND_MAX_POOL and act is not None and act.op_type in ("Relu", "Clip") \
            and act.output[0] == x \
            and len(b.graph.consumers.get(x, [])) == 1 and x not in b.targets:
        mask = b.step(y, 0.0) if act.op_type == "Relu" else _clip_mask(b, act, y)
        if mask is not None:
            g = [b.mul(g[0], mask)]
        b.passed_through.add(i)
    return sp.max_pool(b, n, g)


# The rules below build their factors from HardSigmoid, Mul and Add of same-shape tensors only:
# onnxruntime keeps those in its blocked NCHWc layout, while a Sub or an op with a broadcast
# scalar forces reorders (measured: ~14% of PP-LCNet's gradient time before this rewrite).
# HardSigmoid(t; a, b) = clip(a t + b, 0, 1) is an exact affine map wherever t's range keeps
# a t + b inside [0, 1].


def sigmoid(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """g y (1 - y), with 1 - y = HardSigmoid(y; -1, 1) since y is in [0, 1]."""
    y = n.output[0]
    one_minus = b.op("HardSigmoid", [y], alpha=-1.0, beta=1.0)
    return _first(n, b.mul(g[0], b.mul(y, one_minus)))


def tanh(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """g (1 - y^2), with 1 - y^2 = HardSigmoid(y^2; -1, 1) since y^2 is in [0, 1]."""
    y = n.output[0]
    return _first(n, b.mul(g[0], b.op("HardSigmoid", [b.mul(y, y)], alpha=-1.0, beta=1.0)))


def hard_sigmoid(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """alpha on 0 < y < 1 (read from Y)."""
    y = n.output[0]
    alpha = attr(n, "alpha", 0.2)
    inside = b.mul(b.step(y, 0.0), b.step(y, 1.0, above=False))
    if 0.0 <= alpha <= 1.0:
        return _first(n, b.mul(g[0], b.op("HardSigmoid", [inside], alpha=alpha, beta=0.0)))
    return _first(n, b.mul(b.scale(g[0], alpha), inside))


def hard_swish(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """y = x hs(x), hs = clip(x/6 + 1/2, 0, 1): slope hs(x) + x [-3 < x < 3] / 6. Reads X:
    y does not determine the slope's sign on (-3, 0)."""
    x = n.input[0]
    gate = b.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
    inside = b.mul(b.step(x, -3.0), b.step(x, 3.0, above=False))
    sixth = b.op("HardSigmoid", [inside], alpha=1.0 / 6.0, beta=0.0)
    return [b.mul(g[0], b.add(gate, b.mul(x, sixth)))]


def _two_slopes(b: Builder, y: str, inside: float, offset: float) -> str:
    """`inside` where y > 0, else y + offset: t + [y > 0] (inside - t) with t = y + offset."""
    t = b.add(y, b.const(offset))
    return b.add(t, b.mul(b.step(y, 0.0), b.sub(b.const(inside), t)))


def elu(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """slope 1 for y > 0, alpha e^x = y + alpha below (read from Y)."""
    return [b.mul(g[0], _two_slopes(b, n.output[0], 1.0, attr(n, "alpha", 1.0)))]


def selu(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """slope gamma for y > 0, gamma alpha e^x = y + gamma alpha below (read from Y)."""
    alpha = attr(n, "alpha", 1.67326319217681884765625)
    gamma = attr(n, "gamma", 1.05070102214813232421875)
    return [b.mul(g[0], _two_slopes(b, n.output[0], gamma, gamma * alpha))]


def softplus(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return [b.mul(g[0], b.op("Sigmoid", [n.input[0]]))]


def erf(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x = n.input[0]
    bump = b.op("Exp", [b.neg(b.mul(x, x))])
    return [b.mul(g[0], b.scale(bump, 2.0 / math.sqrt(math.pi)))]


def gelu(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x = n.input[0]
    if attr(n, "approximate", "none") == "tanh":
        c = math.sqrt(2.0 / math.pi)
        x2 = b.mul(x, x)
        u = b.scale(b.mul(x, b.add(b.const(1.0), b.scale(x2, 0.044715))), c)
        t = b.op("Tanh", [u])
        du = b.scale(b.add(b.const(1.0), b.scale(x2, 3 * 0.044715)), c)
        left = b.scale(b.add(b.const(1.0), t), 0.5)
        right = b.mul(b.scale(x, 0.5), b.mul(b.sub(b.const(1.0), b.mul(t, t)), du))
        return [b.mul(g[0], b.add(left, right))]
    cdf = b.scale(b.add(b.const(1.0), b.op("Erf", [b.scale(x, 1 / math.sqrt(2.0))])), 0.5)
    pdf = b.scale(b.op("Exp", [b.scale(b.mul(x, x), -0.5)]), 1 / math.sqrt(2 * math.pi))
    return [b.mul(g[0], b.add(cdf, b.mul(x, pdf)))]


def exp(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return [b.mul(g[0], n.output[0])]


def log(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return [b.op("Div", [g[0], n.input[0]])]


def sqrt(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return [b.op("Div", [b.scale(g[0], 0.5), n.output[0]])]


def reciprocal(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    y = n.output[0]
    return [b.neg(b.mul(g[0], b.mul(y, y)))]


def abs_(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return [b.mul(g[0], b.op("Sign", [n.input[0]]))]


def neg(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return [b.neg(g[0])]


# ---------------------------------------------------------------- arithmetic (broadcasting)


def _operand_grads(b: Builder, n: onnx.NodeProto, terms: list[Callable[[], str] | None]
                   ) -> Grads:
    """Unbroadcast each operand's gradient (given as a thunk, built only when wanted)."""
    y_shape = b.shape(n.output[0])
    out: Grads = []
    for name, term in zip(n.input, terms, strict=True):
        if term is None or not b.wants(name):
            out.append(None)
            continue
        out.append(b.unbroadcast(term(), y_shape, b.shape(name)))
    return out


def add(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return _operand_grads(b, n, [lambda: g[0], lambda: g[0]])


def sub(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return _operand_grads(b, n, [lambda: g[0], lambda: b.neg(g[0])])


def mul(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x, w = n.input[0], n.input[1]
    return _operand_grads(b, n, [lambda: _times(b, g[0], w), lambda: _times(b, g[0], x)])


def _times(b: Builder, g: str, other: str) -> str:
    value = b.value(other)
    if value is not None and value.size == 1:
        return b.scale(g, float(value.ravel()[0]))
    return b.mul(g, other)


def div(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    _x, w, y = n.input[0], n.input[1], n.output[0]

    def dx() -> str:
        value = b.value(w)
        if value is not None and value.size == 1:
            return b.scale(g[0], 1.0 / float(value.ravel()[0]))
        return b.op("Div", [g[0], w])

    return _operand_grads(b, n, [dx, lambda: b.neg(b.op("Div", [b.mul(g[0], y), w]))])


def pow_(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x, p, y = n.input[0], n.input[1], n.output[0]

    def dx() -> str:
        value = b.value(p)
        if value is not None and value.size == 1:
            e = float(value.ravel()[0])
            if e == 1.0:
                return g[0]
            if e == 2.0:
                return b.mul(g[0], b.scale(x, 2.0))
            return b.mul(g[0], b.scale(b.op("Pow", [x, b.const(e - 1.0)]), e))
        return b.mul(g[0], b.mul(p, b.op("Pow", [x, b.sub(p, b.const(1.0))])))

    return _operand_grads(b, n, [dx, lambda: b.mul(g[0], b.mul(y, b.op("Log", [x])))])


def sum_(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return _operand_grads(b, n, [(lambda: g[0])] * len(n.input))


def max_min(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """Gradient to the inputs equal to the result, shared evenly among ties."""
    if len(n.input) == 1:
        return [g[0]]
    y = n.output[0]
    hits = [b.op("Cast", [b.op("Equal", [x, y])], to=FLOAT) for x in n.input]
    share = b.op("Div", [g[0], b.sum(hits)])
    return _operand_grads(b, n, [(lambda h=h: b.mul(share, h)) for h in hits])


def where(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    cond = n.input[0]
    return _operand_grads(b, n, [None, lambda: b.mask(cond, g[0]),
                                 lambda: b.mask(b.op("Not", [cond]), g[0])])


# ---------------------------------------------------------------- shape and data movement


def reshape_like(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout (inference), Cast."""
    if n.op_type == "Dropout" and len(n.input) > 2 and n.input[2]:
        training = b.value(n.input[2])
        if training is None or bool(np.asarray(training).ravel()[0]):
            raise b.unsupported("Dropout in training mode is random")
    x = n.input[0]
    x_shape = b.shape(x)
    dx = g[0]
    if b.shape(n.output[0]) != x_shape:
        dx = b.reshape(dx, x_shape)
    return _first(n, dx)


def transpose(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    rank = len(b.shape(n.input[0]))
    perm = attr(n, "perm", None) or list(reversed(range(rank)))
    return [b.transpose(g[0], list(np.argsort(perm)))]


def concat(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    axis = attr(n, "axis")
    sizes = [b.shape(x)[axis] for x in n.input]
    parts = b.split(g[0], axis, sizes)
    return [p if b.wants(x) else None for p, x in zip(parts, n.input, strict=True)]


def split(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    axis = attr(n, "axis", 0)
    parts = []
    for out, gi in zip(n.output, g, strict=True):
        parts.append(gi if gi is not None else b.zeros(b.shape(out)))
    dx = parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=axis)
    return _first(n, dx)


def slice_(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x = n.input[0]
    x_shape = b.shape(x)
    rank = len(x_shape)
    if b.opset >= 10:
        starts = b.constant(n.input[1], "starts").tolist()
        ends = b.constant(n.input[2], "ends").tolist()
        axes = (b.constant(n.input[3], "axes").tolist() if len(n.input) > 3 and n.input[3]
                else list(range(len(starts))))
        steps = (b.constant(n.input[4], "steps").tolist() if len(n.input) > 4 and n.input[4]
                 else [1] * len(starts))
    else:
        starts, ends = attr(n, "starts"), attr(n, "ends")
        axes = attr(n, "axes", None) or list(range(len(starts)))
        steps = [1] * len(starts)
    index = [slice(None)] * rank
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        index[a % rank] = slice(int(s), int(e), int(st))
    ranges = [range(size)[index[a]] for a, size in enumerate(x_shape)]
    if all(r.step == 1 for r in ranges):
        pads = [r.start if len(r) else 0 for r in ranges] + \
               [size - (r.stop if len(r) else 0) for r, size in zip(ranges, x_shape,
                                                                    strict=True)]
        if not any(pads):
            return _first(n, g[0])
        return _first(n, _pad_zeros(b, g[0], pads))
    flat = np.arange(int(np.prod(x_shape)), dtype=np.int64).reshape(x_shape)[tuple(index)]
    return _first(n, _scatter_flat(b, g[0], flat, x_shape))


def _pad_zeros(b: Builder, g: str, pads: list[int]) -> str:
    return b.op("Pad", [g, b.ints(pads)], mode="constant")


def _scatter_flat(b: Builder, g: str, flat_indices: np.ndarray, x_shape) -> str:
    """Place g at unique flat positions of a zero tensor of shape x_shape."""
    total = int(np.prod(x_shape))
    dx = b.op("ScatterElements", [b.zeros([total]), b.ints(flat_indices.ravel()),
                                  b.reshape(g, [-1])], axis=0)
    return b.reshape(dx, x_shape)


def gather(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x, idx = n.input[0], n.input[1]
    x_shape = b.shape(x)
    axis = attr(n, "axis", 0) % len(x_shape)
    indices = np.asarray(b.constant(idx, "indices"), np.int64)
    indices = np.where(indices < 0, indices + x_shape[axis], indices)
    flat = np.take(np.arange(int(np.prod(x_shape)), dtype=np.int64).reshape(x_shape),
                   indices, axis=axis)
    if np.unique(indices).size == indices.size:
        return [_scatter_flat(b, g[0], flat, x_shape), None]
    # repeated indices: the adjoint sums, i.e. a one-hot matrix along the gathered axis
    y_shape = b.shape(n.output[0])
    k = indices.size
    onehot = np.zeros((k, x_shape[axis]), np.float32)
    onehot[np.arange(k), indices.ravel()] = 1.0
    merged = [*list(x_shape[:axis]), k, *list(x_shape[axis + 1:])]
    gk = b.reshape(g[0], merged) if tuple(merged) != tuple(y_shape) else g[0]
    return [b.axis_matrix(gk, merged, axis, onehot), None]


def pad(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x = n.input[0]
    x_shape = b.shape(x)
    rank = len(x_shape)
    mode = attr(n, "mode", "constant")
    pads = attr(n, "pads", None)
    if pads is None:
        pads = b.constant(n.input[1], "pads").tolist()
        if len(n.input) > 3 and n.input[3]:
            axes = [a % rank for a in b.constant(n.input[3], "axes").tolist()]
            full = [0] * (2 * rank)
            for i, a in enumerate(axes):
                full[a], full[a + rank] = pads[i], pads[i + len(axes)]
            pads = full
    pads = [int(p) for p in pads]
    if mode == "constant":
        if all(p >= 0 for p in pads):
            starts = pads[:rank]
            ends = [s + size for s, size in zip(starts, x_shape, strict=True)]
            return _first(n, b.slice(g[0], starts, ends, list(range(rank))))
        return _first(n, _pad_zeros(b, g[0], [-p for p in pads]))
    if any(p < 0 for p in pads):
        raise b.unsupported(f"negative pads with mode {mode!r}")
    numpy_mode = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}.get(mode)
    if numpy_mode is None:
        raise b.unsupported(f"pad mode {mode!r}")
    dx = g[0]
    shape = list(b.shape(n.output[0]))
    for a in range(rank):
        if pads[a] or pads[a + rank]:
            eye = np.eye(x_shape[a])
            matrix = np.pad(eye, ((pads[a], pads[a + rank]), (0, 0)), mode=numpy_mode)
            dx = b.axis_matrix(dx, shape, a, matrix)
            shape[a] = x_shape[a]
    return _first(n, dx)


def expand(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    return [b.unbroadcast(g[0], b.shape(n.output[0]), b.shape(n.input[0])), None]


def tile(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x_shape = b.shape(n.input[0])
    repeats = [int(r) for r in b.constant(n.input[1], "repeats").ravel()]
    split_shape, axes = [], []
    for r, d in zip(repeats, x_shape, strict=True):
        axes.append(len(split_shape))
        split_shape += [r, d]
    summed = b.reduce_sum(b.reshape(g[0], split_shape), axes, keepdims=False)
    return [summed, None]


def _permutation_adjoint(b: Builder, g: str, mid_shape, perm, x_shape) -> str:
    """Adjoint of reshape(x, pre) -> transpose(perm) -> reshape: the inverse moves."""
    moved = b.reshape(g, [mid_shape[p] for p in perm])
    back = b.transpose(moved, list(np.argsort(perm)))
    return b.reshape(back, x_shape)


def depth_to_space(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    nb, c, h, w = b.shape(n.input[0])
    s = attr(n, "blocksize")
    if attr(n, "mode", "DCR") == "DCR":
        mid, perm = (nb, s, s, c // (s * s), h, w), (0, 3, 4, 1, 5, 2)
    else:
        mid, perm = (nb, c // (s * s), s, s, h, w), (0, 1, 4, 2, 5, 3)
    return [_permutation_adjoint(b, g[0], mid, perm, (nb, c, h, w))]


def space_to_depth(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    nb, c, h, w = b.shape(n.input[0])
    s = attr(n, "blocksize")
    mid, perm = (nb, c, h // s, s, w // s, s), (0, 3, 5, 1, 2, 4)
    return [_permutation_adjoint(b, g[0], mid, perm, (nb, c, h, w))]


# ---------------------------------------------------------------- reductions and softmax


def _reduce_axes(b: Builder, n: onnx.NodeProto, rank: int) -> list[int] | None:
    """The reduced axes (sorted, non-negative), or None for a no-op reduction."""
    axes = attr(n, "axes", None)
    if axes is None and len(n.input) > 1 and n.input[1]:
        axes = b.constant(n.input[1], "axes").tolist()
    if not axes:
        return None if attr(n, "noop_with_empty_axes", 0) else list(range(rank))
    return sorted(a % rank for a in axes)


def reduce(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x, y = n.input[0], n.output[0]
    x_shape = b.shape(x)
    axes = _reduce_axes(b, n, len(x_shape))
    if axes is None:
        return _first(n, g[0])
    kept = [1 if a in axes else d for a, d in enumerate(x_shape)]
    gk = g[0] if attr(n, "keepdims", 1) else b.reshape(g[0], kept)
    op = n.op_type
    if op == "ReduceSum":
        return _first(n, b.op("Expand", [gk, b.ints(x_shape)]))
    if op == "ReduceMean":
        count = int(np.prod([x_shape[a] for a in axes]))
        return _first(n, b.op("Expand", [b.scale(gk, 1.0 / count), b.ints(x_shape)]))
    # ReduceMax / ReduceMin: to the elements equal to the result, ties shared
    yk = y if attr(n, "keepdims", 1) else b.reshape(y, kept)
    hit = b.op("Cast", [b.op("Equal", [x, yk])], to=FLOAT)
    count = b.reduce_sum(hit, axes, keepdims=True)
    return _first(n, b.mul(hit, b.op("Div", [gk, count])))


def _softmax_frame(b: Builder, n: onnx.NodeProto):
    """(axis, reshape-in, reshape-out) so that opset < 13's 2-D coercion reads like 13's."""
    shape = b.shape(n.input[0])
    rank = len(shape)
    if b.opset >= 13:
        return attr(n, "axis", -1) % rank, None
    axis = attr(n, "axis", 1) % rank
    return 1, ([int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))], list(shape))


def softmax(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    axis, frame = _softmax_frame(b, n)
    y, gy = n.output[0], g[0]
    if frame:
        y, gy = b.reshape(y, frame[0]), b.reshape(gy, frame[0])
    dot = b.reduce_sum(b.mul(gy, y), [axis], keepdims=True)
    dx = b.mul(y, b.sub(gy, dot))
    return [b.reshape(dx, frame[1]) if frame else dx]


def log_softmax(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    axis, frame = _softmax_frame(b, n)
    y, gy = n.output[0], g[0]
    if frame:
        y, gy = b.reshape(y, frame[0]), b.reshape(gy, frame[0])
    total = b.reduce_sum(gy, [axis], keepdims=True)
    dx = b.sub(gy, b.mul(b.op("Exp", [y]), total))
    return [b.reshape(dx, frame[1]) if frame else dx]


# ---------------------------------------------------------------- normalization


def batch_normalization(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    if attr(n, "training_mode", 0) or len([o for o in n.output if o]) > 1:
        raise b.unsupported("BatchNormalization in training mode")
    rank = len(b.shape(n.input[0]))
    scale = b.constant(n.input[1], "scale").astype(np.float64)
    var = b.constant(n.input[4], "variance").astype(np.float64)
    factor = scale / np.sqrt(var + attr(n, "epsilon", 1e-5))
    return _first(n, b.mul(g[0], b.const(factor.reshape((-1,) + (1,) * (rank - 2)))))


def _normalized_grad(b: Builder, x: str, gs: str, axes: list[int], eps: float) -> str:
    """d/dx of (x - mean) / sqrt(var + eps) over `axes`, applied to gs (already times scale)."""
    mean = b.reduce("ReduceMean", x, axes)
    centered = b.sub(x, mean)
    var = b.reduce("ReduceMean", b.mul(centered, centered), axes)
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.add(var, b.const(eps))])])
    xhat = b.mul(centered, inv)
    gmean = b.reduce("ReduceMean", gs, axes)
    proj = b.reduce("ReduceMean", b.mul(gs, xhat), axes)
    return b.mul(inv, b.sub(b.sub(gs, gmean), b.mul(xhat, proj)))


def instance_normalization(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x = n.input[0]
    rank = len(b.shape(x))
    scale = b.constant(n.input[1], "scale").reshape((-1,) + (1,) * (rank - 2))
    gs = b.mul(g[0], b.const(scale))
    return _first(n, _normalized_grad(b, x, gs, list(range(2, rank)),
                                      attr(n, "epsilon", 1e-5)))


def layer_normalization(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    x = n.input[0]
    rank = len(b.shape(x))
    axis = attr(n, "axis", -1) % rank
    gs = b.mul(g[0], n.input[1])
    return _first(n, _normalized_grad(b, x, gs, list(range(axis, rank)),
                                      attr(n, "epsilon", 1e-5)))


def lrn(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """y = x * d^-beta, d = bias + alpha/size * (window sum of x^2 over channels)."""
    x = n.input[0]
    shape = b.shape(x)
    size = attr(n, "size")
    alpha, beta, bias = attr(n, "alpha", 1e-4), attr(n, "beta", 0.75), attr(n, "bias", 1.0)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    flat = [shape[0], 1, shape[1], int(np.prod(shape[2:]))]
    ones = b.const(np.ones((1, 1, size, 1), np.float32))

    def window(t: str, before: int, after: int) -> str:
        out = b.op("Conv", [b.reshape(t, flat), ones], pads=[before, 0, after, 0])
        return b.reshape(out, shape)

    d = b.add(b.const(bias), b.scale(window(b.mul(x, x), lo, hi), alpha / size))
    d_beta = b.op("Pow", [d, b.const(-beta)])
    v = b.op("Div", [b.mul(b.mul(g[0], x), d_beta), d])
    back = window(v, hi, lo)
    return [b.sub(b.mul(g[0], d_beta), b.scale(b.mul(x, back), 2.0 * alpha * beta / size))]


# ---------------------------------------------------------------- dense


def gemm(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    a, w = n.input[0], n.input[1]
    alpha, beta = attr(n, "alpha", 1.0), attr(n, "beta", 1.0)
    ta, tb = attr(n, "transA", 0), attr(n, "transB", 0)
    gy = g[0]
    out: Grads = [None] * len(n.input)
    if b.wants(a):
        if not ta:
            out[0] = b.op("Gemm", [gy, w], alpha=alpha, transB=1 - tb)
        else:
            out[0] = b.op("Gemm", [w, gy], alpha=alpha, transA=tb, transB=1)
    if b.wants(w):
        if not tb:
            out[1] = b.op("Gemm", [a, gy], alpha=alpha, transA=1 - ta)
        else:
            out[1] = b.op("Gemm", [gy, a], alpha=alpha, transA=1, transB=ta)
    if len(n.input) > 2 and b.wants(n.input[2]):
        out[2] = b.unbroadcast(b.scale(gy, beta), b.shape(n.output[0]), b.shape(n.input[2]))
    return out


def matmul(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    a, w = n.input[0], n.input[1]
    a_shape, w_shape = b.shape(a), b.shape(w)
    a2 = (1, *a_shape) if len(a_shape) == 1 else a_shape
    w2 = (*w_shape, 1) if len(w_shape) == 1 else w_shape
    batch = np.broadcast_shapes(a2[:-2], w2[:-2])
    y2 = (*batch, a2[-2], w2[-1])
    gy = b.reshape(g[0], y2) if tuple(b.shape(n.output[0])) != y2 else g[0]
    out: Grads = [None, None]

    def swapped(t: str, shape) -> str:
        value = b.value(t)
        if value is not None:
            return b.const(np.swapaxes(value.reshape(shape), -1, -2))
        t = b.reshape(t, shape) if tuple(b.shape(t)) != tuple(shape) else t
        rank = len(shape)
        return b.transpose(t, [*range(rank - 2), rank - 1, rank - 2])

    if b.wants(a):
        da = b.op("MatMul", [gy, swapped(w, w2)])
        da = b.unbroadcast(da, (*batch, a2[-2], a2[-1]), a2)
        out[0] = b.reshape(da, a_shape) if a2 != tuple(a_shape) else da
    if b.wants(w):
        dw = b.op("MatMul", [swapped(a, a2), gy])
        dw = b.unbroadcast(dw, (*batch, w2[-2], w2[-1]), w2)
        out[1] = b.reshape(dw, w_shape) if w2 != tuple(w_shape) else dw
    return out


# ---------------------------------------------------------------- quantization


def _per_axis(b: Builder, n: onnx.NodeProto, value: np.ndarray, rank: int) -> np.ndarray:
    value = np.asarray(value, np.float64)
    if value.ndim == 0 or value.size == 1:
        return value.reshape(())
    axis = attr(n, "axis", 1) % rank
    shape = [1] * rank
    shape[axis] = value.size
    return value.reshape(shape)


_QRANGE = {onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127),
           onnx.TensorProto.UINT16: (0, 65535), onnx.TensorProto.INT16: (-32768, 32767)}


def quantize_linear(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """Clipped straight-through estimator: identity inside the representable range
    [(qmin - zp) * scale, (qmax - zp) * scale], zero outside."""
    x, q = n.input[0], n.output[0]
    rank = len(b.shape(x))
    scale = _per_axis(b, n, b.constant(n.input[1], "scale"), rank)
    zp_name = n.input[2] if len(n.input) > 2 else ""
    zp = _per_axis(b, n, b.constant(zp_name, "zero point"), rank) if zp_name else np.zeros(())
    qtype = b.graph_dtype(q)
    if qtype not in _QRANGE:
        raise b.unsupported(f"quantized type {onnx.TensorProto.DataType.Name(qtype)}")
    qmin, qmax = _QRANGE[qtype]
    lo, hi = (qmin - zp) * scale, (qmax - zp) * scale
    gq = g[0]
    if q not in b.dequantized_units:
        gq = b.op("Div", [gq, b.const(scale)])
    if lo.ndim == 0:
        inside = b.op("Equal", [b.op("Clip", [x, b.const(lo), b.const(hi)]), x])
    else:
        inside = b.op("And", [b.op("Not", [b.op("Less", [x, b.const(lo)])]),
                              b.op("Not", [b.op("Greater", [x, b.const(hi)])])])
    return _first(n, b.mask(inside, gq))


def dequantize_linear(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    q = n.input[0]
    if q in b.dequantized_units:
        return _first(n, g[0])
    rank = len(b.shape(q))
    scale = _per_axis(b, n, b.constant(n.input[1], "scale"), rank)
    return _first(n, b.mul(g[0], b.const(scale)))


def dynamic_quantize_linear(b: Builder, n: onnx.NodeProto, g: Grads) -> Grads:
    """Straight-through: the range is the data's own, so nothing clips; raw units / scale."""
    return [b.op("Div", [g[0], n.output[1]])]


# ---------------------------------------------------------------- the table

RULES: dict[str, Rule] = {
    # activations
    "Relu": relu, "LeakyRelu": leaky_relu, "PRelu": prelu, "Clip": clip, "Sigmoid": sigmoid,
    "Tanh": tanh, "HardSigmoid": hard_sigmoid, "HardSwish": hard_swish, "Elu": elu,
    "Selu": selu, "Softplus": softplus, "Erf": erf, "Gelu": gelu, "Exp": exp, "Log": log,
    "Sqrt": sqrt, "Reciprocal": reciprocal, "Abs": abs_, "Neg": neg,
    # arithmetic
    "Add": add, "Sub": sub, "Mul": mul, "Div": div, "Pow": pow_, "Sum": sum_, "Max": max_min,
    "Min": max_min, "Where": where,
    # shape and data movement
    "Reshape": reshape_like, "Flatten": reshape_like, "Squeeze": reshape_like,
    "Unsqueeze": reshape_like, "Identity": reshape_like, "Dropout": reshape_like,
    "Cast": reshape_like, "Transpose": transpose, "Concat": concat, "Split": split,
    "Slice": slice_, "Gather": gather, "Pad": pad, "Expand": expand, "Tile": tile,
    "DepthToSpace": depth_to_space, "SpaceToDepth": space_to_depth,
    # reductions, softmax, normalization
    "ReduceSum": reduce, "ReduceMean": reduce, "ReduceMax": reduce, "ReduceMin": reduce,
    "Softmax": softmax, "LogSoftmax": log_softmax, "BatchNormalization": batch_normalization,
    "InstanceNormalization": instance_normalization, "LayerNormalization": layer_normalization,
    "LRN": lrn,
    # dense and sliding windows
    "Gemm": gemm, "MatMul": matmul, "Conv": sp.conv, "ConvTranspose": sp.conv_transpose,
    "MaxPool": max_pool, "AveragePool": sp.average_pool,
    "GlobalAveragePool": sp.global_average_pool, "GlobalMaxPool": sp.global_max_pool,
    "Resize": sp.resize, "Upsample": sp.resize,
    # quantization
    "QuantizeLinear": quantize_linear, "DequantizeLinear": dequantize_linear,
    "DynamicQuantizeLinear": dynamic_quantize_linear,
}

# Outputs that carry no gradient even when floating point (indices, masks, statistics).
NON_DIFFERENTIABLE_OUTPUTS: dict[str, set[int]] = {
    "MaxPool": {1}, "Dropout": {1}, "DynamicQuantizeLinear": {1, 2},
    "BatchNormalization": {1, 2}, "LayerNormalization": {1, 2}, "TopK": {1},
}
# Ops whose outputs never carry a gradient (piecewise constant, integer-valued or shapes).
NON_DIFFERENTIABLE_OPS = frozenset((
    "Shape Size ArgMax ArgMin Floor Ceil Round Sign Equal Less Greater LessOrEqual "
    "GreaterOrEqual Not And Or Xor IsNaN IsInf NonZero ConstantOfShape EyeLike RandomNormal "
    "RandomUniform RandomNormalLike RandomUniformLike Multinomial Bernoulli OneHot Range "
    "NonMaxSuppression Hardmax"
).split())
# Ops that move quantized (8/16-bit) tensors without arithmetic: gradients pass through them.
INTEGER_PASS_THROUGH = frozenset((
    "Reshape Flatten Squeeze Unsqueeze Identity Transpose Concat Split Slice Gather Pad "
    "MaxPool GlobalMaxPool Resize Upsample DepthToSpace SpaceToDepth Tile Expand"
).split())
