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
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info(tensor, 1, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.eye(H * H, dtype=np.float32).reshape(H * H, 1, H, H)})[0]


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
