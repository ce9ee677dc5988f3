"""Adam in numpy, for gradient ascent on image parameters.

Deterministic (no randomness, fixed operation order) and in place: each step updates the
parameter array it is given and keeps its moment estimates in preallocated buffers, so the
optimization loop allocates almost nothing per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Adam:
    """Adam (Kingma & Ba, with bias correction). ``ascent=True`` climbs the objective:
    ``p += lr * m_hat / (sqrt(v_hat) + eps)``; False descends. Lucid uses lr 0.05."""

    lr: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    ascent: bool = True
    steps: int = field(default=0, init=False)
    _m: np.ndarray | None = field(default=None, init=False, repr=False)
    _v: np.ndarray | None = field(default=None, init=False, repr=False)
    _tmp: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ValueError(f"invalid Adam settings: {self}")

    def reset(self) -> None:
        """Forget the moment estimates and the step count."""
        self.steps = 0
        self._m = self._v = self._tmp = None

    def step(self, p: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """Update ``p`` in place from the gradient of the objective; returns ``p``."""
        if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
            raise TypeError("Adam.step needs a float32 or float64 numpy parameter array")
        if grad.shape != p.shape:
            raise ValueError(f"gradient shape {grad.shape} differs from parameters {p.shape}")
        if self._m is None or self._m.shape != p.shape or self._m.dtype != p.dtype:
            self._m = np.zeros_like(p)
            self._v = np.zeros_like(p)
            self._tmp = np.empty_like(p)
            self.steps = 0
        m, v, tmp = self._m, self._v, self._tmp
        self.steps += 1
        t = self.steps
        # m = beta1 m + (1 - beta1) g ; v = beta2 v + (1 - beta2) g^2
        m *= self.beta1
        np.multiply(grad, 1.0 - self.beta1, out=tmp, casting="unsafe")
        m += tmp
        v *= self.beta2
        np.multiply(grad, grad, out=tmp, casting="unsafe")
        tmp *= 1.0 - self.beta2
        v += tmp
        # p += lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / np.sqrt(1.0 - self.beta2**t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= (self.lr if self.ascent else -self.lr) / (1.0 - self.beta1**t)
        p += tmp
        return p
