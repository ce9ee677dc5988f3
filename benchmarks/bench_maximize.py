"""Speed of activation maximization on a ResNet-18-shaped model (benchmarks/synthetic.py).

1. Per-step time at 224x224, batch 1, for a mid-network channel (layer3.1.relu2:5) and a class
   logit: the whole step as `iter_maximize` runs it, the gradient call inside it (onnxruntime:
   forward + backward), and the rest, the numpy side (Fourier parameterization and its VJP,
   the transform draw, apply and adjoint, preprocessing and its adjoint, Adam). Target: the
   numpy side adds at most 15% to the gradient call. Medians over the steps after warm-up.
   Next to it, the "floor": a step that does only what no Fourier-parameterized, transformed
   step in numpy can skip (the inverse and forward FFTs, one squashing pass, one gather for
   the warp, one scatter for its adjoint, Adam) around the same gradient call, to show how
   much of the numpy side is the design's minimum on this machine (the gradient call leaves
   the caches cold, so the minimum costs more than it does timed alone).
2. 512 steps at 128x128 for one channel (layer3.1.relu2:5), timed end to end (model load,
   gradient-model build, self-check included).
3. A whole layer of 64 channels (layer1.1.relu2:0-63) at 128x128, 512 steps each, batched 8
   per onnxruntime call (the default) and, for comparison, 16.

Run: python benchmarks/bench_maximize.py [--steps 512] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic

from onnxviz.grad import GradientFunction
from onnxviz.maximize import iter_maximize
from onnxviz.model import load_model

MID = "layer3.1.relu2:5"
LOGIT = "logits:7"
LAYER = "layer1.1.relu2:0-63"


class GradTimer:
    """Times every GradientFunction call (onnxruntime forward + backward and seeds)."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self._orig = GradientFunction.__call__

    def __enter__(self):
        timer = self

        def timed(fn, x):
            t0 = time.perf_counter()
            out = timer._orig(fn, x)
            timer.calls.append(time.perf_counter() - t0)
            return out

        GradientFunction.__call__ = timed
        return self

    def __exit__(self, *exc) -> None:
        GradientFunction.__call__ = self._orig


def per_step(model, target: str, steps: int, warmup: int = 10) -> dict[str, float]:
    """Median ms per step, per gradient call and their difference (the numpy side)."""
    stamps = []
    with GradTimer() as timer:
        for _ in iter_maximize(model, target, steps=steps, check=False):
            stamps.append(time.perf_counter())
    step_s = np.diff(stamps)[warmup:]
    # the first calls are the start evaluation (and re-seeds); the last steps' calls line up
    return medians(step_s, np.array(timer.calls[-len(step_s):]))


def medians(step_s: np.ndarray, grad_s: np.ndarray) -> dict[str, float]:
    """Median ms per step, per gradient call and of their difference (the numpy side)."""
    numpy_ms = 1e3 * float(np.median(step_s - grad_s))
    grad_ms = 1e3 * float(np.median(grad_s))
    return {"step": 1e3 * float(np.median(step_s)), "grad": grad_ms, "numpy": numpy_ms,
            "share": numpy_ms / grad_ms}


def floor_step(model, target: str, steps: int, warmup: int = 10) -> dict[str, float]:
    """`per_step`'s numbers for the least a step must do (see the module docstring)."""
    from onnxviz.grad import gradient_function
    from onnxviz.optim import Adam
    from onnxviz.params import make_param
    from onnxviz.transforms import sample, standard_transforms

    size = 224
    fn = gradient_function(model, target, (1, 3, size, size))
    rng = np.random.default_rng(0)
    param = make_param("fourier", (1, 3, size, size))
    p, opt = param.init(rng), Adam(lr=0.05)
    warp = sample(standard_transforms(), rng, (size, size), (size, size)).warps[0]
    ext = np.zeros((3, warp.size), np.float32)
    step_s, grad_s = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        t = np.fft.irfft2(p.view(np.complex64)[..., 0], s=(size, size), norm="ortho")
        np.tanh(t, out=t)
        x = np.take(ext, warp.base, axis=1).reshape(1, 3, size, size)
        t1 = time.perf_counter()
        _, gx = fn(x)
        t2 = time.perf_counter()
        acc = np.zeros_like(ext)
        for c, plane in enumerate(gx.reshape(3, -1)):
            acc[c][warp.base] = plane
        spectrum = np.fft.rfft2(t, norm="ortho")
        opt.step(p, spectrum.view(np.float32).reshape(p.shape))
        step_s.append(time.perf_counter() - t0)
        grad_s.append(t2 - t1)
    return medians(np.array(step_s[warmup:]), np.array(grad_s[warmup:]))


def end_to_end(model, target: str, steps: int, **options) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = None
    for step in iter_maximize(model, target, steps=steps, **options):
        result = step.result or result
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--quick", action="store_true",
                        help="fewer steps everywhere (a smoke run, not the recorded numbers)")
    args = parser.parse_args()
    steps = 32 if args.quick else args.steps
    print(f"numpy {np.__version__}, {os.cpu_count()} CPU(s); ResNet-18-shaped model, "
          f"random weights, dynamic batch")
    m224 = load_model(synthetic.resnet18(224, batch=0))
    print("\n| 224x224, batch 1 | step (ms) | gradient call (ms) | numpy side (ms) | "
          "numpy / gradient |\n|---|---|---|---|---|")
    for target in (MID, LOGIT):
        n = 40 if args.quick else 120
        for what, r in (("", per_step(m224, target, n)), (" floor", floor_step(m224, target, n))):
            print(f"| `{target}`{what} | {r['step']:.1f} | {r['grad']:.1f} | {r['numpy']:.1f} | "
                  f"{100 * r['share']:.0f}% |", flush=True)
    m128 = load_model(synthetic.resnet18(128, batch=0))
    seconds, result = end_to_end(m128, MID, steps)
    print(f"\n{steps} steps at 128x128, one channel ({MID}): {seconds:.1f} s "
          f"({1e3 * seconds / steps:.1f} ms per step; objective {result.start[0]:.3g} -> "
          f"{result.values[0]:.3g})", flush=True)
    layer_steps = 16 if args.quick else steps
    for batch in (8, 16):
        seconds, result = end_to_end(m128, LAYER, layer_steps, batch=batch)
        n = len(result.targets)
        gain = np.median(result.values - result.start)
        print(f"{layer_steps} steps at 128x128, a whole layer ({LAYER}, {n} channels), batch "
              f"{batch}: {seconds:.1f} s ({seconds / n:.2f} s per channel; median objective "
              f"gain {gain:.3g})", flush=True)


if __name__ == "__main__":
    main()
