"""Image regularizers for activation maximization, each with its exact gradient.

All act on the display image batch x (N, C, H, W) in [0, 1] and return ``(values, grad)``:
one penalty per batch item (N,) and d(sum of values)/dx. They are meant to be subtracted from
the objective (``objective - weight * penalty``). Unlike Lucid, which sums over pixels, every
penalty here is a mean over the item's pixels, so a weight means the same at any image size.
"""

from __future__ import annotations

import numpy as np


def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected an image batch (N, C, H, W), got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return x


def total_variation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anisotropic total variation (Lucid / ``tf.image.total_variation``): the sum of absolute
    differences between vertical and horizontal neighbours, divided by C * H * W.

    Its gradient is a sign pattern (a subgradient where two neighbours are equal)."""
    x = _check(x)
    n = x[0].size
    dy = x[:, :, 1:, :] - x[:, :, :-1, :]
    dx = x[:, :, :, 1:] - x[:, :, :, :-1]
    values = (np.abs(dy).sum(axis=(1, 2, 3)) + np.abs(dx).sum(axis=(1, 2, 3))) / n
    sy = np.sign(dy)
    sx = np.sign(dx)
    grad = np.zeros_like(x)
    grad[:, :, 1:, :] += sy
    grad[:, :, :-1, :] -= sy
    grad[:, :, :, 1:] += sx
    grad[:, :, :, :-1] -= sx
    grad /= n
    return values, grad


def l2(x: np.ndarray, center: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared distance of the image from ``center`` (mid-gray): pulls contrast down.

    On the display image, not on the parameters, so the same weight means the same thing for
    the pixel and the Fourier parameterization."""
    x = _check(x)
    d = x - x.dtype.type(center)
    n = x[0].size
    return (d * d).sum(axis=(1, 2, 3)) / n, d * (2.0 / n)


def _box(x: np.ndarray) -> np.ndarray:
    """Zero-padded 3x3 convolution with Lucid's kernel (center 1, the 8 neighbours 0.5)."""
    h, w = x.shape[-2:]
    padded = np.zeros((*x.shape[:-2], h + 2, w + 2), dtype=x.dtype)
    padded[..., 1:-1, 1:-1] = x
    out = 0.5 * x
    for dy in range(3):
        for dx in range(3):
            out = out + 0.5 * padded[..., dy : dy + h, dx : dx + w]
    return out


def _normalizer(h: int, w: int, dtype: np.dtype) -> np.ndarray:
    return 1.0 / _box(np.ones((h, w), dtype=dtype))


def blur(x: np.ndarray) -> np.ndarray:
    """Lucid's small blur (``_tf_blur``): 3x3 kernel, center 1 and neighbours 0.5, normalized
    by the kernel mass inside the image, so a constant image is unchanged. Linear: B x."""
    x = _check(x)
    return _box(x) * _normalizer(*x.shape[-2:], x.dtype)


def blur_adjoint(g: np.ndarray) -> np.ndarray:
    """B^T g, the exact adjoint of `blur` (the kernel is symmetric; the normalizer is not)."""
    g = _check(g)
    return _box(g * _normalizer(*g.shape[-2:], g.dtype))


def blur_penalty(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half the mean squared difference between the image and its `blur`: penalizes detail
    at the pixel scale, like Lucid's ``blur_input_each_step`` but as a true function of x.

    For a periodic blur applied as a projection instead, replace the image by ``blur(x)``
    every few steps (for parameterized images: ``param.from_image(blur(param.image(p)))``)."""
    x = _check(x)
    r = x - blur(x)
    n = x[0].size
    values = 0.5 * (r * r).sum(axis=(1, 2, 3)) / n
    grad = (r - blur_adjoint(r)) / n
    return values, grad
