"""The autodiff backend on whole models: the embedded default model, synthetic ResNet/MobileNet
shapes, real third-party models, QDQ, QLinearConv and float16 models, torch as a cross-check.

Small models are checked against float64 central differences (onnx's ReferenceEvaluator runs the
float64 copy); real models against float32 central differences of the onnxruntime forward along
the gradient direction and random directions, with tolerances that allow for ReLU kinks and
MaxPool ties (float32 forwards of different engines disagree at ~1e-4 there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from gradhelp import cosine, single_node_model, to_float64
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxviz.errors import OnnxvizError, UnknownNameError, UnsupportedError
from onnxviz.grad.autodiff import gradient_model, missing_rules
from onnxviz.model import load_model
from onnxviz.runtime import make_session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from synthetic import mobilenet_v2, resnet18


def exposing(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """A copy of the model with `tensor` as an extra output."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if tensor not in {o.name for o in copy.graph.output}:
        copy.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    return copy


def check_float32(model: onnx.ModelProto, target: str, x: np.ndarray, rng, step: float = 1e-2,
                  tol: float = 0.02, input_name: str | None = None, value_rtol: float = 1e-4):
    """Gradient model vs float32 central differences of the original model in onnxruntime."""
    gm = gradient_model(model, target, x.shape, input_name)
    onnx.checker.check_model(gm.proto)
    seed = rng.standard_normal(gm.target_shapes[0]).astype(np.float32)
    y, grad = make_session(gm.proto).run(None, {gm.input_name: x, gm.seed_names[0]: seed})
    fwd = make_session(exposing(model, gm.targets[0]))
    y0 = fwd.run([gm.targets[0]], {gm.input_name: x})[0]
    np.testing.assert_allclose(y, y0, rtol=value_rtol, atol=value_rtol * np.abs(y0).max())

    def f(z):
        out = fwd.run([gm.targets[0]], {gm.input_name: z.astype(np.float32)})[0]
        return float(np.sum(out.astype(np.float64) * seed))

    g64 = grad.astype(np.float64)
    norm = np.linalg.norm(g64)
    assert norm > 0
    directions = [g64 / norm] + [d / np.linalg.norm(d) for d in
                                 (rng.standard_normal(x.shape) for _ in range(2))]
    for d in directions:
        fd = (f(x + step * d) - f(x - step * d)) / (2 * step)
        ad = float(np.sum(g64 * d))
        assert abs(fd - ad) <= tol * norm, (fd, ad, norm)
    return gm, grad


def check_float64(model: onnx.ModelProto, target: str, x: np.ndarray, rng, directions: int = 3,
                  rtol: float = 1e-5):
    """Gradient model in float64 (reference evaluator) vs float64 central differences."""
    gm = gradient_model(model, target, x.shape)
    onnx.checker.check_model(gm.proto)
    seed = rng.standard_normal(gm.target_shapes[0])
    ref = ReferenceEvaluator(to_float64(gm.proto))
    y, grad = ref.run(None, {gm.input_name: x, gm.seed_names[0]: seed})
    fwd = ReferenceEvaluator(to_float64(exposing(model, gm.targets[0])))
    index = [o.name for o in fwd.proto_.graph.output].index(gm.targets[0])

    def f(z):
        return float(np.sum(fwd.run(None, {gm.input_name: z})[index] * seed))

    # BatchNormalization folded into Conv weights rounds them to float32: ~1e-7 relative
    y0 = fwd.run(None, {gm.input_name: x})[index]
    np.testing.assert_allclose(y, y0, rtol=1e-5, atol=1e-6 * np.abs(y0).max())
    norm = np.linalg.norm(grad)
    for _ in range(directions):
        d = rng.standard_normal(x.shape)
        d /= np.linalg.norm(d)
        h = 1e-5
        fd = (f(x + h * d) - f(x - h * d)) / (2 * h)
        assert abs(fd - float(np.sum(grad * d))) <= rtol * norm
    return gm, grad


# ---------------------------------------------------------------- the default model


@pytest.mark.parametrize("target", ["logits", "relu2", "pool1", "fc1"])
def test_default_model_float64(target):
    model = load_model(None).proto
    rng = np.random.default_rng(0)
    check_float64(model, target, rng.random((2, 1, 32, 32)), rng)


def test_default_model_onnxruntime_and_structure():
    model = load_model(None)
    rng = np.random.default_rng(1)
    gm, _ = check_float32(model.proto, "logits", rng.random((3, 1, 32, 32), np.float32), rng,
                          step=1e-3)
    assert gm.targets == ["logits"] and gm.seed_names == ["logits__seed"]
    assert gm.input_shape == (3, 1, 32, 32) and gm.target_shapes == [(3, 10)]
    outputs = [o.name for o in gm.proto.graph.output]
    assert outputs == ["logits", gm.grad_name]
    inputs = {i.name for i in gm.proto.graph.input}
    assert inputs >= {"image", "logits__seed"}
    # Relu rules read the Relu output: every Conv output keeps a single consumer (the Relu),
    # so onnxruntime can still fuse Conv+Relu
    consumers: dict[str, int] = {}
    for n in gm.proto.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    convs = [n.output[0] for n in gm.proto.graph.node if n.op_type == "Conv"
             and not n.name.startswith("grad/")]
    assert convs and all(consumers[c] == 1 for c in convs)


def test_node_name_target_and_several_targets():
    """A node name means its first output; several targets sum their seeded contributions."""
    model = load_model(None).proto
    rng = np.random.default_rng(2)
    x = rng.random((1, 1, 32, 32), np.float32)
    both = gradient_model(model, ["relu2", "logits"], x.shape)
    assert both.targets == ["relu2", "logits"]
    seeds = [rng.standard_normal(s).astype(np.float32) for s in both.target_shapes]
    grad_both = make_session(both.proto).run(
        None, {"image": x, both.seed_names[0]: seeds[0], both.seed_names[1]: seeds[1]})[-1]
    total = 0
    for target, seed in zip(["relu2", "logits"], seeds, strict=True):
        one = gradient_model(model, target, x.shape)
        total = total + make_session(one.proto).run(None, {"image": x,
                                                           one.seed_names[0]: seed})[1]
    np.testing.assert_allclose(grad_both, total, rtol=1e-4, atol=1e-6)


def test_errors_are_one_line_user_errors():
    model = load_model(None)
    with pytest.raises(UnknownNameError, match=r"relu_2.*relu2"):
        gradient_model(model, "relu_2", (1, 1, 32, 32))
    with pytest.raises(OnnxvizError, match="rank"):
        gradient_model(model, "logits", (1, 32, 32))
    with pytest.raises(OnnxvizError, match="fixed size 1"):
        gradient_model(model, "logits", (1, 3, 32, 32))
    with pytest.raises(OnnxvizError, match="does not depend"):
        gradient_model(model, "conv1.weight", (1, 1, 32, 32))


def test_unsupported_op_is_named_before_any_work():
    model = onnx.ModelProto()
    model.CopyFrom(load_model(None).proto)
    model.graph.node.append(helper.make_node("Cos", ["logits"], ["wave"], name="my_cosine"))
    model.graph.node.append(helper.make_node("Hardmax", ["wave"], ["hard"], name="hm"))
    model.graph.node.append(helper.make_node("Add", ["wave", "logits"], ["mixed"], name="mix"))
    assert missing_rules(model, "mixed", (1, 1, 32, 32)) == [("Cos", "my_cosine")]
    assert missing_rules(model, "logits", (1, 1, 32, 32)) == []
    with pytest.raises(UnsupportedError) as info:
        gradient_model(model, "mixed", (1, 1, 32, 32))
    message = str(info.value)
    assert "Cos" in message and "my_cosine" in message and "\n" not in message


def test_custom_domain_op_is_reported():
    model = single_node_model(helper.make_node("Relu", ["x"], ["r"]), (1, 4))
    model.graph.node.append(helper.make_node("Gelu", ["r"], ["y"], name="ms_gelu",
                                             domain="com.microsoft"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert missing_rules(model, "y", (1, 4)) == [("Gelu", "ms_gelu")]


# ---------------------------------------------------------------- graph preparation


def test_shape_subgraph_and_static_if_are_folded():
    """Shape -> Gather -> Concat -> Reshape and an If on a shape condition become constants
    once the input shape is pinned; the gradient is still exact."""
    n = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["shape2"], axis=0),
        helper.make_node("Reshape", ["r", "shape2"], ["flat"]),
        helper.make_node("Gather", ["s", "two"], ["h"], axis=0),
        helper.make_node("Equal", ["h", "five"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=helper.make_graph(
            [helper.make_node("Mul", ["flat", "flat"], ["sq"])], "then", [],
            [helper.make_tensor_value_info("sq", TensorProto.FLOAT, None)]),
            else_branch=helper.make_graph(
            [helper.make_node("Neg", ["flat"], ["ng"])], "else", [],
            [helper.make_tensor_value_info("ng", TensorProto.FLOAT, None)])),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
             {"zero": 0, "axes0": [0], "minus1": [-1], "two": 2, "five": 5}.items()]
    graph = helper.make_graph(n, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["n", 3, "h", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(3)
    for h, branch in ((5, "Mul"), (6, "Neg")):
        gm, _ = check_float64(model, "y", rng.standard_normal((2, 3, h, 4)), rng)
        ops = [node.op_type for node in gm.proto.graph.node]
        assert "If" not in ops and "Shape" not in ops and branch in ops


def test_batchnorm_and_tf_pads_fold_into_convs():
    model = mobilenet_v2(size=32, width=0.25)
    assert any(n.op_type == "Pad" for n in model.graph.node)
    rng = np.random.default_rng(4)
    gm, _ = check_float64(model, "blocks.4.add", rng.random((1, 3, 32, 32)), rng)
    assert not any(n.op_type == "Pad" for n in gm.proto.graph.node)
    res = resnet18(size=32, width=8)
    gm, _ = check_float64(res, "layer2.0.relu2", rng.random((1, 3, 32, 32)), rng)
    assert not any(n.op_type == "BatchNormalization" for n in gm.proto.graph.node)


def test_other_inputs_stay_runtime_inputs():
    relu = helper.make_node("Relu", ["image"], ["r"])
    mul = helper.make_node("Mul", ["r", "gain"], ["y"])
    graph = helper.make_graph(
        [relu, mul], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 3, 3]),
         helper.make_tensor_value_info("gain", TensorProto.FLOAT, [2, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    gm = gradient_model(model, "y", (1, 2, 3, 3))
    assert gm.input_name == "image" and "gain" in {i.name for i in gm.proto.graph.input}
    x = np.linspace(-1, 1, 18, dtype=np.float32).reshape(1, 2, 3, 3)
    gain = np.array([2.0, -3.0], np.float32).reshape(2, 1, 1)
    seed = np.ones((1, 2, 3, 3), np.float32)
    grad = make_session(gm.proto).run(None, {"image": x, "gain": gain,
                                             gm.seed_names[0]: seed})[1]
    np.testing.assert_allclose(grad, (x > 0) * gain * seed)
    two = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 2, 2]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    ambiguous = helper.make_model(two, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxvizError, match="inputs: a, b"):
        gradient_model(ambiguous, "y", (1, 1, 2, 2))
    assert gradient_model(ambiguous, "y", (1, 1, 2, 2), input_name="b").input_name == "b"


# ---------------------------------------------------------------- synthetic architectures


def test_synthetic_resnet_and_mobilenet_float64():
    rng = np.random.default_rng(5)
    res = resnet18(size=32, batch=0, width=8)
    check_float64(res, "logits", rng.random((2, 3, 32, 32)), rng)
    mob = mobilenet_v2(size=32, width=0.25)
    check_float64(mob, "logits", rng.random((1, 3, 32, 32)), rng)


def test_synthetic_models_in_onnxruntime():
    """onnxruntime runs the emitted gradient graph as the float64 reference does. (Float32
    differences along the gradient direction are no judge on the random MobileNet: its ReLU6
    kinks are so dense along that direction that differences converge only below 1e-6.)"""
    rng = np.random.default_rng(6)
    for model, target in ((resnet18(size=64, width=16), "layer3.1.relu2"),
                          (mobilenet_v2(size=64, width=0.5), "logits")):
        x = rng.random((1, 3, 64, 64), np.float32)
        gm = gradient_model(model, target, x.shape)
        seed = rng.standard_normal(gm.target_shapes[0]).astype(np.float32)
        grad = make_session(gm.proto).run(None, {"image": x, gm.seed_names[0]: seed})[1]
        ref = ReferenceEvaluator(to_float64(gm.proto))
        expected = ref.run(None, {"image": x.astype(np.float64),
                                  gm.seed_names[0]: seed.astype(np.float64)})[1]
        np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    check_float32(resnet18(size=64, width=16), "layer3.1.relu2",
                  rng.random((1, 3, 64, 64), np.float32), rng, step=1e-3)


# ---------------------------------------------------------------- real models

REAL_CASES = {
    # key: (input shape, targets: None = the model output)
    "ppocr_det": ((1, 3, 64, 96), ["p2o.Add.280", "p2o.Relu.11"]),
    "ppocr_cls": ((1, 3, 48, 192), [None, "linear_1.tmp_1"]),
    "pplcnet": ((1, 3, 224, 224), [None]),
    "yolov8n": ((1, 3, 64, 64), ["/model.22/dfl/conv/Conv", "/model.21/cv2/conv/Conv"]),
}


@pytest.mark.real
@pytest.mark.parametrize("key", REAL_CASES)
def test_real_models(real_model, key):
    model = load_model(real_model(key))
    shape, targets = REAL_CASES[key]
    rng = np.random.default_rng(7)
    x = rng.random(shape, np.float32)
    for target in targets:
        target = target or model.proto.graph.output[0].name
        _, grad = check_float32(model.proto, target, x, rng, step=1e-2, tol=0.02)
        assert grad.shape == shape and np.isfinite(grad).all()


# ---------------------------------------------------------------- quantized and float16


class _Reader:
    def __init__(self, images):
        self.images = iter(images)

    def get_next(self):
        x = next(self.images, None)
        return None if x is None else {"image": x}


def _quantized(tmp_path, fmt):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src, dst = tmp_path / "float.onnx", tmp_path / f"q_{fmt}.onnx"
    onnx.save(load_model(None).proto, src)
    rng = np.random.default_rng(8)
    images = [rng.random((1, 1, 32, 32), np.float32) for _ in range(8)]
    quantize_static(str(src), str(dst), _Reader(images),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MaxPool", "Relu"])
    return onnx.load(str(dst))


def _surrogate(model: onnx.ModelProto) -> onnx.ModelProto:
    """The QDQ model with each QuantizeLinear->DequantizeLinear pair replaced by the Clip to its
    representable range: differentiable, and its exact gradient is the clipped STE."""
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    q_nodes = {n.output[0]: n for n in g.node if n.op_type == "QuantizeLinear"}
    nodes = []
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            continue
        if n.op_type == "DequantizeLinear" and n.input[0] in q_nodes:
            q = q_nodes[n.input[0]]
            s, z = float(inits[q.input[1]]), inits[q.input[2]]
            lo, hi = (np.iinfo(z.dtype).min - int(z)) * s, (np.iinfo(z.dtype).max - int(z)) * s
            names = [f"{n.output[0]}/lo", f"{n.output[0]}/hi"]
            g.initializer.extend([numpy_helper.from_array(np.array(lo, np.float32), names[0]),
                                  numpy_helper.from_array(np.array(hi, np.float32), names[1])])
            nodes.append(helper.make_node("Clip", [q.input[0], *names], [n.output[0]]))
            continue
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    return model


def test_qdq_model_keeps_forward_and_uses_clipped_straight_through(tmp_path):
    qdq = _quantized(tmp_path, "qdq")
    assert any(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    rng = np.random.default_rng(9)
    x = rng.random((2, 1, 32, 32), np.float32)
    gm = gradient_model(qdq, "logits", x.shape)
    seed = rng.standard_normal((2, 10)).astype(np.float32)
    y, grad = make_session(gm.proto).run(None, {"image": x, gm.seed_names[0]: seed})
    original = make_session(qdq, optimization="disable").run(["logits"], {"image": x})[0]
    np.testing.assert_allclose(y, original, rtol=1e-5, atol=1e-5)  # forward kept exactly
    surrogate = _surrogate(onnx.load_from_string(qdq.SerializeToString()))
    sm = gradient_model(surrogate, "logits", x.shape)
    expected = make_session(sm.proto).run(None, {"image": x, sm.seed_names[0]: seed})[1]
    # not identical: the surrogate's activations are not rounded, so MaxPool picks differ where
    # quantized values tie within a window
    assert cosine(grad, expected) > 0.97


def test_qlinearconv_model_is_differentiated_as_dequantized_copy(tmp_path):
    qop = _quantized(tmp_path, "qop")
    assert any(n.op_type == "QLinearConv" for n in qop.graph.node)
    rng = np.random.default_rng(10)
    x = rng.random((1, 1, 32, 32), np.float32)
    gm = gradient_model(qop, "logits", x.shape)
    assert any("QLinearConv" in note for note in gm.notes)
    seed = rng.standard_normal((1, 10)).astype(np.float32)
    y, grad = make_session(gm.proto).run(None, {"image": x, gm.seed_names[0]: seed})
    original = make_session(qop).run(["logits"], {"image": x})[0]
    assert np.abs(y - original).max() <= 0.05 * np.abs(original).max()
    qdq_gm = gradient_model(_quantized(tmp_path, "qdq"), "logits", x.shape)
    qdq_grad = make_session(qdq_gm.proto).run(None, {"image": x, qdq_gm.seed_names[0]: seed})[1]
    assert cosine(grad, qdq_grad) > 0.95


def test_float16_model_is_differentiated_as_float32_copy():
    float16 = pytest.importorskip("onnxruntime.transformers.float16")
    model = load_model(None).proto
    half = float16.convert_float_to_float16(onnx.load_from_string(model.SerializeToString()),
                                            keep_io_types=False)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    rng = np.random.default_rng(11)
    x = rng.random((2, 1, 32, 32), np.float32)
    gm = gradient_model(half, "logits", x.shape)
    assert any("float16" in note for note in gm.notes)
    assert gm.proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    seed = rng.standard_normal((2, 10)).astype(np.float32)
    _, grad = make_session(gm.proto).run(None, {"image": x, gm.seed_names[0]: seed})
    full = gradient_model(model, "logits", x.shape)
    _, expected = make_session(full.proto).run(None, {"image": x, full.seed_names[0]: seed})
    assert cosine(grad, expected) > 0.999
    np.testing.assert_allclose(grad, expected, rtol=0.05, atol=0.01 * np.abs(expected).max())


# ---------------------------------------------------------------- torch cross-check


def test_against_torch_autograd(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1), nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), nn.Hardswish(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6(), nn.Upsample(scale_factor=2),
        nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5), nn.Tanh())
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    x = torch.rand(2, 3, 20, 20)
    path = tmp_path / "net.onnx"
    try:
        torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=["out"],
                          opset_version=17, dynamo=False)
    except Exception as exc:  # an exporter dependency missing in this environment
        pytest.skip(f"torch.onnx.export unavailable: {exc}")
    model = onnx.load(str(path))
    gm = gradient_model(model, "out", tuple(x.shape))
    seed = torch.randn(2, 5)
    grad = make_session(gm.proto).run(None, {"image": x.numpy(),
                                             gm.seed_names[0]: seed.numpy()})[1]
    xt = x.clone().requires_grad_(True)
    (net(xt) * seed).sum().backward()
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-3,
                               atol=1e-4 * float(xt.grad.abs().max()))
