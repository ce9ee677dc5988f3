"""Time the numeric gradient backend and measure its cosine to the exact (autodiff) gradient.

On a ResNet-18-shaped model at 1x3x224x224 (built here with onnx.helper, random He-scaled
weights, no download) and optionally on real models given as paths: the ORT forward, one
numeric gradient step (central differences on the lowest k x k DCT coefficients per channel,
batched along the batch axis) for a logit and a mid-network channel target, its cosine to the
autodiff gradient, and the per-call overhead of `gradient_function` over a bare session.run.

Run: python benchmarks/bench_numeric.py [--sizes 8 16] [--repeat 5] [MODEL.onnx ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxviz.grad import gradient_function
from onnxviz.model import load_model
from onnxviz.runtime import make_session, run


def resnet18_like(seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 topology (BatchNorm folded into conv biases), 1000 logits, dynamic batch."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    count = [0]

    def conv(x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        count[0] += 1
        name = f"conv{count[0]}"
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, name + ".w"),
                      numpy_helper.from_array(np.zeros(cout, np.float32) + 0.01, name + ".b")])
        nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [name],
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4, name=name))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [name + ".relu"], name=name + "_relu"))
        return name + ".relu"

    h = conv("image", 3, 64, 7, 2, True)
    nodes.append(helper.make_node("MaxPool", [h], ["pool"], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1], name="pool"))
    h, cin = "pool", 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            a = conv(h, cin, cout, 3, stride, True)
            b = conv(a, cout, cout, 3, 1, False)
            skip = conv(h, cin, cout, 1, stride, False) if (stride != 1 or cin != cout) else h
            out = f"block{stage}_{block}"
            nodes.append(helper.make_node("Add", [b, skip], [out + ".sum"], name=out + "_add"))
            nodes.append(helper.make_node("Relu", [out + ".sum"], [out], name=out))
            h, cin = out, cout
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    fc = (rng.standard_normal((1000, 512)) * np.sqrt(1 / 512)).astype(np.float32)
    inits.extend([numpy_helper.from_array(fc, "fc.w"),
                  numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b")])
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1,
                                  name="fc"))
    graph = helper.make_graph(
        nodes, "resnet18_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def median_ms(fn, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def bench_model(label: str, model, targets: list[str], x: np.ndarray, sizes: list[int],
                repeat: int) -> None:
    model = load_model(model)
    print(f"\n== {label}, input {list(x.shape)}")
    for target in targets:
        exact = gradient_function(model, target, x.shape)
        forward = exact._forward_runner()
        fwd_ms = median_ms(lambda f=forward: f(x), max(repeat * 4, 10))
        _, g_true = exact(x)
        ad_ms = median_ms(lambda e=exact: e(x), max(repeat * 2, 5))
        print(f"target {target}: ORT forward to it {fwd_ms:.1f} ms, autodiff {ad_ms:.1f} ms "
              f"({ad_ms / fwd_ms:.2f}x)")
        for size in sizes:
            fn = gradient_function(model, target, x.shape, method="numeric", size=size)
            _, g = fn(x)
            ms = median_ms(lambda f=fn: f(x), repeat, warmup=0)
            per_forward = ms / fn.forwards_per_gradient
            print(f"  numeric k={size:<2d} {fn.forwards_per_gradient:5d} forwards: "
                  f"{ms / 1e3:7.2f} s per step ({ms / fwd_ms:6.0f}x forward, "
                  f"{per_forward:.2f} ms per batched forward), "
                  f"cosine to autodiff {cosine(g, g_true):.4f}")


def call_overhead(repeat: int) -> None:
    """gradient_function's own cost per call, over a bare session.run of the same graph."""
    from onnxviz.grad.autodiff import gradient_model

    model = load_model(None)
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    fn = gradient_function(model, "conv3:5", x.shape)
    gm = gradient_model(model, ["conv3"], x.shape)
    session = make_session(gm.proto)
    seed = fn._linear_seeds(fn.backend.target_shapes, 1)[0]
    feeds = {gm.input_name: x, gm.seed_names[0]: seed}
    bare = median_ms(lambda: run(session, feeds), repeat * 100, 20)
    full = median_ms(lambda: fn(x), repeat * 100, 20)
    print(f"\nper-call overhead on the digits model: bare session.run {bare * 1e3:.0f} us, "
          f"gradient_function call {full * 1e3:.0f} us (+{(full - bare) * 1e3:.0f} us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="extra .onnx models (fixed-size inputs)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 224, 224), dtype=np.float32)
    bench_model("ResNet-18-shaped, random weights", resnet18_like(), ["logits:7", "block1_1:5"],
                x, args.sizes, args.repeat)
    for path in args.models:
        m = load_model(path)
        layers = m.summary.layers
        out = m.graph.outputs[0].name
        c = m.summary.inputs[0]
        shape = [d if isinstance(d, int) else 1 if k == 0 else 224
                 for k, d in enumerate(c.shape)]
        bench_model(path, m, [f"{out}:1", f"{layers[len(layers) // 2].name}:3"],
                    rng.random(shape, dtype=np.float32), args.sizes, args.repeat)
    call_overhead(args.repeat)


if __name__ == "__main__":
    main()
