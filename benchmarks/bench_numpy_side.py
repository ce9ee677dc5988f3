"""Time the numpy side of one activation-maximization step (no model involved).

Per step the loop does: parameters -> image and its VJP closure (params.py), draw a transform
(transforms.sample), apply it, [model gradient], apply its adjoint, the image VJP, one Adam
update. This script times each part at 224x224 and 128x128, batch 1 (and a batch of 8), RGB,
Fourier parameterization with decorrelated color, Lucid's standard transforms, float32.

For scale it also times, when torch is installed, a ResNet-18-shaped network's input gradient
(forward + backward) in torch on the same threads: a proxy for the model gradient call that
the numpy side must stay within ~15% of.

Run: python benchmarks/bench_numpy_side.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from onnxviz.optim import Adam
from onnxviz.params import make_param
from onnxviz.transforms import sample, standard_transforms


def timeit(fn, repeat: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeat`` calls after 5 warm-up calls."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def bench(n: int, size: int, repeat: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    param = make_param("fourier", (n, 3, size, size), decorrelate=True)
    p = param.init(rng)
    chain = standard_transforms()
    opt = Adam(lr=0.05)
    img, vjp = param.image_and_vjp(p)
    sampled = sample(chain, rng, (size, size), (size, size))
    g_out = rng.standard_normal((n, 3, size, size)).astype(np.float32)
    g_img = sampled.adjoint(g_out)
    g_p = vjp(g_img)
    times = {
        "param image": timeit(lambda: param.image(p), repeat),
        "param image+vjp": timeit(lambda: param.image_and_vjp(p)[1](g_img), repeat),
        "transform sample": timeit(lambda: sample(chain, rng, (size, size), (size, size)), repeat),
        "transform apply": timeit(lambda: sampled.apply(img), repeat),
        "transform adjoint": timeit(lambda: sampled.adjoint(g_out), repeat),
        "adam step": timeit(lambda: opt.step(p.copy(), g_p), repeat),
    }
    times["adam step"] -= timeit(lambda: p.copy(), repeat)  # the copy is not part of a step

    def whole_step():
        image, back = param.image_and_vjp(p)
        s = sample(chain, rng, (size, size), (size, size))
        s.apply(image)
        opt.step(p, back(s.adjoint(g_out)))

    times["whole numpy step"] = timeit(whole_step, repeat)
    return times


def torch_resnet18_grad_ms(n: int, size: int, repeat: int) -> float | None:
    """ms of d(mean of one layer4 channel)/d(input) for a ResNet-18-shaped torch network."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)

    def block(cin, cout, stride):
        down = None
        if stride != 1 or cin != cout:
            down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.b1 = nn.BatchNorm2d(cout)
                self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.b2 = nn.BatchNorm2d(cout)
                self.down = down

            def forward(self, x):
                y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
                return torch.relu(y + (x if self.down is None else self.down(x)))

        return Block()

    layers = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [block(cin, cout, stride), block(cout, cout, 1)]
        cin = cout
    net = nn.Sequential(*layers).eval()
    x = torch.rand(n, 3, size, size, requires_grad=True)

    def grad():
        x.grad = None
        net(x)[:, 7].mean().backward()

    return timeit(grad, max(5, repeat // 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    print(f"numpy {np.__version__}, {os.cpu_count()} CPU(s); median ms per call, float32")
    for n, size in [(1, 224), (1, 128), (8, 128)]:
        times = bench(n, size, args.repeat)
        print(f"\nbatch {n}, {size}x{size}, fourier + decorrelate, standard transforms")
        for name, ms in times.items():
            print(f"  {name:<20} {ms:8.2f} ms")
        ref = torch_resnet18_grad_ms(n, size, args.repeat)
        if ref is not None:
            share = 100 * times["whole numpy step"] / ref
            print(f"  {'torch ResNet-18 grad':<20} {ref:8.2f} ms  (numpy side = {share:.0f}%)")


if __name__ == "__main__":
    main()
