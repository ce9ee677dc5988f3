"""Receptive fields: which input pixels a unit of an intermediate tensor can see.

Composed from the geometry of every Conv/Pool/Resize on the paths from the image input to the
tensor (kernel, stride, dilation, pads); through branches that merge (residual Add, Concat)
the largest field is taken. Used to crop dataset examples around the units they excite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from .graph import Graph

_SPATIAL_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "MaxPool", "AveragePool",
                "LpPool")
_GLOBAL_OPS = ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")


@dataclass(frozen=True)
class Field:
    """Per spatial axis (y, x): size of the field, jump between neighbouring units, and the
    input-pixel coordinate of the centre of unit 0 (pixel centres at 0, 1, 2, ...)."""

    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    whole_image: bool = False

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
            box.append((lo, max(hi, lo + 1)))
        (top, bottom), (left, right) = box
        return top, left, bottom, right


IDENTITY = Field((1.0, 1.0), (1.0, 1.0), (0.0, 0.0))


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _pads_begin(node, k, s, d, in_size, axis) -> float:
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
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


def _compose(f: Field, node: onnx.NodeProto, g: Graph, in_hw) -> Field:
    op = node.op_type
    if op in _GLOBAL_OPS:
        return Field(f.size, f.jump, f.start, whole_image=True)
    if op in _SPATIAL_OPS:
        if op in ("Conv", "ConvTranspose", "ConvInteger"):
            kernel = _attr(node, "kernel_shape")
            if kernel is None:
                kernel = list(g.constant(node.input[1]).shape[2:])
        elif op == "QLinearConv":
            kernel = _attr(node, "kernel_shape") or list(g.constant(node.input[3]).shape[2:])
        else:
            kernel = _attr(node, "kernel_shape")
        if len(kernel) != 2:
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
        return Field((size[0], size[1]), (jump[0], jump[1]), (start[0], start[1]), f.whole_image)
    if op in ("Resize", "Upsample"):
        scales = _resize_scales(node, g)
        if scales is None:
            return f
        size = tuple(f.size[a] + (f.jump[a] / scales[a] if _linear(node) else 0) for a in range(2))
        jump = tuple(f.jump[a] / scales[a] for a in range(2))
        start = tuple(f.start[a] + f.jump[a] * (0.5 / scales[a] - 0.5) for a in range(2))
        return Field(size, jump, start, f.whole_image)
    return f


def _linear(node) -> bool:
    mode = _attr(node, "mode", b"nearest")
    return (mode.decode() if isinstance(mode, bytes) else mode) != "nearest"


def _resize_scales(node, g: Graph) -> tuple[float, float] | None:
    for idx in (2, 1):  # Resize: scales is input 2 (opset >= 11) or 1; Upsample: input 1
        if len(node.input) > idx and node.input[idx] and g.is_constant(node.input[idx]):
            v = np.asarray(g.constant(node.input[idx]), np.float64).ravel()
            if v.size == 4 and v.dtype.kind == "f":
                return float(v[2]), float(v[3])
    return None


def receptive_fields(model: onnx.ModelProto, input_name: str,
                     in_hw: tuple[int, int]) -> dict[str, Field]:
    """Field of every tensor computed from `input_name` (an NCHW image of size `in_hw`; for an
    NHWC model pass the tensor after its Transpose). Shapes are inferred with the input pinned,
    so SAME padding is resolved exactly."""
    from .model import inferred_shapes

    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    for vi in pinned.graph.input:
        if vi.name == input_name and len(vi.type.tensor_type.shape.dim) == 4:
            dims = vi.type.tensor_type.shape.dim
            for d, v in zip(dims[2:], in_hw, strict=True):
                d.Clear()
                d.dim_value = v
    shapes = {k: v[0] for k, v in inferred_shapes(pinned).items()}
    g = Graph(model)
    fields = {input_name: IDENTITY}
    for node in g.nodes:
        ins = [fields[x] for x in node.input if x in fields]
        if not ins:
            continue
        base = max(ins, key=lambda f: (f.whole_image, f.size[0] * f.size[1]))
        data_in = node.input[0] if node.input else None
        hw = _hw(shapes.get(data_in), in_hw if data_in == input_name else None)
        out = _compose(base, node, g, hw)
        for o in node.output:
            if o:
                fields[o] = out
    return fields


def _hw(shape, fallback):
    if shape and len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
        return shape[2], shape[3]
    return fallback
