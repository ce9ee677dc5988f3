"""The `numeric` gradient backend: estimates from forward runs only, so any model onnxruntime
runs works, whatever its ops.

Random-direction estimates (NES/SPSA) in pixel space are useless at image sizes (cosine ~0.06
to the true gradient at 224x224 even with 1024 forwards). What works is central differences
along an orthonormal low-dimensional basis: the lowest k x k 2-D DCT coefficients of each input
channel (default, k=8: 2 x 3 x 64 = 384 forwards for an RGB image) or the span of a k x k
low-resolution image upsampled bilinearly. The estimate is the exact projection of the true
gradient onto that subspace, up to finite-difference error; the smooth, low-frequency part of
an input gradient carries most of its direction.

The backend estimates the vector-Jacobian product d<seed, target(x)>/dx: each batch item's
perturbations only change that item's activations, so every item is estimated at once, and
perturbed copies are batched along the batch axis when the model's batch dimension is dynamic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from ..errors import OnnxvizError
from ..graph import Graph
from ..model import Model, load_model

BASES = ("dct", "lowres")
DEFAULT_SIZE = 8
DEFAULT_REL_STEP = 1e-3  # perturbation RMS per input element, relative to the input's scale
DEFAULT_MAX_BATCH = 64
MAX_RUN_BYTES = 512 << 20  # activations held for one batched run


# ---------------------------------------------------------------- the forward-only model


def image_input(model: Model, input_name: str | None = None) -> onnx.ValueInfoProto:
    """The input to differentiate: the named one, else the model's only real input."""
    inputs = model.graph.inputs
    if input_name is not None:
        for vi in inputs:
            if vi.name == input_name:
                return vi
        names = ", ".join(v.name for v in inputs)
        raise OnnxvizError(f"the model has no input named {input_name!r} (inputs: {names})")
    if len(inputs) != 1:
        names = ", ".join(v.name for v in inputs)
        raise OnnxvizError(f"the model has {len(inputs)} inputs ({names}); name the image input "
                           "to differentiate (input_name=...)")
    return inputs[0]


def input_dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    """Dims of an input: ints where fixed, None where symbolic or unknown."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tt.shape.dim]


def fixed_batch(model: Model, input_name: str | None = None) -> int | None:
    """The model's fixed batch size, or None when the batch dimension is dynamic."""
    dims = input_dims(image_input(model, input_name))
    return dims[0] if dims else None


def check_input_shape(model: Model, shape: Sequence[int], input_name: str | None = None
                      ) -> tuple[int, ...]:
    """Validate a full input shape (batch included) against the model's input; one-line errors."""
    vi = image_input(model, input_name)
    dims = input_dims(vi)
    shape = tuple(int(s) for s in shape)
    if dims and len(dims) != len(shape):
        raise OnnxvizError(f"input {vi.name!r} has rank {len(dims)} ({_fmt(dims)}), but the "
                           f"given input shape {list(shape)} has rank {len(shape)}")
    if any(s <= 0 for s in shape):
        raise OnnxvizError(f"input shape {list(shape)} must have positive sizes")
    for k, (d, s) in enumerate(zip(dims, shape, strict=False)):
        if k > 0 and d is not None and d != s:
            raise OnnxvizError(f"input {vi.name!r} has size {d} on axis {k} ({_fmt(dims)}), but "
                               f"the input given has {s} (shape {list(shape)}); resize the image")
    return shape


def _fmt(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _subgraph_reads(node: onnx.NodeProto) -> list[str]:
    reads: list[str] = []
    for a in node.attribute:
        subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for sub in subs:
            for n in sub.node:
                reads.extend(x for x in n.input if x)
                reads.extend(_subgraph_reads(n))
    return reads


def needed_nodes(g: Graph, targets: Sequence[str]) -> list[int]:
    """Indices (graph order) of the nodes needed to compute `targets`."""
    need = set(targets)
    keep: set[int] = set()
    for i in range(len(g.nodes) - 1, -1, -1):
        node = g.nodes[i]
        if any(o in need for o in node.output if o):
            keep.add(i)
            need.update(x for x in node.input if x)
            need.update(_subgraph_reads(node))
    return sorted(keep)


def forward_model(model: Model | onnx.ModelProto, targets: Sequence[str],
                  input_shape: Sequence[int] | None = None, input_name: str | None = None,
                  pin_batch: bool = False) -> onnx.ModelProto:
    """A copy of the model that computes only `targets` (its outputs, in order) from the input.

    Nodes not needed for the targets are dropped. With `input_shape`, the input's non-batch
    dims are pinned to it; the batch dim too with `pin_batch`, else only where the model fixes
    it.
    """
    model = load_model(model, check=False)
    g = model.graph
    vi = image_input(model, input_name)
    keep = needed_nodes(g, targets)
    used = {x for i in keep for x in g.nodes[i].input if x}
    for i in keep:
        used.update(_subgraph_reads(g.nodes[i]))
    used.update(targets)
    other = [v.name for v in g.inputs if v.name != vi.name and v.name in used]
    if other:
        raise OnnxvizError(f"the targets depend on input(s) {', '.join(other)} besides "
                           f"{vi.name!r}; onnxviz differentiates one image input")
    types = _target_types(model, targets)
    nodes = [g.nodes[i] for i in keep]
    inits = [t for t in model.proto.graph.initializer if t.name in used]
    new_in = onnx.ValueInfoProto()
    new_in.CopyFrom(vi)
    if input_shape is not None:
        dims = new_in.type.tensor_type.shape.dim
        for k, s in enumerate(input_shape):
            if k == 0 and not pin_batch and not (dims[0].HasField("dim_value")
                                                 and dims[0].dim_value > 0):
                dims[0].Clear()
                dims[0].dim_param = "N"
                continue
            dims[k].Clear()
            dims[k].dim_value = int(s)
    outputs = []
    for t in targets:
        dtype, shape = types.get(t, (None, None))
        if dtype is None or shape is None:
            outputs.append(onnx.ValueInfoProto(name=t))  # untyped: onnxruntime infers it
        else:
            outputs.append(helper.make_tensor_value_info(
                t, dtype, [None if k == 0 else d for k, d in enumerate(shape)]))
    graph = helper.make_graph(nodes, "onnxviz_forward", [new_in], outputs, inits)
    out = helper.make_model(graph, opset_imports=list(model.proto.opset_import))
    out.ir_version = model.proto.ir_version
    for f in model.proto.functions:
        out.functions.add().CopyFrom(f)
    return out


def _target_types(model: Model, targets: Sequence[str]) -> dict[str, tuple[int | None, list]]:
    """Tensor -> (ONNX element type or None, inferred shape or None)."""
    from ..objectives import _shapes

    known = _shapes(model)
    out: dict[str, tuple[int | None, list]] = {}
    for t in targets:
        shape, dtype = known.get(t, (None, ""))
        try:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        except Exception:
            elem = None
        out[t] = (elem, shape)
    return out


def as_float32(model: Model) -> tuple[Model, list[str]]:
    """The model itself, or for float16/bfloat16 models a float32 copy (the same copy autodiff
    differentiates), with a note saying so."""
    from .prepare import LOW_FLOATS, _float32_copy

    proto = model.proto
    if not any(t.data_type in LOW_FLOATS for t in proto.graph.initializer) and not any(
            v.type.tensor_type.elem_type in LOW_FLOATS for v in proto.graph.input):
        return model, []
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    notes: list[str] = []
    _float32_copy(copy, notes)
    return load_model(copy, check=False), notes


@dataclass(eq=False)
class ForwardRunner:
    """Runs the forward-only model of some targets on any number of items: chunked by `chunk`
    items per run where the batch dim is dynamic, by the model's fixed batch (padded) where not.
    """

    model: Model
    targets: list[str]
    input_shape: tuple[int, ...]
    input_name: str | None = None
    providers: Sequence[str] | None = None
    chunk: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        from ..runtime import make_session

        self.model, self.notes = as_float32(self.model)
        vi = image_input(self.model, self.input_name)
        self.input_name = vi.name
        elem = vi.type.tensor_type.elem_type
        self.input_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        self.batch = fixed_batch(self.model, self.input_name)
        proto = forward_model(self.model, self.targets, self.input_shape, self.input_name)
        try:
            self.session = make_session(proto, providers=self.providers)
        except OnnxvizError as exc:
            # older onnxruntime builds (e.g. the training build 1.19) load IR <= 10 only; the
            # IR 11 additions (4-bit float types) are rare in CNNs, so retry as IR 10
            if "IR version" not in str(exc) or proto.ir_version <= 10:
                raise
            proto.ir_version = 10
            self.session = make_session(proto, providers=self.providers)

    def __call__(self, xs: np.ndarray) -> list[np.ndarray]:
        from ..runtime import run

        n = xs.shape[0]
        step = self.batch or max(1, self.chunk)
        outs: list[list[np.ndarray]] = []
        for start in range(0, n, step):
            chunk = xs[start:start + step]
            m = chunk.shape[0]
            if self.batch is not None and m < self.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - m, 0)])
            res = run(self.session, {self.input_name: chunk.astype(self.input_dtype, copy=False)})
            outs.append([r[:m] for r in res])
        if len(outs) == 1:
            return outs[0]
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


# ---------------------------------------------------------------- the low-dimensional basis


@functools.lru_cache(maxsize=64)
def basis_1d(n: int, k: int, kind: str = "dct") -> np.ndarray:
    """(n, k) matrix with orthonormal columns spanning the k lowest frequencies of length n."""
    k = min(k, n)
    if kind == "dct":
        i = np.arange(n)[:, None] + 0.5
        q = np.cos(np.pi * i * np.arange(k)[None, :] / n) * math.sqrt(2.0 / n)
        q[:, 0] = 1.0 / math.sqrt(n)
        return q
    if kind == "lowres":  # bilinear upsampling from k samples (half-pixel centers), orthonormalized
        pos = np.clip((np.arange(n) + 0.5) * k / n - 0.5, 0, k - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, k - 1)
        frac = pos - lo
        up = np.zeros((n, k))
        up[np.arange(n), lo] += 1 - frac
        up[np.arange(n), hi] += frac
        q, _ = np.linalg.qr(up)
        return q
    raise OnnxvizError(f"unknown numeric basis {kind!r}; use one of {', '.join(BASES)}")


# ---------------------------------------------------------------- the estimator


@dataclass(eq=False)
class NumericBackend:
    """Central differences of d<seed, targets(x)>/dx along a low-dimensional orthonormal basis.

    model: a loaded Model; targets: tensor names; input_shape: the full input shape (batch
    included, the batch size is only a default); channel_axis: of the input (1 for NCHW, -1
    for NHWC, None for a non-image input). basis: "dct" or "lowres"; size: k, coefficients per
    spatial axis; rel_step: perturbation RMS per input element relative to the input's scale;
    scale: the input's scale (default: estimated from each x); max_batch: items per run.
    """

    model: Model
    targets: list[str]
    input_shape: tuple[int, ...]
    input_name: str | None = None
    channel_axis: int | None = 1
    basis: str = "dct"
    size: int = DEFAULT_SIZE
    rel_step: float = DEFAULT_REL_STEP
    scale: float | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    providers: Sequence[str] | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise OnnxvizError(f"unknown numeric basis {self.basis!r}; use one of "
                               f"{', '.join(BASES)}")
        if self.size < 1:
            raise OnnxvizError("the numeric basis size must be at least 1")
        vi = image_input(self.model, self.input_name)
        self.input_name = vi.name
        self.input_shape = check_input_shape(self.model, self.input_shape, self.input_name)
        self.runner = ForwardRunner(self.model, self.targets, self.input_shape, self.input_name,
                                    self.providers, chunk=1)
        self.notes.extend(self.runner.notes)
        if self.runner.input_dtype.kind != "f":
            raise OnnxvizError(f"input {vi.name!r} is {self.runner.input_dtype}, not floating "
                               "point: it has no gradient")
        self.batch = self.runner.batch
        self._axes = self._layout()
        shape = self.input_shape
        self.bases = [basis_1d(shape[a], self._k(a), self.basis) for a in self._axes[1]]
        channels = shape[self._axes[0]] if self._axes[0] is not None else 1
        self.directions = channels * int(np.prod([b.shape[1] for b in self.bases]))
        probe = self.forward(np.zeros((1, *shape[1:]), np.float32))
        item_bytes = int(np.prod(shape[1:])) * 4 * 3
        item_bytes += sum(int(np.prod(a.shape[1:])) * a.itemsize * 2 for a in probe)
        self.target_shapes = [tuple(a.shape[1:]) for a in probe]
        self.run_batch = self.batch or max(1, min(self.max_batch, MAX_RUN_BYTES // item_bytes))
        self.runner.chunk = self.run_batch

    # ----- layout
    def _layout(self) -> tuple[int | None, list[int]]:
        rank = len(self.input_shape)
        if rank < 2:
            raise OnnxvizError(f"input {self.input_name!r} has rank {rank}; numeric gradients need "
                               "a batch axis and at least one more")
        if self.channel_axis is None or rank == 2:
            return None, list(range(1, rank))
        c = self.channel_axis % rank
        return c, [a for a in range(1, rank) if a != c]

    def _k(self, axis: int) -> int:
        spatial = len(self._axes[1])
        return self.size * self.size if spatial == 1 and self._axes[0] is None else self.size

    @property
    def forwards_per_gradient(self) -> int:
        """Forward passes (of one image) per gradient: two per basis direction."""
        return 2 * self.directions

    @property
    def cost(self) -> str:
        kind = "DCT coefficients" if self.basis == "dct" else "low-res pixels"
        ks = "x".join(str(b.shape[1]) for b in self.bases)
        c = self.input_shape[self._axes[0]] if self._axes[0] is not None else 1
        batching = (f"batched {self.run_batch} per onnxruntime run" if self.batch is None
                    else f"the model's fixed batch of {self.batch} per run")
        return (f"numeric gradient: {self.forwards_per_gradient} forwards per image "
                f"(central differences on {c} channel(s) x {ks} {kind}), {batching}")

    # ----- running
    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """The target activations for a batch of inputs."""
        return self.runner(np.asarray(x, np.float32))

    def step_size(self, x: np.ndarray) -> float:
        """Step along a unit basis direction: rel_step x scale x sqrt(elements per item)."""
        scale = self.scale
        if scale is None:
            std = float(np.std(x))
            peak = float(np.max(np.abs(x))) if x.size else 0.0
            scale = max(std, 0.25 * peak)
            if not np.isfinite(scale) or scale < 1e-6:
                scale = 1.0
        return self.rel_step * scale * math.sqrt(int(np.prod(x.shape[1:])))

    def _direction_images(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), *item shape) unit-norm basis images for direction indices."""
        c_axis = self._axes[0]
        ks = [b.shape[1] for b in self.bases]
        per_channel = int(np.prod(ks))
        shape = self.input_shape[1:]
        out = np.zeros((len(idx), *shape), np.float32)
        for row, j in enumerate(idx):
            c, rest = divmod(int(j), per_channel)
            coords = np.unravel_index(rest, ks)
            img = functools.reduce(np.multiply.outer, [b[:, k] for b, k in
                                                       zip(self.bases, coords, strict=True)])
            view = out[row]
            if c_axis is not None:  # basic indexing: a view into out
                view = view[_channel_index(len(shape), c_axis - 1, c)]
            view[...] = img
        return out

    def vjp(self, x: np.ndarray, seeds: Sequence[np.ndarray]) -> tuple[None, np.ndarray]:
        """(None, estimate of d sum_t <seed_t, target_t(x)> / dx) for a batch x (float32)."""
        x = np.asarray(x, np.float32)
        n = x.shape[0]
        seeds64 = [np.asarray(s, np.float64).reshape(n, -1) for s in seeds]
        h = self.step_size(x)
        per_run = max(1, self.run_batch // (2 * n)) if self.batch is None else max(
            1, self.batch // (2 * n))
        coef = np.zeros((self.directions, n))
        for start in range(0, self.directions, per_run):
            idx = np.arange(start, min(start + per_run, self.directions))
            d = self._direction_images(idx)  # (B, ...)
            b = len(idx)
            xs = np.empty((2, b, *x.shape), np.float32)
            xs[0] = x[None] + h * d[:, None]
            xs[1] = x[None] - h * d[:, None]
            acts = self.runner(xs.reshape(2 * b * n, *x.shape[1:]))
            f = np.zeros((2, b, n))
            for a, s in zip(acts, seeds64, strict=True):
                f += np.einsum("sbnk,nk->sbn", a.reshape(2, b, n, -1).astype(np.float64), s)
            coef[idx] = (f[0] - f[1]) / (2.0 * h)
        return None, self._assemble(coef, x.shape)

    def _assemble(self, coef: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """sum_j coef[j, n] * direction_j, computed separably."""
        c_axis, spatial = self._axes
        n = shape[0]
        ks = [b.shape[1] for b in self.bases]
        channels = shape[c_axis] if c_axis is not None else 1
        c = coef.T.reshape(n, channels, *ks)
        for k, b in enumerate(self.bases):  # contract axis 2+k of c (size ks[k]) with b (len, ks)
            c = np.moveaxis(np.tensordot(c, b, axes=([2 + k], [1])), -1, 2 + k)
        # c: (n, channels, *spatial sizes) -> the input layout
        if c_axis is None:
            return c.reshape(shape).astype(np.float32)
        canonical = [0, c_axis, *spatial]  # canonical axis k belongs at input axis canonical[k]
        order = np.argsort(canonical)
        return np.transpose(c, order).astype(np.float32)


def _channel_index(rank: int, axis: int, c: int) -> tuple:
    index: list = [slice(None)] * rank
    index[axis] = c
    return tuple(index)
