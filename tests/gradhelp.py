"""Helpers for the autodiff tests: float64 copies of models, finite differences."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

FLOAT, DOUBLE = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every float32 tensor, value info, Cast and constant promoted to float64, so
    onnx's ReferenceEvaluator runs the whole graph in double precision."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _OPSET["value"] = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))

    def tensor(t: onnx.TensorProto) -> None:
        if t.data_type == FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64),
                                               t.name))

    def walk(g: onnx.GraphProto) -> None:
        for t in g.initializer:
            tensor(t)
        for vi in [*g.input, *g.output, *g.value_info]:
            if vi.type.tensor_type.elem_type == FLOAT:
                vi.type.tensor_type.elem_type = DOUBLE
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    tensor(a.t)
                elif a.name == "to" and a.i == FLOAT:
                    a.i = DOUBLE
                elif a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(m.graph)
    _ungroup_conv_transpose(m.graph)
    _batchnorm_as_affine(m.graph)
    return m


def _batchnorm_as_affine(g: onnx.GraphProto) -> None:
    """onnx's reference BatchNormalization-9 (opsets 9-13) fills in the default momentum and then
    normalizes with the batch's own statistics: rewrite inference BatchNormalization nodes as
    the per-channel Mul and Add they mean."""
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for n in g.node:
        if n.op_type != "BatchNormalization" or not all(i in inits for i in n.input[1:5]):
            nodes.append(n)
            continue
        scale, bias, mean, var = (numpy_helper.to_array(inits[i]) for i in n.input[1:5])
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        factor = scale / np.sqrt(var + np.float32(eps))
        shift = bias - mean * factor
        names = [f"{n.output[0]}/factor", f"{n.output[0]}/shift"]
        for name, value in zip(names, (factor, shift), strict=True):
            g.initializer.append(numpy_helper.from_array(value.reshape(-1, 1, 1), name))
        nodes.append(helper.make_node("Mul", [n.input[0], names[0]], [f"{n.output[0]}/scaled"]))
        nodes.append(helper.make_node("Add", [f"{n.output[0]}/scaled", names[1]], [n.output[0]]))
    del g.node[:]
    g.node.extend(nodes)


def _ungroup_conv_transpose(g: onnx.GraphProto) -> None:
    """onnx's reference ConvTranspose mishandles group > 1 (it slices the weights by output
    channels): rewrite grouped ConvTranspose nodes as Split -> per-group ConvTranspose ->
    Concat, which is the operator's definition."""
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for n in g.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type != "ConvTranspose" or group == 1:
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        bias = numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 and n.input[2] \
            else None
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute if a.name != "group"}
        parts = [f"{n.output[0]}/x{k}" for k in range(group)]
        nodes.append(helper.make_node("Split", [n.input[0]], parts, axis=1,
                                      num_outputs=group) if _opset(g) >= 18 else
                     helper.make_node("Split", [n.input[0]], parts, axis=1))
        outs = []
        cin = w.shape[0] // group
        for k in range(group):
            wk = f"{n.output[0]}/w{k}"
            g.initializer.append(numpy_helper.from_array(w[k * cin:(k + 1) * cin], wk))
            ins = [parts[k], wk]
            if bias is not None:
                cout = w.shape[1]
                bk = f"{n.output[0]}/b{k}"
                g.initializer.append(numpy_helper.from_array(bias[k * cout:(k + 1) * cout], bk))
                ins.append(bk)
            outs.append(f"{n.output[0]}/y{k}")
            nodes.append(helper.make_node("ConvTranspose", ins, [outs[-1]], **attrs))
        nodes.append(helper.make_node("Concat", outs, [n.output[0]], axis=1))
    del g.node[:]
    g.node.extend(nodes)


_OPSET = {"value": 17}


def _opset(g) -> int:
    return _OPSET["value"]


def single_node_model(node: onnx.NodeProto, x_shape, consts: dict[str, np.ndarray] | None = None,
                      opset: int = 17, x_name: str = "x",
                      extra_inputs: dict[str, tuple] | None = None) -> onnx.ModelProto:
    """A model running one node on input `x_name` (float32, x_shape); other node inputs are
    initializers from `consts`; the node's first output is the model output."""
    consts = consts or {}
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    inputs = [helper.make_tensor_value_info(x_name, FLOAT, list(x_shape))]
    for name, (dtype, shape) in (extra_inputs or {}).items():
        inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
    outputs = [helper.make_tensor_value_info(node.output[0], FLOAT, None)]
    graph = helper.make_graph([node], "single", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def full_finite_difference(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function along every coordinate (small x only)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat = grad.reshape(-1)
    for i in range(x.size):
        step = np.zeros(x.size)
        step[i] = eps
        step = step.reshape(x.shape)
        flat[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))
