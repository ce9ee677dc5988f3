"""Synthetic CNNs with random weights, built with onnx.helper: no download needed.

- `resnet18(size=224, batch=1, width=64, seed=0)`: ResNet-18 shaped (7x7/2 stem conv,
  BatchNormalization, ReLU, 3x3/2 max pool, 4 stages of 2 basic blocks with 1x1/2 projection
  shortcuts, global average pool, 1000-way Gemm); opset 13. Input "image" [batch, 3, size,
  size], output "logits" [batch, 1000]. Node names follow torchvision ("layer3.1.relu2").
- `mobilenet_v2(size=224, batch=1, width=1.0, seed=0, tf_pads=True)`: MobileNetV2 /
  EfficientNet-Lite shaped as TensorFlow exporters emit it: convs with folded biases (no
  BatchNormalization), depthwise 3x3 convs, ReLU6 as Clip(0, 6), and with tf_pads=True the
  TF "SAME" padding of every stride-2 conv as an explicit asymmetric Pad node (0 before,
  1 after) in front of an unpadded conv; opset 13. Input "image", output "logits".

Both take `batch=0` for a symbolic batch dimension ("batch"). Weights are He-initialized from
`numpy.random.default_rng(seed)`, so a seed always gives the same model. Tests and benchmarks
import these builders; keep their signatures small.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


class _Net:
    """Accumulates nodes and initializers while a builder walks the architecture."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, name: str, stride: int = 1,
             pads: list[int] | None = None, group: int = 1, bias: bool = False) -> str:
        fan_in = cin // group * k * k
        w = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
        inputs = [x, self.init(f"{name}.weight", w)]
        if bias:
            inputs.append(self.init(f"{name}.bias", self.rng.standard_normal(cout) * 0.05))
        pads = pads if pads is not None else [k // 2] * 4
        return self.node("Conv", inputs, name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=pads, group=group)

    def bn(self, x: str, c: int, name: str) -> str:
        r = self.rng
        params = [self.init(f"{name}.weight", 1.0 + 0.1 * r.standard_normal(c)),
                  self.init(f"{name}.bias", 0.1 * r.standard_normal(c)),
                  self.init(f"{name}.running_mean", 0.1 * r.standard_normal(c)),
                  self.init(f"{name}.running_var", 1.0 + 0.1 * np.abs(r.standard_normal(c)))]
        return self.node("BatchNormalization", [x, *params], name, epsilon=1e-5)

    def gemm(self, x: str, cin: int, cout: int, name: str) -> str:
        w = self.rng.standard_normal((cout, cin)) * np.sqrt(1.0 / cin)
        b = self.rng.standard_normal(cout) * 0.01
        return self.node("Gemm", [x, self.init(f"{name}.weight", w),
                                  self.init(f"{name}.bias", b)], name, transB=1)

    def model(self, name: str, batch: int, size: int, output: str, classes: int
              ) -> onnx.ModelProto:
        b = batch if batch > 0 else "batch"
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [b, 3, size, size])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, [b, classes])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="onnxviz-benchmarks-synthetic")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def resnet18(size: int = 224, batch: int = 1, width: int = 64, seed: int = 0
             ) -> onnx.ModelProto:
    """A ResNet-18-shaped classifier (see the module docstring)."""
    net = _Net(seed)
    x = net.conv("image", 3, width, 7, "conv1", stride=2, pads=[3, 3, 3, 3])
    x = net.node("Relu", [net.bn(x, width, "bn1")], "relu")
    x = net.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2],
                 pads=[1, 1, 1, 1])
    cin = width
    for stage, mult in enumerate((1, 2, 4, 8), start=1):
        cout = width * mult
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            p = f"layer{stage}.{block}"
            y = net.conv(x, cin, cout, 3, f"{p}.conv1", stride=stride)
            y = net.node("Relu", [net.bn(y, cout, f"{p}.bn1")], f"{p}.relu1")
            y = net.bn(net.conv(y, cout, cout, 3, f"{p}.conv2"), cout, f"{p}.bn2")
            shortcut = x
            if stride != 1 or cin != cout:
                shortcut = net.conv(x, cin, cout, 1, f"{p}.downsample.0", stride=stride,
                                    pads=[0, 0, 0, 0])
                shortcut = net.bn(shortcut, cout, f"{p}.downsample.1")
            x = net.node("Relu", [net.node("Add", [y, shortcut], f"{p}.add")], f"{p}.relu2")
            cin = cout
    x = net.node("GlobalAveragePool", [x], "avgpool")
    x = net.node("Flatten", [x], "flatten", axis=1)
    net.gemm(x, cin, 1000, "logits")
    return net.model("resnet18_synthetic", batch, size, "logits", 1000)


def _channels(c: float, divisor: int = 8) -> int:
    return max(divisor, int(c + divisor / 2) // divisor * divisor)


def mobilenet_v2(size: int = 224, batch: int = 1, width: float = 1.0, seed: int = 0,
                 tf_pads: bool = True) -> onnx.ModelProto:
    """A MobileNetV2 / EfficientNet-Lite shaped classifier (see the module docstring)."""
    net = _Net(seed)
    zero = net.init("relu6.min", np.array(0.0))
    six = net.init("relu6.max", np.array(6.0))

    def relu6(x: str, name: str) -> str:
        return net.node("Clip", [x, zero, six], name)

    def conv(x, cin, cout, k, name, stride=1, group=1):
        if stride == 2 and tf_pads:
            pads = f"{name}.pad.pads"
            net.inits.append(numpy_helper.from_array(
                np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), pads))
            x = net.node("Pad", [x, pads], f"{name}.pad", mode="constant")
            return net.conv(x, cin, cout, k, name, stride, [0, 0, 0, 0], group, bias=True)
        return net.conv(x, cin, cout, k, name, stride, None, group, bias=True)

    cin = _channels(32 * width)
    x = relu6(conv("image", 3, cin, 3, "stem.conv", stride=2), "stem.relu6")
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
    index = 0
    for t, c, n, s in settings:
        cout = _channels(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"blocks.{index}"
            hidden = cin * t
            y = x
            if t != 1:
                y = relu6(conv(y, cin, hidden, 1, f"{p}.expand"), f"{p}.expand.relu6")
            y = relu6(conv(y, hidden, hidden, 3, f"{p}.depthwise", stride=stride,
                           group=hidden), f"{p}.depthwise.relu6")
            y = conv(y, hidden, cout, 1, f"{p}.project")
            if stride == 1 and cin == cout:
                y = net.node("Add", [y, x], f"{p}.add")
            x, cin = y, cout
            index += 1
    last = _channels(1280 * max(width, 1.0))
    x = relu6(conv(x, cin, last, 1, "head.conv"), "head.relu6")
    x = net.node("GlobalAveragePool", [x], "avgpool")
    x = net.node("Flatten", [x], "flatten", axis=1)
    net.gemm(x, last, 1000, "logits")
    return net.model("mobilenet_v2_synthetic", batch, size, "logits", 1000)
