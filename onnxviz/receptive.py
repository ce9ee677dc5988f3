"""Receptive fields: which input pixels a unit of an intermediate tensor can see.

Composed from the geometry of every Conv/Pool/Resize/Pad/Slice on the paths from the image input
to the tensor (kernel, stride, dilation, pads, resize coordinate mapping), following the spatial
axes through Transposes (NHWC inputs). Where branches merge (residual Add, Concat) the field is
the union of the branches' fields; a branch that sees the whole image only through a global
pool (a squeeze-and-excitation gate, a global-context bias) is left out of such a merge, since
it scales or shifts the unit without moving where it looks. Used to crop dataset examples
around the units they excite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from .graph import Graph, NotConstant

_SPATIAL_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "MaxPool", "AveragePool",
                "LpPool")
_GLOBAL_OPS = ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Flatten", "Gemm")
_NO_PIXELS = ("Shape", "Size")  # outputs describe a tensor's shape, not its pixels


@dataclass(frozen=True)
class Field:
    """Per spatial axis (y, x): size of the field, jump between neighbouring units, and the
    input-pixel coordinate of the centre of unit 0 (pixel centres at 0, 1, 2, ...). `axes`:
    where the y and x axes are in the tensor (2, 3 for NCHW; 1, 2 for NHWC)."""

    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    whole_image: bool = False
    axes: tuple[int, int] = (2, 3)

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The (top, left, bottom, right) pixel box of unit (y, x), clipped to the input."""
        if self.whole_image:
            return 0, 0, height, width
        box = []
        for ax, (unit, limit) in enumerate(((y, height), (x, width))):
            centre = self.start[ax] + unit * self.jump[ax]
            half = (self.size[ax] - 1) / 2
            lo = max(0, math.floor(centre - half + 1e-6))
            hi = min(limit, math.ceil(centre + half - 1e-6) + 1)
            lo = min(lo, limit - 1)
            box.append((lo, max(hi, lo + 1)))
        (top, bottom), (left, right) = box
        return top, left, bottom, right


IDENTITY = Field((1.0, 1.0), (1.0, 1.0), (0.0, 0.0))


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _pads_begin(node, k, s, d, in_size, axis) -> float:
    auto = _attr(node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if in_size is None:
            return ((k - 1) * d) / 2
        out = math.ceil(in_size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - in_size, 0)
        return total // 2 if auto == "SAME_UPPER" else total - total // 2
    if auto == "VALID":
        return 0.0
    pads = _attr(node, "pads")
    return float(pads[axis]) if pads else 0.0


def _replace(f: Field, size=None, jump=None, start=None, **kw) -> Field:
    return Field(tuple(size or f.size), tuple(jump or f.jump), tuple(start or f.start),
                 kw.get("whole_image", f.whole_image), kw.get("axes", f.axes))


def _const(g: Graph, node: onnx.NodeProto, idx: int):
    if len(node.input) > idx and node.input[idx]:
        try:
            return np.asarray(g.constant(node.input[idx]))
        except NotConstant:
            return None
    return None


def _window(f: Field, node: onnx.NodeProto, g: Graph, in_hw) -> Field:
    op = node.op_type
    if op in ("Conv", "ConvTranspose", "ConvInteger"):
        kernel = _attr(node, "kernel_shape")
        if kernel is None:
            kernel = list(g.constant(node.input[1]).shape[2:])
    elif op == "QLinearConv":
        kernel = _attr(node, "kernel_shape") or list(g.constant(node.input[3]).shape[2:])
    else:
        kernel = _attr(node, "kernel_shape")
    if kernel is None or len(kernel) != 2:
        return f
    strides = _attr(node, "strides") or [1, 1]
    dil = _attr(node, "dilations") or [1, 1]
    size, jump, start = list(f.size), list(f.jump), list(f.start)
    for ax in range(2):
        k, s, d = kernel[ax], strides[ax], dil[ax]
        p = _pads_begin(node, k, s, d, in_hw[ax] if in_hw else None, ax)
        if op == "ConvTranspose":  # upsampling: the field grows by the kernel, jump shrinks
            size[ax] += (k - 1) * d * jump[ax] / s
            start[ax] += jump[ax] * (p - (k - 1) * d / 2) / s
            jump[ax] /= s
        else:
            size[ax] += (k - 1) * d * jump[ax]
            start[ax] += jump[ax] * ((k - 1) * d / 2 - p)
            jump[ax] *= s
    return _replace(f, size, jump, start)


def _pad(f: Field, node: onnx.NodeProto, g: Graph, rank: int | None) -> Field:
    """Pad: unit i of the output is unit i - pad_begin of the input."""
    pads = _attr(node, "pads")
    if pads is None:
        pads = _const(g, node, 1)
    if pads is None or rank is None:
        return f
    pads = [int(p) for p in np.ravel(pads)]
    axes = _const(g, node, 3)
    axes = [int(a) % rank for a in np.ravel(axes)] if axes is not None else list(range(rank))
    if len(pads) != 2 * len(axes):
        return f
    begin = dict(zip(axes, pads[:len(axes)], strict=True))
    start = [f.start[k] - f.jump[k] * begin.get(f.axes[k], 0) for k in range(2)]
    return _replace(f, start=start)


def _slice(f: Field, node: onnx.NodeProto, g: Graph, shape) -> Field:
    """Slice along a spatial axis: unit i of the output is unit begin + i * step of the input."""
    if _attr(node, "starts") is not None:  # opset < 10: attributes, step 1
        starts, axes, steps = _attr(node, "starts"), _attr(node, "axes"), None
    else:
        starts, axes, steps = _const(g, node, 1), _const(g, node, 3), _const(g, node, 4)
        if starts is None or (len(node.input) > 3 and node.input[3] and axes is None) or (
                len(node.input) > 4 and node.input[4] and steps is None):
            return f
    rank = len(shape) if shape else None
    starts = [int(s) for s in np.ravel(starts)]
    axes = [int(a) for a in np.ravel(axes)] if axes is not None else list(range(len(starts)))
    steps = [int(s) for s in np.ravel(steps)] if steps is not None else [1] * len(starts)
    size, jump, start = list(f.size), list(f.jump), list(f.start)
    for a, b, st in zip(axes, starts, steps, strict=True):
        if rank is not None:
            a %= rank
        if a not in f.axes:
            continue
        k = f.axes.index(a)
        dim = shape[a] if shape and isinstance(shape[a], int) else None
        if st < 0:
            return f  # a reversed axis; not met in image models
        if b < 0:
            if dim is None:
                return f
            b += dim
        if dim is not None:
            b = min(b, dim)
        start[k] += jump[k] * b
        jump[k] *= st
    return _replace(f, size, jump, start)


def _transpose(f: Field, node: onnx.NodeProto, rank: int | None) -> Field:
    perm = _attr(node, "perm")
    if perm is None:
        if rank is None:
            return f
        perm = list(range(rank))[::-1]
    perm = list(perm)
    if not all(a in perm for a in f.axes):
        return f
    return _replace(f, axes=(perm.index(f.axes[0]), perm.index(f.axes[1])))


def _resize_axis(n_in: int, n_out: int, scale: float, node: onnx.NodeProto
                 ) -> tuple[float, float, float]:
    """For one axis of a Resize: (offset a, ratio r, extra) such that output unit i reads input
    units within a + r*i +- extra/2 (the exact index map, computed for every output unit)."""
    ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
    mode = _attr(node, "mode", "nearest")
    if node.op_type == "Upsample":
        ctm, nearest = "asymmetric", "floor"
    else:
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
    i = np.arange(n_out, dtype=np.float64)
    r = 1.0 / scale
    if ctm == "align_corners":
        r = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        x = i * r
    elif ctm == "asymmetric":
        x = i * r
    elif ctm == "tf_half_pixel_for_nn":
        x = (i + 0.5) * r
    elif ctm == "pytorch_half_pixel" and n_out == 1:
        x = np.zeros_like(i)
    else:  # half_pixel, pytorch_half_pixel, tf_crop_and_resize (approximated)
        x = (i + 0.5) * r - 0.5
    if mode == "nearest":
        if nearest == "floor":
            idx = [np.floor(x)]
        elif nearest == "ceil":
            idx = [np.ceil(x)]
        elif nearest == "round_prefer_ceil":
            idx = [np.floor(x + 0.5)]
        else:
            idx = [np.ceil(x - 0.5)]
    else:
        lo = np.floor(x)
        idx = [lo, lo + 1] if mode == "linear" else [lo - 1, lo, lo + 1, lo + 2]
    offsets = np.concatenate([np.clip(j, 0, n_in - 1) - r * i for j in idx])
    lo_off, hi_off = float(offsets.min()), float(offsets.max())
    return (lo_off + hi_off) / 2, r, hi_off - lo_off


def _resize(f: Field, node: onnx.NodeProto, g: Graph, in_shape, out_shape) -> Field:
    scales = None
    for idx in (2, 1):  # Resize: scales is input 2 (opset >= 11) or 1; Upsample: input 1
        v = _const(g, node, idx)
        if v is not None and v.dtype.kind == "f" and v.size >= 3:
            scales = [float(s) for s in v.ravel()]
            break
    if node.op_type == "Upsample" and scales is None:
        scales = _attr(node, "scales")
    size, jump, start = list(f.size), list(f.jump), list(f.start)
    for k, a in enumerate(f.axes):
        n_in = in_shape[a] if in_shape and isinstance(in_shape[a], int) else None
        n_out = out_shape[a] if out_shape and isinstance(out_shape[a], int) else None
        scale = scales[a] if scales and a < len(scales) else (
            n_out / n_in if n_in and n_out else None)
        if scale is None or scale <= 0:
            return f
        if n_in is None or n_out is None:  # sizes unknown: the continuous approximation
            r = 1.0 / scale
            a_off, extra = (0.0 if _attr(node, "coordinate_transformation_mode") == "asymmetric"
                            else 0.5 * r - 0.5), 1.0
        else:
            a_off, r, extra = _resize_axis(n_in, n_out, scale, node)
        start[k] += jump[k] * a_off
        size[k] += jump[k] * extra
        jump[k] *= r
    return _replace(f, size, jump, start)


def _union(fields: list[Field]) -> Field:
    """The smallest field containing every field in `fields` (same axes); else the largest."""
    if len(fields) == 1:
        return fields[0]
    if any(f.axes != fields[0].axes for f in fields):
        return max(fields, key=lambda f: f.size[0] * f.size[1])
    size, jump, start = [], [], []
    for k in range(2):
        lo = min(f.start[k] - (f.size[k] - 1) / 2 for f in fields)
        hi = max(f.start[k] + (f.size[k] - 1) / 2 for f in fields)
        size.append(hi - lo + 1)
        start.append((lo + hi) / 2)
        jump.append(max(f.jump[k] for f in fields))
    return Field(tuple(size), tuple(jump), tuple(start), False, fields[0].axes)


def _merge(ins: list[Field]) -> Field:
    local = [f for f in ins if not f.whole_image]
    return _union(local) if local else ins[0]


def _compose(f: Field, node: onnx.NodeProto, g: Graph, shapes: dict, in_hw) -> Field:
    op = node.op_type
    in_shape = shapes.get(node.input[0]) if node.input else None
    if op in _GLOBAL_OPS:
        return _replace(f, whole_image=True)
    if op in _SPATIAL_OPS:
        return _window(f, node, g, in_hw)
    if op in ("Resize", "Upsample"):
        return _resize(f, node, g, in_shape, shapes.get(node.output[0]))
    if op == "Pad":
        return _pad(f, node, g, len(in_shape) if in_shape else None)
    if op == "Slice":
        return _slice(f, node, g, in_shape)
    if op == "Transpose":
        return _transpose(f, node, len(in_shape) if in_shape else None)
    if op in ("ReduceMean", "ReduceMax", "ReduceSum", "ReduceL2") and _reduces_space(
            f, node, g, in_shape):
        return _replace(f, whole_image=True)
    return f


def _reduces_space(f: Field, node: onnx.NodeProto, g: Graph, in_shape) -> bool:
    axes = _attr(node, "axes")
    if axes is None:
        axes = _const(g, node, 1)
    if axes is None:
        return True  # no axes: reduces everything
    rank = len(in_shape) if in_shape else 4
    return any(int(a) % rank in f.axes for a in np.ravel(axes))


def receptive_fields(model: onnx.ModelProto, input_name: str, in_hw: tuple[int, int],
                     layout: str = "NCHW") -> dict[str, Field]:
    """Field of every tensor computed from `input_name`, an image of size `in_hw` in `layout`
    ("NCHW" or "NHWC"; the spatial axes are followed through Transposes). Shapes are inferred
    with the input pinned, so SAME padding and Resize index maps are resolved exactly."""
    from .model import inferred_shapes

    axes = (1, 2) if layout == "NHWC" else (2, 3)
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    for vi in pinned.graph.input:
        if vi.name == input_name and len(vi.type.tensor_type.shape.dim) == 4:
            dims = vi.type.tensor_type.shape.dim
            for a, v in zip(axes, in_hw, strict=True):
                dims[a].Clear()
                dims[a].dim_value = v
    shapes = {k: v[0] for k, v in inferred_shapes(pinned).items()}
    g = Graph(model)
    fields = {input_name: Field((1.0, 1.0), (1.0, 1.0), (0.0, 0.0), axes=axes)}
    for node in g.nodes:
        ins = [fields[x] for x in node.input if x in fields]
        if not ins or node.op_type in _NO_PIXELS:
            continue
        base = _merge(ins)
        data_in = node.input[0] if node.input else None
        hw = _hw(shapes.get(data_in), base.axes, in_hw if data_in == input_name else None)
        out = _compose(base, node, g, shapes, hw)
        for o in node.output:
            if o:
                fields[o] = out
    return fields


def _hw(shape, axes, fallback):
    if shape and len(shape) > max(axes) and all(isinstance(shape[a], int) for a in axes):
        return shape[axes[0]], shape[axes[1]]
    return fallback
