"""Robustness transforms for activation maximization as random linear maps with exact adjoints.

Lucid's standard set (``optvis.transform.standard_transforms``): pad 12 with gray 0.5, jitter 8
(random crop), random scale from ``1 + (i - 5) / 50`` for i in 0..10, random rotation from
-10..10 degrees (0 drawn more often), jitter 4. A chain is a tuple of small step values
(`Pad`, `Jitter`, `Scale`, `Rotate`); `sample` draws one realization and composes all of its
steps, plus a final bilinear resize to the model's input size, into ONE affine warp with
bilinear interpolation. Its indices and weights are computed once per draw and reused by both
`Sampled.apply` and `Sampled.adjoint` (see `Warp`), so a step costs a few passes over the image
whatever the chain.

Conventions: continuous coordinates put pixel k on [k, k + 1) (pixel centers at k + 0.5, the
"half-pixel" rule); scale keeps Lucid's truncated size ``int(s * size)``; rotation is about the
image center. Everything that falls outside the input (the pad, the corners uncovered by a
rotation) has the pad value (0.5 unless the chain's `Pad` says otherwise; Lucid's rotation fills
with 0 instead). The warp is thus affine, ``apply(x) = W x + b``; ``adjoint`` is ``W^T``, the
adjoint of its linear part, which is what gradients need.

Composing the steps into one warp resamples once instead of once per step: the result is not
bit-identical to a chain of separate resamplings (those blur a little more) but it is the same
geometric transform, and its adjoint is exact for what is applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from onnxviz.errors import OnnxvizError


@dataclass(frozen=True)
class Pad:
    """Pad every side by ``width`` pixels of constant ``value``."""

    width: int
    value: float = 0.5


@dataclass(frozen=True)
class Jitter:
    """Random crop that removes ``amount`` pixels per axis: offsets 0..amount, drawn per axis."""

    amount: int


@dataclass(frozen=True)
class Scale:
    """Resize to ``int(s * size)`` per axis, s drawn uniformly from ``factors``."""

    factors: tuple[float, ...]


@dataclass(frozen=True)
class Rotate:
    """Rotate about the center by an angle in degrees drawn uniformly from ``degrees``."""

    degrees: tuple[float, ...]


Step = Pad | Jitter | Scale | Rotate
Chain = tuple[Step, ...]


def standard_transforms() -> Chain:
    """Lucid's ``standard_transforms``: pad 12 (0.5), jitter 8, scale 0.9-1.1, rotate +-10,
    jitter 4."""
    return (
        Pad(12, 0.5),
        Jitter(8),
        Scale(tuple(1 + (i - 5) / 50 for i in range(11))),
        Rotate(tuple(float(a) for a in range(-10, 11)) + (0.0,) * 5),
        Jitter(4),
    )


def no_transforms() -> Chain:
    """The empty chain: only the final resize to the model's input size (if sizes differ)."""
    return ()


CHAINS = {"standard": standard_transforms, "none": no_transforms}


def transforms_by_name(name: str) -> Chain:
    """The chain called ``name`` ("standard" or "none"), for the CLI's ``--transforms``."""
    if name not in CHAINS:
        raise OnnxvizError(
            f"unknown transforms {name!r}: use one of {', '.join(CHAINS)} (--transforms)."
        )
    return CHAINS[name]()


# --- one bilinear affine warp -------------------------------------------------------------------


@dataclass
class Warp:
    """Bilinear sampling of an (h, w) plane at an affine image of an (ho, wo) grid.

    Planes are read from a padded, extended copy of length ``size``: (h + 3) x (w + 3) with
    the image at offset (1, 1), then w + 5 more values; everything but the image is ``fill``.
    ``base`` (ho * wo,) is the flat index of each sample's top-left neighbour, the others are
    ``base + 1``, ``base + w + 3`` and ``base + w + 4``; ``frac`` (2, ho * wo) holds the
    sample's fractional offsets (dy, dx) from it (float32). Samples that touch no image pixel
    all point at the "outside" cell, index (h + 3) * (w + 3), with offsets 0: every sample has
    four valid neighbours and no masks are needed.

    When no two samples that can reach the image share a top-left neighbour (the usual case:
    the standard transforms shrink a little), each cell's four bilinear weights are laid out as
    dense planes once per warp; `apply` is then four dense multiply-adds and ONE gather per
    plane, and `adjoint` one scatter with distinct indices and four dense multiply-adds, its
    exact transpose. Otherwise (enlarging warps) `apply` gathers all four neighbours and
    `adjoint` accumulates repeats with ``np.bincount``."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    base: np.ndarray
    frac: np.ndarray
    fill: float
    identity: bool
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        """Length of the padded, extended planes."""
        h3, w3 = self.in_hw[0] + 3, self.in_hw[1] + 3
        return h3 * w3 + w3 + 2

    @property
    def offsets(self) -> tuple[int, int, int, int]:
        """Flat offsets of the four neighbours from the top-left one."""
        w3 = self.in_hw[1] + 3
        return 0, 1, w3, w3 + 1

    @property
    def weight(self) -> np.ndarray:
        """(4, ho * wo) float64 bilinear weights of the four neighbours, in `offsets` order."""
        def make() -> np.ndarray:
            fy, fx = self.frac.astype(np.float64)
            gy, gx = 1.0 - fy, 1.0 - fx
            return np.stack([gy * gx, gy * fx, fy * gx, fy * fx])
        return self._cached("weight", make)

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _neighbours(self) -> np.ndarray:
        """(4 * ho * wo,) flat indices of every sample's four neighbours (general case)."""
        return self._cached("index", lambda: np.concatenate([self.base + o
                                                             for o in self.offsets]))

    def _distinct(self) -> bool:
        """True when no two samples that can reach the image share a top-left neighbour."""
        def check() -> bool:
            counts = np.bincount(self.base, minlength=self.size)
            counts[outside_cell(self.in_hw)] = 0
            return bool(counts.max() <= 1)
        return self._cached("distinct", check)

    def _planes(self, dtype: np.dtype) -> np.ndarray:
        """(4, size): the weight each cell gets as a top-left neighbour (distinct case)."""
        def make() -> np.ndarray:
            f = np.zeros((2, self.size), dtype)
            f[0][self.base] = self.frac[0]
            f[1][self.base] = self.frac[1]
            g = 1.0 - f
            out = np.empty((4, self.size), dtype)
            for k, (wy, wx) in enumerate(((g[0], g[1]), (g[0], f[1]), (f[0], g[1]),
                                          (f[0], f[1]))):
                np.multiply(wy, wx, out=out[k])
            return out
        return self._cached(("planes", np.dtype(dtype)), make)

    def _interior(self, planes: np.ndarray) -> np.ndarray:
        """The image part (k, h, w) of extended planes (k, size)."""
        (h, w), w3 = self.in_hw, self.in_hw[1] + 3
        return planes[:, : (h + 3) * w3].reshape(-1, h + 3, w3)[:, 1 : h + 1, 1 : w + 1]

    def apply(self, planes: np.ndarray) -> np.ndarray:
        """(k, h * w) -> (k, ho * wo): bilinear samples of each of k planes (fill outside)."""
        if self.identity:
            return planes.copy()
        k = planes.shape[0]
        ext = np.full((k, self.size), self.fill, dtype=planes.dtype)
        self._interior(ext)[...] = planes.reshape(k, *self.in_hw)
        if not self._distinct():
            corners = np.take(ext, self._neighbours(), axis=1).reshape(k, 4, -1)
            return np.einsum("ckp,kp->cp", corners, self.weight.astype(planes.dtype))
        # mix each cell with its neighbours first (dense), then read one value per sample
        weights, n = self._planes(planes.dtype), self.size - self.offsets[3]
        mixed = ext[:, :n] * weights[0, :n]
        term = np.empty_like(mixed)
        for corner, o in enumerate(self.offsets[1:], start=1):
            np.multiply(ext[:, o : o + n], weights[corner, :n], out=term)
            mixed += term
        return np.take(mixed, self.base, axis=1)

    def adjoint(self, grads: np.ndarray) -> np.ndarray:
        """(k, ho * wo) -> (k, h * w): W^T g on each plane (the exact transpose of `apply`)."""
        if self.identity:
            return grads.copy()
        k, (h, w) = grads.shape[0], self.in_hw
        if not self._distinct():
            out = np.empty((k, h, w), dtype=grads.dtype)
            values = self.weight.reshape(-1)  # bincount works in float64
            for c in range(k):
                acc = np.bincount(self._neighbours(), values * np.tile(grads[c], 4),
                                  minlength=self.size)
                out[c] = self._interior(acc[None])[0]
            return out.reshape(k, h * w)
        weights, n = self._planes(grads.dtype), self.size - self.offsets[3]
        spread = np.zeros((k, self.size), grads.dtype)
        for c in range(k):  # distinct indices: a plain 1-D assignment
            spread[c][self.base] = grads[c]
        acc = np.zeros_like(spread)
        term = np.empty((k, n), grads.dtype)
        for corner, o in enumerate(self.offsets):
            np.multiply(spread[:, :n], weights[corner, :n], out=term)
            acc[:, o : o + n] += term
        return self._interior(acc).reshape(k, h * w)


def outside_cell(in_hw: tuple[int, int]) -> int:
    """The flat index of the cell that samples touching no image pixel point at."""
    return (in_hw[0] + 3) * (in_hw[1] + 3)


def affine_warp(
    matrix: np.ndarray, in_hw: tuple[int, int], out_hw: tuple[int, int], fill: float = 0.5
) -> Warp:
    """The bilinear warp whose output pixel center u (continuous, (y, x)) samples the input at
    ``matrix @ (u, 1)`` (a 2x3 or 3x3 affine map in continuous coordinates).

    Sample positions are computed in float32 (a few 1e-5 pixel at most off: the warp is a
    random augmentation; what matters is that `Warp.adjoint` is the exact transpose of what
    `Warp.apply` does, and both use the same stored offsets)."""
    h, w = in_hw
    ho, wo = out_hw
    a = np.asarray(matrix, dtype=np.float64)[:2]
    identity = in_hw == out_hw and np.array_equal(a, np.eye(2, 3))
    ci = np.arange(ho, dtype=np.float64) + 0.5
    cj = np.arange(wo, dtype=np.float64) + 0.5
    # input index coordinates (pixel centers at integers): a row term plus a column term
    frac = np.empty((2, ho, wo), np.float32)
    y = np.add((a[0, 0] * ci + (a[0, 2] - 0.5)).astype(np.float32)[:, None],
               (a[0, 1] * cj).astype(np.float32)[None, :], out=frac[0])
    x = np.add((a[1, 0] * ci + (a[1, 2] - 0.5)).astype(np.float32)[:, None],
               (a[1, 1] * cj).astype(np.float32)[None, :], out=frac[1])
    inside = (y >= -1.0) & (y <= h) & (x >= -1.0) & (x <= w)  # some image pixel among the 4
    y0 = np.floor(y)
    x0 = np.floor(x)
    y -= y0  # now the fractional parts
    x -= x0
    frac *= inside
    y0 += 1.0  # padded coordinates, then the flat padded index (exact in float32: < 2**24)
    y0 *= w + 3
    y0 += x0
    y0 += 1.0
    base = np.where(inside, y0, outside_cell(in_hw)).astype(np.intp).reshape(-1)
    return Warp(in_hw, out_hw, base, frac.reshape(2, -1), float(fill), identity)


# --- sampling a chain ---------------------------------------------------------------------------


def _translate(dy: float, dx: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dy], [0.0, 1.0, dx], [0.0, 0.0, 1.0]])


def _stretch(sy: float, sx: float) -> np.ndarray:
    return np.array([[sy, 0.0, 0.0], [0.0, sx, 0.0], [0.0, 0.0, 1.0]])


def _rotation(degrees: float, hw: tuple[int, int]) -> np.ndarray:
    """Output -> input coordinates of a rotation by ``degrees`` about the center of ``hw``."""
    cy, cx = hw[0] / 2.0, hw[1] / 2.0
    if degrees == 0:
        return np.eye(3)
    r = math.radians(degrees)
    c, s = math.cos(r), math.sin(r)
    turn = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return _translate(cy, cx) @ turn @ _translate(-cy, -cx)


def _too_small(hw: tuple[int, int], step: Step) -> OnnxvizError:
    return OnnxvizError(
        f"a {hw[0]}x{hw[1]} image is too small for the transform {step}: "
        "use a larger --size or --transforms none."
    )


def draw(
    chain: Chain, rng: np.random.Generator, in_hw: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int], float, list[dict]]:
    """One random realization of ``chain`` on an ``in_hw`` image.

    Returns (3x3 map from output to input continuous coordinates, output size, fill value,
    a list of what each step drew)."""
    hw = (int(in_hw[0]), int(in_hw[1]))
    to_input = np.eye(3)
    fill = next((s.value for s in chain if isinstance(s, Pad)), 0.5)
    record: list[dict] = []
    for step in chain:
        if isinstance(step, Pad):
            if step.value != fill:
                raise ValueError("all Pad steps of a chain must share one value")
            m = _translate(-step.width, -step.width)
            new = (hw[0] + 2 * step.width, hw[1] + 2 * step.width)
            record.append({"step": "pad", "width": step.width, "value": fill})
        elif isinstance(step, Jitter):
            new = (hw[0] - step.amount, hw[1] - step.amount)
            if min(new) < 1:
                raise _too_small(hw, step)
            oy, ox = (int(v) for v in rng.integers(0, step.amount + 1, size=2))
            m = _translate(oy, ox)
            record.append({"step": "jitter", "amount": step.amount, "offset": (oy, ox)})
        elif isinstance(step, Scale):
            s = float(step.factors[int(rng.integers(len(step.factors)))])
            new = (max(1, int(s * hw[0])), max(1, int(s * hw[1])))
            m = _stretch(hw[0] / new[0], hw[1] / new[1])
            record.append({"step": "scale", "factor": s, "size": new})
        elif isinstance(step, Rotate):
            angle = float(step.degrees[int(rng.integers(len(step.degrees)))])
            new = hw
            m = _rotation(angle, hw)
            record.append({"step": "rotate", "degrees": angle})
        else:
            raise TypeError(f"not a transform step: {step!r}")
        to_input = to_input @ m
        hw = new
    return to_input, hw, fill, record


@dataclass
class Sampled:
    """One drawn realization of a chain: maps (N, C, in_h, in_w) to (N, C, out_h, out_w).

    ``warps`` holds one `Warp` shared by the whole batch, or one per batch item; ``draws`` says
    what was drawn (one list of step records per warp)."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    warps: list[Warp]
    draws: list[list[dict]]

    def _split(self, a: np.ndarray, hw: tuple[int, int], what: str) -> np.ndarray:
        a = np.asarray(a)
        if a.ndim != 4 or tuple(a.shape[2:]) != hw:
            raise ValueError(f"{what} has shape {a.shape}, expected (N, C, {hw[0]}, {hw[1]})")
        if len(self.warps) > 1 and a.shape[0] != len(self.warps):
            raise ValueError(f"{what} has {a.shape[0]} items, the draw was for {len(self.warps)}")
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float32)
        return a

    def _run(self, a: np.ndarray, forward: bool) -> np.ndarray:
        src, dst = (self.in_hw, self.out_hw) if forward else (self.out_hw, self.in_hw)
        a = self._split(a, src, "image" if forward else "gradient")
        n, c = a.shape[:2]
        out = np.empty((n, c, dst[0] * dst[1]), dtype=a.dtype)
        if len(self.warps) == 1:
            warp = self.warps[0]
            planes = a.reshape(n * c, -1)
            out = (warp.apply(planes) if forward else warp.adjoint(planes)).reshape(out.shape)
        else:
            for i, warp in enumerate(self.warps):
                planes = a[i].reshape(c, -1)
                out[i] = warp.apply(planes) if forward else warp.adjoint(planes)
        return out.reshape(n, c, *dst)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The transformed batch (N, C, out_h, out_w)."""
        return self._run(x, forward=True)

    def adjoint(self, g: np.ndarray) -> np.ndarray:
        """The gradient w.r.t. the input batch (N, C, in_h, in_w) from one w.r.t. the output."""
        return self._run(g, forward=False)


def sample(
    chain: Chain,
    rng: np.random.Generator,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    items: int | None = None,
) -> Sampled:
    """Draw ``chain`` once (``items=None``: one draw for the whole batch, as Lucid does) or once
    per batch item (``items=N``), and compose it with a bilinear resize to ``out_hw``.

    The composed map is built once here; `Sampled.apply` and `Sampled.adjoint` reuse it."""
    in_hw = (int(in_hw[0]), int(in_hw[1]))
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    if min(in_hw) < 1 or min(out_hw) < 1:
        raise OnnxvizError(f"image sizes {in_hw} -> {out_hw} must be positive: check --size.")
    warps, draws = [], []
    for _ in range(1 if items is None else int(items)):
        to_input, hw, fill, record = draw(chain, rng, in_hw)
        resize = _stretch(hw[0] / out_hw[0], hw[1] / out_hw[1])
        warps.append(affine_warp(to_input @ resize, in_hw, out_hw, fill))
        draws.append(record)
    return Sampled(in_hw, out_hw, warps, draws)
