"""Every VJP rule on its own single-node model, against central finite differences.

The gradient model is converted to float64 and run by onnx's ReferenceEvaluator (onnxruntime has
no float64 Conv); the finite differences run the single-node forward model in float64 too, along
every input coordinate. The float32 gradient model is also run in onnxruntime, which must agree
with the float64 gradient and reproduce the forward output.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from gradhelp import full_finite_difference, single_node_model, to_float64
from onnx import helper
from onnx.reference import ReferenceEvaluator

from onnxviz.grad.autodiff import gradient_model
from onnxviz.grad.spatial_rules import max_pool_scatters_overlaps, separable_max_pool
from onnxviz.runtime import make_session

RNG = np.random.default_rng(1234)


def _w(*shape, scale=0.5):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def check_rule(node, x_shape, consts=None, opset=17, low=-1.0, high=1.0, x=None, target=None,
               rtol=1e-5, engine="reference", forward=None):
    """Build the gradient of one node; compare with full central differences.

    engine="reference": the gradient model in float64 (ReferenceEvaluator) against float64
    differences of the forward (`forward`, a numpy function, replaces the reference forward
    where the reference's own kernel is imprecise or wrong), then onnxruntime's float32
    gradient against it. engine="ort": where onnx's reference implementation of the forward op
    itself disagrees with onnxruntime (documented at each use), float32 differences of the
    onnxruntime forward.
    """
    model = single_node_model(node, x_shape, consts, opset)
    target = target or node.output[0]
    gm = gradient_model(model, target, x_shape)
    onnx.checker.check_model(gm.proto)
    rng = np.random.default_rng(7)
    if x is None:
        x = rng.uniform(low, high, x_shape)
    x = np.asarray(x, np.float64)
    seed = rng.standard_normal(gm.target_shapes[0])
    forward_model = onnx.ModelProto()
    forward_model.CopyFrom(model)
    forward_model.graph.output[0].name = target
    sess = make_session(gm.proto)
    y32, g32 = sess.run(None, {"x": x.astype(np.float32),
                               gm.seed_names[0]: seed.astype(np.float32)})
    original = make_session(forward_model)
    np.testing.assert_allclose(y32, original.run(None, {"x": x.astype(np.float32)})[0],
                               rtol=1e-5, atol=1e-5)
    if engine == "ort":
        def objective32(z):
            out = original.run(None, {"x": z.astype(np.float32)})[0]
            return float(np.sum(out.astype(np.float64) * seed))

        fd = full_finite_difference(objective32, x.astype(np.float32).astype(np.float64),
                                    eps=1e-3)
        scale = max(np.abs(fd).max(), 1e-3)
        np.testing.assert_allclose(g32, fd, rtol=2e-3, atol=2e-3 * scale)
        return gm
    ref = ReferenceEvaluator(to_float64(gm.proto))
    y, grad = ref.run(None, {"x": x, gm.seed_names[0]: seed})
    if forward is None:
        fwd = ReferenceEvaluator(to_float64(forward_model))

        def forward(z):
            return fwd.run(None, {"x": z})[0]

        np.testing.assert_allclose(y, forward(x), rtol=1e-12, atol=1e-12)
    fd = full_finite_difference(lambda z: float(np.sum(forward(z) * seed)), x)
    scale = max(np.abs(fd).max(), 1e-3)
    np.testing.assert_allclose(grad, fd, rtol=rtol, atol=1e-6 * scale)
    np.testing.assert_allclose(g32, grad, rtol=1e-3, atol=2e-4 * scale)
    return gm


def spaced(shape, seed=3):
    """Distinct values 0.05 apart in random order: no max-pool tie flips under small steps."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(np.arange(n) * 0.05 - n * 0.025
                                                   ).reshape(shape)


def node(op, inputs=("x",), outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=f"{op}_under_test", **attrs)


# ---------------------------------------------------------------- convolutions

CONV_CASES = {
    "2d_stride1_pad1": ((1, 2, 5, 5), (3, 2, 3, 3), dict(pads=[1, 1, 1, 1])),
    "2d_asymmetric_pads": ((1, 2, 6, 5), (3, 2, 3, 3), dict(pads=[0, 1, 2, 0])),
    "2d_asymmetric_pads_stride2": ((1, 2, 7, 6), (3, 2, 3, 3),
                                   dict(pads=[0, 1, 1, 0], strides=[2, 2])),
    "2d_same_upper_stride2_odd": ((1, 2, 7, 7), (3, 2, 3, 3),
                                  dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "2d_same_lower_stride2_even": ((1, 2, 6, 8), (2, 2, 4, 4),
                                   dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    "2d_same_upper_stride1": ((1, 2, 5, 6), (2, 2, 4, 3), dict(auto_pad="SAME_UPPER")),
    "2d_valid_stride3_kernel4": ((1, 1, 11, 10), (2, 1, 4, 4), dict(strides=[3, 3])),
    "2d_dropped_rows_stride2": ((1, 2, 8, 8), (2, 2, 3, 3), dict(strides=[2, 2])),
    "2d_dilated_grouped": ((1, 4, 7, 7), (4, 2, 3, 3),
                           dict(group=2, dilations=[2, 2], pads=[2, 1, 1, 2])),
    "2d_dilated_grouped_stride2": ((1, 4, 8, 7), (6, 2, 3, 2),
                                   dict(group=2, dilations=[2, 1], strides=[2, 2],
                                        pads=[1, 0, 2, 1])),
    "2d_depthwise_stride2": ((1, 3, 7, 6), (3, 1, 3, 3),
                             dict(group=3, strides=[2, 2], pads=[0, 0, 1, 1])),
    "2d_depthwise_stride1": ((1, 3, 6, 6), (3, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1])),
    "1d_stride2": ((1, 2, 9), (3, 2, 3), dict(strides=[2], pads=[1, 0])),
    "3d": ((1, 2, 3, 4, 4), (2, 2, 2, 3, 3), dict(strides=[1, 2, 1], pads=[0, 1, 1, 1, 0, 1])),
    # few input channels and equal strides: the sub-pixel Conv + DepthToSpace form
    "2d_stem_7x7_stride2": ((1, 3, 12, 11), (4, 3, 7, 7), dict(strides=[2, 2], pads=[3] * 4)),
    "2d_few_channels_dilated_stride2": ((1, 2, 9, 8), (3, 2, 3, 3),
                                        dict(strides=[2, 2], dilations=[2, 1],
                                             pads=[1, 2, 2, 1])),
    "2d_few_channels_stride3": ((1, 1, 10, 11), (2, 1, 5, 4), dict(strides=[3, 3],
                                                                   pads=[2, 0, 1, 2])),
    # strided depthwise: the zero-insertion form
    "2d_depthwise_multiplier_stride2": ((1, 2, 7, 7), (4, 1, 3, 3),
                                        dict(group=2, strides=[2, 2], pads=[1, 1, 1, 1])),
    "2d_depthwise_stride3_dilated": ((1, 3, 10, 9), (3, 1, 3, 2),
                                     dict(group=3, strides=[3, 2], dilations=[1, 2],
                                          pads=[2, 0, 0, 1])),
    "2d_depthwise_pads_beyond_kernel": ((1, 2, 6, 6), (2, 1, 3, 3),
                                        dict(group=2, strides=[2, 2], pads=[3, 0, 0, 3])),
    "1d_depthwise_stride2": ((1, 3, 9), (3, 1, 3), dict(group=3, strides=[2], pads=[1, 1])),
    "3d_depthwise_stride2": ((1, 2, 3, 5, 5), (2, 1, 2, 3, 3),
                             dict(group=2, strides=[1, 2, 2], pads=[0, 1, 0, 1, 1, 1])),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv(case):
    x_shape, w_shape, attrs = CONV_CASES[case]
    consts = {"w": _w(*w_shape), "b": _w(w_shape[0])}
    check_rule(node("Conv", ["x", "w", "b"], **attrs), x_shape, consts)


def _backward_ops(gm) -> list[str]:
    return [n.op_type for n in gm.proto.graph.node if n.name.startswith("grad/")]


def test_conv_adjoint_forms():
    """Stride 1: a flipped-kernel Conv. Stride 2 on few input channels: the sub-pixel Conv.
    Strided depthwise: a Conv of the zero-inserted gradient. Otherwise ConvTranspose, with
    explicit pads (never output_shape)."""
    gm = check_rule(node("Conv", ["x", "w"], pads=[1, 1, 1, 1]), (1, 2, 5, 5),
                    {"w": _w(3, 2, 3, 3)})
    assert "ConvTranspose" not in _backward_ops(gm) and "Conv" in _backward_ops(gm)
    gm = check_rule(node("Conv", ["x", "w"], strides=[2, 2], auto_pad="SAME_UPPER"),
                    (1, 2, 7, 7), {"w": _w(3, 2, 3, 3)})
    assert {"Conv", "DepthToSpace"} <= set(_backward_ops(gm))
    assert "ConvTranspose" not in _backward_ops(gm)
    gm = check_rule(node("Conv", ["x", "w"], group=4, strides=[2, 2], pads=[0, 0, 1, 1]),
                    (1, 4, 7, 6), {"w": _w(4, 1, 3, 3)})
    assert {"Conv", "Concat", "ConstantOfShape"} <= set(_backward_ops(gm))
    assert "ConvTranspose" not in _backward_ops(gm)
    gm = check_rule(node("Conv", ["x", "w"], strides=[2, 2], auto_pad="SAME_UPPER"),
                    (1, 8, 7, 7), {"w": _w(3, 8, 3, 3, scale=0.2)})
    convt = [n for n in gm.proto.graph.node if n.op_type == "ConvTranspose"]
    assert convt and all(a.name != "output_shape" for a in convt[0].attribute)


def test_conv_transpose_output_reblocked():
    """16+ channels: the ConvTranspose adjoint is followed by an identity depthwise Conv."""
    gm = check_rule(node("Conv", ["x", "w"], strides=[2, 2], pads=[1, 1, 1, 1]),
                    (1, 16, 5, 6), {"w": _w(16, 16, 3, 3, scale=0.1)})
    ops = _backward_ops(gm)
    assert ops.index("ConvTranspose") < len(ops) - 1 and ops[ops.index("ConvTranspose") + 1] \
        == "Conv"


@pytest.mark.parametrize("form", ["SUBPIXEL_FEW_CHANNELS", "ZERO_INSERT_DEPTHWISE"])
def test_strided_conv_forms_match_conv_transpose(form, monkeypatch):
    """Each faster form gives the ConvTranspose form's gradient (onnxruntime, float32)."""
    from onnxviz.grad import spatial_rules

    if form == "SUBPIXEL_FEW_CHANNELS":
        conv = node("Conv", ["x", "w"], strides=[2, 2], pads=[3, 2, 2, 3])
        x_shape, w = (2, 3, 16, 13), _w(16, 3, 7, 7)
    else:
        conv = node("Conv", ["x", "w"], group=16, strides=[2, 2], pads=[0, 0, 1, 1])
        x_shape, w = (2, 16, 15, 16), _w(16, 1, 3, 3)
    model = single_node_model(conv, x_shape, {"w": w})
    x = RNG.standard_normal(x_shape).astype(np.float32)
    grads = []
    for enabled in (True, False):
        monkeypatch.setattr(spatial_rules, form, enabled)
        gm = gradient_model(model, "y", x_shape)
        assert ("ConvTranspose" in _backward_ops(gm)) != enabled
        seed = np.random.default_rng(5).standard_normal(gm.target_shapes[0]).astype(np.float32)
        grads.append(make_session(gm.proto).run(None, {"x": x, gm.seed_names[0]: seed})[1])
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)


CONV_TRANSPOSE_CASES = {
    "stride2_pads_outpad": ((1, 3, 4, 4), (3, 2, 3, 3),
                           dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    "asymmetric_pads": ((1, 2, 3, 4), (2, 2, 3, 3), dict(strides=[2, 1], pads=[0, 1, 1, 0])),
    "output_shape": ((1, 2, 3, 3), (2, 2, 3, 3), dict(strides=[2, 2], output_shape=[6, 6])),
    "same_upper": ((1, 2, 3, 4), (2, 1, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "grouped_dilated": ((1, 4, 3, 3), (4, 1, 2, 3),
                        dict(group=2, dilations=[2, 1], strides=[1, 2])),
    "1d": ((1, 2, 5), (2, 3, 4), dict(strides=[3])),
}


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES)
def test_conv_transpose(case):
    x_shape, w_shape, attrs = CONV_TRANSPOSE_CASES[case]
    # onnx's reference ConvTranspose fails on output_shape: check that case against onnxruntime
    engine = "ort" if "output_shape" in attrs else "reference"
    check_rule(node("ConvTranspose", ["x", "w"], **attrs), x_shape, {"w": _w(*w_shape)},
               engine=engine)


# ---------------------------------------------------------------- pools

POOL_CASES = {
    "max_2x2_stride2": ("MaxPool", (1, 2, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2]), 17),
    "max_overlap_3x3_stride2_pad1": ("MaxPool", (1, 2, 7, 7),
                                     dict(kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[1, 1, 1, 1]), 17),
    "max_overlap_opset11": ("MaxPool", (1, 2, 7, 6),
                            dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 11),
    "max_overlap_stride1_opset12": ("MaxPool", (1, 1, 5, 5),
                                    dict(kernel_shape=[3, 2], pads=[1, 0, 1, 1]), 12),
    "max_ceil_mode": ("MaxPool", (1, 2, 6, 7),
                      dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), 17),
    "max_dilated": ("MaxPool", (1, 1, 7, 7),
                    dict(kernel_shape=[2, 2], dilations=[2, 2], strides=[1, 2]), 17),
    "max_same_upper": ("MaxPool", (1, 2, 5, 5),
                       dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"), 17),
    "max_1d": ("MaxPool", (1, 2, 9), dict(kernel_shape=[3], strides=[2]), 17),
    "max_disjoint_3x2_uncovered_edges": ("MaxPool", (2, 2, 7, 9),
                                         dict(kernel_shape=[3, 2], strides=[3, 2]), 13),
    "avg_2x2": ("AveragePool", (1, 2, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2]), 17),
    "avg_pads_exclude": ("AveragePool", (1, 2, 5, 6),
                         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1]), 17),
    "avg_pads_include": ("AveragePool", (1, 2, 5, 6),
                         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1],
                              count_include_pad=1), 17),
    "avg_ceil_mode": ("AveragePool", (1, 1, 6, 7),
                      dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), 17),
    "avg_same_upper_stride1": ("AveragePool", (1, 2, 5, 5),
                               dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER"), 11),
}


@pytest.mark.parametrize("case", POOL_CASES)
def test_pool(case):
    op, x_shape, attrs, opset = POOL_CASES[case]
    kernel = attrs["kernel_shape"]
    pads = attrs.get("pads", [0] * 2 * len(kernel))
    # onnx's reference MaxPool gets indices wrong for non-square kernels and misreads
    # asymmetric pads: those cases check against onnxruntime's forward instead
    broken = op == "MaxPool" and (len(set(kernel)) > 1 or pads[: len(kernel)] != pads[
        len(kernel):])
    gm = check_rule(node(op, **attrs), x_shape, opset=opset, x=spaced(x_shape),
                    engine="ort" if broken else "reference")
    if op == "MaxPool":
        pool = next(n for n in gm.proto.graph.node if n.op_type == "MaxPool"
                    and not n.name.startswith("grad/"))
        y_shape = gm.target_shapes[0]
        # declared at opset 16 only to scatter-add overlapping windows
        upgraded = any("opset 16" in note for note in gm.notes)
        assert upgraded == (opset < 16 and max_pool_scatters_overlaps(pool, x_shape, y_shape))
        assert (len(pool.output) > 1) != separable_max_pool(pool, x_shape, y_shape)


def test_max_pool_overlap_below_opset16_without_upgrade():
    """An Unsqueeze-11 (axes attribute) forbids declaring the graph at opset 16: the MaxPool
    rule then scatters phase by phase (windows within a phase never overlap)."""
    pool = node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2])
    model = single_node_model(pool, (1, 2, 7, 7), opset=11)
    model.graph.node.append(node("Unsqueeze", ["p"], ["y"], axes=[0]))
    model.graph.output[0].name = "y"
    gm = gradient_model(model, "y", (1, 2, 7, 7))
    assert not gm.notes
    assert not any(a.name == "reduction" for n in gm.proto.graph.node for a in n.attribute)
    assert any(n.op_type == "ScatterElements" for n in gm.proto.graph.node)
    x = spaced((1, 2, 7, 7))
    seed = RNG.standard_normal((1, 1, 2, 3, 3))
    grad = ReferenceEvaluator(to_float64(gm.proto)).run(None, {"x": x, gm.seed_names[0]: seed})[1]
    fwd = ReferenceEvaluator(to_float64(model))
    fd = full_finite_difference(lambda z: float(np.sum(fwd.run(None, {"x": z})[0] * seed)), x)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    g32 = make_session(gm.proto).run(None, {"x": x.astype(np.float32),
                                            gm.seed_names[0]: seed.astype(np.float32)})[1]
    np.testing.assert_allclose(g32, grad, rtol=1e-5, atol=1e-5)


def _separable_max_pool_reference(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The documented choice of the 3x3 stride-2 pad-1 MaxPool rule, window by window: the
    column whose max equals the window's, then in it the row, each preferring the center,
    then the first, then the last tap."""
    n, c, h, w = x.shape
    padded = np.full((n, c, h + 3, w + 3), -np.inf)
    padded[:, :, 1:h + 1, 1:w + 1] = x
    dx = np.zeros_like(padded)
    order = (1, 0, 2)
    for b, ch, i, j in np.ndindex(*g.shape):
        window = padded[b, ch, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
        top = window.max()
        col = next(t for t in order if window[:, t].max() == top)
        row = next(t for t in order if window[t, col] == top)
        dx[b, ch, 2 * i + row, 2 * j + col] += g[b, ch, i, j]
    return dx[:, :, 1:h + 1, 1:w + 1]


@pytest.mark.parametrize("x_shape", [(2, 3, 9, 6), (1, 2, 8, 11)])
def test_max_pool_3x3_stride2_ties_counted_once(x_shape):
    """Integer-valued inputs (ReLU-like: many zeros, many positive ties): every window sends
    its gradient to exactly one of its maxima (the reference's), in float64 and in
    onnxruntime."""
    pool = node("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    model = single_node_model(pool, x_shape)
    gm = gradient_model(model, "y", x_shape)
    rng = np.random.default_rng(11)
    x = np.maximum(rng.integers(-3, 4, x_shape), 0).astype(np.float64)
    seed = rng.standard_normal(gm.target_shapes[0])
    expected = _separable_max_pool_reference(x, seed)
    _, grad = ReferenceEvaluator(to_float64(gm.proto)).run(None, {"x": x,
                                                                  gm.seed_names[0]: seed})
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-12)
    _, g32 = make_session(gm.proto).run(None, {"x": x.astype(np.float32),
                                               gm.seed_names[0]: seed.astype(np.float32)})
    np.testing.assert_allclose(g32, expected, rtol=1e-5, atol=1e-5)
    assert np.isclose(grad.sum(), seed.sum())  # no window counted twice or dropped
    assert np.count_nonzero(x == 0) > x.size // 3  # the input had zeros and ties to break


@pytest.mark.parametrize("kernel", [[2, 2], [3, 2]])
def test_max_pool_disjoint_windows_match_indices_under_ties(kernel, monkeypatch):
    """Windows that tile the input: the separable form picks the same maximum as
    onnxruntime's Indices (the first in row-major order), ties included."""
    from onnxviz.grad import spatial_rules

    x_shape = (2, 3, 8, 9)
    pool = node("MaxPool", kernel_shape=kernel, strides=kernel)
    model = single_node_model(pool, x_shape)
    rng = np.random.default_rng(12)
    x = np.maximum(rng.integers(-2, 3, x_shape), 0).astype(np.float32)
    grads = []
    for separable in (True, False):
        monkeypatch.setattr(spatial_rules, "SEPARABLE_MAX_POOL", separable)
        gm = gradient_model(model, "y", x_shape)
        assert ("ScatterElements" in _backward_ops(gm)) != separable
        seed = np.random.default_rng(5).standard_normal(gm.target_shapes[0]).astype(np.float32)
        grads.append(make_session(gm.proto).run(None, {"x": x, gm.seed_names[0]: seed})[1])
    np.testing.assert_array_equal(grads[0], grads[1])
    assert np.count_nonzero(grads[0]) == seed.size  # one position per window


ACTIVATION_POOLS = {
    "3x3_stride2_pad1": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "2x2_stride2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "3x3_stride1_indices": dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
}


@pytest.mark.parametrize("pool", ACTIVATION_POOLS)
@pytest.mark.parametrize("act", ["Relu", "Clip"])
def test_activation_mask_moves_behind_max_pool(act, pool):
    """Relu/Clip -> MaxPool: the activation's mask is applied to the pooled gradient (its
    values at the window maxima), exactly as differentiating the two nodes one by one."""
    x_shape = (1, 2, 7, 8)
    consts = {"lo": np.array(-0.51, np.float32), "hi": np.array(0.97, np.float32)}  # off-grid
    nodes = [node(act, ["x", "lo", "hi"] if act == "Clip" else ["x"], ["a"]),
             node("MaxPool", ["a"], ["y"], **ACTIVATION_POOLS[pool])]
    model = single_node_model(nodes[0], x_shape, consts)
    model.graph.node.append(nodes[1])
    model.graph.output[0].name = "y"
    gm = gradient_model(model, "y", x_shape)
    steps = [n for n in gm.proto.graph.node if n.op_type == "HardSigmoid"]
    assert steps and all(n.input[0] == "y" for n in steps)  # masks read the pooled output
    x = spaced(x_shape) * 0.4  # distinct values on both sides of both bounds
    seed = np.random.default_rng(2).standard_normal(gm.target_shapes[0])
    fwd = ReferenceEvaluator(to_float64(model))
    fd = full_finite_difference(lambda z: float(np.sum(fwd.run(None, {"x": z})[0] * seed)), x)
    assert 0 < np.count_nonzero(fd) < x.size // 2
    g32 = make_session(gm.proto).run(None, {"x": x.astype(np.float32),
                                            gm.seed_names[0]: seed.astype(np.float32)})[1]
    np.testing.assert_allclose(g32, fd, rtol=1e-5, atol=1e-5)
    if not any(n.op_type == "ScatterElements" for n in gm.proto.graph.node):
        # (onnx's reference MaxPool misplaces padded Indices: that form is checked in float32)
        ref = ReferenceEvaluator(to_float64(gm.proto))
        grad = ref.run(None, {"x": x, gm.seed_names[0]: seed})[1]
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_activation_read_elsewhere_keeps_its_mask():
    nodes = [node("Relu", ["x"], ["a"]), node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2],
                                              strides=[2, 2]),
             helper.make_node("ReduceSum", ["a"], ["s"], keepdims=0),
             helper.make_node("ReduceSum", ["p"], ["t"], keepdims=0),
             node("Add", ["s", "t"], ["y"])]
    model = single_node_model(nodes[0], (1, 2, 4, 4))
    model.graph.node.extend(nodes[1:])
    model.graph.output[0].name = "y"
    gm = gradient_model(model, "y", (1, 2, 4, 4))
    assert any(n.op_type == "HardSigmoid" and n.input[0] == "a" for n in gm.proto.graph.node)
    x = spaced((1, 2, 4, 4))
    grad = make_session(gm.proto).run(None, {"x": x.astype(np.float32),
                                             gm.seed_names[0]: np.ones((), np.float32)})[1]
    pooled = x.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5))
    winners = (x == np.repeat(np.repeat(pooled, 2, axis=2), 2, axis=3)) & (x > 0)
    np.testing.assert_allclose(grad, (x > 0).astype(float) + winners, atol=1e-6)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op):
    check_rule(node(op), (2, 3, 4, 5))


# ---------------------------------------------------------------- normalization and dense


def test_batch_normalization():
    c = 3
    consts = {"s": _w(c), "b": _w(c), "m": _w(c), "v": np.abs(_w(c)) + 0.5}
    check_rule(node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3),
               (2, c, 3, 3), consts)


def test_instance_normalization():
    consts = {"s": _w(3), "b": _w(3)}
    check_rule(node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-3), (2, 3, 3, 4),
               consts, rtol=1e-4)


def test_layer_normalization():
    consts = {"s": _w(3, 4), "b": _w(3, 4)}
    check_rule(node("LayerNormalization", ["x", "s", "b"], axis=-2, epsilon=1e-3),
               (2, 2, 3, 4), consts, rtol=1e-4)


def _lrn(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    """LRN per the ONNX spec (onnx's reference kernel loops over the batch, not channels)."""
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.zeros_like(x)
    for c in range(x.shape[1]):
        sq[:, c] = (x[:, max(0, c - lo):c + hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * sq) ** beta


def test_lrn():
    check_rule(node("LRN", size=3, alpha=0.5, beta=0.75, bias=1.5), (1, 5, 3, 3),
               forward=lambda z: _lrn(z, 3, 0.5, 0.75, 1.5))
    check_rule(node("LRN", size=5, alpha=0.3), (2, 6, 2, 2), forward=lambda z: _lrn(z, 5, 0.3))


GEMM_CASES = {
    "plain": ((3, 4), (4, 5), dict(), "x_first"),
    "transB_bias": ((3, 4), (5, 4), dict(transB=1, alpha=0.5, beta=2.0), "x_first"),
    "transA": ((4, 3), (4, 5), dict(transA=1), "x_first"),
    "transA_transB": ((4, 3), (5, 4), dict(transA=1, transB=1), "x_first"),
    "x_second": ((4, 5), (3, 4), dict(), "x_second"),
    "x_second_transB": ((5, 4), (3, 4), dict(transB=1, alpha=1.5), "x_second"),
}


@pytest.mark.parametrize("case", GEMM_CASES)
def test_gemm(case):
    x_shape, w_shape, attrs, order = GEMM_CASES[case]
    consts = {"w": _w(*w_shape)}
    inputs = ["x", "w"] if order == "x_first" else ["w", "x"]
    if "beta" in attrs:
        consts["c"] = _w(5)
        inputs.append("c")
    check_rule(node("Gemm", inputs, **attrs), x_shape, consts)


@pytest.mark.parametrize("case", ["batched", "vector_right", "x_right", "x_vector"])
def test_matmul(case):
    shapes = {"batched": ((2, 3, 4), (4, 5), ["x", "w"]), "vector_right": ((2, 3, 4), (4,),
                                                                        ["x", "w"]),
              "x_right": ((4, 3), (2, 5, 4), ["w", "x"]), "x_vector": ((4,), (2, 4, 3),
                                                                     ["x", "w"])}
    x_shape, w_shape, inputs = shapes[case]
    check_rule(node("MatMul", inputs), x_shape, {"w": _w(*w_shape)})


def test_matmul_of_two_activations():
    """Both operands depend on the input (attention-like): both get gradients."""
    n1 = node("Transpose", ["x"], ["xt"], perm=[0, 2, 1])
    n2 = node("MatMul", ["x", "xt"], ["y"])
    model = single_node_model(n1, (2, 3, 4))
    model.graph.node.append(n2)
    model.graph.output[0].name = "y"
    gm = gradient_model(model, "y", (2, 3, 4))
    x = RNG.standard_normal((2, 3, 4))
    seed = RNG.standard_normal((2, 3, 3))
    grad = ReferenceEvaluator(to_float64(gm.proto)).run(None, {"x": x, gm.seed_names[0]: seed})[1]
    expected = (seed + np.swapaxes(seed, 1, 2)) @ x
    np.testing.assert_allclose(grad, expected, rtol=1e-10)


# ---------------------------------------------------------------- activations

UNARY_CASES = {
    "Relu": (dict(), -1, 1), "LeakyRelu": (dict(alpha=0.1), -1, 1),
    "LeakyRelu_negative_alpha": (dict(alpha=-0.3), -1, 1), "Sigmoid": (dict(), -3, 3),
    "HardSigmoid": (dict(alpha=0.3, beta=0.4), -4, 4), "HardSwish": (dict(), -5, 5),
    "Tanh": (dict(), -2, 2), "Elu": (dict(alpha=0.7), -2, 2),
    "Selu": (dict(alpha=1.5, gamma=1.1), -2, 2), "Softplus": (dict(), -3, 3),
    "Erf": (dict(), -2, 2), "Exp": (dict(), -2, 2), "Log": (dict(), 0.2, 3),
    "Sqrt": (dict(), 0.2, 3), "Abs": (dict(), -1, 1), "Neg": (dict(), -1, 1),
    "Reciprocal": (dict(), 0.3, 2), "Identity": (dict(), -1, 1),
    "Dropout": (dict(), -1, 1), "Cast": (dict(to=onnx.TensorProto.FLOAT), -1, 1),
}


# onnx's reference Erf computes in float32: differentiate a float64 erf instead
_ERF = np.vectorize(math.erf)


@pytest.mark.parametrize("case", UNARY_CASES)
def test_unary(case):
    attrs, low, high = UNARY_CASES[case]
    op = case.split("_")[0]
    check_rule(node(op, **attrs), (2, 3, 4), opset=14 if op == "HardSwish" else 17,
               low=low, high=high, forward=_ERF if op == "Erf" else None)


def _gelu(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _ERF(x / math.sqrt(2)))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    check_rule(node("Gelu", approximate=approximate), (2, 5), opset=20, low=-3, high=3,
               forward=lambda z: _gelu(z, approximate), rtol=1e-4)


def test_prelu():
    check_rule(node("PRelu", ["x", "slope"]), (2, 3, 2, 2),
               {"slope": np.array([0.1, -0.2, 0.5], np.float32).reshape(3, 1, 1)})


@pytest.mark.parametrize("opset", [11, 13])
def test_clip(opset):
    consts = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.6, np.float32)}
    check_rule(node("Clip", ["x", "lo", "hi"]), (2, 3, 4), consts, opset=opset)
    check_rule(node("Clip", ["x", "", "hi"]), (2, 3, 4), consts, opset=opset)


def test_relu6_clip_reads_output_only():
    consts = {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    gm = check_rule(node("Clip", ["x", "lo", "hi"]), (1, 2, 3, 3), consts, low=-3, high=9)
    backward = gm.proto.graph.node[1:]
    assert all("x" not in n.input for n in backward)


@pytest.mark.parametrize("case", ["cube", "square", "half", "base"])
def test_pow(case):
    if case == "base":
        check_rule(node("Pow", ["c", "x"]), (2, 3), {"c": np.array([1.5, 2.0, 0.7], np.float32)})
        return
    e = {"cube": 3.0, "square": 2.0, "half": 0.5}[case]
    check_rule(node("Pow", ["x", "e"]), (2, 3), {"e": np.array(e, np.float32)}, low=0.3, high=2)


# ---------------------------------------------------------------- arithmetic

BINARY_CASES = {
    "Add_broadcast_x_small": ("Add", ["x", "c"], (1, 3, 1, 1), (2, 3, 2, 2)),
    "Add_broadcast_x_big": ("Add", ["c", "x"], (2, 3, 2, 2), (3, 1, 1)),
    "Sub_x_second": ("Sub", ["c", "x"], (2, 1, 4), (2, 3, 4)),
    "Mul_broadcast": ("Mul", ["x", "c"], (2, 3, 1), (3, 4)),
    "Mul_scalar": ("Mul", ["c", "x"], (2, 3), ()),
    "Mul_self": ("Mul", ["x", "x"], (2, 3), None),
    "Div_x_numerator": ("Div", ["x", "c"], (2, 3), (2, 3)),
    "Div_x_denominator": ("Div", ["c", "x"], (1, 3), (2, 3)),
    "Sum_three": ("Sum", ["x", "c", "x"], (2, 3), (3,)),
    "Max": ("Max", ["x", "c"], (2, 3, 4), (4,)),
    "Min": ("Min", ["c", "x", "c"], (2, 3), (2, 3)),
}


@pytest.mark.parametrize("case", BINARY_CASES)
def test_binary(case):
    op, inputs, x_shape, c_shape = BINARY_CASES[case]
    consts = {}
    if c_shape is not None:
        c = RNG.uniform(0.5, 1.5, c_shape).astype(np.float32)
        consts["c"] = c
    low = 0.5 if op == "Div" else -1.0
    check_rule(node(op, inputs), x_shape, consts, low=low, high=2.0)


def test_where_constant_condition():
    cond = RNG.random((2, 1, 4)) > 0.5
    consts = {"cond": cond, "c": _w(3, 1)}
    check_rule(node("Where", ["cond", "x", "c"]), (2, 3, 4), consts)
    check_rule(node("Where", ["cond", "c", "x"]), (1, 3, 4), consts)


# ---------------------------------------------------------------- shapes and data movement


def test_reshape_flatten_transpose():
    check_rule(node("Reshape", ["x", "s"]), (2, 3, 4), {"s": np.array([4, -1], np.int64)})
    check_rule(node("Flatten", axis=2), (2, 3, 2, 2))
    check_rule(node("Transpose", perm=[2, 0, 1]), (2, 3, 4))
    check_rule(node("Transpose"), (2, 3, 4))


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    axes = np.array([1, 3], np.int64)
    if opset >= 13:
        check_rule(node("Squeeze", ["x", "a"]), (2, 1, 3, 1), {"a": axes}, opset=opset)
        check_rule(node("Unsqueeze", ["x", "a"]), (2, 3), {"a": axes}, opset=opset)
    else:
        check_rule(node("Squeeze", axes=[1, 3]), (2, 1, 3, 1), opset=opset)
        check_rule(node("Unsqueeze", axes=[1, 3]), (2, 3), opset=opset)


def test_concat():
    check_rule(node("Concat", ["x", "c", "x"], axis=1), (2, 2, 3), {"c": _w(2, 3, 3)})


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split(opset):
    attrs, consts, inputs = {"axis": 1}, {}, ["x"]
    if opset == 11:
        attrs["split"] = [1, 3, 2]
    elif opset == 13:
        consts["s"] = np.array([1, 3, 2], np.int64)
        inputs.append("s")
    else:
        attrs["num_outputs"] = 3
    n = node("Split", inputs, ["a", "b", "c"], **attrs)
    check_rule(n, (2, 6, 2), consts, opset=opset, target="b")


SLICE_CASES = {
    "step1": ([1, 0], [3, 10], [1, 2], None),
    "negative_starts": ([-2], [100], [2], None),
    "step2": ([0, 1], [4, 5], [1, 2], [2, 2]),
    "reverse": ([-1], [-100], [1], [-1]),
    "reverse_step2": ([3], [0], [2], [-2]),
}


@pytest.mark.parametrize("case", SLICE_CASES)
def test_slice(case):
    starts, ends, axes, steps = SLICE_CASES[case]
    consts = {"s": np.array(starts, np.int64), "e": np.array(ends, np.int64),
              "a": np.array(axes, np.int64)}
    inputs = ["x", "s", "e", "a"]
    if steps is not None:
        consts["st"] = np.array(steps, np.int64)
        inputs.append("st")
    check_rule(node("Slice", inputs), (2, 4, 5), consts)


@pytest.mark.parametrize("indices", [[2, 0], [[1, 1], [0, 2]], 1, [-1, 0, -1]])
def test_gather(indices):
    check_rule(node("Gather", ["x", "i"], axis=1), (2, 3, 2),
               {"i": np.array(indices, np.int64)})


PAD_CASES = {
    "constant": ("constant", [0, 1, 2, 0, 0, 1], 11),
    "constant_crop": ("constant", [0, -1, 1, 0, 1, -1], 11),
    "reflect": ("reflect", [0, 2, 1, 0, 1, 2], 11),
    "edge": ("edge", [0, 1, 0, 0, 2, 3], 13),
}


@pytest.mark.parametrize("case", PAD_CASES)
def test_pad(case):
    mode, pads, opset = PAD_CASES[case]
    # onnx's reference Pad rejects negative pads (cropping): check it against onnxruntime
    engine = "ort" if min(pads) < 0 else "reference"
    check_rule(node("Pad", ["x", "p"], mode=mode), (2, 4, 4), {"p": np.array(pads, np.int64)},
               opset=opset, engine=engine)


def test_pad_axes_opset18():
    consts = {"p": np.array([1, 2], np.int64), "v": np.array(0.0, np.float32),
              "a": np.array([-1], np.int64)}
    check_rule(node("Pad", ["x", "p", "v", "a"]), (2, 3, 3), consts, opset=18)


def test_expand_tile():
    check_rule(node("Expand", ["x", "s"]), (3, 1), {"s": np.array([2, 3, 4], np.int64)})
    check_rule(node("Tile", ["x", "r"]), (2, 3), {"r": np.array([2, 3], np.int64)})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    check_rule(node("DepthToSpace", blocksize=2, mode=mode), (1, 8, 2, 3))


def test_space_to_depth():
    check_rule(node("SpaceToDepth", blocksize=2), (1, 2, 4, 6))


# ---------------------------------------------------------------- reductions and softmax

REDUCE_CASES = {
    "ReduceSum_opset11": ("ReduceSum", 11, [1], 1),
    "ReduceSum_opset13_nokeep": ("ReduceSum", 13, [0, 2], 0),
    "ReduceMean_opset13": ("ReduceMean", 13, [-1], 1),
    "ReduceMean_opset18_all": ("ReduceMean", 18, None, 0),
    "ReduceMax_opset13": ("ReduceMax", 13, [1], 0),
    "ReduceMax_opset18": ("ReduceMax", 18, [2], 1),
    "ReduceMin_opset13": ("ReduceMin", 13, [0, 1], 1),
}


@pytest.mark.parametrize("case", REDUCE_CASES)
def test_reduce(case):
    op, opset, axes, keepdims = REDUCE_CASES[case]
    attrs, consts, inputs = {"keepdims": keepdims}, {}, ["x"]
    axes_as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    if axes is not None and axes_as_input:
        consts["a"] = np.array(axes, np.int64)
        inputs.append("a")
    elif axes is not None:
        attrs["axes"] = axes
    check_rule(node(op, inputs, **attrs), (2, 3, 4), consts, opset=opset)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(11, 1), (13, 1), (13, -1)])
def test_softmax(op, opset, axis):
    # onnx's reference Softmax-11 ignores the opset < 13 coercion to 2-D that onnxruntime (and
    # the spec) apply: check those against onnxruntime's forward
    check_rule(node(op, axis=axis), (2, 3, 4), opset=opset, low=-2, high=2,
               engine="ort" if opset < 13 else "reference")


# ---------------------------------------------------------------- resampling

RESIZE_CASES = {
    "nearest_x2_scales": (13, dict(mode="nearest"), [1, 1, 2, 2], None, (1, 2, 3, 4)),
    "nearest_x2_opset11": (11, dict(mode="nearest"), [1, 1, 2, 3], None, (1, 2, 3, 2)),
    "nearest_x1.5_half_pixel": (13, dict(mode="nearest",
                                        coordinate_transformation_mode="half_pixel"),
                                [1, 1, 1.5, 1.5], None, (1, 1, 4, 4)),
    "nearest_downsample": (13, dict(mode="nearest"), [1, 1, 0.5, 0.75], None, (1, 1, 6, 4)),
    "linear_half_pixel": (13, dict(mode="linear", coordinate_transformation_mode="half_pixel"),
                          [1, 1, 2, 2], None, (1, 2, 3, 3)),
    "linear_align_corners_sizes": (13, dict(mode="linear",
                                           coordinate_transformation_mode="align_corners"),
                                   None, [1, 2, 5, 7], (1, 2, 3, 4)),
    "linear_pytorch_half_pixel_down": (13, dict(
        mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
        [1, 1, 0.6, 0.5], None, (1, 1, 5, 6)),
    "cubic": (13, dict(mode="cubic"), [1, 1, 2, 1.5], None, (1, 1, 3, 4)),
    "linear_axes_opset18": (18, dict(mode="linear", axes=[2, 3]), [2.0, 2.0], None,
                            (1, 1, 3, 3)),
}


@pytest.mark.parametrize("case", RESIZE_CASES)
def test_resize(case):
    opset, attrs, scales, sizes, x_shape = RESIZE_CASES[case]
    consts = {"roi": np.array([], np.float32)}
    inputs = ["x", "roi"]
    if scales is not None:
        consts["sc"] = np.array(scales, np.float32)
        inputs.append("sc")
    else:
        consts["sz"] = np.array(sizes, np.int64)
        inputs += ["", "sz"]
    gm = check_rule(node("Resize", inputs, **attrs), x_shape, consts, opset=opset)
    if case.startswith("nearest_x2"):
        assert "MatMul" not in [n.op_type for n in gm.proto.graph.node]


def test_upsample_opset9_is_upgraded():
    n = node("Upsample", ["x", "sc"], mode="nearest")
    gm = check_rule(n, (1, 2, 3, 3), {"sc": np.array([1, 1, 2, 2], np.float32)}, opset=9)
    assert any("opset 9" in note for note in gm.notes)


# ---------------------------------------------------------------- quantization


@pytest.mark.parametrize("zero_point", [0, 128])
def test_quantize_dequantize_is_clipped_straight_through(zero_point):
    """Q->DQ: the forward keeps the quantization (rounding and range clipping); the gradient is
    the seed inside the representable range and zero outside."""
    scale = 0.05
    q = node("QuantizeLinear", ["x", "s", "z"], ["q"])
    dq = node("DequantizeLinear", ["q", "s", "z"], ["y"])
    consts = {"s": np.array(scale, np.float32), "z": np.array(zero_point, np.uint8)}
    model = single_node_model(q, (2, 50), consts)
    model.graph.node.append(dq)
    model.graph.output[0].name = "y"
    gm = gradient_model(model, "y", (2, 50))
    x = np.linspace(-8, 14, 100, dtype=np.float32).reshape(2, 50)
    seed = RNG.standard_normal((2, 50)).astype(np.float32)
    y, grad = make_session(gm.proto).run(None, {"x": x, gm.seed_names[0]: seed})
    lo, hi = (0 - zero_point) * scale, (255 - zero_point) * scale
    np.testing.assert_allclose(y, np.clip(np.round(x / scale), lo / scale, hi / scale) * scale,
                               atol=1e-6)
    inside = (x >= lo) & (x <= hi)
    assert inside.any() and (~inside).any()
    np.testing.assert_allclose(grad, np.where(inside, seed, 0.0), rtol=1e-6)


def test_quantize_per_axis_and_lone_dequantize():
    """Per-channel QuantizeLinear feeding an int op (MaxPool) then DequantizeLinear."""
    scale = np.array([0.1, 0.02], np.float32)
    zp = np.array([0, 0], np.int8)
    consts = {"s": scale, "z": zp}
    q = node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1)
    pool = node("MaxPool", ["q"], ["p"], kernel_shape=[2, 2], strides=[2, 2])
    dq = node("DequantizeLinear", ["p", "s", "z"], ["y"], axis=1)
    model = single_node_model(q, (1, 2, 4, 4), consts)
    model.graph.node.extend([pool, dq])
    model.graph.output[0].name = "y"
    gm = gradient_model(model, "y", (1, 2, 4, 4))
    x = RNG.uniform(-4, 4, (1, 2, 4, 4)).astype(np.float32)
    seed = RNG.standard_normal((1, 2, 2, 2)).astype(np.float32)
    _, grad = make_session(gm.proto).run(None, {"x": x, gm.seed_names[0]: seed})
    qx = np.clip(np.round(x / scale.reshape(1, 2, 1, 1)), -128, 127)
    expected = np.zeros_like(x)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                win = qx[0, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                a, bb = np.unravel_index(np.argmax(win), (2, 2))
                xi = x[0, c, 2 * i + a, 2 * j + bb]
                s = scale[c]
                if -128 * s <= xi <= 127 * s:
                    expected[0, c, 2 * i + a, 2 * j + bb] = seed[0, c, i, j]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
