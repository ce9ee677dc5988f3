"""The numeric backend: central differences along a low-dimensional orthonormal basis.

Checked against analytic gradients of small synthetic models (exact projections and cosine to
the full gradient), against autodiff on the default model, and for its cost statement."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz import runtime
from onnxviz.errors import OnnxvizError
from onnxviz.grad import gradient_function, input_gradient
from onnxviz.grad.numeric import NumericBackend, basis_1d, forward_model
from onnxviz.model import load_model


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


# ---------------------------------------------------------------- a smooth synthetic model


def _conv_tanh(nhwc: bool = False, batch: int | str = "N", size: int = 20, seed: int = 0):
    """x -> Conv 3x3 (3 -> 4, pad 1) -> Tanh -> 'act'; returns (model, w, b)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5
    b = rng.standard_normal(4).astype(np.float32) * 0.1
    nodes = []
    src = "x"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        src = "x_nchw"
    nodes += [helper.make_node("Conv", [src, "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
              helper.make_node("Tanh", ["conv"], ["act"])]
    shape = [batch, size, size, 3] if nhwc else [batch, 3, size, size]
    g = helper.make_graph(nodes, "conv_tanh",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("act", TensorProto.FLOAT,
                                                         [batch, 4, size, size])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return load_model(model), w.astype(np.float64), b.astype(np.float64)


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NCHW 3x3 convolution with padding 1, float64."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    out = np.zeros((x.shape[0], w.shape[0], h, wd)) + b[None, :, None, None]
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out


def _conv_tanh_grad(x: np.ndarray, w: np.ndarray, b: np.ndarray, seed: np.ndarray
                    ) -> np.ndarray:
    """d <seed, tanh(conv(x))> / dx, analytic, float64 (NCHW)."""
    t = np.tanh(_conv(x, w, b))
    g = seed * (1 - t ** 2)
    h, wd = x.shape[2:]
    gx = np.zeros((x.shape[0], x.shape[1], h + 2, wd + 2))
    for i in range(3):
        for j in range(3):
            gx[:, :, i:i + h, j:j + wd] += np.einsum("nohw,oc->nchw", g, w[:, :, i, j])
    return gx[:, :, 1:-1, 1:-1]


def _project(v: np.ndarray, backend: NumericBackend) -> np.ndarray:
    """The exact orthogonal projection of v onto the backend's basis."""
    d = backend._direction_images(np.arange(backend.directions)).astype(np.float64)
    coef = d.reshape(len(d), -1) @ v.reshape(len(v), -1).T
    return backend._assemble(coef, v.shape).astype(np.float64)


@pytest.mark.parametrize("kind", ["dct", "lowres"])
def test_basis_is_orthonormal(kind):
    for n, k in ((20, 8), (7, 8), (224, 8), (33, 16)):
        q = basis_1d(n, k, kind)
        assert q.shape == (n, min(n, k))
        np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-10)


def test_lowres_basis_spans_upsampled_images():
    q = basis_1d(24, 6, "lowres")
    coarse = np.random.default_rng(0).standard_normal(6)
    pos = np.clip((np.arange(24) + 0.5) * 6 / 24 - 0.5, 0, 5)
    fine = np.interp(pos, np.arange(6), coarse)  # bilinear upsampling in 1-D
    np.testing.assert_allclose(q @ (q.T @ fine), fine, atol=1e-10)


@pytest.mark.parametrize("basis", ["dct", "lowres"])
def test_estimate_is_the_projection_of_the_true_gradient(basis):
    model, w, b = _conv_tanh()
    rng = np.random.default_rng(1)
    x = rng.random((2, 3, 20, 20)).astype(np.float32)
    seed = np.zeros((2, 4, 20, 20), np.float32)
    seed[:, 2] = 1.0 / 400
    backend = NumericBackend(model, ["act"], x.shape, basis=basis, size=8)
    _, est = backend.vjp(x, [seed])
    true = _conv_tanh_grad(x.astype(np.float64), w, b, seed.astype(np.float64))
    proj = _project(true, backend)
    for n in range(2):
        assert _cos(est[n], proj[n]) > 0.9999
        np.testing.assert_allclose(np.linalg.norm(est[n]), np.linalg.norm(proj[n]), rtol=1e-3)
        # random 3x3 filters pass high frequencies, yet the low ones carry most of it
        assert _cos(est[n], true[n]) > 0.6


def test_nhwc_input_uses_the_last_axis_as_channels():
    model, w, b = _conv_tanh(nhwc=True)
    rng = np.random.default_rng(2)
    x_nhwc = rng.random((1, 20, 20, 3)).astype(np.float32)
    fn = gradient_function(model, "act:1", x_nhwc.shape, method="numeric")
    assert fn.backend.directions == 3 * 8 * 8  # 3 channels on the last axis, 8x8 each
    _, est = fn(x_nhwc)
    seed = np.zeros((1, 4, 20, 20))
    seed[:, 1] = 1.0 / 400
    true = _conv_tanh_grad(x_nhwc.transpose(0, 3, 1, 2).astype(np.float64), w, b, seed)
    true = true.transpose(0, 2, 3, 1)
    assert est.shape == x_nhwc.shape
    assert _cos(est, _project(true, fn.backend)) > 0.9999


def test_vector_input_uses_a_1d_basis():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((30, 5)).astype(np.float32) * 0.3
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 30])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(w, "w")])
    model = load_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    x = rng.random((2, 30)).astype(np.float32)
    fn = gradient_function(model, "y:3", x.shape, method="numeric", size=8)
    assert fn.backend.directions == 30  # min(8 * 8, 30): the whole space
    values, est = fn(x)
    t = np.tanh(x.astype(np.float64) @ w)
    true = (1 - t[:, 3:4] ** 2) * w[:, 3][None, :]
    np.testing.assert_allclose(values, t[:, 3], rtol=1e-5)
    for n in range(2):
        assert _cos(est[n], true[n]) > 0.99999


def test_default_model_cosine_to_autodiff():
    """On the trained digits CNN (ReLU, MaxPool) the estimate is close to the projection of
    the exact gradient; how close it is to the full gradient depends on the basis size."""
    model = load_model(None)
    rng = np.random.default_rng(4)
    x = rng.random((2, 1, 32, 32)).astype(np.float32)
    _, true = input_gradient(model, "conv3:5", x, method="autodiff")
    for size, floor in ((8, 0.6), (16, 0.9)):
        fn = gradient_function(model, "conv3:5", x.shape, method="numeric", size=size)
        _, est = fn(x)
        proj = _project(true.astype(np.float64), fn.backend)
        for n in range(2):
            assert _cos(est[n], proj[n]) > 0.995
            assert _cos(est[n], true[n]) > floor


def test_cost_is_stated_and_runs_are_batched(monkeypatch):
    model, _, _ = _conv_tanh(size=16)
    x = np.random.default_rng(5).random((1, 3, 16, 16)).astype(np.float32)
    fn = gradient_function(model, "act:0", x.shape, method="numeric", max_batch=32)
    assert fn.forwards_per_gradient == 2 * 3 * 8 * 8 == 384
    assert "384 forwards per image" in fn.cost and "batched 32" in fn.cost
    calls = []
    real_run = runtime.run
    monkeypatch.setattr(runtime, "run", lambda s, f, o=None: calls.append(
        next(iter(f.values())).shape[0]) or real_run(s, f, o))
    fn(x)
    assert sum(calls) == 384 + 1  # the perturbed forwards plus one at x for the value
    assert max(calls) == 32 and len(calls) == 384 // 32 + 1


def test_fixed_batch_models_run_item_by_item():
    model, _, _ = _conv_tanh(batch=1, size=12)
    rng = np.random.default_rng(6)
    x = rng.random((3, 3, 12, 12)).astype(np.float32)
    fn = gradient_function(model, "act:3", (1, 3, 12, 12), method="numeric", size=4)
    assert "fixed batch of 1" in fn.cost
    values, est = fn(x)
    assert values.shape == (3,) and est.shape == x.shape
    for n in range(3):
        single_v, single_g = fn(x[n:n + 1])
        np.testing.assert_allclose(values[n], single_v[0], rtol=1e-6)
        np.testing.assert_allclose(est[n], single_g[0], rtol=1e-4, atol=1e-6)


def test_forward_model_is_pruned_and_valid():
    model = load_model(None)
    proto = forward_model(model, ["conv2"], (1, 1, 32, 32))
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["Conv", "Relu", "MaxPool", "Conv"]
    assert [o.name for o in proto.graph.output] == ["conv2"]
    session = runtime.make_session(proto)
    (out,) = runtime.run(session, {"image": np.zeros((3, 1, 32, 32), np.float32)})
    assert out.shape == (3, 32, 16, 16)


def test_numeric_errors():
    model, _, _ = _conv_tanh()
    with pytest.raises(OnnxvizError, match="basis"):
        NumericBackend(model, ["act"], (1, 3, 20, 20), basis="wavelet")
    with pytest.raises(OnnxvizError, match="axis 2"):
        NumericBackend(model, ["act"], (1, 3, 21, 20))
    fn = gradient_function(model, "act:0", (1, 3, 20, 20), method="numeric")
    with pytest.raises(OnnxvizError, match="built for"):
        fn(np.zeros((1, 3, 10, 10), np.float32))
