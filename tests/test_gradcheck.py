"""The gradient API (`input_gradient`, `gradient_function`, method="auto"), the self-check
`gradcheck` and the `onnxviz gradcheck` command: correct backends agree with finite
differences, a deliberately wrong gradient is caught, and whole real models pass."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxviz import cli
from onnxviz.errors import OnnxvizError, UnsupportedError
from onnxviz.grad import (
    AutodiffBackend,
    GradientWarning,
    gradient_function,
    input_gradient,
)
from onnxviz.grad.check import GradCheckResult, check_function, gradcheck
from onnxviz.model import default_image_path, load_model
from onnxviz.objectives import Channel, LayerL2


def _invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


# ---------------------------------------------------------------- the API


def test_input_gradient_values_and_shapes():
    model = load_model(None)
    x = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    values, grad = input_gradient(model, "logits:4", x)
    assert values.shape == (3,) and grad.shape == x.shape and grad.dtype == np.float32
    fn = gradient_function(model, "logits:4", x.shape)
    np.testing.assert_allclose(values, fn.value(x), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(grad).sum(axis=(1, 2, 3)) > 0)


def test_gradient_function_is_reusable_across_batch_sizes():
    model = load_model(None)
    rng = np.random.default_rng(1)
    fn = gradient_function(model, "conv3:7", (2, 1, 32, 32))
    assert fn.method == "autodiff" and fn.targets == ["conv3"]
    x = rng.random((5, 1, 32, 32), dtype=np.float32)
    values, grad = fn(x)
    for n in (0, 4):
        v1, g1 = fn(x[n:n + 1])
        np.testing.assert_allclose(values[n], v1[0], rtol=1e-5)
        np.testing.assert_allclose(grad[n], g1[0], rtol=1e-4, atol=1e-7)
    with pytest.raises(OnnxvizError, match="built for"):
        fn(np.zeros((1, 3, 32, 32), np.float32))


def test_objectives_sum_and_nonlinear_objectives():
    """A sum of a linear and a nonlinear objective (two passes) equals the sum of the parts."""
    model = load_model(None)
    x = np.random.default_rng(2).random((2, 1, 32, 32), dtype=np.float32)
    a = gradient_function(model, Channel("conv2", 3), x.shape)
    b = gradient_function(model, LayerL2("relu3"), x.shape)
    both = gradient_function(model, Channel("conv2", 3) + 0.5 * LayerL2("relu3"), x.shape)
    va, ga = a(x)
    vb, gb = b(x)
    v, g = both(x)
    np.testing.assert_allclose(v, va + 0.5 * vb, rtol=1e-5)
    np.testing.assert_allclose(g, ga + 0.5 * gb, rtol=1e-4, atol=1e-6)
    assert "one forward to the targets" in both.cost


def test_fixed_batch_model_runs_in_chunks(fixture_models):
    path = fixture_models / "batchnorm.onnx"  # input fixed at [1, 3, 16, 16]
    x = np.random.default_rng(3).random((3, 3, 16, 16), dtype=np.float32)
    values, grad = input_gradient(path, "act:2", x)
    fn = gradient_function(path, "act:2", (1, 3, 16, 16))
    for n in range(3):
        v1, g1 = fn(x[n:n + 1])
        np.testing.assert_allclose(values[n], v1[0], rtol=1e-5)
        np.testing.assert_allclose(grad[n], g1[0], rtol=1e-4, atol=1e-7)


def test_float16_model_takes_float32(fixture_models):
    fn = gradient_function(fixture_models / "fp16.onnx", "act:1", (1, 3, 16, 16))
    assert any("float16" in n and "float32" in n for n in fn.notes)
    values, grad = fn(np.full((1, 3, 16, 16), 0.5, np.float32))
    assert grad.dtype == np.float32 and np.isfinite(values).all()
    assert gradcheck(fixture_models / "fp16.onnx", "act:1").passed


def _sin_model() -> object:
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Sin", ["c"], ["s"], name="wave")],
        "sin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 12, 12])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 2, 12, 12])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return load_model(model)


def test_auto_falls_back_to_numeric_with_a_warning():
    model = _sin_model()
    with pytest.raises(UnsupportedError, match="Sin"):
        gradient_function(model, "s:1", (1, 1, 12, 12), method="autodiff")
    with pytest.warns(GradientWarning, match="Sin") as caught:
        fn = gradient_function(model, "s:1", (1, 1, 12, 12), method="auto")
    message = str(caught[0].message)
    assert "wave" in message and "forwards per image" in message
    assert fn.method == "numeric" and fn.warnings == [message]
    assert fn.forwards_per_gradient == 2 * 8 * 8
    # the node before the unsupported op is still differentiated exactly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = gradient_function(model, "c:1", (1, 1, 12, 12), method="auto")
    assert exact.method == "autodiff" and not exact.warnings
    with pytest.warns(GradientWarning):
        result = gradcheck(model, "s:1", method="auto")
    assert result.passed and result.method == "numeric"
    assert any("Sin" in n for n in result.notes)


def test_unknown_method_is_a_user_error():
    with pytest.raises(OnnxvizError, match="unknown gradient method"):
        gradient_function(None, "logits:1", (1, 1, 32, 32), method="magic")


# ---------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("target", ["logits:3", "conv3:5", "pool2", "conv1:1@3,4",
                                    "relu2:0-3"])
def test_autodiff_passes_gradcheck_on_the_default_model(target):
    result = gradcheck(None, target)
    assert isinstance(result, GradCheckResult)
    assert result.passed, result.summary()
    assert [d.direction for d in result.directions] == ["gradient", "random 1", "random 2"]
    assert result.forwards == 8 and result.cosine > 0.999  # 2 for the noise, 2 per direction
    json.dumps(result.to_dict())


def test_numeric_passes_gradcheck_in_its_subspace():
    result = gradcheck(None, "conv3:5", method="numeric")
    assert result.passed, result.summary()
    assert any("numeric basis" in n for n in result.notes)


def test_a_wrong_gradient_is_caught(monkeypatch):
    model = load_model(None)
    x = np.random.default_rng(5).random((1, 1, 32, 32), dtype=np.float32)
    fn = gradient_function(model, "conv3:5", x.shape)
    real = AutodiffBackend.vjp
    for name, corrupt in [("doubled", lambda g: 2 * g),
                          ("flipped", lambda g: -g),
                          ("transposed", lambda g: np.swapaxes(g, 2, 3).copy()),
                          ("noisy", lambda g: g + np.random.default_rng(0).standard_normal(
                              g.shape).astype(np.float32) * np.abs(g).max())]:
        monkeypatch.setattr(AutodiffBackend, "vjp",
                            lambda self, x, s, c=corrupt: (real(self, x, s)[0],
                                                           c(real(self, x, s)[1])))
        result = check_function(fn, x)
        assert not result.passed, (name, result.summary())
    monkeypatch.setattr(AutodiffBackend, "vjp", real)
    assert check_function(fn, x).passed


# ---------------------------------------------------------------- the command


def test_cli_gradcheck_agrees():
    result = _invoke("gradcheck", "--target", "conv3:5")
    assert result.exit_code == 0, result.output
    assert "agree" in result.output and "cosine" in result.output
    assert "rel. error" in result.output and "channel axis 1" in result.output


def test_cli_gradcheck_json_and_image():
    result = _invoke("gradcheck", "--target", "logits:2", "--image", str(default_image_path()),
                     "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output[result.output.index("{"):])
    assert info["passed"] and info["method"] == "autodiff" and len(info["directions"]) == 3
    assert info["input_shape"] == [1, 1, 32, 32]
    assert any("preset" in n for n in info["notes"])  # the image went through preprocessing


def test_cli_gradcheck_exits_1_on_a_wrong_gradient(monkeypatch):
    real = AutodiffBackend.vjp
    monkeypatch.setattr(AutodiffBackend, "vjp",
                        lambda self, x, s: (real(self, x, s)[0], -real(self, x, s)[1]))
    result = _invoke("gradcheck", "--target", "conv3:5")
    assert result.exit_code == 1
    assert "DISAGREE" in result.output


def test_cli_gradcheck_user_errors_exit_2():
    assert _invoke("gradcheck", "--target", "conv3:99").exit_code == 2
    assert _invoke("gradcheck", "--target", "nope:1").exit_code == 2
    assert _invoke("gradcheck", "--target", "conv3", "--method", "magic").exit_code == 2
    assert _invoke("gradcheck").exit_code == 2  # --target is required


def test_cli_gradcheck_numeric_and_auto():
    for method in ("numeric", "auto"):
        result = _invoke("gradcheck", "--target", "relu3:1", "--method", method)
        assert result.exit_code == 0, result.output
        assert f"({'autodiff' if method == 'auto' else method})" in result.output


# ---------------------------------------------------------------- whole real models


REAL_TARGETS = {
    # key: (input size for dynamic dims, targets from early, middle and late layers)
    "ppocr_det": (64, ["p2o.Conv.1:0", "p2o.Conv.32:3", "p2o.ConvTranspose.0:1",
                       "conv2d_468.tmp_0"]),
    "yolov8n": (64, ["/model.1/conv/Conv:0", "/model.15/m.0/cv1/conv/Conv:3",
                     "/model.22/cv3.2/cv3.2.2/Conv:1"]),
    "pplcnet": (224, ["Conv.1:0", "Conv.16:3", "Conv.31:1", "fetch_name_0:1"]),
}


@pytest.mark.real
@pytest.mark.parametrize("key", sorted(REAL_TARGETS))
def test_real_models_pass_gradcheck(real_model, key):
    size, targets = REAL_TARGETS[key]
    model = load_model(real_model(key))
    for target in targets:
        result = gradcheck(model, target, size=size, method="auto")
        assert result.method == "autodiff", result.notes
        assert result.passed, result.summary()


@pytest.mark.real
def test_curved_softmax_output_on_a_photo_is_retried_at_smaller_steps(real_model, photos):
    """PP-LCNet's softmax output curves within 1e-3 along its gradient on grace_hopper.jpg: the
    first step disagrees, a smaller one agrees (a wrong gradient would not)."""
    model = load_model(real_model("pplcnet"))
    result = gradcheck(model, "fetch_name_0:2", image=photos[0])
    assert result.passed, result.summary()
    gradient = result.directions[0]
    assert gradient.direction == "gradient" and gradient.step < result.step
    assert result.forwards > 8
