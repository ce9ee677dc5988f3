"""What exposing intermediate tensors costs, as ratios to a plain forward pass.

For a ResNet-18-sized network at 224x224 (benchmarks/synthetic.py's `resnet18` when it exists,
else a builder here with the same shapes: BatchNormalization after every conv, residual Adds)
and for real models (YOLOv8n at 320x320, PP-OCRv4 det at 480x640 when the test cache or the
registry has them), it times one onnxruntime run of:

  plain       the original model (its outputs)
  one layer   + one mid-network post-activation tensor (the default kind of tap)
  one pre-act + the same layer's conv output (before BN/activation: breaks the Conv+BN+act
              fusion; shown to explain why onnxviz taps post-activation tensors)
  default     + the post-activation output of every layer (`onnxviz features`' default)
  --all       + every floating-point tensor of rank >= 3 except the insides of fused
              conv -> BN -> activation chains (`onnxviz features --all`)
  every float + every floating-point tensor of rank >= 3, insides included
  naive       + every tensor any node produces (what a naive "mark everything" does)

Each session fetches all its outputs (copies included). Sessions run round-robin after
warm-up, same threads for all; a ratio is the median over --repeat rounds of (time / time of
the plain run in the same round), the ms column the median time. Targets: one layer <= 1.05x,
default <= 1.3x, --all <= 1.6x.

Run: python benchmarks/bench_features.py [--repeat 30] [--threads N] [--no-real]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxviz.features import all_taps, default_taps
from onnxviz.model import load_model
from onnxviz.rewrite import expose_tensors, input_dependent
from onnxviz.runtime import make_session

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"one layer": 1.05, "default": 1.3, "--all": 1.6}


# ---------------------------------------------------------------- a ResNet-18-sized model

def resnet18_here(size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 shapes (11.7M parameters), random He-initialized weights, BN kept as nodes."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    count = [0]

    def conv_bn(x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        i = count[0]
        count[0] += 1
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"w{i}"),
                      numpy_helper.from_array(1 + 0.1 * rng.standard_normal(cout)
                                              .astype(np.float32), f"g{i}"),
                      numpy_helper.from_array(0.1 * rng.standard_normal(cout)
                                              .astype(np.float32), f"b{i}"),
                      numpy_helper.from_array(0.1 * rng.standard_normal(cout)
                                              .astype(np.float32), f"m{i}"),
                      numpy_helper.from_array(1 + 0.1 * rng.random(cout)
                                              .astype(np.float32), f"v{i}")])
        p = k // 2
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"conv{i}"], name=f"conv{i}",
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[p, p, p, p]))
        nodes.append(helper.make_node("BatchNormalization", [f"conv{i}", f"g{i}", f"b{i}",
                                                             f"m{i}", f"v{i}"], [f"bn{i}"]))
        if not relu:
            return f"bn{i}"
        nodes.append(helper.make_node("Relu", [f"bn{i}"], [f"relu{i}"]))
        return f"relu{i}"

    x = conv_bn("input", 3, 64, 7, 2, True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = conv_bn(x, cin, cout, 3, stride, True)
            y = conv_bn(y, cout, cout, 3, 1, False)
            short = conv_bn(x, cin, cout, 1, stride, False) if stride != 1 or cin != cout else x
            name = f"s{stage}b{block}"
            nodes.append(helper.make_node("Add", [y, short], [f"{name}_add"]))
            nodes.append(helper.make_node("Relu", [f"{name}_add"], [f"{name}_out"]))
            x, cin = f"{name}_out", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array(rng.standard_normal((1000, 512)).astype(np.float32)
                                         * 0.03, "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "resnet18", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                          [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def resnet18_model() -> tuple[onnx.ModelProto, str]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from synthetic import resnet18  # written by another helper; preferred when present

        return resnet18(size=224, batch=1), "benchmarks/synthetic.py resnet18"
    except ImportError:
        return resnet18_here(224), "bench_features.resnet18_here"


def real_models() -> list[tuple[str, Path, tuple[int, ...]]]:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from conftest import fetch_real_model
    except ImportError:
        return []
    found = []
    for key, shape in (("yolov8n", (1, 3, 320, 320)), ("ppocr_det", (1, 3, 480, 640))):
        try:
            found.append((key, fetch_real_model(key), shape))
        except BaseException as exc:  # pytest.skip when offline
            print(f"(skipping {key}: {exc})")
    return found


# ---------------------------------------------------------------- timing

def configurations(model) -> dict[str, list[str]]:
    taps = default_taps(model)
    mid = taps[len(taps) // 2]
    layer = model.summary.layer(mid.layer) if mid.layer else None
    live = input_dependent(model.graph)
    configs = {"plain": [], "one layer": [mid.tensor]}
    if layer is not None and layer.output != mid.tensor:
        configs["one pre-act"] = [layer.output]
    configs["default"] = [t.tensor for t in taps]
    configs["--all"] = [t.tensor for t in all_taps(model)]
    configs["every float"] = [t.tensor for t in all_taps(model, every=True)]
    configs["naive"] = [o for n in model.graph.nodes for o in n.output if o and o in live]
    return configs


def bench(model, feeds: dict, repeat: int, threads: int | None) -> list[tuple[str, int, float]]:
    sessions = {}
    configs = configurations(model)
    for name, tensors in configs.items():
        proto = expose_tensors(model, tensors, exact=True) if tensors else model.proto
        # several sessions take turns: spinning thread pools would fight over the cores
        sessions[name] = make_session(proto, threads=threads, spinning=False)
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeat):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[name].append(time.perf_counter() - t0)
    plain = np.asarray(times["plain"])
    # the ratio of each run to the plain run of the same round cancels slow drifts in load
    return [(name, len(configs[name]), 1e3 * float(np.median(times[name])),
             float(np.median(np.asarray(times[name]) / plain)))
            for name in sessions]


def report(title: str, rows: list[tuple[str, int, float, float]]) -> None:
    print(f"\n{title}")
    print(f"  {'config':<12} {'tensors':>7} {'ms':>9} {'ratio':>7}  target")
    for name, n, ms, ratio in rows:
        target = TARGETS.get(name)
        ok = target is not None and ratio <= target
        verdict = "" if target is None else f"<= {target}  {'ok' if ok else 'MISSED'}"
        print(f"  {name:<12} {n:>7} {ms:>9.2f} {ratio:>6.2f}x  {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-real", action="store_true")
    args = ap.parse_args()
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, threads {args.threads or 'default'}, "
          f"median of {args.repeat} round-robin runs")
    proto, source = resnet18_model()
    model = load_model(proto)
    x = np.random.default_rng(0).random((1, 3, 224, 224)).astype(np.float32)
    report(f"ResNet-18-sized, 224x224 ({source}, {model.summary.params:,} params)",
           bench(model, {model.summary.inputs[0].name: x}, args.repeat, args.threads))
    if args.no_real:
        return
    for key, path, shape in real_models():
        model = load_model(path)
        x = np.random.default_rng(0).random(shape).astype(np.float32)
        report(f"{key} ({path.name}), {shape[2]}x{shape[3]}",
               bench(model, {model.summary.inputs[0].name: x}, args.repeat, args.threads))


if __name__ == "__main__":
    main()
