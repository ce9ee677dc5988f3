"""Image parameterizations for activation maximization: parameters p -> display image in [0, 1].

The optimizer never touches pixels directly; it moves a parameter array ``p`` and the image is
``image(p) = sigmoid(L p)`` with a fixed linear map ``L`` (after Lucid's ``optvis.param``):

- ``pixel``: ``L`` is the identity (or the color decorrelation below). A sigmoid, as in Lucid's
  ``image(..., sigmoid=True)``, rather than clipping: it keeps every pixel in [0, 1] without the
  dead gradient a clip has once a pixel touches 0 or 1.
- ``fourier`` (default): ``p`` holds real and imaginary parts of an ``np.fft.rfft2`` spectrum;
  each coefficient is scaled by ``1 / max(f, 1 / max(h, w)) ** decay_power`` (f in cycles per
  pixel, decay power 1), turned into an image by an orthonormal inverse real FFT and divided by 4
  (Lucid's constants). Equal steps in ``p`` then change low frequencies more than high ones, so
  gradient ascent builds smooth structure instead of high-frequency noise.
- Color decorrelation (``decorrelate=True``, only when C == 3, channels RGB): the 3 channels of
  ``L p`` are mixed by Lucid's square root of the ImageNet color correlation, normalized by its
  largest column norm, so that steps in ``p`` move along natural color directions. For any other
  channel count the channels are left independent (``Param.decorrelated`` is then False).

Arrays: images are (N, C, H, W); fourier parameters are (N, C, H, W // 2 + 1, 2) (last axis:
real, imaginary); pixel parameters are (N, C, H, W). Every function keeps the dtype of its input
(float32 in the optimization loop, float64 in the tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from onnxviz.errors import OnnxvizError

KINDS = ("fourier", "pixel")

# Lucid's square root of the ImageNet color correlation matrix (rows: R, G, B output channels).
COLOR_CORRELATION_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float64
)
COLOR_MIX = COLOR_CORRELATION_SQRT / np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0).max()
FOURIER_DIVISOR = 4.0  # Lucid divides the inverse FFT by 4 to keep the initial image near gray


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """Per-coefficient scale (h, w // 2 + 1) of an rfft2 spectrum: 1 / max(f, 1/max(h, w))**d."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freq = np.sqrt(fy * fy + fx * fx)
    return 1.0 / np.maximum(freq, 1.0 / max(h, w)) ** decay_power


def _hermitian_weights(w: int) -> np.ndarray:
    """Weight of each rfft column in the real inner product: 2 for columns that stand for a
    conjugate pair, 1 for the DC column and (even w) the Nyquist column."""
    weights = np.full(w // 2 + 1, 2.0)
    weights[0] = 1.0
    if w % 2 == 0:
        weights[-1] = 1.0
    return weights


def _sigmoid(t: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function, in place on ``t`` (a fresh array owned by the caller)."""
    t *= 0.5
    np.tanh(t, out=t)
    t *= 0.5
    t += 0.5
    return t


@dataclass(frozen=True)
class Param:
    """A parameterization of an image batch of ``shape`` (N, C, H, W); make with `make_param`."""

    kind: str
    shape: tuple[int, int, int, int]
    decorrelate: bool = True
    std: float = 0.01
    decay_power: float = 1.0
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def decorrelated(self) -> bool:
        """True when the color decorrelation is applied (asked for and C == 3)."""
        return self.decorrelate and self.shape[1] == 3

    @property
    def param_shape(self) -> tuple[int, ...]:
        n, c, h, w = self.shape
        if self.kind == "fourier":
            return (n, c, h, w // 2 + 1, 2)
        return (n, c, h, w)

    def init(self, rng: np.random.Generator, dtype: type = np.float32) -> np.ndarray:
        """Random parameters: normal with standard deviation ``std`` (Lucid's 0.01), seeded."""
        return (rng.standard_normal(self.param_shape) * self.std).astype(dtype)

    # --- the linear part L (before the sigmoid) -------------------------------------------------

    def _constants(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(spectrum scale / 4, adjoint column weights * scale / 4, color mix) in ``dtype``."""
        key = np.dtype(dtype)
        if key not in self._cache:
            _, _, h, w = self.shape
            scale = spectrum_scale(h, w, self.decay_power) / FOURIER_DIVISOR
            self._cache[key] = (
                scale.astype(key),
                (scale * _hermitian_weights(w)).astype(key),
                COLOR_MIX.astype(key),
            )
        return self._cache[key]

    def _check(self, a: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        a = np.asarray(a)
        if a.shape != shape:
            raise ValueError(f"{what} has shape {a.shape}, expected {shape}")
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float32)
        return a

    def _mix(self, t: np.ndarray, mix: np.ndarray) -> np.ndarray:
        n, c, h, w = t.shape
        return np.matmul(mix, t.reshape(n, c, h * w)).reshape(n, c, h, w)

    def linear(self, p: np.ndarray) -> np.ndarray:
        """L p: the pre-sigmoid image (N, C, H, W)."""
        p = self._check(p, self.param_shape, "parameter array")
        scale, _, mix = self._constants(p.dtype)
        if self.kind == "fourier":
            spectrum = np.ascontiguousarray(p).view(_complex(p.dtype))[..., 0] * scale
            t = np.fft.irfft2(spectrum, s=self.shape[2:], norm="ortho")
        else:
            t = p.copy()
        if self.decorrelated:
            t = self._mix(t, mix)
        return t

    def linear_adjoint(self, g: np.ndarray) -> np.ndarray:
        """L^T g for g of image shape: the exact adjoint of `linear` (real inner products)."""
        g = self._check(g, self.shape, "image gradient")
        _, weighted, mix = self._constants(g.dtype)
        if self.decorrelated:
            g = self._mix(g, mix.T)
        if self.kind != "fourier":
            return np.array(g, copy=True)
        spectrum = np.fft.rfft2(g, norm="ortho")
        spectrum *= weighted
        return spectrum.view(g.dtype).reshape(self.param_shape)

    # --- the image and its vector-Jacobian product ----------------------------------------------

    def image(self, p: np.ndarray) -> np.ndarray:
        """The display image batch sigmoid(L p), values in [0, 1], shape (N, C, H, W)."""
        return _sigmoid(self.linear(p))

    def image_and_vjp(self, p: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """The image and a function mapping d(objective)/d(image) to d(objective)/d(p).

        One forward pass serves both, which is what the optimization loop wants per step."""
        img = self.image(p)

        def vjp(grad_image: np.ndarray) -> np.ndarray:
            g = self._check(grad_image, self.shape, "image gradient")
            return self.linear_adjoint(g * (img * (1.0 - img)))

        return img, vjp

    def vjp(self, p: np.ndarray, grad_image: np.ndarray) -> np.ndarray:
        """d(objective)/d(p) from d(objective)/d(image) at parameters ``p``."""
        return self.image_and_vjp(p)[1](grad_image)

    # --- initialization from a picture ----------------------------------------------------------

    def from_image(self, image: np.ndarray, eps: float = 1e-3) -> np.ndarray:
        """Parameters whose image reproduces ``image`` (N, C, H, W) clipped to [eps, 1 - eps].

        For ``--init IMAGE`` (DeepDream on a photo) and projections such as a periodic blur.
        The clip keeps the sigmoid out of saturation, where its gradient would vanish. A single
        image (1, C, H, W) initializes every item of the batch."""
        image = np.asarray(image)
        if image.ndim == 4 and image.shape[0] == 1 and image.shape[1:] == self.shape[1:]:
            image = np.broadcast_to(image, self.shape)
        image = self._check(image, self.shape, "initial image")
        dtype = image.dtype
        x = np.clip(image.astype(np.float64), eps, 1.0 - eps)
        t = np.log(x) - np.log1p(-x)
        if self.decorrelated:
            t = self._mix(t, np.linalg.inv(COLOR_MIX))
        if self.kind != "fourier":
            return t.astype(dtype)
        _, _, h, w = self.shape
        scale = spectrum_scale(h, w, self.decay_power) / FOURIER_DIVISOR
        spectrum = np.fft.rfft2(t, norm="ortho") / scale
        return spectrum.view(np.float64).reshape(self.param_shape).astype(dtype)


def _complex(dtype: np.dtype) -> type:
    return np.complex64 if np.dtype(dtype) == np.float32 else np.complex128


def make_param(
    kind: str,
    shape: tuple[int, int, int, int],
    decorrelate: bool = True,
    std: float = 0.01,
    decay_power: float = 1.0,
) -> Param:
    """A `Param` of ``kind`` ("fourier" or "pixel") for images of ``shape`` (N, C, H, W)."""
    if kind not in KINDS:
        raise OnnxvizError(
            f"unknown parameterization {kind!r}: use one of {', '.join(KINDS)} (--param)."
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise OnnxvizError(
            f"image shape {shape} is not (N, C, H, W) with positive sizes: "
            "check --size and --batch."
        )
    return Param(kind, shape, bool(decorrelate), float(std), float(decay_power))
