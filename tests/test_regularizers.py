"""Regularizers: gradients against central differences, blur adjoint, known values."""

from __future__ import annotations

import numpy as np
import pytest

from onnxviz.regularizers import blur, blur_adjoint, blur_penalty, l2, total_variation

PENALTIES = {"tv": total_variation, "l2": l2, "blur": blur_penalty}


@pytest.mark.parametrize("name", list(PENALTIES))
@pytest.mark.parametrize("shape", [(2, 3, 6, 7), (1, 1, 5, 4)])
def test_gradient_matches_central_differences(name, shape):
    fn = PENALTIES[name]
    rng = np.random.default_rng(0)
    x = rng.random(shape)  # distinct neighbours: TV is differentiable here
    values, grad = fn(x)
    assert values.shape == (shape[0],) and grad.shape == shape and grad.dtype == np.float64
    h = 1e-6
    for _ in range(3):
        v = rng.standard_normal(shape)
        fd = (fn(x + h * v)[0].sum() - fn(x - h * v)[0].sum()) / (2 * h)
        assert np.vdot(grad, v) == pytest.approx(fd, rel=1e-6, abs=1e-10)
    flat = x.reshape(-1)
    for i in rng.choice(flat.size, size=6, replace=False):
        e = np.zeros_like(flat)
        e[i] = h
        e = e.reshape(shape)
        fd = (fn(x + e)[0].sum() - fn(x - e)[0].sum()) / (2 * h)
        assert grad.reshape(-1)[i] == pytest.approx(fd, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("name", list(PENALTIES))
def test_values_are_per_item_and_float32_stays_float32(name):
    rng = np.random.default_rng(1)
    x = rng.random((3, 3, 8, 8))
    values, _ = PENALTIES[name](x)
    for i in range(3):
        assert values[i] == pytest.approx(PENALTIES[name](x[i : i + 1])[0][0])
    v32, g32 = PENALTIES[name](x.astype(np.float32))
    assert g32.dtype == np.float32
    np.testing.assert_allclose(v32, values, rtol=1e-5)


def test_known_values():
    gray = np.full((1, 3, 8, 8), 0.5)
    for fn in PENALTIES.values():
        value, grad = fn(gray)
        assert value[0] == pytest.approx(0) and np.abs(grad).max() == pytest.approx(0)
    stripes = np.zeros((1, 1, 4, 4))
    stripes[..., 1::2] = 1.0  # columns 0 1 0 1: 3 unit jumps per row, no vertical change
    assert total_variation(stripes)[0][0] == pytest.approx(4 * 3 / 16)
    assert l2(stripes)[0][0] == pytest.approx(0.25)
    assert l2(stripes, center=0.0)[0][0] == pytest.approx(0.5)


def test_tv_and_blur_penalty_prefer_smooth_images():
    rng = np.random.default_rng(2)
    noise = rng.random((1, 3, 16, 16))
    smooth = np.broadcast_to(np.linspace(0, 1, 16), (1, 3, 16, 16))
    assert total_variation(smooth)[0][0] < 0.2 * total_variation(noise)[0][0]
    assert blur_penalty(smooth)[0][0] < 0.05 * blur_penalty(noise)[0][0]


def test_blur_adjoint_is_exact_and_blur_keeps_constants():
    rng = np.random.default_rng(3)
    for shape in [(2, 3, 7, 5), (1, 1, 1, 4), (1, 2, 2, 2)]:
        x = rng.standard_normal(shape)
        g = rng.standard_normal(shape)
        assert np.vdot(blur(x), g) == pytest.approx(np.vdot(x, blur_adjoint(g)), rel=1e-12)
        np.testing.assert_allclose(blur(np.full(shape, 0.3)), 0.3, atol=1e-15)
    # interior pixel: (center + 0.5 * 8 neighbours) / 5
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    b = blur(x)[0, 0]
    assert b[2, 2] == pytest.approx(1 / 5) and b[1, 1] == pytest.approx(0.5 / 5)
    assert b[0, 0] == 0
