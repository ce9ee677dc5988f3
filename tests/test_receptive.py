"""Receptive fields against the empirical support of one-hot impulses through real convs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from onnxviz.receptive import receptive_fields

H = W = 40


def _model() -> onnx.ModelProto:
    """Positive weights (no cancellation), every geometry that moves a field: asymmetric pads,
    stride 2, SAME_UPPER on an even input, dilation, stride 3 kernel 4, a pool, a residual Add."""
    specs = [("c1", "x", 3, 1, 1, {"pads": [1, 1, 1, 1]}),
             ("c2", "c1", 3, 2, 1, {"pads": [0, 0, 1, 1]}),
             ("c3", "c2", 3, 2, 1, {"auto_pad": "SAME_UPPER"}),
             ("c3b", "c3", 3, 1, 2, {"pads": [2, 2, 2, 2]}),
             ("c4", "c3b", 4, 3, 1, {"pads": [1, 1, 1, 1]})]
    nodes, inits = [], []
    for name, inp, k, s, d, extra in specs:
        inits.append(numpy_helper.from_array(np.ones((1, 1, k, k), np.float32), f"{name}.w"))
        nodes.append(helper.make_node("Conv", [inp, f"{name}.w"], [name], name, kernel_shape=[k, k],
                                      strides=[s, s], dilations=[d, d], **extra))
    nodes.append(helper.make_node("Add", ["c3", "c3b"], ["res"], "residual"))
    nodes.append(helper.make_node("MaxPool", ["c4"], ["p"], "pool", kernel_shape=[2, 2]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 1, H, H])],
                              [helper.make_tensor_value_info("p", 1, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _responses(model: onnx.ModelProto, tensor: str) -> np.ndarray:
    """Output `tensor` for each of the H*H one-hot input images."""
    return _impulses(model, tensor, H, H, nhwc=False)


def test_boxes_contain_the_support_and_are_tight_inside():
    model = _model()
    fields = receptive_fields(model, "x", (H, H))
    for tensor in ["c1", "c2", "c3", "c3b", "res", "c4", "p"]:
        out = _responses(model, tensor)
        oh, ow = out.shape[2:]
        field = fields[tensor]
        for y in range(oh):
            for x in range(ow):
                ys, xs = np.nonzero(out[:, 0, y, x].reshape(H, H))
                support = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
                top, left, bottom, right = field.box(y, x, H, H)
                assert top <= support[0] and left <= support[1], (tensor, y, x)
                assert bottom >= support[2] and right >= support[3], (tensor, y, x)
                if top > 0 and left > 0 and bottom < H and right < W:  # no padding involved
                    assert (top, left, bottom, right) == support, (tensor, y, x)
                    assert bottom - top == field.size[0]
    assert fields["res"].size == fields["c3b"].size
    assert fields["c4"].jump == (12.0, 12.0)


def test_global_pool_sees_the_whole_image():
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"], "gap")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("g", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert receptive_fields(model, "x", (8, 8))["g"].box(0, 0, 8, 8) == (0, 0, 8, 8)


# ---------------------------------------------------------------- more geometry: NHWC inputs,
# Pad, Slice (space-to-depth), Resize modes, squeeze-and-excitation gates

def _graph_model(nodes, inits, shape, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, shape)],
                              [helper.make_tensor_value_info(nodes[-1].output[0], 1, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv(name, inp, k, **attrs):
    w = numpy_helper.from_array(np.ones((1, 1, k, k), np.float32), f"{name}.w")
    return helper.make_node("Conv", [inp, f"{name}.w"], [name], name, kernel_shape=[k, k],
                            **attrs), w


def _impulses(model: onnx.ModelProto, tensor: str, h: int, w: int, nhwc: bool) -> np.ndarray:
    """Output `tensor` (NCHW) for each of the h*w one-hot images."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info(tensor, 1, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.eye(h * w, dtype=np.float32).reshape(h * w, h, w, 1)
    return sess.run(None, {"x": x if nhwc else x.transpose(0, 3, 1, 2)})[0]


def _assert_fields_hold(model, tensors, h, w, nhwc=False, tight=()):
    fields = receptive_fields(model, "x", (h, w), layout="NHWC" if nhwc else "NCHW")
    for tensor in tensors:
        out = _impulses(model, tensor, h, w, nhwc)
        for y in range(out.shape[2]):
            for x in range(out.shape[3]):  # the unit across all its channels
                ys, xs = np.nonzero(np.abs(out[:, :, y, x]).sum(axis=1).reshape(h, w))
                if not ys.size:
                    continue
                support = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
                box = fields[tensor].box(y, x, h, w)
                assert box[0] <= support[0] and box[1] <= support[1], (tensor, y, x, box, support)
                assert box[2] >= support[2] and box[3] >= support[3], (tensor, y, x, box, support)
                inside = box[0] > 0 and box[1] > 0 and box[2] < h and box[3] < w
                if tensor in tight and inside:
                    assert box == support, (tensor, y, x, box, support)
    return fields


def test_nhwc_input_through_transpose_and_pad():
    c1, w1 = _conv("c1", "t", 3, strides=[2, 2])
    c2, w2 = _conv("c2", "p", 3)
    pads = numpy_helper.from_array(np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64), "pads")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), c1,
             helper.make_node("Pad", ["c1", "pads"], ["p"]), c2]
    model = _graph_model(nodes, [w1, w2, pads], [1, 17, 21, 1])
    fields = _assert_fields_hold(model, ["c1", "p", "c2"], 17, 21, nhwc=True,
                                 tight=("c1", "p", "c2"))
    assert fields["c1"].axes == (2, 3) and fields["x"].axes == (1, 2)
    assert fields["p"].start == (fields["c1"].start[0] - 4, fields["c1"].start[1] - 2)


def test_space_to_depth_slices_merge_into_one_field():
    """YOLOv5's Focus: four stride-2 slices concatenated on channels see a 2x2 block."""
    inits, slices = [], []
    for dy in (0, 1):
        for dx in (0, 1):
            name = f"s{dy}{dx}"
            for part, v in (("starts", [dy, dx]), ("ends", [1000, 1000]), ("axes", [2, 3]),
                            ("steps", [2, 2])):
                inits.append(numpy_helper.from_array(np.array(v, np.int64), f"{name}.{part}"))
            slices.append(helper.make_node("Slice", ["x", *(f"{name}.{p}" for p in (
                "starts", "ends", "axes", "steps"))], [name]))
    w = numpy_helper.from_array(np.ones((1, 4, 3, 3), np.float32), "c.w")
    nodes = [*slices, helper.make_node("Concat", [s.output[0] for s in slices], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "c.w"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1])]
    fields = _assert_fields_hold(_graph_model(nodes, [*inits, w], [1, 1, 16, 16]),
                                 ["s11", "cat", "c"], 16, 16, tight=("s11", "cat", "c"))
    assert fields["cat"].size == (2.0, 2.0) and fields["c"].size == (6.0, 6.0)


def test_resize_modes_and_a_squeeze_excitation_gate():
    cases = [("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_floor"),
             ("linear", "half_pixel", None), ("linear", "align_corners", None),
             ("nearest", "asymmetric", "round_prefer_floor")]
    for mode, ctm, nearest in cases:
        c1, w1 = _conv("c1", "x", 3, strides=[2, 2], pads=[1, 1, 1, 1])
        c2, w2 = _conv("c2", "r", 3, pads=[1, 1, 1, 1])
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
        attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
        if nearest:
            attrs["nearest_mode"] = nearest
        gw = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.01, np.float32), "g.w")
        nodes = [c1, helper.make_node("Resize", ["c1", "", "scales"], ["r"], **attrs), c2,
                 helper.make_node("GlobalAveragePool", ["c2"], ["gap"]),
                 helper.make_node("Conv", ["gap", "g.w"], ["gc"]),
                 helper.make_node("Sigmoid", ["gc"], ["gate"]),
                 helper.make_node("Mul", ["c2", "gate"], ["se"])]
        model = _graph_model(nodes, [w1, w2, scales, gw], [1, 1, 18, 18], opset=13)
        fields = _assert_fields_hold(model, ["r", "c2", "se"], 18, 18)
        assert not fields["se"].whole_image and fields["se"] == fields["c2"], (mode, ctm)
        assert fields["gate"].whole_image
