"""Input gradients of objectives on any ONNX model: d(objective)/d(input image).

Three backends behind one interface:

- `autodiff` (default): one ONNX model computing the targets and d<seed, target>/d input,
  built by onnxviz's own reverse-mode rules (`grad/autodiff.py`), run in plain onnxruntime;
- `numeric`: central differences along a low-dimensional basis, from forward runs only
  (`grad/numeric.py`), for models with ops autodiff has no rule for;
- `ort-training`: onnxruntime-training's gradient graph builder where that build is
  installed (`grad/ort_training.py`), checked against finite differences before it is trusted.

`auto` uses autodiff and falls back to numeric with a warning naming the unsupported ops.

Objectives whose seeds depend on the activations (layer L2, direction, diversity) need the
activations first: one forward to the targets, then the seeded backward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import OnnxvizError
from ..model import Model, load_model
from ..objectives import Objective, Sum, parse_targets
from .numeric import (
    ForwardRunner,
    NumericBackend,
    check_input_shape,
    fixed_batch,
    image_input,
)

METHODS = ("autodiff", "numeric", "ort-training", "auto")

__all__ = [
    "METHODS",
    "GradientFunction",
    "GradientWarning",
    "as_objective",
    "gradient_function",
    "input_gradient",
]


class GradientWarning(UserWarning):
    """A gradient backend fell back or is unverified (the message says which and why)."""


def as_objective(target: str | Objective | Sequence[str | Objective], model: Model) -> Objective:
    """A target string (grammar of `onnxviz.objectives`), an objective, or several of them
    (summed) as one objective."""
    objs = parse_targets(target, model)
    if len(objs) == 1:
        return objs[0]
    return Sum(tuple((1.0, o) for o in objs))


def _input_channel_axis(model: Model, input_name: str, rank: int) -> int | None:
    for contract in model.summary.inputs:
        if contract.name == input_name and contract.layout == "NHWC":
            return rank - 1
    return 1 if rank > 2 else None


# ---------------------------------------------------------------- the autodiff backend


@dataclass(eq=False)
class AutodiffBackend:
    """The autodiff gradient model in plain onnxruntime; one session per batch size."""

    model: Model
    targets: list[str]
    input_shape: tuple[int, ...]
    input_name: str
    providers: Sequence[str] | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.batch = fixed_batch(self.model, self.input_name)
        self._sessions: dict[int, tuple] = {}
        self._build(self.batch or self.input_shape[0])

    def _build(self, n: int) -> tuple:
        if n not in self._sessions:
            from ..runtime import make_session
            from .autodiff import gradient_model

            gm = gradient_model(self.model, self.targets, (n, *self.input_shape[1:]),
                                input_name=self.input_name)
            for note in gm.notes:
                if note not in self.notes:
                    self.notes.append(note)
            if list(gm.targets) != list(self.targets):
                raise OnnxvizError(f"internal: the gradient model's targets {gm.targets} differ "
                                   f"from the objective's {self.targets}")
            session = make_session(gm.proto, providers=self.providers)
            self.target_shapes = [tuple(s[1:]) for s in gm.target_shapes]
            self._sessions[n] = (session, gm)
        return self._sessions[n]

    def vjp(self, x: np.ndarray, seeds: Sequence[np.ndarray]
            ) -> tuple[list[np.ndarray], np.ndarray]:
        """(target activations, d sum_t <seed_t, target_t> / dx) in one run per chunk."""
        from ..runtime import run

        n = x.shape[0]
        size = self.batch or n
        session, gm = self._build(size)
        if size == n:
            feeds = {gm.input_name: x}
            feeds.update(zip(gm.seed_names, seeds, strict=True))
            out = run(session, feeds)
            return out[:-1], out[-1]
        acts_parts, grads = [], []
        for start in range(0, n, size):
            sl = slice(start, start + size)
            xc, sc = x[sl], [s[sl] for s in seeds]
            m = xc.shape[0]
            if m < size:  # pad a short last chunk; padded items get zero seeds
                xc = np.concatenate([xc, np.repeat(xc[-1:], size - m, 0)])
                sc = [np.concatenate([s, np.zeros((size - m, *s.shape[1:]), s.dtype)])
                      for s in sc]
            feeds = {gm.input_name: xc}
            feeds.update(zip(gm.seed_names, sc, strict=True))
            out = run(session, feeds)
            acts_parts.append([a[:m] for a in out[:-1]])
            grads.append(out[-1][:m])
        acts = [np.concatenate(p) for p in zip(*acts_parts, strict=True)]
        return acts, np.concatenate(grads)


# ---------------------------------------------------------------- the reusable function


@dataclass(eq=False)
class GradientFunction:
    """x -> (objective value per batch item, d sum(values) / dx), built once, called often.

    x is a float32 batch in the model's input layout (float32 even when the model takes
    float16). Attributes say what was built: `method` (the backend actually used), `notes`,
    `warnings` (e.g. the fallback of method="auto"), `cost` (forwards per gradient, for
    numeric) and `axis_notes` (which channel axis each target uses).
    """

    model: Model
    objective: Objective
    input_shape: tuple[int, ...]
    input_name: str
    method: str
    backend: object
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    providers: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.targets = list(self.objective.tensors)
        self._seed_cache: dict[int, list[np.ndarray]] = {}
        self._forward = None

    @property
    def cost(self) -> str:
        cost = getattr(self.backend, "cost", None)
        if cost:
            return cost
        if self.objective.linear:
            return f"{self.method}: one forward+backward run per gradient"
        return f"{self.method}: one forward to the targets plus one forward+backward run"

    @property
    def forwards_per_gradient(self) -> int | None:
        """Forward passes per gradient for the numeric backend, else None."""
        return getattr(self.backend, "forwards_per_gradient", None)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if x.shape[1:] != tuple(self.input_shape[1:]):
            raise OnnxvizError(f"input batch has shape {list(x.shape)}, but this gradient "
                               f"function was built for [N, "
                               f"{', '.join(map(str, self.input_shape[1:]))}]")
        return np.ascontiguousarray(x)

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The target activations for a batch, from a forward-only model."""
        x = self._check(x)
        if isinstance(self.backend, NumericBackend):
            acts = self.backend.forward(x)
        else:
            acts = self._forward_runner()(x)
        return dict(zip(self.targets, acts, strict=True))

    def value(self, x: np.ndarray) -> np.ndarray:
        """The objective per batch item (float64), from a forward-only run."""
        return self.objective.value(self.activations(x))

    def _forward_runner(self) -> ForwardRunner:
        if self._forward is None:
            self._forward = ForwardRunner(self.model, self.targets, self.input_shape,
                                          self.input_name, self.providers)
        return self._forward

    def _linear_seeds(self, shapes: Sequence[tuple[int, ...]], n: int) -> list[np.ndarray]:
        seeds = self._seed_cache.get(n)
        if seeds is None:
            zeros = {t: np.zeros((n, *s), np.float32) for t, s in
                     zip(self.targets, shapes, strict=True)}
            _, by_name = self.objective.value_and_seeds(zeros)
            seeds = [np.ascontiguousarray(by_name.get(t, np.zeros_like(zeros[t])),
                                          dtype=np.float32) for t in self.targets]
            self._seed_cache[n] = seeds
        return seeds

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self._check(x)
        n = x.shape[0]
        backend = self.backend
        if self.objective.linear:
            seeds = self._linear_seeds(backend.target_shapes, n)
            acts, grad = backend.vjp(x, seeds)
            if acts is None:
                acts = backend.forward(x)
            values = self.objective.value(dict(zip(self.targets, acts, strict=True)))
        else:
            acts = self.activations(x)
            values, by_name = self.objective.value_and_seeds(acts)
            seeds = [np.ascontiguousarray(by_name[t], dtype=np.float32) for t in self.targets]
            _, grad = backend.vjp(x, seeds)
        return values, grad


def gradient_function(model, target: str | Objective | Sequence[str | Objective],
                      input_shape: Sequence[int], method: str = "autodiff",
                      providers: Sequence[str] | None = None, input_name: str | None = None,
                      **numeric_options) -> GradientFunction:
    """Build once, call often: a `GradientFunction` x -> (value per item, gradient).

    model: path, bytes, ModelProto or Model (None: the embedded default). target: a target
    string, an objective or several (summed). input_shape: the full input shape, batch
    included (other batch sizes work too; the gradient graph is rebuilt once per size).
    method: "autodiff", "numeric", "ort-training" or "auto" (autodiff, falling back to numeric
    with a `GradientWarning` naming the unsupported ops and the cost). numeric_options go to
    `NumericBackend` (basis, size, rel_step, scale, max_batch).
    """
    if method not in METHODS:
        raise OnnxvizError(f"unknown gradient method {method!r}; use one of {', '.join(METHODS)}")
    model = load_model(model)
    vi = image_input(model, input_name)
    input_name = vi.name
    shape = check_input_shape(model, input_shape, input_name)
    objective = as_objective(target, model)
    targets = list(objective.tensors)
    notes: list[str] = []
    warns: list[str] = []
    if vi.type.tensor_type.elem_type == 10:
        notes.append("the model takes float16 input: pass float32 arrays; gradients are float32")
    chosen = method
    if method == "auto":
        missing = _missing_rules(model, targets, shape, input_name)
        chosen = "numeric" if missing else "autodiff"
        if missing:
            backend = _numeric(model, targets, shape, input_name, providers, numeric_options)
            ops = ", ".join(sorted({op for op, _ in missing}))
            nodes = ", ".join(node for _, node in missing[:5]) + (
                f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            msg = (f"autodiff has no gradient rule for {ops} (node {nodes}); using the numeric "
                   f"backend instead: {backend.cost}")
            warns.append(msg)
            warnings.warn(msg, GradientWarning, stacklevel=2)
    if chosen == "numeric":
        if method != "auto":
            backend = _numeric(model, targets, shape, input_name, providers, numeric_options)
    elif chosen == "autodiff":
        backend = AutodiffBackend(model, targets, shape, input_name, providers)
    elif chosen == "ort-training":
        from .ort_training import OrtTrainingBackend

        backend = OrtTrainingBackend(model, targets, shape, input_name, providers)
    notes.extend(n for n in getattr(backend, "notes", []) if n not in notes)
    fn = GradientFunction(model, objective, shape, input_name, chosen, backend, notes, warns,
                          providers)
    if chosen == "ort-training" and numeric_options.get("self_check", True):
        from .check import self_check

        self_check(fn)
    return fn


def _numeric(model, targets, shape, input_name, providers, options) -> NumericBackend:
    options = {k: v for k, v in options.items() if k != "self_check"}
    axis = _input_channel_axis(model, input_name, len(shape))
    return NumericBackend(model, targets, shape, input_name, channel_axis=axis,
                          providers=providers, **options)


def _missing_rules(model: Model, targets: list[str], shape: tuple[int, ...],
                   input_name: str) -> list[tuple[str, str]]:
    try:
        from .autodiff import missing_rules
    except ImportError:
        return [("(the autodiff engine is not installed)", "-")]
    return list(missing_rules(model, targets, shape, input_name=input_name))


def input_gradient(model, target: str | Objective | Sequence[str | Objective], x: np.ndarray,
                   method: str = "autodiff", providers: Sequence[str] | None = None,
                   input_name: str | None = None, **numeric_options
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(objective value per batch item, d sum(values) / dx) for a batch x in the model's input
    layout (float32; float16 models take float32 too). For repeated calls build a
    `gradient_function` once instead."""
    x = np.asarray(x, np.float32)
    fn = gradient_function(model, target, x.shape, method=method, providers=providers,
                           input_name=input_name, **numeric_options)
    return fn(x)
