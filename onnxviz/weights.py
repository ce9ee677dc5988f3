"""Learned filters as arrays: conv kernels, BN-folded kernels, and dense rows as image templates.

Weights are resolved however the exporter stored them (initializer, Constant, Cast from fp16,
DequantizeLinear, QLinearConv/ConvInteger scales...) through `Graph.constant`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from .errors import OnnxvizError, UnsupportedError
from .graph import Graph, NotConstant

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")
DENSE_OPS = ("Gemm", "MatMul", "QLinearMatMul", "MatMulInteger")


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _dequantize(w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
                axis: int) -> np.ndarray:
    w = w.astype(np.float32)
    scale = np.asarray(scale, np.float32)
    zp = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point, np.float32)
    if scale.size > 1:
        shape = [1] * w.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (w - zp) * scale


def _opt_const(g: Graph, node: onnx.NodeProto, i: int) -> np.ndarray | None:
    return g.constant(node.input[i]) if len(node.input) > i and node.input[i] else None


def _integer_op_scale(g: Graph, node: onnx.NodeProto) -> np.ndarray | None:
    """The constant weight scale of a ConvInteger/MatMulInteger: found in Cast -> Mul after it."""
    tensor = node.output[0]
    for _ in range(3):
        users = g.consumers.get(tensor, [])
        if len(users) != 1:
            return None
        user = g.nodes[users[0]]
        if user.op_type == "Cast":
            tensor = user.output[0]
            continue
        if user.op_type != "Mul":
            return None
        other = next(x for x in user.input if x != tensor)
        if g.is_constant(other):
            return g.constant(other)
        if other in g.producer:  # dynamic quantization: Mul(x_scale, w_scale)
            prod = g.nodes[g.producer[other]]
            if prod.op_type == "Mul":
                consts = [x for x in prod.input if g.is_constant(x)]
                if len(consts) == 1:
                    return g.constant(consts[0])
        return None
    return None


def layer_weight_array(g: Graph, i: int) -> np.ndarray:
    """The float32 weight tensor of layer node i, dequantized, in the layout the op stores it."""
    node = g.nodes[i]
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        w = g.constant(node.input[1])
    elif op == "QLinearConv":
        w = _dequantize(g.constant(node.input[3]), g.constant(node.input[4]),
                        _opt_const(g, node, 5), axis=0)
    elif op == "QLinearMatMul":
        w = _dequantize(g.constant(node.input[3]), g.constant(node.input[4]),
                        _opt_const(g, node, 5), axis=1)
    elif op in ("ConvInteger", "MatMulInteger"):
        widx = 1
        if op == "MatMulInteger" and not g.is_constant(node.input[1]):
            widx = 0
        zp_idx = 3 if widx == 1 else 2
        scale = _integer_op_scale(g, node)
        w = _dequantize(g.constant(node.input[widx]),
                        np.float32(1.0) if scale is None else scale,
                        _opt_const(g, node, zp_idx), axis=0 if op == "ConvInteger" else 1)
    elif op == "Gemm":
        w = g.constant(node.input[1])
    elif op == "MatMul":
        w = g.constant(node.input[1] if g.is_constant(node.input[1]) else node.input[0])
    else:
        raise UnsupportedError(f"{op} is not a layer with weights")
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        w = w.astype(np.float32)
    return w.astype(np.float32, copy=False)


def filter_rows(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """One row per output unit of a layer's weights, whatever the storage order: conv filters
    (O, C*k*k), ConvTranspose output-channel footprints, dense units (units, K)."""
    op = node.op_type
    if op == "ConvTranspose":
        group = int(_attr(node, "group", 1))
        cin, opg = w.shape[:2]
        w = w.reshape(group, cin // group, opg, -1).swapaxes(1, 2)
        return w.reshape(group * opg, -1)
    if op in CONV_OPS:
        return w.reshape(w.shape[0], -1)
    if op == "Gemm":
        return w if _attr(node, "transB", 0) else w.reshape(w.shape[0], -1).T
    if w.ndim < 2:
        return w.reshape(1, -1)
    return np.moveaxis(w, -1, 0).reshape(w.shape[-1], -1)  # MatMul: (..., K, units)


@dataclass
class LayerWeights:
    """Filters of one layer as rendered: (O, C, kh, kw) float32, and how to read them."""

    layer: str
    op: str
    kind: str  # "conv" or "dense"
    weights: np.ndarray
    group: int = 1
    image_space: bool = False  # the filters act on input pixels, so they are pictures
    channel_order: str = "RGB"
    folded_bn: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def in_channels(self) -> int:
        return int(self.weights.shape[1])


def layer_weights(model, layer: str | None = None, fold_bn: bool = False,
                  channel_order: str | None = None) -> LayerWeights:
    """Filters of `layer` (default: the first layer that sees the image) ready to render.

    `model` is a `Model` (or anything `load_model` takes). Conv weights come back as
    (O, C/group, kh, kw); dense layers as one template per unit, (units, C, H, W), reshaped
    back to the tensor they read (the input image for a first dense layer).
    """
    from .model import load_model

    model = load_model(model)
    g = model.graph
    summary = model.summary
    info = _find_layer(summary, g, layer)
    i = g.node_index[info.name]
    node = g.nodes[i]
    try:
        w = layer_weight_array(g, i)
    except NotConstant as exc:
        raise OnnxvizError(f"the weights of layer {info.name!r} are not constant: folding "
                           f"stops at {exc.stopper}") from None
    contract = next((c for c in summary.inputs if c.layout), None)
    order = (channel_order or (contract.color_order if contract else None) or "RGB").upper()
    if order not in ("RGB", "BGR"):
        raise OnnxvizError(f"channel order must be rgb or bgr, not {channel_order!r}")
    notes = []
    if contract and contract.normalization:
        notes.append("the graph normalizes the input before this layer")
    if node.op_type in CONV_OPS:
        result = _conv_weights(g, node, info.name, w, fold_bn, notes)
    else:
        if fold_bn:
            raise OnnxvizError(f"--fold-bn applies to conv layers; {info.name!r} is a "
                               f"{node.op_type}")
        result = _dense_weights(g, node, info.name, w, notes)
    result.image_space = info.sees_image
    result.channel_order = order
    return result


def _find_layer(summary, g: Graph, layer: str | None):
    from .errors import unknown_name

    if layer is None:
        if summary.first_layer is None:
            raise OnnxvizError("the model has no conv or dense layer with constant weights, so "
                               "there are no filters to show (onnxviz inspect MODEL lists its ops)")
        return summary.layer(summary.first_layer)
    found = summary.layer(layer)
    if found:
        return found
    for info in summary.layers:  # by output or weight tensor name
        if layer in (info.output, info.weight):
            return info
    if layer in g.node_index:
        op = g.nodes[g.node_index[layer]].op_type
        raise OnnxvizError(f"node {layer!r} is a {op}, not a layer with weights; pick one of the "
                           "layers that `onnxviz inspect MODEL` lists")
    raise unknown_name("layer", layer, [x.name for x in summary.layers],
                       "Run `onnxviz inspect MODEL` to list the layers.")


def _conv_weights(g: Graph, node, name: str, w: np.ndarray, fold_bn: bool,
                  notes: list[str]) -> LayerWeights:
    group = int(_attr(node, "group", 1))
    folded = None
    if node.op_type == "ConvTranspose":
        # stored (C_in, O/group, k...): show one filter per output channel
        cin, opg = w.shape[:2]
        w = w.reshape(group, cin // group, opg, *w.shape[2:]).swapaxes(1, 2)
        w = w.reshape(group * opg, cin // group, *w.shape[3:])
        notes.append("ConvTranspose: each tile is the output footprint of one input channel")
    if fold_bn:
        folded, scale = _following_bn(g, node, name)
        w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        notes.append(f"BatchNormalization {folded!r} folded in (scaled by gamma/sqrt(var+eps))")
    if w.ndim == 3:  # 1-D conv: (O, C, k) -> one-pixel-high strips
        w = w[:, :, None, :]
        notes.append("1-D convolution: each kernel shown as a 1-pixel-high strip")
    elif w.ndim == 5:  # 3-D conv: depth slices side by side per input channel
        o, c, kd = w.shape[:3]
        w = w.reshape(o, c * kd, *w.shape[3:])
        notes.append(f"3-D convolution: tiles are the {kd} depth slices of each input channel")
    elif w.ndim != 4:
        raise UnsupportedError(f"layer {name!r} has {w.ndim}-D weights; no picture for that")
    if group > 1:
        per = w.shape[1]
        if per == 1:
            notes.append(f"depthwise (group={group}): each filter sees one input channel")
        else:
            notes.append(f"grouped (group={group}): each filter sees {per} channels of its group")
    return LayerWeights(name, node.op_type, "conv", np.ascontiguousarray(w, np.float32), group,
                        folded_bn=folded, notes=notes)


def _following_bn(g: Graph, node, name: str) -> tuple[str, np.ndarray]:
    users = [g.nodes[u] for u in g.consumers.get(node.output[0], [])]
    for u in users:
        if u.op_type == "BatchNormalization":
            gamma, _beta, _mean, var = (g.constant(x) for x in u.input[1:5])
            eps = float(_attr(u, "epsilon", 1e-5))
            bn_name = g.names[g.nodes.index(u)]
            return bn_name, (gamma / np.sqrt(var + eps)).astype(np.float32)
    raise OnnxvizError(f"--fold-bn: no BatchNormalization reads the output of {name!r} "
                       "(its batch norm may already be folded into the weights)")


# ---------------------------------------------------------------- dense templates

_ELEMENTWISE = ("Identity", "Cast", "Sub", "Div", "Mul", "Add", "Relu", "Dropout",
                "QuantizeLinear", "DequantizeLinear", "BatchNormalization")
_REARRANGE = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _dense_weights(g: Graph, node, name: str, w: np.ndarray, notes: list[str]) -> LayerWeights:
    op = node.op_type
    if op == "Gemm":
        rows = w if _attr(node, "transB", 0) else w.T  # (units, K)
        data = node.input[0]
        if _attr(node, "transA", 0):
            raise UnsupportedError(f"Gemm {name!r} has transA=1; no template view for that")
    elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        const_first = op == "MatMul" and not g.is_constant(node.input[1])
        rows = w if const_first else w.reshape(-1, w.shape[-1]).T
        data = node.input[1] if const_first else node.input[0]
    else:
        raise UnsupportedError(f"{op} is not a dense layer")
    units, k = rows.shape
    mapping = _flatten_mapping(g, data, k)
    if mapping is None:
        notes.append("rows shown as 1-pixel-high strips: the layer's input is not a flattened "
                     "image or feature map")
        templates = rows[:, None, None, :]
    else:
        index, (c, h, wd), source = mapping
        templates = np.zeros((units, c * h * wd), np.float32)
        templates[:, index] = rows
        templates = templates.reshape(units, c, h, wd)
        notes.append(f"each unit's weights reshaped to {source!r} ({c}x{h}x{wd})")
    return LayerWeights(name, op, "dense", np.ascontiguousarray(templates, np.float32),
                        notes=notes)


def _flatten_mapping(g: Graph, data: str, k: int):
    """Position in a (C, H, W) source tensor of each of the K features a dense layer reads.

    Walks back from the dense layer through reshapes and elementwise ops to the last rank-4
    tensor, then pushes an index image forward through the reshapes. Returns
    (index of each feature into the flat C*H*W source, (C, H, W), source name) or None.
    """
    chain = []
    tensor = data
    while tensor in g.producer:
        prod = g.nodes[g.producer[tensor]]
        if prod.op_type not in _ELEMENTWISE + _REARRANGE:
            break
        chain.append(prod)
        tensor = prod.input[0]
    chain.reverse()
    shape = _source_shape(g, tensor, k)
    if shape is None:
        return None
    layout_nhwc = False
    idx = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    try:
        for node in chain:
            if node.op_type in _ELEMENTWISE:
                continue
            idx = _rearrange(g, node, idx)
    except (NotConstant, ValueError):
        return None
    if idx.size != k:
        return None
    if shape[1] not in (1, 3, 4) and shape[3] in (1, 3, 4) and tensor in {
            v.name for v in g.inputs}:
        layout_nhwc = True
    _n, a, b, c = shape
    flat = idx.reshape(-1).astype(np.int64)
    if layout_nhwc:  # positions in (H, W, C) -> (C, H, W)
        hh, rest = np.divmod(flat, b * c)
        ww, cc = np.divmod(rest, c)
        flat = (cc * a + hh) * b + ww
        return flat, (c, a, b), tensor
    return flat, (a, b, c), tensor


def _source_shape(g: Graph, tensor: str, k: int) -> tuple[int, int, int, int] | None:
    from .model import inferred_shapes

    shape = inferred_shapes(g.model).get(tensor, (None, ""))[0]
    if shape is None or len(shape) != 4:
        return None
    dims = list(shape[1:])
    unknown = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    known = int(np.prod([d for d in dims if isinstance(d, int)]))
    if len(unknown) == 2 and k % known == 0:  # dynamic H, W: assume square
        side = round((k // known) ** 0.5)
        if side * side * known != k:
            return None
        for i in unknown:
            dims[i] = side
    elif unknown:
        return None
    if int(np.prod(dims)) != k:
        return None
    return (1, *dims)


def _rearrange(g: Graph, node, idx: np.ndarray) -> np.ndarray:
    op = node.op_type
    if op == "Transpose":
        perm = _attr(node, "perm")
        return np.transpose(idx, perm)
    if op == "Flatten":
        axis = int(_attr(node, "axis", 1))
        axis = axis + idx.ndim if axis < 0 else axis
        return idx.reshape(int(np.prod(idx.shape[:axis])), -1)
    if op == "Reshape":
        shape = [int(d) for d in g.constant(node.input[1])]
        if not _attr(node, "allowzero", 0):
            shape = [idx.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return idx.reshape(shape)
    if op in ("Squeeze", "Unsqueeze"):
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1:
            axes = [int(a) for a in g.constant(node.input[1])]
        if op == "Squeeze":
            return np.squeeze(idx, axis=tuple(axes) if axes else None)
        out = idx
        for a in sorted(a + out.ndim + 1 if a < 0 else a for a in axes):
            out = np.expand_dims(out, a)
        return out
    raise ValueError(op)


def weights_image(model, layer: str | None = None, normalize: str = "global",
                  channel_order: str | None = None, fold_bn: bool = False,
                  scale: int | None = None, max_inputs: int = 16):
    """The filters of a layer and their picture: (LayerWeights, PIL.Image)."""
    from .model import load_model
    from .render import render_filters

    model = load_model(model)
    lw = layer_weights(model, layer, fold_bn=fold_bn, channel_order=channel_order)
    w = lw.weights
    maxabs = float(np.nanmax(np.abs(w))) if w.size else 0.0
    shape = "x".join(str(d) for d in w.shape[1:])
    what = "templates" if lw.kind == "dense" else "filters"
    title = (f"{model.label} | {lw.layer} ({lw.op}) | {w.shape[0]} {what} of {shape} | "
             f"{normalize} scale, max |w| = {maxabs:.3g}"
             + (f" | {lw.channel_order}" if w.shape[1] == 3 else ""))
    img = render_filters(w, normalize=normalize, channel_order=lw.channel_order,
                         image_space=lw.image_space, scale=scale, max_inputs=max_inputs,
                         title=title, notes=lw.notes)
    return lw, img
