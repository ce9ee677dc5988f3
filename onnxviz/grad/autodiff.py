"""Reverse-mode autodiff of an ONNX graph into ONE ONNX model run by plain onnxruntime.

`gradient_model(model, targets, input_shape)` returns a model with inputs (image, one seed per
target) and outputs (the targets, then d(sum_i <seed_i . target_i>)/d image). The seeds are
runtime inputs, so one model serves every channel, neuron or logit of the targets and every
image of the batch. The backward graph comes from the flat rule table in `rules.py` and one
reverse-topological loop; contributions of several consumers are summed; only the path from
the image to the targets is differentiated, never the weights.

Other model inputs (besides the image), if the targets need them, stay inputs of the gradient
model: feed them at run time as for the original model. Their gradients are not computed.

Before differentiating, `prepare.py` pins the input shape and folds shape arithmetic, static
`If`s, float16, integer operators, zero Pads and BatchNormalization. Opsets: the gradient model
keeps the model's opset (at least 11; older models go through onnx's version converter) and
every rule emits ops valid there (ReduceSum/Squeeze/Split axes as attribute or input, ...). The
one op with no equivalent below 16 is ScatterElements with reduction=add, which the MaxPool rule
needs for overlapping windows (except in its separable 3x3 stride-2 form): the model is then
declared at opset 16 when no op on its graph changes meaning between the two opsets
(`prepare.upgrade_opset`, with a note), else the rule scatters phase by phase with windows that
cannot overlap. Node order: backward nodes that read only forward tensors are placed right after
the forward node they read (`_schedule`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx
from onnx import helper

from ..errors import OnnxvizError, UnsupportedError, unknown_name
from ..graph import Graph
from .builder import Builder, attr
from .prepare import Prepared, prepare, upgrade_opset
from .rules import INTEGER_PASS_THROUGH, NON_DIFFERENTIABLE_OPS, NON_DIFFERENTIABLE_OUTPUTS, RULES
from .spatial_rules import max_pool_scatters_overlaps

FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
          onnx.TensorProto.BFLOAT16}
QUANTIZED = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
             onnx.TensorProto.UINT16}


@dataclass
class GradientModel:
    """One ONNX model computing the targets and the input gradient of sum_i <seed_i, target_i>."""

    proto: onnx.ModelProto  # passes onnx.checker, loads in onnxruntime
    input_name: str  # the image input (float32, shape pinned to input_shape)
    seed_names: list[str]  # one runtime input per target, shaped like that target, float32
    targets: list[str]  # forward tensors, also outputs (in this order), float32
    grad_name: str  # last output: d(sum_i <seed_i . target_i>)/d input, shape of input
    input_shape: tuple[int, ...]
    target_shapes: list[tuple[int, ...]]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    prepared: Prepared
    input_name: str
    targets: list[str]
    live: set[str]  # tensors on the differentiable path from the image to the targets
    path: list[int]  # indices (prepared graph) of the nodes to differentiate, in order
    missing: list[tuple[str, str]]


def gradient_model(model, targets: str | Sequence[str], input_shape: Sequence[int],
                   input_name: str | None = None) -> GradientModel:
    """Build the gradient model of `targets` (tensor or node names) w.r.t. the image input.

    model: an onnx.ModelProto or onnxviz.model.Model. input_shape: the full input shape
    (batch included) to pin. input_name: default the model's only float image input.
    Raises UnsupportedError naming every op on the path that has no rule, before building.
    """
    plan = _plan(model, targets, input_shape, input_name)
    if plan.missing:
        raise UnsupportedError(_missing_message(plan))
    _check_buildable(plan)
    prep = plan.prepared
    g = prep.graph
    taken = {t.name for t in prep.proto.graph.initializer} | {v.name for v in g.inputs}
    taken |= {o for n in g.nodes for o in n.output} | set(g.names)
    b = Builder(g, prep.shapes, prep.dtypes, prep.opset, plan.live, taken)
    b.dequantized_units = _paired_quantize_outputs(g, plan)
    b.targets = set(plan.targets)

    seeds = [_unique(f"{t}__seed", b) for t in plan.targets]
    grads: dict[str, list[str]] = defaultdict(list)
    for t, s in zip(plan.targets, seeds, strict=True):
        grads[t].append(s)
    for i in reversed(plan.path):
        node = g.nodes[i]
        b.node_index, b.node_name = i, g.names[i]
        out_grads = [b.sum(grads.pop(o)) if o in grads else None for o in node.output]
        if i in b.passed_through:
            in_grads = [out_grads[0]] + [None] * (len(node.input) - 1)
        else:
            in_grads = RULES[node.op_type](b, node, out_grads)
        for k, (inp, gi) in enumerate(zip(node.input, in_grads, strict=True)):
            if not inp or inp not in plan.live:
                continue
            if gi is None:
                raise b.unsupported(f"its input {k} ({inp!r}) depends on the image but has no "
                                    "gradient rule (onnxviz never differentiates weights)")
            grads[inp].append(gi)
    b.node_index, b.node_name = -1, ""
    grad_name = _unique(f"{plan.input_name}__grad", b)
    b.nodes.append(helper.make_node("Identity", [b.sum(grads[plan.input_name])], [grad_name],
                                    name=b.fresh("grad_output")))
    proto = _assemble(plan, b, seeds, grad_name)
    return GradientModel(
        proto=proto, input_name=plan.input_name, seed_names=seeds, targets=list(plan.targets),
        grad_name=grad_name, input_shape=tuple(int(d) for d in input_shape),
        target_shapes=[prep.shapes[t] for t in plan.targets], notes=list(prep.notes))


def missing_rules(model, targets: str | Sequence[str], input_shape: Sequence[int],
                  input_name: str | None = None) -> list[tuple[str, str]]:
    """(op_type, node name) of the nodes on the differentiable path with no VJP rule."""
    return _plan(model, targets, input_shape, input_name).missing


# ---------------------------------------------------------------- planning


def _model_proto(model) -> onnx.ModelProto:
    from ..model import Model

    if isinstance(model, Model):
        return model.proto
    if isinstance(model, onnx.ModelProto):
        return model
    raise OnnxvizError(f"expected an onnx.ModelProto or onnxviz Model, got {type(model).__name__}")


def image_input(graph: Graph, input_name: str | None = None) -> str:
    """The input to differentiate: `input_name`, else the only float input (of rank 4 when
    several floats exist)."""
    names = [vi.name for vi in graph.inputs]
    if input_name is not None:
        if input_name not in names:
            raise unknown_name("input", input_name, names,
                               "Run `onnxviz inspect MODEL` to list the inputs.")
        return input_name
    floats = [vi for vi in graph.inputs if vi.type.tensor_type.elem_type in FLOATS]
    if len(floats) > 1:
        rank4 = [vi for vi in floats if len(vi.type.tensor_type.shape.dim) == 4]
        floats = rank4 if len(rank4) == 1 else floats
    if len(floats) != 1:
        listed = ", ".join(names) or "none"
        raise OnnxvizError(f"cannot tell which input is the image (inputs: {listed}); "
                           "pass input_name")
    return floats[0].name


def _plan(model, targets, input_shape, input_name) -> _Plan:
    proto = _model_proto(model)
    g0 = Graph(proto)
    wanted = [targets] if isinstance(targets, str) else list(targets)
    if not wanted:
        raise OnnxvizError("no target tensor given; name a layer or tensor of the model")
    names = list(dict.fromkeys(g0.resolve_tensor(t, "target") for t in wanted))
    input_name = image_input(g0, input_name)
    shape = tuple(int(d) for d in input_shape)
    if any(d <= 0 for d in shape):
        raise OnnxvizError(f"input shape {shape} must have positive sizes")
    prep = prepare(proto, input_name, shape, names)
    g = prep.graph
    reach = {input_name}
    for node in g.nodes:
        if not any(i in reach for i in node.input if i):
            continue
        for k, out in enumerate(node.output):
            if out and _differentiable(node, k, prep.dtypes.get(out, 0), reach):
                reach.add(out)
    for t in names:
        if t not in reach:
            raise OnnxvizError(f"target {t!r} does not depend on input {input_name!r} through "
                               "differentiable ops (is it a constant, a shape or an index?)")
    live = set(names)
    path = []
    for i in reversed(range(len(g.nodes))):
        node = g.nodes[i]
        if any(o in live for o in node.output if o):
            path.append(i)
            live.update(x for x in node.input if x in reach)
    path.reverse()
    if prep.opset < 16 and any(_overlapping_max_pool(g.nodes[i], prep.shapes) for i in path):
        upgrade_opset(prep, 16)  # else the MaxPool rule emits an equivalent for opset < 16
    missing = [(g.nodes[i].op_type, g.names[i]) for i in path
               if g.nodes[i].domain not in ("", "ai.onnx") or g.nodes[i].op_type not in RULES]
    return _Plan(prep, input_name, names, live, path, missing)


def _check_buildable(plan: _Plan) -> None:
    """Targets float32 with static shapes, no float64 on the path (checked after missing ops,
    whose outputs have no inferred types)."""
    prep = plan.prepared
    for t in plan.targets:
        if prep.dtypes.get(t) != onnx.TensorProto.FLOAT:
            kind = onnx.TensorProto.DataType.Name(prep.dtypes.get(t, 0))
            raise UnsupportedError(f"target {t!r} is a {kind} tensor; pick a float32 tensor "
                                   "(for a quantized model, the output of its DequantizeLinear)")
        if t not in prep.shapes:
            raise UnsupportedError(f"the shape of target {t!r} is not static after pinning the "
                                   f"input shape to {prep.shapes.get(plan.input_name)}")
    for t in plan.live:
        dtype = prep.dtypes.get(t, onnx.TensorProto.FLOAT)
        if dtype in FLOATS and dtype != onnx.TensorProto.FLOAT:
            raise UnsupportedError(f"tensor {t!r} on the path is "
                                   f"{onnx.TensorProto.DataType.Name(dtype)}; onnxviz "
                                   "differentiates float32 (and float16, as a float32 copy)")


def _overlapping_max_pool(node: onnx.NodeProto, shapes: dict) -> bool:
    """A MaxPool whose rule scatters overlapping windows with reduction=add (opset 16)."""
    if node.op_type != "MaxPool":
        return False
    x_shape, y_shape = shapes.get(node.input[0]), shapes.get(node.output[0])
    if x_shape is not None and y_shape is not None:
        return max_pool_scatters_overlaps(node, x_shape, y_shape)
    kernel = attr(node, "kernel_shape", [])
    strides = attr(node, "strides", None) or [1] * len(kernel)
    dilations = attr(node, "dilations", None) or [1] * len(kernel)
    return any((k - 1) * d + 1 > s for k, d, s in zip(kernel, dilations, strides, strict=True))


def _differentiable(node: onnx.NodeProto, k: int, dtype: int, reach: set[str]) -> bool:
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return dtype in FLOATS or dtype == 0
    if op in NON_DIFFERENTIABLE_OPS or k in NON_DIFFERENTIABLE_OUTPUTS.get(op, ()):
        return False
    if dtype in FLOATS or dtype == 0:
        return True
    if dtype in QUANTIZED:
        if op in ("QuantizeLinear", "DynamicQuantizeLinear") and k == 0:
            return True
        return op in INTEGER_PASS_THROUGH and bool(node.input) and node.input[0] in reach
    return False


def _missing_message(plan: _Plan) -> str:
    listed = ", ".join(f"{op} (node {name!r})" for op, name in plan.missing[:8])
    more = f" and {len(plan.missing) - 8} more" if len(plan.missing) > 8 else ""
    ops = sorted({op for op, _ in plan.missing})
    return (f"no gradient rule for op(s) {', '.join(ops)} on the path from "
            f"{plan.input_name!r} to {', '.join(map(repr, plan.targets))}: {listed}{more}; "
            "use the numeric method (forward runs only) for this model")


def _paired_quantize_outputs(g: Graph, plan: _Plan) -> set[str]:
    """QuantizeLinear outputs read only by DequantizeLinear nodes with the same scale and zero
    point: their gradient can stay in float units (no divide, no multiply by the scale)."""
    import numpy as np

    paired = set()
    for i in plan.path:
        node = g.nodes[i]
        if node.op_type != "QuantizeLinear":
            continue
        q = node.output[0]
        users = [g.nodes[j] for j in g.consumers.get(q, [])]
        if not users:
            continue
        ok = True
        for u in users:
            if u.op_type != "DequantizeLinear":
                ok = False
                break
            for a, c in zip(node.input[1:], u.input[1:], strict=False):
                if a == c:
                    continue
                va, vc = _const_or_none(g, a), _const_or_none(g, c)
                if va is None or vc is None or va.shape != vc.shape or not np.array_equal(va,
                                                                                          vc):
                    ok = False
            if len(node.input[1:]) != len(u.input[1:]):
                ok = False
            if _axis(node) != _axis(u):
                ok = False
        if ok:
            paired.add(q)
    return paired


def _axis(node: onnx.NodeProto) -> int:
    return attr(node, "axis", 1)


def _const_or_none(g: Graph, name: str):
    try:
        return g.constant(name)
    except Exception:
        return None


def _unique(name: str, b: Builder) -> str:
    base, k = name, 0
    while name in b.taken:
        k += 1
        name = f"{base}_{k}"
    b.taken.add(name)
    return name


# ---------------------------------------------------------------- assembly


def _assemble(plan: _Plan, b: Builder, seeds: list[str], grad_name: str) -> onnx.ModelProto:
    prep = plan.prepared
    src = prep.proto.graph
    forward = []
    for i, node in enumerate(src.node):
        extra = b.extra_outputs.get(i)
        if extra:
            node = _with_outputs(node, extra)
        forward.append(node)
    inputs = list(src.input)
    for t, s in zip(plan.targets, seeds, strict=True):
        inputs.append(helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, prep.shapes[t]))
    outputs = [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, prep.shapes[t])
               for t in plan.targets]
    shape = prep.shapes.get(plan.input_name)
    outputs.append(helper.make_tensor_value_info(grad_name, onnx.TensorProto.FLOAT, shape))
    static = {t.name for t in src.initializer} | {t.name for t in b.initializers} | {
        vi.name for vi in src.input}
    nodes = _schedule(forward, b.nodes, static)
    graph = helper.make_graph(nodes, f"{src.name or 'model'}_gradient", inputs,
                              outputs, [*src.initializer, *b.initializers])
    model = helper.make_model(graph, opset_imports=list(prep.proto.opset_import),
                              producer_name="onnxviz.grad.autodiff")
    model.ir_version = max(prep.proto.ir_version,
                           helper.find_min_ir_version_for(list(prep.proto.opset_import), True))
    try:
        if model.ByteSize() < (2 << 30) - 1:
            onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise UnsupportedError("onnxviz built an invalid gradient model (a bug; please report "
                               f"it): {str(exc).splitlines()[0][:300]}") from None
    return model


def _schedule(forward: list[onnx.NodeProto], backward: list[onnx.NodeProto],
              static: set[str]) -> list[onnx.NodeProto]:
    """Order the nodes: each backward node that reads only forward tensors (masks such as the
    HardSigmoid steps of Relu/Clip, Sigmoid's y - y^2) goes right after the forward node whose
    output it reads last, so it runs while that activation is still in cache; the others
    follow the forward pass in order. onnxruntime executes in this order: on MobileNetV2 this
    alone cut the gradient from ~3.5 to ~2.5 forwards."""
    position: dict[str, int] = {}
    for i, node in enumerate(forward):
        for o in node.output:
            position[o] = i
    early: dict[int, list[onnx.NodeProto]] = {}
    late = []
    for node in backward:
        ins = [x for x in node.input if x]
        if any(x not in position and x not in static for x in ins):
            late.append(node)  # reads a seed or a gradient: after the forward pass
            continue
        at = max((position[x] for x in ins if x in position), default=-1)
        early.setdefault(at, []).append(node)
        for o in node.output:
            position[o] = at
    ordered = list(early.get(-1, []))
    for i, node in enumerate(forward):
        ordered.append(node)
        ordered.extend(early.get(i, []))
    return ordered + late


def _with_outputs(node: onnx.NodeProto, extra: dict[int, str]) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    outs = list(copy.output)
    for k, name in extra.items():
        outs += [""] * (k + 1 - len(outs))
        outs[k] = name
    copy.output[:] = outs
    if copy.op_type == "MaxPool":
        keep = [a for a in copy.attribute if a.name != "storage_order"]
        del copy.attribute[:]
        copy.attribute.extend(keep)
    return copy
