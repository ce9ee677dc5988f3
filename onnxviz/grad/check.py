"""The gradient self-check: does a backend's gradient agree with finite differences?

Along a few unit directions u (the gradient direction and random ones) the backend's
directional derivative <g, u> is compared with the central difference
(f(x + h u) - f(x - h u)) / 2h of the objective summed over the batch, computed by plain
forward runs (2 per direction; a direction that disagrees is retried at smaller steps). Float32
forwards near ReLU kinks and MaxPool ties disagree at ~1e-4 between engines, so agreement is
judged by a relative tolerance, never bit-exactness.

The numeric backend only claims the projection of the gradient onto its low-dimensional basis,
so for it the random directions are drawn inside that basis (stated in the notes).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import OnnxvizError

# Length of the step along a unit direction, in image units ([0, 1]). Measured on the digits CNN
# and four real models: 1e-2 crosses enough ReLU kinks to reach 5% error on the small digits
# model; 1e-3 meets float32 noise (up to 3% on PP-LCNet, PP-OCR); 3e-3 stays under 3.2%.
DEFAULT_STEP = 3e-3
# Along the gradient direction of a softmax output on a real photo (PP-LCNet) the objective
# curves within 1e-3: the difference quotient reaches the derivative only at smaller steps. A
# direction that disagrees is retried at step/3 and step/10 (2 more forwards each); a wrong
# gradient disagrees at every step.
RETRY_SHRINK = (1.0, 1 / 3, 1 / 10)
NOISE_FACTOR = 4.0
DEFAULT_TOLERANCE = 0.05
DEFAULT_DIRECTIONS = 2  # random directions besides the gradient direction


@dataclass
class DirectionCheck:
    """One direction: the backend's directional derivative against the central difference."""

    direction: str
    backend: float
    finite_difference: float
    rel_error: float
    step: float
    noise_limited: bool = False  # disagrees by more than the tolerance, but within float32 noise


@dataclass
class GradCheckResult:
    """What `gradcheck` found. `passed`: every direction's relative error is within
    `tolerance` (or its difference within the float32 noise of the objective, `noise`, over the
    step). `cosine`: between the backend's and the finite-difference directional derivatives
    over all directions."""

    method: str
    target: str
    input_shape: list[int]
    value: list[float]
    grad_norm: float
    step: float
    tolerance: float
    directions: list[DirectionCheck]
    cosine: float
    max_rel_error: float
    passed: bool
    forwards: int
    seconds: float
    noise: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for people: one per direction, then the verdict."""
        lines = [f"gradcheck {self.target} ({self.method}), input {self.input_shape}, "
                 f"|grad| {self.grad_norm:.4g}, step {self.step:.3g}"]
        for d in self.directions:
            retried = f" (step {d.step:.3g})" if d.step < self.step * 0.99 else ""
            if d.noise_limited:
                retried += " (within float32 noise)"
            lines.append(f"  {d.direction:<10} backend {d.backend:+.6g}  finite difference "
                         f"{d.finite_difference:+.6g}  rel. error {d.rel_error:.2e}{retried}")
        verdict = "agree" if self.passed else "DISAGREE"
        lines.append(f"  cosine {self.cosine:.6f}, max rel. error {self.max_rel_error:.2e} "
                     f"(tolerance {self.tolerance:g}): {verdict}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def input_units(x: np.ndarray) -> float:
    """How many input units one image unit is, guessed from x: about 1 for images in [0, 1],
    255 for raw pixels (a model with normalization inside expects those)."""
    std = float(np.std(x))
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    scale = max(std, 0.25 * peak) / 0.25
    return scale if np.isfinite(scale) and scale > 1e-6 else 1.0


def check_function(fn, x: np.ndarray, *, step: float = DEFAULT_STEP,
                   tolerance: float = DEFAULT_TOLERANCE, directions: int = DEFAULT_DIRECTIONS,
                   seed: int = 0) -> GradCheckResult:
    """Check a built `GradientFunction` at the batch x (see the module docstring)."""
    from .numeric import NumericBackend

    start = time.perf_counter()
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(seed)
    values, grad = fn(x)
    grad = np.asarray(grad, np.float64)
    notes = list(getattr(fn, "notes", []))
    if not np.all(np.isfinite(grad)):
        raise OnnxvizError(f"the {fn.method} gradient has non-finite values (NaN or inf) at this "
                           "input; the model may overflow there")
    h = step * input_units(x)
    backend = getattr(fn, "backend", None)
    dirs: list[tuple[str, np.ndarray]] = []
    gnorm = float(np.linalg.norm(grad))
    if gnorm > 0:
        dirs.append(("gradient", grad / gnorm))
    else:
        notes.append("the gradient is zero at this input (dead units?); only random directions "
                     "are checked")
    for k in range(directions):
        if isinstance(backend, NumericBackend):
            coef = rng.standard_normal((backend.directions, x.shape[0]))
            u = backend._assemble(coef, x.shape).astype(np.float64)
        else:
            u = rng.standard_normal(x.shape)
        dirs.append((f"random {k + 1}", _unit(u)))
    if isinstance(backend, NumericBackend):
        notes.append("random directions drawn in the numeric basis: the numeric backend "
                     "estimates the projection of the gradient onto it")
    # relative errors are floored at a fraction of |grad|: random directional derivatives are
    # ~|grad|/sqrt(n) and would otherwise compare float32 noise with noise
    floor = 0.02 * gnorm if gnorm > 0 else 1e-12
    f0 = float(np.sum(fn.value(x)))
    noise = _noise(fn, x, f0, dirs[0][1], grad, h)
    forwards = 2
    checks = []
    for name, u in dirs:
        u32 = u.astype(np.float32)
        ana = float(np.sum(grad * u32.astype(np.float64)))
        for shrink in RETRY_SHRINK:
            hk = h * shrink
            plus = float(np.sum(fn.value(x + np.float32(hk) * u32)))
            minus = float(np.sum(fn.value(x - np.float32(hk) * u32)))
            forwards += 2
            fd = (plus - minus) / (2 * hk)
            err = abs(ana - fd) / max(abs(ana), abs(fd), floor)
            # float32 forwards resolve f only to ~noise: the quotient is uncertain by noise/h
            within_noise = bool(abs(ana - fd) <= NOISE_FACTOR * noise / hk)
            if err <= tolerance or within_noise:
                break
        checks.append(DirectionCheck(name, ana, fd, err, hk,
                                     within_noise and err > tolerance))
    if any(c.noise_limited for c in checks):
        notes.append(f"float32 noise of the objective (~{noise:.2g}) exceeds the change along "
                     "some directions; those agree within that noise only")
    a = np.array([c.backend for c in checks])
    b = np.array([c.finite_difference for c in checks])
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / denom) if denom > 0 else (1.0 if not a.any() and not b.any() else 0.0)
    max_err = max((c.rel_error for c in checks), default=0.0)
    passed = all(c.rel_error <= tolerance or c.noise_limited for c in checks)
    return GradCheckResult(
        method=fn.method, target=str(fn.objective), input_shape=list(x.shape),
        value=[float(v) for v in np.asarray(values).ravel()], grad_norm=gnorm, step=h,
        tolerance=tolerance, directions=checks, cosine=cosine, max_rel_error=max_err,
        passed=passed, forwards=forwards, noise=noise,
        seconds=time.perf_counter() - start, notes=notes)


def _noise(fn, x: np.ndarray, f0: float, u: np.ndarray, grad: np.ndarray, h: float) -> float:
    """The float32 noise of the objective near x: the change over a step so small (h/100) that
    the true change (the backend's slope times the step) hardly matters, minus that change; at
    least the rounding of f itself."""
    delta = h / 100
    f1 = float(np.sum(fn.value(x + np.float32(delta) * u.astype(np.float32))))
    slope = float(np.sum(grad * u))
    rounding = 2 * np.finfo(np.float32).eps * max(abs(f0), abs(f1))
    return float(max(abs(f1 - f0 - slope * delta), rounding))


def default_input(model, input_shape: Sequence[int] | None = None, size: int = 64,
                  seed: int = 0, input_name: str | None = None) -> np.ndarray:
    """A seeded random batch of one in [0, 1] with the model's input shape (symbolic spatial
    dims get `size`, a symbolic channel dim the contract's channel count or 3)."""
    from ..model import load_model
    from .numeric import image_input, input_dims

    model = load_model(model)
    vi = image_input(model, input_name)
    if input_shape is None:
        dims = input_dims(vi)
        if not dims:
            raise OnnxvizError(f"input {vi.name!r} has no known rank; pass an input array")
        contract = next((c for c in model.summary.inputs if c.name == vi.name), None)
        layout = contract.layout if contract else None
        channel_axis = {"NCHW": 1, "NHWC": len(dims) - 1}.get(layout or "", -1)
        shape = []
        for k, d in enumerate(dims):
            if d is not None:
                shape.append(d)
            elif k == 0:
                shape.append(1)
            elif k == channel_axis:
                shape.append((contract.channels if contract else None) or 3)
            else:
                shape.append(size)
        input_shape = shape
    rng = np.random.default_rng(seed)
    return rng.random(tuple(input_shape), dtype=np.float32)


def gradcheck(model, target, method: str = "autodiff", x: np.ndarray | None = None,
              image=None, *, input_shape: Sequence[int] | None = None, size: int = 64,
              step: float = DEFAULT_STEP, tolerance: float = DEFAULT_TOLERANCE,
              directions: int = DEFAULT_DIRECTIONS, seed: int = 0, preprocess=None,
              providers: Sequence[str] | None = None, input_name: str | None = None,
              **options) -> GradCheckResult:
    """Compare a backend's gradient with central finite differences (see the module docstring).

    The input is x (a batch in the model's layout), else `image` (a path or PIL image,
    preprocessed for the model), else a seeded random batch of one in [0, 1] (`input_shape`,
    or the model's shape with symbolic spatial dims set to `size`). 2 forwards per direction.
    """
    from ..model import load_model
    from . import gradient_function

    model = load_model(model)
    notes: list[str] = []
    if x is None and image is not None:
        from ..images import prepare_inputs

        prepared = prepare_inputs(model, image=image, preprocess=preprocess)
        x = prepared.feeds[prepared.image_input]
        notes += prepared.notes
        if input_name is None:
            input_name = prepared.image_input
    if x is None:
        x = default_input(model, input_shape, size, seed, input_name)
        notes.append(f"seeded random input in [0, 1] (seed {seed})")
    x = np.asarray(x, np.float32)
    fn = gradient_function(model, target, x.shape, method=method, providers=providers,
                           input_name=input_name, self_check=False, **options)
    result = check_function(fn, x, step=step, tolerance=tolerance, directions=directions,
                            seed=seed)
    result.notes = notes + result.notes + list(fn.warnings)
    return result


def self_check(fn, x: np.ndarray | None = None, tolerance: float = DEFAULT_TOLERANCE,
               seed: int = 0) -> GradCheckResult:
    """Check a freshly built gradient function on a seeded random input; raise when it fails."""
    if x is None:
        rng = np.random.default_rng(seed)
        x = rng.random((1, *fn.input_shape[1:]), dtype=np.float32)
    result = check_function(fn, x, tolerance=tolerance, seed=seed)
    if not result.passed:
        raise OnnxvizError(
            f"the {fn.method} gradient of {fn.objective} disagrees with finite differences on "
            f"this model (max rel. error {result.max_rel_error:.2g}, tolerance {tolerance:g}); "
            "use --method autodiff (or numeric)")
    return result
