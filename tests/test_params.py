"""Image parameterizations: exact adjoints, finite-difference VJPs, inversion, bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from onnxviz.errors import OnnxvizError
from onnxviz.params import COLOR_MIX, make_param, spectrum_scale

# (kind, shape, decorrelate): odd and even sizes, C = 1, 3 and 4, batch > 1
CASES = [
    ("fourier", (2, 3, 8, 10), True),
    ("fourier", (1, 3, 7, 9), True),
    ("fourier", (1, 1, 6, 5), True),
    ("fourier", (2, 4, 5, 6), False),
    ("fourier", (1, 3, 9, 8), False),
    ("pixel", (2, 3, 5, 7), True),
    ("pixel", (1, 1, 4, 4), True),
    ("pixel", (1, 2, 3, 5), False),
]


def ids(case):
    return f"{case[0]}-{'x'.join(map(str, case[1]))}-{'dec' if case[2] else 'plain'}"


@pytest.fixture(params=CASES, ids=[ids(c) for c in CASES])
def param(request):
    kind, shape, dec = request.param
    return make_param(kind, shape, decorrelate=dec)


def test_linear_part_dot_product(param):
    rng = np.random.default_rng(1)
    v = rng.standard_normal(param.param_shape)
    w = rng.standard_normal(param.shape)
    lhs = np.vdot(param.linear(v), w)
    rhs = np.vdot(v, param.linear_adjoint(w))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


def test_jacobian_dot_product(param):
    """<J v, w> = <v, J^T w> with J the Jacobian of image() at a random point (float64)."""
    rng = np.random.default_rng(2)
    p = rng.standard_normal(param.param_shape) * 0.5
    v = rng.standard_normal(param.param_shape)
    w = rng.standard_normal(param.shape)
    img = param.image(p)
    jv = img * (1 - img) * param.linear(v)  # image = sigmoid(L p), L linear
    jtw = param.vjp(p, w)
    assert jtw.shape == param.param_shape and jtw.dtype == np.float64
    assert np.vdot(jv, w) == pytest.approx(np.vdot(v, jtw), rel=1e-12)


def test_vjp_matches_central_differences(param):
    rng = np.random.default_rng(3)
    p = rng.standard_normal(param.param_shape) * 0.5
    w = rng.standard_normal(param.shape)
    g = param.vjp(p, w)
    h = 1e-5
    for _ in range(4):
        v = rng.standard_normal(param.param_shape)
        fd = (np.vdot(param.image(p + h * v), w) - np.vdot(param.image(p - h * v), w)) / (2 * h)
        assert np.vdot(g, v) == pytest.approx(fd, rel=1e-7, abs=1e-9)
    # and coordinate-wise on a few entries
    flat = p.reshape(-1)
    for i in rng.choice(flat.size, size=5, replace=False):
        e = np.zeros_like(flat)
        e[i] = h
        e = e.reshape(p.shape)
        fd = (np.vdot(param.image(p + e), w) - np.vdot(param.image(p - e), w)) / (2 * h)
        assert g.reshape(-1)[i] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_image_range_shape_and_dtype(param):
    rng = np.random.default_rng(4)
    p = param.init(rng)
    assert p.shape == param.param_shape and p.dtype == np.float32
    img = param.image(p * 1000)  # far into saturation: still finite and inside [0, 1]
    assert img.shape == param.shape and img.dtype == np.float32
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    img32, vjp = param.image_and_vjp(p)
    g = vjp(np.ones(param.shape, np.float32))
    assert img32.dtype == np.float32 and g.dtype == np.float32 and g.shape == p.shape
    img64, vjp64 = param.image_and_vjp(p.astype(np.float64))
    np.testing.assert_allclose(img32, img64, atol=1e-6)
    np.testing.assert_allclose(g, vjp64(np.ones(param.shape)), rtol=1e-4, atol=1e-5)


def test_from_image_reproduces_the_image(param):
    rng = np.random.default_rng(5)
    target = rng.random(param.shape)
    target.reshape(-1)[:3] = [0.0, 1.0, 0.5]  # extremes are clipped to [eps, 1 - eps]
    p = param.from_image(target, eps=1e-3)
    assert p.shape == param.param_shape
    np.testing.assert_allclose(param.image(p), np.clip(target, 1e-3, 1 - 1e-3), atol=1e-10)
    p32 = param.from_image(target.astype(np.float32))
    assert p32.dtype == np.float32
    np.testing.assert_allclose(param.image(p32), np.clip(target, 1e-3, 1 - 1e-3), atol=2e-5)


def test_from_one_image_initializes_the_whole_batch():
    param = make_param("fourier", (3, 3, 6, 8))
    one = np.random.default_rng(6).random((1, 3, 6, 8))
    img = param.image(param.from_image(one))
    assert img.shape == (3, 3, 6, 8)
    np.testing.assert_allclose(img, np.broadcast_to(one, img.shape).clip(1e-3, 1 - 1e-3), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        param.from_image(one[:, :1])


def test_gray_is_zero_parameters(param):
    p = param.from_image(np.full(param.shape, 0.5))
    assert np.abs(p).max() < 1e-9
    assert np.array_equal(param.image(np.zeros(param.param_shape)), np.full(param.shape, 0.5))


def test_init_is_seeded():
    param = make_param("fourier", (1, 3, 16, 16))
    a = param.init(np.random.default_rng(7))
    b = param.init(np.random.default_rng(7))
    c = param.init(np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.std() == pytest.approx(0.01, rel=0.1)


def test_decorrelation_only_for_three_channels():
    assert make_param("fourier", (1, 3, 8, 8)).decorrelated
    assert not make_param("fourier", (1, 3, 8, 8), decorrelate=False).decorrelated
    assert not make_param("fourier", (1, 1, 8, 8)).decorrelated
    assert not make_param("pixel", (1, 4, 8, 8)).decorrelated
    # pixel + decorrelation: each pixel's color is COLOR_MIX @ p
    param = make_param("pixel", (1, 3, 2, 2))
    p = np.random.default_rng(0).standard_normal(param.param_shape)
    expected = np.einsum("ij,njhw->nihw", COLOR_MIX, p)
    np.testing.assert_allclose(param.linear(p), expected, atol=1e-14)


def test_color_mix_is_lucids_normalized_matrix():
    assert np.linalg.norm(COLOR_MIX, axis=0).max() == pytest.approx(1.0)
    np.testing.assert_allclose(COLOR_MIX[0] / COLOR_MIX[0, 0], [1, 0.09 / 0.26, 0.02 / 0.26])


def test_spectrum_scale_is_inverse_frequency_with_floor():
    h, w = 6, 9
    scale = spectrum_scale(h, w)
    assert scale.shape == (6, 5)
    assert scale[0, 0] == pytest.approx(9.0)  # DC: 1 / (1 / max(h, w))
    assert scale[0, 1] == pytest.approx(9.0)  # f = 1/9: at the floor
    assert scale[1, 0] == pytest.approx(6.0)  # f = 1/6
    assert scale[3, 4] == pytest.approx(1 / np.hypot(3 / 6, 4 / 9))
    assert spectrum_scale(h, w, decay_power=2.0)[1, 0] == pytest.approx(36.0)


def test_fourier_noise_is_smoother_than_pixel_noise():
    """Random Fourier parameters give 1/f (natural-image-like) noise: neighbours correlate."""
    rng = np.random.default_rng(9)
    shape = (1, 3, 64, 64)

    def neighbour_correlation(kind):
        param = make_param(kind, shape)
        t = param.linear(param.init(rng, np.float64))
        t = t - t.mean(axis=(2, 3), keepdims=True)
        return (t[..., 1:] * t[..., :-1]).mean() / (t * t).mean()

    assert neighbour_correlation("fourier") > 0.5
    assert abs(neighbour_correlation("pixel")) < 0.1


def test_fourier_image_is_real_fft_of_scaled_spectrum():
    """Independent check of the forward map on one coefficient: a single cosine."""
    param = make_param("fourier", (1, 1, 8, 8), decorrelate=False)
    p = np.zeros(param.param_shape)
    p[0, 0, 0, 2, 0] = 1.0  # real part at (fy, fx) = (0, 2/8)
    t = param.linear(p)
    expected = 2 * np.cos(2 * np.pi * 2 * np.arange(8) / 8) / 8 * (1 / 0.25) / 4
    np.testing.assert_allclose(t[0, 0], np.broadcast_to(expected, (8, 8)), atol=1e-12)


def test_bad_input_is_reported():
    with pytest.raises(OnnxvizError, match="parameterization"):
        make_param("wavelet", (1, 3, 8, 8))
    with pytest.raises(OnnxvizError, match="shape"):
        make_param("pixel", (1, 3, 0, 8))
    param = make_param("pixel", (1, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        param.image(np.zeros((1, 3, 8, 9)))
