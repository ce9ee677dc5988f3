"""VJP rules for the sliding-window and resampling ops: Conv, ConvTranspose, pools, Resize.

Each rule takes (builder, forward node, output gradients) and returns the input gradients
(None where no gradient is needed). Geometry is always derived from the static shapes of the
forward tensors, so auto_pad, ceil_mode and output_shape never need re-deriving at run time.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .builder import Builder, attr

Grads = list[str | None]
FLOAT = onnx.TensorProto.FLOAT

# Faster formulations of some adjoints (measured with onnxruntime 1.32 on CPU, see each
# function), each with a switch so that benchmarks/bench_gradients.py --compare can time it
# against the plain formulation (ConvTranspose; MaxPool Indices + ScatterElements):
# - stride-1 convs with constant weights: a plain Conv with the kernel flipped and in/out
#   channels swapped (stays in onnxruntime's blocked layout);
FLIP_STRIDE1 = True
# - strided 2-D convs whose input has few channels (the image stem): sub-pixel Conv;
SUBPIXEL_FEW_CHANNELS = True
# - strided depthwise convs: stride-1 Conv of the gradient with zeros inserted;
ZERO_INSERT_DEPTHWISE = True
# - 2-D max pools with disjoint windows or 3x3 stride-2 pad-1 ones: two separable passes
#   without the Indices output;
SEPARABLE_MAX_POOL = True
# - ConvTranspose outputs: back to the blocked layout through an identity depthwise Conv.
BLOCKED_CONV_TRANSPOSE = True


# ---------------------------------------------------------------- geometry


def window_geometry(node: onnx.NodeProto, x_shape, y_shape, kernel
                    ) -> tuple[list, list, list, list]:
    """(strides, dilations, pads_begin, pads_end) of a Conv/pool node, auto_pad resolved."""
    n = len(kernel)
    strides = list(attr(node, "strides", None) or [1] * n)
    dilations = list(attr(node, "dilations", None) or [1] * n)
    pads = list(attr(node, "pads", None) or [0] * (2 * n))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    begin, end = pads[:n], pads[n:]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        for i in range(n):
            eff = (kernel[i] - 1) * dilations[i] + 1
            total = 0 if auto_pad == "VALID" else max(
                0, (y_shape[2 + i] - 1) * strides[i] + eff - x_shape[2 + i])
            small = total // 2
            begin[i], end[i] = (small, total - small) if auto_pad == "SAME_UPPER" \
                else (total - small, small)
    return strides, dilations, begin, end


def transposed_pads(x_size: int, y_size: int, eff: int, stride: int, begin: int
                    ) -> tuple[int, int, int]:
    """Pads (begin, end) and output_padding that make a ConvTranspose of a y_size gradient come
    out exactly x_size long (the adjoint of the forward window placement)."""
    full = (y_size - 1) * stride + eff
    rest = full - begin - x_size
    return (begin, rest, 0) if rest >= 0 else (begin, 0, -rest)


def conv_transpose_adjoint(b: Builder, g: str, w: str, x_shape, y_shape, kernel, strides,
                           dilations, begin, group: int) -> str:
    """ConvTranspose with explicit pads and output_padding (never output_shape)."""
    n = len(kernel)
    pb, pe, op = [], [], []
    for i in range(n):
        eff = (kernel[i] - 1) * dilations[i] + 1
        p0, p1, extra = transposed_pads(x_shape[2 + i], y_shape[2 + i], eff, strides[i],
                                        begin[i])
        if extra >= max(strides[i], dilations[i]):
            raise b.unsupported("its geometry leaves input rows no window reaches beyond "
                                "what output_padding can express")
        pb.append(p0)
        pe.append(p1)
        op.append(extra)
    return b.op("ConvTranspose", [g, w], kernel_shape=list(kernel), strides=list(strides),
                dilations=list(dilations), group=group, pads=pb + pe,
                output_padding=op if any(op) else None)


# ---------------------------------------------------------------- Conv / ConvTranspose


def conv(b: Builder, node: onnx.NodeProto, grads: Grads) -> Grads:
    x, w = node.input[0], node.input[1]
    if b.wants(w):
        raise b.unsupported("its weights depend on the input image (onnxviz never "
                            "differentiates weights)")
    g = grads[0]
    x_shape, y_shape = b.shape(x), b.shape(node.output[0])
    w_value = b.value(w)
    w_shape = w_value.shape if w_value is not None else b.shape(w)
    kernel = list(w_shape[2:])
    group = attr(node, "group", 1)
    strides, dilations, begin, end = window_geometry(node, x_shape, y_shape, kernel)
    out: Grads = [None] * len(node.input)
    if FLIP_STRIDE1 and all(s == 1 for s in strides) and w_value is not None:
        full = [(k - 1) * d for k, d in zip(kernel, dilations, strict=True)]
        pads = [f - p for f, p in zip(full, begin, strict=True)] + \
               [f - p for f, p in zip(full, end, strict=True)]
        if all(p >= 0 for p in pads):
            out[0] = b.op("Conv", [g, b.const(flipped_kernel(w_value, group))],
                          kernel_shape=kernel, dilations=list(dilations), group=group,
                          pads=pads)
            return out
    strided = any(s > 1 for s in strides)
    if ZERO_INSERT_DEPTHWISE and strided and w_value is not None and group > 1 \
            and group == x_shape[1]:
        out[0] = zero_insert_adjoint(b, g, w_value, x_shape, y_shape, strides, dilations, begin,
                                     group)
        return out
    if SUBPIXEL_FEW_CHANNELS and w_value is not None and group == 1 and len(kernel) == 2 \
            and strides[0] == strides[1] > 1 and strides[0] ** 2 * x_shape[1] <= 16:
        out[0] = subpixel_adjoint(b, g, w_value, x_shape, y_shape, strides[0], dilations, begin)
        return out
    out[0] = conv_transpose_adjoint(b, g, w, x_shape, y_shape, kernel, strides, dilations,
                                    begin, group)
    if BLOCKED_CONV_TRANSPOSE and len(kernel) == 2 and x_shape[1] % 16 == 0:
        # ConvTranspose has no blocked-layout kernel in onnxruntime: an identity depthwise
        # Conv (weight 1, exact) brings its output back into the blocked layout, so the Add of
        # a residual block's two paths fuses into it and the gradient stays blocked through
        # the next block's masks and convs (ResNet-18: 8 fewer reorders and 7 fewer Adds)
        channels = x_shape[1]
        out[0] = b.op("Conv", [out[0], b.const(np.ones((channels, 1, 1, 1), np.float32))],
                      kernel_shape=[1, 1], group=channels)
    return out


def zero_insert_adjoint(b: Builder, g: str, w: np.ndarray, x_shape, y_shape, strides,
                        dilations, begin, group: int) -> str:
    """The adjoint of a strided conv as the stride-1 adjoint (a Conv with the kernel flipped)
    of the gradient with stride-1 zeros inserted after each sample: the definition of the
    transposed convolution, spelled with ops onnxruntime runs fast. For depthwise convs the
    extra multiply-adds on zeros are few, while onnxruntime's ConvTranspose runs group by
    group (measured: the whole logit gradient of MobileNetV2 8% and of PP-LCNet 7% faster).
    Zeros are inserted by Concat with a ConstantOfShape (a Pad of the same interleaved view
    is ten times slower in onnxruntime)."""
    n = len(strides)
    z, shape = g, list(y_shape)
    for i in reversed(range(n)):  # innermost axis first
        if strides[i] == 1:
            continue
        axis = 2 + i
        view = [*shape[:axis + 1], 1, *shape[axis + 1:]]
        zeros_shape = list(view)
        zeros_shape[axis + 1] = strides[i] - 1
        zeros = b.op("ConstantOfShape", [b.ints(zeros_shape)],
                     value=numpy_helper.from_array(np.zeros(1, np.float32)))
        shape[axis] *= strides[i]
        z = b.reshape(b.op("Concat", [b.reshape(z, view), zeros], axis=axis + 1), shape)
    # z[j] holds g[j / s] at multiples of s: x[i] receives w[k] z[i + begin - k d]
    kernel = list(w.shape[2:])
    before, after = [], []
    for i in range(n):
        reach = (kernel[i] - 1) * dilations[i]
        before.append(reach - begin[i])
        after.append(x_shape[2 + i] + reach - shape[2 + i] - before[-1])
    if min(before + after) < 0:  # pads beyond the kernel's reach: crop z instead
        starts = [max(0, -p) for p in before]
        ends = [shape[2 + i] - max(0, -p) for i, p in enumerate(after)]
        z = b.slice(z, starts, ends, list(range(2, 2 + n)))
        before, after = [max(0, p) for p in before], [max(0, p) for p in after]
    return b.op("Conv", [z, b.const(flipped_kernel(w, group))], kernel_shape=kernel,
                dilations=list(dilations), group=group, pads=before + after)


def subpixel_adjoint(b: Builder, g: str, w: np.ndarray, x_shape, y_shape, stride: int,
                     dilations, begin) -> str:
    """The adjoint of a stride-s 2-D conv (group 1) as ONE stride-1 Conv whose s*s*C_in
    output channels are the s*s phases of the input gradient (each phase's taps placed in a
    common zero-padded kernel), then DepthToSpace, and a Slice when the input size is not a
    multiple of s. onnxruntime's ConvTranspose pays a col2im pass that dominates when the
    input has few channels (ResNet-18's 7x7 stride-2 stem on the image: 2.5 ms as
    ConvTranspose, 1.7 ms this way); with more input channels the zero taps and the
    DepthToSpace cost more than they save, so `conv` uses it while s*s*C_in <= 16."""
    m, cin = w.shape[:2]
    s = stride
    # per axis and tap: input row i = s * (output row + shift) + phase
    taps = [[((t * dilations[a] - begin[a]) % s, (t * dilations[a] - begin[a]) // s)
             for t in range(w.shape[2 + a])] for a in range(2)]
    rows = [-(-x_shape[2 + a] // s) for a in range(2)]  # per phase
    first = [max(shift for _, shift in taps[a]) for a in range(2)]
    size = [first[a] - min(shift for _, shift in taps[a]) + 1 for a in range(2)]
    end = [max(0, rows[a] + size[a] - 1 - y_shape[2 + a] - first[a]) for a in range(2)]
    u = np.zeros((s * s * cin, m, size[0], size[1]), np.float32)
    for kh, (ph, sh) in enumerate(taps[0]):
        for kw, (pw, sw) in enumerate(taps[1]):
            phase = ph * s + pw
            u[phase * cin:(phase + 1) * cin, :, first[0] - sh, first[1] - sw] = w[:, :, kh, kw].T
    phases = b.op("Conv", [g, b.const(u)], kernel_shape=size, pads=first + end)
    out = b.op("DepthToSpace", [phases], blocksize=s, mode="DCR")
    height, width = s * (y_shape[2] + first[0] + end[0] - size[0] + 1), \
        s * (y_shape[3] + first[1] + end[1] - size[1] + 1)
    if (height, width) != tuple(x_shape[2:]):
        out = b.slice(out, [0, 0], list(x_shape[2:]), [2, 3])
    return out


def flipped_kernel(w: np.ndarray, group: int) -> np.ndarray:
    """The kernel of the stride-1 adjoint as a plain Conv: spatially flipped, in/out swapped
    within each group: (M, C/g, k...) -> (C, M/g, k...)."""
    m, cg = w.shape[:2]
    k = w.shape[2:]
    flipped = w[(slice(None), slice(None)) + (slice(None, None, -1),) * len(k)]
    per_group = flipped.reshape((group, m // group, cg, *k))
    swapped = per_group.transpose((0, 2, 1, *tuple(range(3, 3 + len(k)))))
    return np.ascontiguousarray(swapped.reshape((group * cg, m // group, *k)))


def conv_transpose(b: Builder, node: onnx.NodeProto, grads: Grads) -> Grads:
    x, w = node.input[0], node.input[1]
    if b.wants(w):
        raise b.unsupported("its weights depend on the input image (onnxviz never "
                            "differentiates weights)")
    x_shape, y_shape = b.shape(x), b.shape(node.output[0])
    w_value = b.value(w)
    w_shape = w_value.shape if w_value is not None else b.shape(w)
    kernel = list(attr(node, "kernel_shape", None) or w_shape[2:])
    n = len(kernel)
    strides = list(attr(node, "strides", None) or [1] * n)
    dilations = list(attr(node, "dilations", None) or [1] * n)
    out_pad = list(attr(node, "output_padding", None) or [0] * n)
    pads = list(attr(node, "pads", None) or [0] * (2 * n))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    begin, end = pads[:n], pads[n:]
    if attr(node, "output_shape", None) is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(n):
            eff = (kernel[i] - 1) * dilations[i] + 1
            total = strides[i] * (x_shape[2 + i] - 1) + out_pad[i] + eff - y_shape[2 + i]
            half = total // 2
            begin[i], end[i] = (half, total - half) if auto_pad == "SAME_UPPER" \
                else (total - half, half)
    elif auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    out: Grads = [None] * len(node.input)
    out[0] = b.op("Conv", [grads[0], w], kernel_shape=kernel, strides=strides,
                  dilations=dilations, group=attr(node, "group", 1), pads=begin + end)
    return out


# ---------------------------------------------------------------- pools


def max_pool(b: Builder, node: onnx.NodeProto, grads: Grads) -> Grads:
    x, y = node.input[0], node.output[0]
    g = grads[0]
    x_shape, y_shape = b.shape(x), b.shape(y)
    kernel = list(attr(node, "kernel_shape"))
    strides, dilations, _, _ = window_geometry(node, x_shape, y_shape, kernel)
    if SEPARABLE_MAX_POOL and _disjoint_windows(node, x_shape, y_shape):
        return [_max_pool_disjoint(b, x, y, g, x_shape, kernel)] + [None] * (len(node.input) - 1)
    if SEPARABLE_MAX_POOL and _is_3x3_stride2_pad1(node, x_shape, y_shape):
        return [_max_pool_3x3_stride2(b, x, y, g, x_shape, y_shape)] + \
            [None] * (len(node.input) - 1)
    if attr(node, "storage_order", 0) and len(node.output) > 1 and node.output[1]:
        raise b.unsupported("column-major Indices (storage_order=1) are not supported")
    indices = b.forward_output(1)
    total = int(np.prod(x_shape))
    flat_g = b.reshape(g, [-1])
    flat_i = b.reshape(indices, [-1])
    zeros = b.zeros([total])
    overlap = any((k - 1) * d + 1 > s for k, d, s in zip(kernel, dilations, strides,
                                                          strict=True))
    if not overlap:
        dx = b.op("ScatterElements", [zeros, flat_i, flat_g], axis=0)
    elif b.opset >= 16:
        dx = b.op("ScatterElements", [zeros, flat_i, flat_g], axis=0, reduction="add")
    else:
        dx = _scatter_add_by_phases(b, g, indices, zeros, y_shape, kernel, strides, dilations)
    return [b.reshape(dx, x_shape)] + [None] * (len(node.input) - 1)


def max_pool_scatters_overlaps(node: onnx.NodeProto, x_shape, y_shape) -> bool:
    """Whether the MaxPool rule needs ScatterElements with reduction=add (opset 16): the
    windows overlap and the separable form does not apply."""
    kernel = list(attr(node, "kernel_shape", []))
    strides, dilations, _, _ = window_geometry(node, x_shape, y_shape, kernel)
    overlap = any((k - 1) * d + 1 > s for k, d, s in zip(kernel, dilations, strides,
                                                          strict=True))
    return overlap and not (SEPARABLE_MAX_POOL and separable_max_pool(node, x_shape, y_shape))


def separable_max_pool(node: onnx.NodeProto, x_shape, y_shape) -> bool:
    """Whether the MaxPool rule uses a separable form (no Indices output): 2-D pools whose
    windows tile the input without overlap or padding (VGG's 2x2 pools), and 3x3 stride-2
    pools padded by 1 (ResNet's and most ImageNet CNNs' stem pool)."""
    return _disjoint_windows(node, x_shape, y_shape) or \
        _is_3x3_stride2_pad1(node, x_shape, y_shape)


def _disjoint_windows(node: onnx.NodeProto, x_shape, y_shape) -> bool:
    kernel = list(attr(node, "kernel_shape", []))
    if len(x_shape) != 4 or len(kernel) != 2:
        return False
    strides, dilations, begin, end = window_geometry(node, x_shape, y_shape, kernel)
    return strides == kernel and dilations == [1, 1] and begin + end == [0] * 4 and all(
        y_shape[2 + a] == x_shape[2 + a] // kernel[a] for a in range(2))


def _is_3x3_stride2_pad1(node: onnx.NodeProto, x_shape, y_shape) -> bool:
    kernel = list(attr(node, "kernel_shape", []))
    if len(x_shape) != 4 or kernel != [3, 3]:
        return False
    strides, dilations, begin, _ = window_geometry(node, x_shape, y_shape, kernel)
    return strides == [2, 2] and dilations == [1, 1] and begin == [1, 1] and all(
        y_shape[2 + a] == -(-x_shape[2 + a] // 2) for a in range(2))


def _max_pool_disjoint(b: Builder, x: str, y: str, g: str, x_shape, kernel) -> str:
    """The adjoint of a max pool whose windows tile the input (kernel == strides, no pads),
    without the Indices output: the same choice as onnxruntime's Indices (the first maximum
    in row-major order), found as the first row whose max h (a 1 x kw pool of x) equals y,
    then the first column of that row where x equals h. "First" along one axis compares
    prefix maxima with the window's max: tap t is chosen where max(taps 0..t) == max and
    max(taps 0..t-1) != max (MaxPool with a shorter window computes the prefixes)."""
    n, c, height, width = x_shape
    h = b.op("MaxPool", [x], kernel_shape=[1, kernel[1]], strides=[1, kernel[1]])
    gh = _disjoint_adjoint(b, h, y, g, 2, kernel[0], (n, c, height, width // kernel[1]))
    return _disjoint_adjoint(b, x, h, gh, 3, kernel[1], (n, c, height, width))


def _disjoint_adjoint(b: Builder, big: str, small: str, g: str, axis: int, k: int, big_shape
                      ) -> str:
    """One axis of a max pool with k-tap windows at stride k: route g (shaped like `small`)
    to each window's first maximum in `big` (samples past the last window get zero)."""
    count = big_shape[axis] // k
    taps, stride = [1, 1], [1, 1]
    stride[axis - 2] = k
    routed, previous = [], None
    for t in range(k - 1):
        taps[axis - 2] = t + 1
        prefix = b.op("MaxPool", [big], kernel_shape=list(taps), strides=list(stride))
        if (big_shape[axis] - t - 1) // k + 1 > count:
            prefix = b.slice(prefix, [0], [count], [axis])
        upto = b.mul(g, b.op("Cast", [b.op("Equal", [prefix, small])], to=FLOAT))
        routed.append(upto if previous is None else b.sub(upto, previous))
        previous = upto
    routed.append(b.sub(g, previous))
    shape = list(big_shape)
    shape[axis] = count * k
    out = b.reshape(_interleave(b, routed, axis), shape)
    if shape != list(big_shape):  # samples no window reaches
        pads = [0] * 8
        pads[6], pads[7] = big_shape[2] - shape[2], big_shape[3] - shape[3]
        out = b.op("Pad", [out, b.ints(pads)], mode="constant")
    return out


def _interleave(b: Builder, parts: list[str], axis: int) -> str:
    """Concat whose reshape to the axis' length times len(parts) interleaves the parts along
    `axis` (2 or 3 of an NCHW tensor): part j's element i lands at i * len(parts) + j."""
    if axis == 3:
        return b.op("Concat", [b.unsqueeze(p, [4]) for p in parts], axis=4)
    return b.op("Concat", parts, axis=axis + 1)  # rows: [row i of part 0 | part 1 | ...]


def _max_pool_3x3_stride2(b: Builder, x: str, y: str, g: str, x_shape, y_shape) -> str:
    """The adjoint of a 3x3 stride-2 pad-1 max pool without the Indices output, whose kernel
    in onnxruntime is ten times slower than the pool itself (with the ScatterElements that
    uses it: 3.8 ms of ResNet-18's gradient; this form: about 2 ms, in fewer passes).

    The pool is separable: v = the max over each window's 3 rows (a 3x1 stride-(2,1) pool of
    x), y = the max over 3 columns of v. Each window sends its gradient to exactly ONE of its
    maxima, so ties are counted once: the column whose v equals y, then in that column the
    row whose x equals v, each time preferring the window's center, then its first (left or
    top), then its last tap. Any such choice is a valid (sub)gradient; it is not the choice of
    onnxruntime's Indices (the first maximum in row-major order). Maxima are found by exact
    comparisons (Equal) of pooled copies of the input, never by thresholds on differences.
    """
    n, c, height, width = x_shape
    rows = y_shape[2]
    v = b.op("MaxPool", [x], kernel_shape=[3, 1], strides=[2, 1], pads=[1, 0, 1, 0])
    gv = _pool3_adjoint(b, v, y, g, 3, (n, c, rows, width))
    return _pool3_adjoint(b, x, v, gv, 2, (n, c, height, width))


def _pool3_adjoint(b: Builder, big: str, small: str, g: str, axis: int, big_shape) -> str:
    """One axis of a 3-tap stride-2 pad-1 max pool: route g (shaped like `small`, the pool of
    `big` along `axis`) to `big`, window i having taps 2i-1, 2i, 2i+1."""
    one, two, pad = [1, 1], [1, 1], [0, 0, 0, 0]
    two[axis - 2] = 2
    pad[axis - 2] = 1
    center = b.op("MaxPool", [big], kernel_shape=one, strides=two)  # tap 2i
    first_two = b.op("MaxPool", [big], kernel_shape=two, strides=two, pads=pad)  # 2i-1, 2i
    center_max = b.op("Cast", [b.op("Equal", [center, small])], to=FLOAT)
    early_max = b.op("Cast", [b.op("Equal", [first_two, small])], to=FLOAT)
    to_center = b.mul(g, center_max)
    to_early = b.mul(g, early_max)  # to tap 2i-1 unless the center takes it
    # position 2i+1: window i's last tap (when neither earlier tap is a maximum) and window
    # i+1's first tap (when it is a maximum and that window's center is not)
    count = -(-big_shape[axis] // 2)  # windows along the axis
    after = [0] * 8
    after[axis + 4] = 1
    next_first = b.op("Pad", [b.slice(b.sub(to_early, to_center), [1], [count], [axis]),
                              b.ints(after)], mode="constant")
    odd = b.add(b.sub(g, to_early), next_first)
    joined = _interleave(b, [to_center, odd], axis)
    shape = list(big_shape)
    shape[axis] = 2 * count
    out = b.reshape(joined, shape)
    if shape[axis] != big_shape[axis]:
        out = b.slice(out, [0], [big_shape[axis]], [axis])
    return out


def _scatter_add_by_phases(b: Builder, g: str, indices: str, acc: str, y_shape, kernel,
                           strides, dilations) -> str:
    """ScatterElements with reduction=add for opset < 16: split the output positions into
    phases whose windows cannot overlap, so that indices within a phase are unique."""
    periods = [math.ceil(((k - 1) * d + 1) / s)
               for k, d, s in zip(kernel, dilations, strides, strict=True)]
    axes = list(range(2, 2 + len(kernel)))
    first = True
    for phase in itertools.product(*[range(p) for p in periods]):
        if any(ph >= y_shape[2 + i] for i, ph in enumerate(phase)):
            continue
        ends = [y_shape[2 + i] for i in range(len(kernel))]
        g_ph = b.reshape(b.slice(g, list(phase), ends, axes, periods), [-1])
        i_ph = b.reshape(b.slice(indices, list(phase), ends, axes, periods), [-1])
        if not first:
            g_ph = b.add(b.op("Gather", [acc, i_ph], axis=0), g_ph)
        acc = b.op("ScatterElements", [acc, i_ph, g_ph], axis=0)
        first = False
    return acc


def average_pool(b: Builder, node: onnx.NodeProto, grads: Grads) -> Grads:
    """The adjoint of an average pool: a depthwise ConvTranspose with a ones kernel of the
    gradient scaled by each window's divisor (found by probing the forward op per axis)."""
    x, y = node.input[0], node.output[0]
    x_shape, y_shape = b.shape(x), b.shape(y)
    kernel = list(attr(node, "kernel_shape"))
    n = len(kernel)
    strides, dilations, begin, _ = window_geometry(node, x_shape, y_shape, kernel)
    weights = []
    for i in range(n):
        matrix = probe_axis_matrix(node, b.opset, x_shape, y_shape, 2 + i)
        weights.append(matrix.max(axis=1))
    scale = functools.reduce(np.multiply.outer, weights)
    g = grads[0]
    if np.allclose(scale, scale.flat[0]):
        g = b.scale(g, float(scale.flat[0]))
    else:
        g = b.mul(g, b.const(scale))
    channels = x_shape[1]
    ones = b.const(np.ones((channels, 1, *kernel), np.float32))
    dx = conv_transpose_adjoint(b, g, ones, x_shape, y_shape, kernel, strides, dilations,
                                begin, channels)
    return [dx]


def global_average_pool(b: Builder, node: onnx.NodeProto, grads: Grads) -> Grads:
    x_shape = b.shape(node.input[0])
    count = int(np.prod(x_shape[2:]))
    g = b.scale(grads[0], 1.0 / count)
    return [b.op("Expand", [g, b.ints(x_shape)])]


def global_max_pool(b: Builder, node: onnx.NodeProto, grads: Grads) -> Grads:
    x, y = node.input[0], node.output[0]
    x_shape = b.shape(x)
    hit = b.op("Cast", [b.op("Equal", [x, y])], to=onnx.TensorProto.FLOAT)
    count = b.reduce_sum(hit, list(range(2, len(x_shape))), keepdims=True)
    return [b.mul(hit, b.op("Div", [grads[0], count]))]


# ---------------------------------------------------------------- resampling


def probe_axis_matrix(node: onnx.NodeProto, opset: int, x_shape, y_shape, axis: int,
                      scales: np.ndarray | None = None) -> np.ndarray:
    """The (out, in) matrix of a separable resampling/pooling node along one axis, found by
    running the node (ONNX reference) on a batch of one-hot inputs along that axis with every
    other axis of size 1 (windows and scales of 1 there). scales: the Resize/Upsample node's
    full-rank scales, or None when it uses sizes (or is a pool)."""
    from onnx.reference import ReferenceEvaluator

    n_in, n_out = x_shape[axis], y_shape[axis]
    rank = len(x_shape)
    probe_shape = [n_in] + [1] * (rank - 1)
    probe_shape[axis] = n_in
    probe = np.zeros(probe_shape, np.float32)
    for i in range(n_in):
        index = [i] + [0] * (rank - 1)
        index[axis] = i
        probe[tuple(index)] = 1.0
    probe_node, inits = _probe_node(node, x_shape, y_shape, axis, n_in, scales)
    graph = helper.make_graph(
        [probe_node], "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, probe_shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    out = np.asarray(ReferenceEvaluator(model).run(None, {"x": probe})[0], np.float64)
    index = [slice(None)] + [0] * (rank - 1)
    index[axis] = slice(None)
    columns = out[tuple(index)]  # (n_in, n_out): column i of the matrix per probe
    if columns.shape != (n_in, n_out):
        raise ValueError(f"probe of {node.op_type} gave {columns.shape}, "
                         f"expected {(n_in, n_out)}")
    return columns.T.copy()


def _probe_node(node: onnx.NodeProto, x_shape, y_shape, axis: int, batch: int,
                scales: np.ndarray | None):
    from onnx import numpy_helper

    rank = len(x_shape)
    probe = onnx.NodeProto()
    probe.CopyFrom(node)
    probe.name = "probe"
    del probe.output[:]
    probe.output.append("y")
    del probe.input[:]
    probe.input.append("x")
    inits = []
    if node.op_type in ("AveragePool", "MaxPool", "LpPool"):
        k = axis - 2
        n = rank - 2
        kernel = list(attr(node, "kernel_shape"))
        strides, dilations, begin, end = window_geometry(node, x_shape, y_shape, kernel)

        def one_axis(values):
            return [values[i] if i == k else 1 for i in range(n)]

        new = {"kernel_shape": one_axis(kernel), "strides": one_axis(strides),
               "pads": [begin[i] if i == k else 0 for i in range(n)]
               + [end[i] if i == k else 0 for i in range(n)]}
        if attr(node, "dilations", None) is not None:
            new["dilations"] = one_axis(dilations)
        _replace_attributes(probe, new, drop=("auto_pad",))
        return probe, inits
    # Resize / Upsample: the same mechanism as the node (scales or sizes), one axis at a time
    _replace_attributes(probe, {}, drop=("axes", "keep_aspect_ratio_policy"))
    probe_scales = np.ones(rank, np.float32)
    probe_sizes = np.array([batch] + [1] * (rank - 1), np.int64)
    if scales is not None:
        probe_scales[axis] = scales[axis]
    else:
        probe_sizes[axis] = y_shape[axis]
    if node.op_type == "Upsample" or len(node.input) == 2:  # Upsample-9, Resize-10
        inits.append(numpy_helper.from_array(probe_scales, "scales"))
        probe.input.append("scales")
    elif scales is not None:
        inits.append(numpy_helper.from_array(probe_scales, "scales"))
        probe.input.extend(["", "scales"])
    else:
        inits.append(numpy_helper.from_array(probe_sizes, "sizes"))
        probe.input.extend(["", "", "sizes"])
    return probe, inits


def _replace_attributes(node: onnx.NodeProto, new: dict, drop=()) -> None:
    keep = [a for a in node.attribute if a.name not in (*new, *drop)]
    del node.attribute[:]
    node.attribute.extend(keep)
    for name, value in new.items():
        node.attribute.append(helper.make_attribute(name, value))


def resize(b: Builder, node: onnx.NodeProto, grads: Grads) -> Grads:
    """Resize/Upsample is separable: apply the transpose of each resized axis's matrix (probed
    from the node), or sum blocks for nearest upsampling by an integer factor."""
    x, y = node.input[0], node.output[0]
    x_shape, y_shape = b.shape(x), b.shape(y)
    if attr(node, "coordinate_transformation_mode", "") == "tf_crop_and_resize":
        raise b.unsupported("tf_crop_and_resize is not differentiable by onnxviz")
    if node.op_type == "Upsample" and len(node.input) < 2:
        raise b.unsupported("Upsample with a scales attribute (opset < 9)")
    scales = _resize_scales(b, node, len(x_shape))
    axes = [a for a in range(len(x_shape)) if x_shape[a] != y_shape[a]
            or (scales is not None and scales[a] != 1.0)]
    if 0 in axes:
        raise b.unsupported("resizing the batch axis")
    g = grads[0]
    out: Grads = [None] * len(node.input)
    matrices = {a: probe_axis_matrix(node, b.opset, x_shape, y_shape, a, scales) for a in axes}
    factors = {}
    for a, m in matrices.items():
        if y_shape[a] % x_shape[a] == 0:
            factor = y_shape[a] // x_shape[a]
            block = np.kron(np.eye(x_shape[a]), np.ones((factor, 1)))
            if block.shape == m.shape and np.array_equal(block, m):
                factors[a] = factor
    if axes and len(factors) == len(axes):
        # nearest upsampling by integer factors: sum each block of the gradient
        split_shape, sum_axes = [], []
        for a, size in enumerate(x_shape):
            split_shape.append(size)
            if a in factors:
                split_shape.append(factors[a])
                sum_axes.append(len(split_shape) - 1)
        out[0] = b.reduce_sum(b.reshape(g, split_shape), sum_axes, keepdims=False)
        return out
    shape = list(y_shape)
    for a in sorted(axes, reverse=True):
        g = b.axis_matrix(g, shape, a, matrices[a])
        shape[a] = x_shape[a]
    out[0] = g
    return out


def _resize_scales(b: Builder, node: onnx.NodeProto, rank: int) -> np.ndarray | None:
    """Full-rank constant scales of a Resize/Upsample node, or None when it uses sizes."""
    if node.op_type == "Upsample" or len(node.input) == 2:
        return np.asarray(b.constant(node.input[1], "scales"), np.float32).ravel()
    scales_name = node.input[2] if len(node.input) > 2 else ""
    scales = b.value(scales_name) if scales_name else None
    if scales is None or np.size(scales) == 0:
        sizes_name = node.input[3] if len(node.input) > 3 else ""
        if not sizes_name:
            raise b.unsupported("it has neither scales nor sizes")
        b.constant(sizes_name, "sizes")
        return None
    axes = attr(node, "axes", None)
    full = np.ones(rank, np.float32)
    for a, s in zip(axes if axes is not None else range(rank), np.ravel(scales), strict=True):
        full[a % rank] = s
    return full
