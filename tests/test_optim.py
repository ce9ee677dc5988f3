"""Adam in numpy: the update rule, ascent, determinism, agreement with torch."""

from __future__ import annotations

import numpy as np
import pytest

from onnxviz.optim import Adam


def reference_adam(p, grads, lr, b1, b2, eps, sign):
    """Textbook Adam written out step by step, float64."""
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p + sign * lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("ascent", [True, False])
def test_matches_the_textbook_rule(ascent):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((2, 3, 4))
    grads = [rng.standard_normal(p0.shape) * 10.0 ** rng.integers(-3, 2) for _ in range(25)]
    opt = Adam(lr=0.03, beta1=0.8, beta2=0.99, eps=1e-6, ascent=ascent)
    p = p0.copy()
    for g in grads:
        out = opt.step(p, g)
        assert out is p  # in place
    expected = reference_adam(p0, grads, 0.03, 0.8, 0.99, 1e-6, 1 if ascent else -1)
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-14)
    assert opt.steps == 25


def test_first_step_moves_each_coordinate_by_lr_along_the_gradient():
    p = np.zeros(5, np.float32)
    g = np.array([3.0, -0.2, 1e-3, -50.0, 0.0], np.float32)
    Adam(lr=0.05).step(p, g)
    np.testing.assert_allclose(p, 0.05 * np.sign(g), rtol=1e-4)
    assert p.dtype == np.float32


def test_ascent_finds_the_maximum_of_a_concave_function():
    target = np.array([0.3, -1.2, 2.0])
    p = np.zeros(3)
    opt = Adam(lr=0.05)
    for _ in range(2000):
        opt.step(p, -2 * (p - target))  # gradient of -|p - target|^2
    np.testing.assert_allclose(p, target, atol=1e-3)


def test_deterministic_and_reset():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(10).astype(np.float32) for _ in range(10)]

    def run(opt):
        p = np.ones(10, np.float32)
        for g in grads:
            opt.step(p, g)
        return p

    opt = Adam()
    a = run(opt)
    opt.reset()
    assert opt.steps == 0
    assert np.array_equal(a, run(opt))
    assert np.array_equal(a, run(Adam()))


def test_matches_torch_adam_maximize():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal(p0.shape) for _ in range(10)]
    tp = torch.tensor(p0.copy(), requires_grad=True)
    topt = torch.optim.Adam([tp], lr=0.05, maximize=True)
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    p = p0.copy()
    opt = Adam(lr=0.05)
    for g in grads:
        opt.step(p, g)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="Adam"):
        Adam(lr=0)
    with pytest.raises(ValueError, match="shape"):
        Adam().step(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError):
        Adam().step([0.0, 1.0], np.zeros(2))


def test_the_pieces_compose_into_an_ascent_loop():
    """params -> transforms -> a linear 'model' -> adjoints -> Adam: the objective climbs.

    The same wiring maximize.py uses, with <pattern, T(image)> standing in for a model."""
    from onnxviz.params import make_param
    from onnxviz.transforms import sample, standard_transforms

    rng = np.random.default_rng(3)
    size = 32
    yy, xx = np.mgrid[0:size, 0:size] / size
    pattern = np.stack([np.cos(6 * xx), np.sin(6 * yy), np.cos(6 * (xx + yy))])[None]
    pattern = (pattern - pattern.mean()).astype(np.float32)
    param = make_param("fourier", (1, 3, size, size))
    p = param.init(rng)
    opt = Adam(lr=0.05)

    def objective(img):
        return float((img * pattern).mean())

    start = objective(param.image(p))
    for _ in range(150):
        img, vjp = param.image_and_vjp(p)
        t = sample(standard_transforms(), rng, (size, size), (size, size))
        t.apply(img)  # what the model would see
        grad_out = pattern / pattern.size  # d objective / d transformed image
        opt.step(p, vjp(t.adjoint(grad_out)))
    final = objective(param.image(p))
    best = float(np.clip(pattern, 0, None).mean())  # image 1 where pattern > 0, else 0
    assert abs(start) < 0.01 * best and final > 0.4 * best
