"""Size and time of the HTML report, by section.

1. README command 1: `onnxviz report` on the embedded default model (its test digit, its
   bundled digits folder, the default steps), in a fresh process, timed end to end
   (--default-runs times; the target is well under a minute).
2. A ResNet-50-sized classifier (25.6M parameters: 53 convs with BatchNormalization,
   bottleneck blocks, a 1000-way Gemm; random He-initialized weights built here with
   onnx.helper) at 224x224, with --images photos (matplotlib's and scikit-image's bundled
   ones), dataset examples over a folder of them, and activation maximization of 8 channels
   of 4 layers plus 8 top classes at --steps steps. Prints the file size (target: under
   30 MB) and the bytes and seconds of each section.

The report's size barely depends on the steps (the same number of images); converged images
have more detail than 4-step ones, so the maximization row also gives the size of the same
number of random-noise pictures, the worst case for compression.

3. With --screenshot PATH: the default model's report rendered by headless Chromium (through
   the DevTools client of tests/test_report_browser.py), 1400x1000 pixels scrolled to the
   section --at (default: maximize), written as PNG: the README's docs/img/report.png.

Run: python benchmarks/bench_report.py [--steps 4] [--images 2] [--default-runs 3]
                                       [--no-default] [--no-resnet] [--keep DIR]
                                       [--screenshot docs/img/report.png [--at maximize]]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from synthetic import _Net

from onnxviz.report import SECTIONS, encode_image, report

LIMIT = 30 * 1024 * 1024


def resnet50(size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """ResNet-50 shapes (torchvision v1.5: stride on the 3x3 conv), random weights."""
    net = _Net(seed)
    x = net.conv("image", 3, 64, 7, "conv1", stride=2, pads=[3, 3, 3, 3])
    x = net.node("Relu", [net.bn(x, 64, "bn1")], "relu")
    x = net.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2],
                 pads=[1, 1, 1, 1])
    cin = 64
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        cout = width * 4
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            p = f"layer{stage}.{block}"
            y = net.node("Relu", [net.bn(net.conv(x, cin, width, 1, f"{p}.conv1", pads=[0] * 4),
                                         width, f"{p}.bn1")], f"{p}.relu1")
            y = net.node("Relu", [net.bn(net.conv(y, width, width, 3, f"{p}.conv2",
                                                  stride=stride), width, f"{p}.bn2")],
                         f"{p}.relu2")
            y = net.bn(net.conv(y, width, cout, 1, f"{p}.conv3", pads=[0] * 4), cout,
                       f"{p}.bn3")
            shortcut = x
            if block == 0:
                shortcut = net.bn(net.conv(x, cin, cout, 1, f"{p}.downsample.0", stride=stride,
                                           pads=[0] * 4), cout, f"{p}.downsample.1")
            x = net.node("Relu", [net.node("Add", [y, shortcut], f"{p}.add")], f"{p}.relu3")
            cin = cout
    x = net.node("GlobalAveragePool", [x], "avgpool")
    x = net.node("Flatten", [x], "flatten", axis=1)
    net.gemm(x, cin, 1000, "logits")
    return net.model("resnet50_synthetic", 1, size, "logits", 1000)


def section_bytes(text: str) -> dict[str, int]:
    spans = [(m.group(1), m.start()) for m in re.finditer(r'<section id="(\w+)">', text)]
    out = {}
    for k, (sid, start) in enumerate(spans):
        end = spans[k + 1][1] if k + 1 < len(spans) else len(text)
        out[sid] = end - start
    return out


def bench_default(runs: int) -> None:
    exe = shutil.which("onnxviz") or sys.executable
    cmd = [exe, "report"] if exe.endswith("onnxviz") else [exe, "-m", "onnxviz", "report"]
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            size = (Path(d) / "report.html").stat().st_size
    print(f"README command 1 (`onnxviz report`, default model, fresh process): "
          f"{min(times):.1f} s best, {np.median(times):.1f} s median of {runs}; "
          f"{size / 1024:.0f} KiB")


def bench_resnet(steps: int, n_images: int, keep: Path | None) -> None:
    from conftest import photo_paths

    photos = photo_paths()
    if len(photos) < n_images:
        raise SystemExit("needs scikit-image's bundled photos (pip install scikit-image)")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t0 = time.perf_counter()
        model = resnet50()
        path = d / "resnet50_synthetic.onnx"
        onnx.save(model, path)
        print(f"ResNet-50-shaped model: {path.stat().st_size / 2**20:.0f} MiB, built in "
              f"{time.perf_counter() - t0:.1f} s")
        folder = d / "examples"
        folder.mkdir()
        for p in photos:
            shutil.copy(p, folder / p.name)
        out = (keep or d) / "resnet50_report.html"
        events = []
        res = report(path, images=photos[:n_images], examples_dir=folder, steps=steps,
                     output=out, progress=lambda e: events.append((time.perf_counter(), e)))
        text = out.read_text()
        sizes = section_bytes(text)
        print(f"report: {res.bytes / 2**20:.2f} MiB ({res.bytes:,} bytes; limit 30 MiB: "
              f"{'PASS' if res.bytes < LIMIT else 'FAIL'}), {res.pictures} pictures, "
              f"{res.seconds:.1f} s, {n_images} image(s), {len(photos)} examples files, "
              f"maximization {steps} steps")
        print(f"{'section':<26}{'seconds':>9}{'KiB':>10}  notes")
        for rec, (sid, title) in zip(res.sections, SECTIONS, strict=True):
            note = rec.error or "; ".join(rec.notes)[:70]
            print(f"{title:<26}{rec.seconds:>9.1f}{sizes.get(sid, 0) / 1024:>10.0f}  {note}")
        n_am = len(res.maximize_targets)
        side = 224
        rng = np.random.default_rng(0)
        from PIL import Image

        noise = Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8))
        _, data = encode_image(noise)
        print(f"worst case for the {n_am} maximized pictures ({side}x{side} noise): "
              f"{n_am * len(data) / 2**20:.2f} MiB; the report would stay at most "
              f"{(res.bytes + n_am * len(data)) / 2**20:.2f} MiB")
        if keep:
            print(f"kept {out}")


def screenshot(path: Path, at: str) -> None:
    import base64
    import io

    from PIL import Image
    from test_report_browser import Browser, _find_chromium

    exe = _find_chromium()
    if exe is None:
        raise SystemExit("needs Chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "report.html"
        report(output=out)
        browser = Browser(exe, Path(d) / "profile")
        try:
            tools = browser.open(out.resolve().as_uri(), width=1400, height=1000)
            tools.call("Runtime.evaluate", {"expression": (
                "document.documentElement.style.scrollBehavior = 'auto';"
                f"document.getElementById({at!r}).scrollIntoView()")})
            shot = tools.call("Page.captureScreenshot", {"format": "png"})
        finally:
            browser.close()
    img = Image.open(io.BytesIO(base64.b64decode(shot["data"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    print(f"wrote {path} ({img.width}x{img.height}, scrolled to #{at})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--default-runs", type=int, default=3)
    ap.add_argument("--no-default", action="store_true")
    ap.add_argument("--no-resnet", action="store_true")
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--screenshot", type=Path)
    ap.add_argument("--at", default="maximize")
    args = ap.parse_args()
    if args.screenshot:
        screenshot(args.screenshot, args.at)
        return
    if not args.no_default:
        bench_default(args.default_runs)
    if not args.no_resnet:
        bench_resnet(args.steps, args.images, args.keep)


if __name__ == "__main__":
    main()
