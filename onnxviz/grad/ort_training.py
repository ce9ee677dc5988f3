"""The `ort-training` gradient backend: onnxruntime-training's gradient graph builder.

Only where that build is installed: `onnxruntime-training-cpu==1.19.2` (the last release,
Python <= 3.11) installs into the same `onnxruntime` package as plain onnxruntime and replaces
it (the last one installed wins; pip reports no conflict). Its gradient graphs use
training-only ops (ConvGrad, ReluGrad, ...), so they run only in that build. It loads IR <= 10,
has no gradient for inference BatchNormalization (decomposed here into Mul + Add first), and
was seen to return a wrong gradient for a stride-2 SAME_UPPER Conv on an odd-sized input, so
`gradient_function` checks it against finite differences before trusting it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import UnsupportedError
from ..graph import Graph, NotConstant
from ..model import Model
from .numeric import ForwardRunner, fixed_batch, forward_model

PIN = "onnxruntime-training-cpu==1.19.2"
MAX_IR = 10
MAX_OPSET = 21  # the newest opset onnxruntime 1.19 runs
_ABSENT = (f"--method ort-training needs the onnxruntime-training build, which is not "
           f"installed here; in a separate environment (Python <= 3.11): pip install {PIN} "
           "(it replaces plain onnxruntime there). Or use --method autodiff")


def builder_class():
    """The GradientGraphBuilder of an installed onnxruntime-training build, or None."""
    try:
        from onnxruntime.capi import _pybind_state as C
    except Exception:
        return None
    return getattr(C, "GradientGraphBuilder", None)


def available() -> bool:
    """Whether the installed onnxruntime is the training build."""
    return builder_class() is not None


def require():
    """The builder class, or a clear one-line error saying how to get it."""
    cls = builder_class()
    if cls is None:
        raise UnsupportedError(_ABSENT)
    return cls


def decompose_batchnorm(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy where each inference BatchNormalization with constant statistics is Mul + Add
    (y = x * a + b per channel); returns (model, number replaced)."""
    g = Graph(proto)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    nodes: list[onnx.NodeProto] = []
    replaced = 0
    ranks = _ranks(proto)
    for i, node in enumerate(g.nodes):
        outs = [o for o in node.output if o]
        training = any(a.name == "training_mode" and a.i for a in node.attribute)
        if node.op_type != "BatchNormalization" or len(outs) != 1 or training:
            nodes.append(node)
            continue
        try:
            scale, bias, mean, var = (np.asarray(g.constant(n), np.float64)
                                      for n in node.input[1:5])
        except NotConstant:
            nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        a = scale / np.sqrt(var + eps)
        b = bias - mean * a
        rank = ranks.get(node.input[0]) or 4
        shape = (-1,) + (1,) * (rank - 2)
        base = f"{g.names[i]}_onnxviz_bn"
        out.graph.initializer.extend([
            numpy_helper.from_array(a.reshape(shape).astype(np.float32), base + "_a"),
            numpy_helper.from_array(b.reshape(shape).astype(np.float32), base + "_b"),
        ])
        nodes.append(helper.make_node("Mul", [node.input[0], base + "_a"], [base + "_mul"],
                                      name=base + "_Mul"))
        nodes.append(helper.make_node("Add", [base + "_mul", base + "_b"], [outs[0]],
                                      name=base + "_Add"))
        replaced += 1
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {x for n in nodes for x in n.input}
    kept = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out, replaced


def _ranks(proto: onnx.ModelProto) -> dict[str, int]:
    from ..model import inferred_shapes

    return {k: len(s) for k, (s, _) in inferred_shapes(proto).items() if s is not None}


def training_model(model: Model, targets: Sequence[str], input_shape: Sequence[int],
                   input_name: str) -> tuple[onnx.ModelProto, list[str], list[str]]:
    """The forward model prepared for the builder: pruned to the targets, BatchNormalization
    decomposed, seed inputs and loss = sum_t ReduceSum(target_t * seed_t) added, IR <= 10.
    Returns (model, seed input names, notes)."""
    notes: list[str] = []
    proto = forward_model(model, targets, input_shape, input_name, pin_batch=True)
    proto, n_bn = decompose_batchnorm(proto)
    if n_bn:
        notes.append(f"{n_bn} BatchNormalization node(s) decomposed into Mul + Add "
                     "(onnxruntime-training has no gradient for inference BatchNormalization)")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > MAX_OPSET:
        raise UnsupportedError(f"the model uses opset {opset}; onnxruntime-training 1.19 runs "
                               f"opsets up to {MAX_OPSET}: use --method autodiff")
    taken = {n for node in proto.graph.node for n in node.output} | {
        i.name for i in proto.graph.input} | {t.name for t in proto.graph.initializer}
    seeds, terms = [], []
    graph = proto.graph
    elem = {o.name: o.type.tensor_type.elem_type for o in graph.output}
    for k, t in enumerate(targets):
        seed = _fresh(f"onnxviz_seed_{k}", taken)
        prod = _fresh(f"onnxviz_prod_{k}", taken)
        term = _fresh(f"onnxviz_term_{k}", taken)
        graph.input.append(helper.make_tensor_value_info(seed, elem.get(t) or TensorProto.FLOAT,
                                                         None))
        graph.node.extend([helper.make_node("Mul", [t, seed], [prod]),
                           helper.make_node("ReduceSum", [prod], [term], keepdims=0)])
        seeds.append(seed)
        terms.append(term)
    loss = _fresh("onnxviz_loss", taken)
    if len(terms) == 1:
        graph.node.append(helper.make_node("Identity", terms, [loss]))
    else:
        graph.node.append(helper.make_node("Sum", terms, [loss]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(loss, TensorProto.FLOAT, []))
    proto.ir_version = min(proto.ir_version, MAX_IR)
    return proto, seeds, notes


def _fresh(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def build_gradient_graph(proto: onnx.ModelProto, loss: str, input_name: str,
                         targets: Sequence[str]) -> onnx.ModelProto:
    """Run the builder; add the targets as outputs after the loss and the input gradient."""
    import onnxruntime as ort

    cls = require()
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        builder = cls(proto.SerializeToString(), {loss}, {input_name}, loss, options)
        builder.build()
        grad_model = onnx.load_from_string(builder.get_model())
    except Exception as exc:
        text = " ".join(str(exc).split())
        m = re.search(r"has not been registered: (\S+) for node (.+?)(?: \[|$)", text)
        if m:
            raise UnsupportedError(f"onnxruntime-training has no gradient for {m.group(1)} "
                                   f"(node {m.group(2)}); use --method autodiff") from None
        raise UnsupportedError(f"onnxruntime-training cannot build the gradient graph: "
                               f"{text[-300:]} (use --method autodiff)") from None
    names = [o.name for o in grad_model.graph.output]
    grad_name = next((n for n in names if n == f"{input_name}_grad"), None)
    if grad_name is None:
        raise UnsupportedError("onnxruntime-training built no gradient for the input "
                               f"{input_name!r} (outputs: {', '.join(names)})")
    del grad_model.graph.output[:]
    grad_model.graph.output.append(helper.make_tensor_value_info(grad_name, TensorProto.FLOAT,
                                                                 None))
    for t in targets:
        grad_model.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    return grad_model


@dataclass(eq=False)
class OrtTrainingBackend:
    """onnxruntime-training's gradient graph of sum_t <seed_t, target_t> w.r.t. the input."""

    model: Model
    targets: list[str]
    input_shape: tuple[int, ...]
    input_name: str
    providers: Sequence[str] | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require()
        self.batch = fixed_batch(self.model, self.input_name)
        self._sessions: dict[int, tuple] = {}
        self._session(self.batch or self.input_shape[0])
        runner = ForwardRunner(self.model, self.targets, self.input_shape, self.input_name,
                               self.providers)
        probe = runner(np.zeros((self.batch or 1, *self.input_shape[1:]), np.float32))
        self.target_shapes = [tuple(a.shape[1:]) for a in probe]
        self.notes.append("gradient graph built by onnxruntime-training (training-only ops; "
                          "runs in that build only)")

    def _session(self, n: int) -> tuple:
        """(session, seed input names) of the gradient graph for batch size n, built once."""
        if n not in self._sessions:
            from ..runtime import make_session

            shape = (n, *self.input_shape[1:])
            proto, seeds, notes = training_model(self.model, self.targets, shape,
                                                 self.input_name)
            self.notes.extend(x for x in notes if x not in self.notes)
            loss = proto.graph.output[0].name
            grad_model = build_gradient_graph(proto, loss, self.input_name, self.targets)
            try:
                session = make_session(grad_model, providers=self.providers)
            except UnsupportedError as exc:
                raise UnsupportedError(f"onnxruntime-training built a gradient graph that it "
                                       f"cannot run ({str(exc)[:250]}); use --method autodiff"
                                       ) from None
            self._sessions[n] = (session, seeds)
        return self._sessions[n]

    def _run(self, x: np.ndarray, seeds: Sequence[np.ndarray]
             ) -> tuple[list[np.ndarray], np.ndarray]:
        from ..runtime import run

        session, names = self._session(x.shape[0])
        feeds = {self.input_name: x}
        feeds.update(zip(names, seeds, strict=True))
        out = run(session, feeds)
        return out[1:], out[0]

    def vjp(self, x: np.ndarray, seeds: Sequence[np.ndarray]
            ) -> tuple[list[np.ndarray], np.ndarray]:
        size = self.batch or x.shape[0]
        if size == x.shape[0]:
            return self._run(x, seeds)
        acts_parts, grads = [], []
        for start in range(0, x.shape[0], size):
            sl = slice(start, start + size)
            xc, sc = x[sl], [s[sl] for s in seeds]
            m = xc.shape[0]
            if m < size:
                xc = np.concatenate([xc, np.repeat(xc[-1:], size - m, 0)])
                sc = [np.concatenate([s, np.zeros((size - m, *s.shape[1:]), s.dtype)])
                      for s in sc]
            acts, grad = self._run(xc, sc)
            acts_parts.append([a[:m] for a in acts])
            grads.append(grad[:m])
        return [np.concatenate(p) for p in zip(*acts_parts, strict=True)], np.concatenate(grads)
