"""Turn an exported model into a plain float graph with static shapes, ready to differentiate.

Steps, each on a copy: raise opsets below 11 (onnx's version converter), promote float16 and
bfloat16 to float32, rewrite integer operators (QLinearConv, ConvInteger, QLinearMatMul,
MatMulInteger) as dequantize -> float op -> quantize, pin the image input's shape, then fold
everything that no longer depends on data (Shape/Size of static shapes, the shape arithmetic that
feeds Reshape/Expand/Resize, `If` with a static condition) to initializers, prune to the tensors
asked for, and fold zero Pad and inference BatchNormalization into their Conv (onnxruntime does
these fusions too; the backward then has fewer nodes).

Folding uses onnx shape inference (with data propagation) for shapes and the ONNX reference
evaluator (`graph.evaluate_node`) for values: both are the specification, need no session, and
a failure names the node. onnxruntime's own constant folding would also work but rewrites the
graph into its internal ops.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import OnnxvizError, UnsupportedError
from ..graph import FOLDABLE, Graph, constant_node_value, evaluate_node, synthesize_node_names
from .builder import attr

MIN_OPSET = 11
MAX_FOLD_ELEMENTS = 1 << 26
FLOAT = onnx.TensorProto.FLOAT
LOW_FLOATS = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


@dataclass
class Prepared:
    """A float, shape-pinned, folded and pruned copy of a model."""

    proto: onnx.ModelProto
    graph: Graph
    shapes: dict[str, tuple[int, ...]]  # static shapes only
    dtypes: dict[str, int]  # onnx elem types
    opset: int
    notes: list[str] = field(default_factory=list)


def prepare(model: onnx.ModelProto, input_name: str, input_shape: tuple[int, ...],
            keep: list[str]) -> Prepared:
    """Copy `model` and make it differentiable: see the module docstring.

    keep: tensors that must survive (the targets); everything not needed for them is pruned.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    notes: list[str] = []
    _upgrade_opset(m, notes)
    _float32_copy(m, notes)
    _dequantize_operators(m, notes)
    _constants_to_initializers(m)
    _pin_input(m, input_name, input_shape)
    _prune(m, keep, input_name)
    for _ in range(8):
        if not _fold_static(m):
            break
        _prune(m, keep, input_name)
    _fuse_zero_pads(m, keep)
    _fold_batchnorm(m, keep)
    _prune(m, keep, input_name)
    shapes, dtypes = infer(m)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    return Prepared(m, Graph(m), shapes, dtypes, opset, notes)


# ---------------------------------------------------------------- shapes


def infer(m: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Static shapes and element types of every tensor onnx shape inference can reach."""
    work = onnx.ModelProto()
    work.CopyFrom(m)
    del work.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(work, strict_mode=False, data_prop=True)
    except Exception:
        try:
            inferred = onnx.shape_inference.infer_shapes(work, strict_mode=False)
        except Exception:
            inferred = work
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, int] = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        if tt.elem_type:
            dtypes[vi.name] = tt.elem_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
        dtypes[t.name] = t.data_type
    return shapes, dtypes


# ---------------------------------------------------------------- opset and types


def _main_opset(m: onnx.ModelProto) -> int:
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    raise UnsupportedError("the model imports no ai.onnx opset; it is not a standard ONNX model")


def _upgrade_opset(m: onnx.ModelProto, notes: list[str]) -> None:
    version = _main_opset(m)
    if version >= MIN_OPSET:
        return
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(m, MIN_OPSET)
    except Exception as exc:
        raise UnsupportedError(
            f"the model uses opset {version}; onnxviz differentiates opset >= {MIN_OPSET} and "
            f"onnx's version converter failed: {str(exc).splitlines()[0][:200]}") from None
    m.CopyFrom(converted)
    notes.append(f"opset {version} model converted to opset {MIN_OPSET} (onnx version "
                 "converter) to differentiate it")


def _float32_copy(m: onnx.ModelProto, notes: list[str]) -> None:
    """Promote float16/bfloat16 tensors, casts and value infos to float32, in place."""
    changed = False

    def promote_tensor(t: onnx.TensorProto) -> bool:
        if t.data_type not in LOW_FLOATS:
            return False
        arr = numpy_helper.to_array(t).astype(np.float32)
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return True

    def promote_type(tp: onnx.TypeProto) -> bool:
        if tp.HasField("tensor_type") and tp.tensor_type.elem_type in LOW_FLOATS:
            tp.tensor_type.elem_type = FLOAT
            return True
        return False

    def walk(g: onnx.GraphProto) -> None:
        nonlocal changed
        for t in g.initializer:
            changed |= promote_tensor(t)
        for vi in [*g.input, *g.output, *g.value_info]:
            changed |= promote_type(vi.type)
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    changed |= promote_tensor(a.t)
                elif a.name in ("to", "dtype") and a.type == onnx.AttributeProto.INT \
                        and a.i in LOW_FLOATS:
                    a.i = FLOAT
                    changed = True
                elif a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sub in a.graphs:
                        walk(sub)

    walk(m.graph)
    if changed:
        notes.append("float16 model differentiated as a float32 copy (its float16 weights, "
                     "casts and tensors promoted to float32)")


def _constants_to_initializers(m: onnx.ModelProto) -> None:
    g = m.graph
    keep = []
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output[0]:
            value = constant_node_value(node)
            if value is not None:
                g.initializer.append(numpy_helper.from_array(value, node.output[0]))
                continue
        keep.append(node)
    del g.node[:]
    g.node.extend(keep)


# Ops whose schema changes between opset 11 and 18 only add types or attributes whose default
# keeps the old behaviour: a graph of these can be declared at a newer opset unchanged.
TYPE_ONLY_CHANGES = frozenset((
    "Add Sub Mul Div Pow Relu LeakyRelu PRelu Clip Sigmoid Tanh Exp Log Sqrt Neg Reciprocal "
    "Erf Abs Sum Max Min Mean Where Equal Greater Less Not And Or Identity Cast Reshape Flatten "
    "Transpose Concat Gather GatherElements Slice Pad Expand Tile Shape Size Constant "
    "ConstantOfShape MaxPool BatchNormalization Gemm MatMul DepthToSpace SpaceToDepth ArgMax "
    "ArgMin ScatterElements ScatterND QuantizeLinear DequantizeLinear LRN Floor Ceil Round Sign "
    "Mod NonZero Range GreaterOrEqual LessOrEqual GlobalAveragePool GlobalMaxPool Conv "
    "ConvTranspose AveragePool InstanceNormalization Einsum TopK CumSum Resize HardSigmoid "
    "HardSwish Elu Selu Softplus Softsign"
).split())


def upgrade_opset(prep: Prepared, target: int) -> bool:
    """Declare the prepared graph at opset `target` when that changes no node's meaning (every
    op's schema is unchanged or changed by types only); returns whether it did."""
    old = prep.opset
    if old >= target:
        return True
    for node in prep.proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            before = onnx.defs.get_schema(node.op_type, old).since_version
            after = onnx.defs.get_schema(node.op_type, target).since_version
        except Exception:
            return False
        if before == after:
            continue
        if node.op_type not in TYPE_ONLY_CHANGES:
            return False
        if node.op_type == "Resize" and attr(node, "coordinate_transformation_mode", "") \
                == "tf_half_pixel_for_nn":
            return False
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            return False
    for o in prep.proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = target
    prep.proto.ir_version = max(prep.proto.ir_version, 8)
    prep.opset = target
    prep.graph.opsets["ai.onnx"] = target
    prep.notes.append(f"gradient model declared at opset {target} (was {old}; no op on the "
                      "path changes meaning) to use ScatterElements with reduction=add")
    return True


# ---------------------------------------------------------------- integer operators


def _dequantize_operators(m: onnx.ModelProto, notes: list[str]) -> None:
    """QLinearConv/QLinearMatMul -> DequantizeLinear, float op, QuantizeLinear (same clipping);
    ConvInteger/MatMulInteger -> the same convolution on float values (of integers)."""
    g = m.graph
    ops = {n.op_type for n in g.node if n.domain in ("", "ai.onnx")}
    if not ops & {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        return
    index = Graph(m)
    names = synthesize_node_names(list(g.node))
    consumers = index.consumers
    new_nodes: list[onnx.NodeProto] = []
    done = []

    def const(name: str, label: str) -> np.ndarray:
        try:
            return index.constant(name)
        except Exception:
            raise UnsupportedError(f"node {label!r}: its weights must be constant to "
                                   "differentiate a quantized operator") from None

    def add_init(value: np.ndarray, hint: str) -> str:
        name = f"{hint}/dequantized"
        g.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    for node, label in zip(list(g.node), names, strict=True):
        op = node.op_type
        if node.domain not in ("", "ai.onnx") or op not in (
                "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"):
            new_nodes.append(node)
            continue
        done.append(op)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        out = node.output[0]
        if op in ("QLinearConv", "QLinearMatMul"):
            ins = list(node.input) + [""] * (9 - len(node.input))
            x, xs, xz, w, ws, wz, ys, yz, b = ins
            wq = const(w, label).astype(np.float64)
            wsv = const(ws, label).astype(np.float64)
            wzv = const(wz, label).astype(np.float64) if wz else np.zeros(())
            if op == "QLinearConv":
                shp = (-1,) + (1,) * (wq.ndim - 1)
                wf = (wq - wzv.reshape(shp if wzv.ndim else ())) * wsv.reshape(
                    shp if wsv.ndim else ())
            else:  # per-column scales on the last axis
                wf = (wq - wzv) * wsv
            xd = f"{out}/x_dequantized"
            new_nodes.append(helper.make_node("DequantizeLinear", [x, xs, xz] if xz else [x, xs],
                                              [xd], name=f"{label}/dequantize_x"))
            yf = f"{out}/float"
            inputs = [xd, add_init(wf, f"{label}/w")]
            if op == "QLinearConv" and b:
                bias = const(b, label).astype(np.float64) * float(
                    np.asarray(const(xs, label)).ravel()[0]) * wsv.ravel()
                inputs.append(add_init(bias, f"{label}/b"))
            float_op = "Conv" if op == "QLinearConv" else "MatMul"
            new_nodes.append(helper.make_node(float_op, inputs, [yf], name=f"{label}/float",
                                              **attrs))
            new_nodes.append(helper.make_node("QuantizeLinear", [yf, ys, yz] if yz else [yf, ys],
                                              [out], name=f"{label}/quantize_y"))
        else:  # ConvInteger / MatMulInteger: int32 accumulators become float values
            ins = list(node.input) + [""] * (4 - len(node.input))
            x, w, xz, wz = ins
            wq = const(w, label).astype(np.float64)
            wzv = const(wz, label).astype(np.float64) if wz else np.zeros(())
            if op == "ConvInteger" and wzv.ndim:
                wzv = wzv.reshape((-1,) + (1,) * (wq.ndim - 1))
            xf = f"{out}/x_float"
            new_nodes.append(helper.make_node("Cast", [x], [xf + "0"], to=FLOAT,
                                              name=f"{label}/cast_x"))
            if xz:
                new_nodes.append(helper.make_node("Cast", [xz], [xf + "_zp"], to=FLOAT,
                                                  name=f"{label}/cast_zp"))
                new_nodes.append(helper.make_node("Sub", [xf + "0", xf + "_zp"], [xf],
                                                  name=f"{label}/sub_zp"))
            else:
                xf = xf + "0"
            float_op = "Conv" if op == "ConvInteger" else "MatMul"
            new_nodes.append(helper.make_node(float_op, [xf, add_init(wq - wzv, f"{label}/w")],
                                              [out], name=f"{label}/float", **attrs))
            users = [g.node[i] for i in consumers.get(out, [])]
            if any(u.op_type != "Cast" for u in users):
                raise UnsupportedError(
                    f"node {label!r} ({op}): its int32 output feeds something other than a Cast; "
                    "onnxviz differentiates ConvInteger/MatMulInteger only in the usual "
                    "ConvInteger -> Cast -> Mul(scale) pattern")
            for vi in g.value_info:
                if vi.name == out:
                    vi.type.tensor_type.elem_type = FLOAT
    del g.node[:]
    g.node.extend(new_nodes)
    kinds = ", ".join(sorted(set(done)))
    notes.append(f"quantized operators ({kinds}) differentiated as a dequantized float copy "
                 "with the same quantization clipping")


# ---------------------------------------------------------------- input pinning


def _pin_input(m: onnx.ModelProto, input_name: str, input_shape: tuple[int, ...]) -> None:
    for vi in m.graph.input:
        if vi.name != input_name:
            continue
        tt = vi.type.tensor_type
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        if dims and len(dims) != len(input_shape):
            raise OnnxvizError(f"input {input_name!r} has rank {len(dims)} but the input shape "
                               f"{tuple(input_shape)} has rank {len(input_shape)}; pass a shape "
                               "of the model's rank")
        for k, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != input_shape[k]:
                raise OnnxvizError(
                    f"input {input_name!r} has a fixed size {d.dim_value} on axis {k} but the "
                    f"input shape asks for {input_shape[k]}; use the model's size there")
        tt.ClearField("shape")
        for size in input_shape:
            tt.shape.dim.add().dim_value = int(size)
        return
    raise OnnxvizError(f"the model has no input named {input_name!r}")


# ---------------------------------------------------------------- pruning


def _subgraph_refs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read from the enclosing scope (all inputs, conservatively)."""
    refs: set[str] = set()

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            refs.update(i for i in n.input if i)
            for a in n.attribute:
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    walk(sub)

    for a in node.attribute:
        for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            walk(sub)
    return refs


def _prune(m: onnx.ModelProto, keep: list[str], input_name: str) -> None:
    """Keep only the nodes, initializers and inputs the `keep` tensors need; outputs = keep."""
    g = m.graph
    needed = set(keep)
    nodes = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output if o):
            nodes.append(node)
            needed.update(i for i in node.input if i)
            needed.update(_subgraph_refs(node))
    nodes.reverse()
    del g.node[:]
    g.node.extend(nodes)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    init_names = {t.name for t in inits}
    inputs = [vi for vi in g.input
              if (vi.name in needed or vi.name == input_name) and vi.name not in init_names]
    del g.input[:]
    g.input.extend(inputs)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output,
                                                                *g.value_info]}
    del g.output[:]
    for name in keep:
        g.output.append(helper.make_tensor_value_info(name, types.get(name, FLOAT), None))


# ---------------------------------------------------------------- folding


def _fold_size_ok(node: onnx.NodeProto, args: list) -> bool:
    """Refuse folds whose result would be huge (a hostile ConstantOfShape, Expand, Tile...)."""
    size = 0
    try:
        if node.op_type == "ConstantOfShape":
            size = int(np.prod(np.asarray(args[0], np.float64)))
        elif node.op_type == "Expand":
            dims = [max(int(d), 1) for d in np.asarray(args[1]).ravel()]
            size = int(np.prod(np.broadcast_shapes(np.shape(args[0]), tuple(dims)),
                               dtype=np.float64))
        elif node.op_type == "Tile":
            size = int(np.size(args[0]) * np.prod(np.asarray(args[1], np.float64)))
        elif node.op_type == "Range":
            start, limit, delta = (float(np.asarray(a)) for a in args)
            size = int(abs((limit - start) / delta)) if delta else MAX_FOLD_ELEMENTS + 1
    except (ValueError, TypeError, IndexError):
        return False
    return size <= MAX_FOLD_ELEMENTS


def _fold_static(m: onnx.ModelProto) -> bool:
    """One pass of folding: Shape/Size of static tensors, constant subexpressions and `If` with a
    static condition become initializers. Returns whether anything changed."""
    shapes, _ = infer(m)
    g = m.graph
    opset = _main_opset(m)
    inits = {t.name: t for t in g.initializer}
    known: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray | None:
        if name in known:
            return known[name]
        if name in inits:
            known[name] = numpy_helper.to_array(inits[name])
            return known[name]
        return None

    kept: list[onnx.NodeProto] = []
    changed = False
    queue = deque(g.node)
    names = iter(synthesize_node_names(list(g.node)))
    pending_names: deque[str] = deque()
    while queue:
        node = queue.popleft()
        label = pending_names.popleft() if pending_names else next(names, node.name)
        op = node.op_type
        std = node.domain in ("", "ai.onnx")
        if std and op == "If":
            cond = value(node.input[0])
            if cond is not None:
                branch = _inline_if(node, bool(np.asarray(cond).ravel()[0]), label, g)
                queue.extendleft(reversed(branch))
                pending_names.extendleft(reversed([n.name for n in branch]))
                changed = True
                continue
        if std and op in ("Shape", "Size") and node.input[0] in shapes:
            shape = np.array(shapes[node.input[0]], np.int64)
            if op == "Size":
                known[node.output[0]] = np.array(np.prod(shape), np.int64)
            else:
                start, end = attr(node, "start", 0), attr(node, "end", None)
                known[node.output[0]] = shape[start:end].copy()
            changed = True
            continue
        if std and op in FOLDABLE and op != "Shape":
            args = [value(i) if i else None for i in node.input]
            if all(a is not None for a, i in zip(args, node.input, strict=True) if i) \
                    and _fold_size_ok(node, args):
                try:
                    outs = evaluate_node(node, args, opset)
                except Exception:
                    outs = None
                if outs is not None:
                    for name, out in zip(node.output, outs, strict=True):
                        if name:
                            known[name] = out
                    changed = True
                    continue
        kept.append(node)
    if not changed:
        return False
    needed = {i for n in kept for i in n.input if i} | {o.name for o in g.output}
    for n in kept:
        needed |= _subgraph_refs(n)
    new_inits = [t for t in g.initializer if t.name in needed]
    have = {t.name for t in new_inits}
    for name, val in known.items():
        if name in needed and name not in have:
            new_inits.append(numpy_helper.from_array(np.asarray(val), name))
    del g.initializer[:]
    g.initializer.extend(new_inits)
    del g.node[:]
    g.node.extend(kept)
    return True


def _inline_if(node: onnx.NodeProto, cond: bool, label: str,
               g: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes of the taken branch, with its internal tensors renamed apart, ending in
    Identity nodes that produce the If's outputs; branch initializers move to `g`."""
    branch = attr(node, "then_branch" if cond else "else_branch")
    prefix = f"{label}/{'then' if cond else 'else'}/"
    rename: dict[str, str] = {}
    for t in branch.initializer:
        rename[t.name] = prefix + t.name
    for n in branch.node:
        for o in n.output:
            if o:
                rename[o] = prefix + o
    for t in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = rename[t.name]
        g.initializer.append(copy)
    nodes = []
    for k, n in enumerate(branch.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.input[:] = [rename.get(i, i) for i in n.input]
        copy.output[:] = [rename.get(o, o) for o in n.output]
        copy.name = f"{prefix}{n.name or f'{n.op_type}_{k}'}"
        _rename_in_subgraphs(copy, rename)
        nodes.append(copy)
    for out, bout in zip(node.output, branch.output, strict=False):
        if out:
            nodes.append(helper.make_node("Identity", [rename.get(bout.name, bout.name)], [out],
                                          name=f"{prefix}output/{out}"))
    return nodes


def _rename_in_subgraphs(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    for a in node.attribute:
        for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            local = {o for n in sub.node for o in n.output} | {t.name for t in sub.initializer} \
                | {i.name for i in sub.input}
            for n in sub.node:
                n.input[:] = [i if i in local else rename.get(i, i) for i in n.input]
                _rename_in_subgraphs(n, rename)


# ---------------------------------------------------------------- fusions


def _consumers(g: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


def _set_ints(node: onnx.NodeProto, name: str, values: list[int]) -> None:
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(helper.make_attribute(name, [int(v) for v in values]))


def _fuse_zero_pads(m: onnx.ModelProto, keep: list[str]) -> None:
    """Pad(constant 0, spatial axes only) -> Conv becomes one Conv with larger pads
    (TF-style asymmetric SAME padding exported as an explicit Pad)."""
    g = m.graph
    consumers = _consumers(g)
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output} | set(keep)
    removed = set()
    for node in g.node:
        if node.op_type != "Pad" or node.domain not in ("", "ai.onnx"):
            continue
        if attr(node, "mode", "constant") != "constant" or node.output[0] in outputs:
            continue
        if len(node.input) > 3 and node.input[3]:
            continue  # axes input (opset 18)
        pads = attr(node, "pads")
        if pads is None:
            if len(node.input) < 2 or node.input[1] not in inits:
                continue
            pads = numpy_helper.to_array(inits[node.input[1]]).tolist()
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in inits:
                continue
            value = float(numpy_helper.to_array(inits[node.input[2]]).ravel()[0])
        value = attr(node, "value", value)
        rank = len(pads) // 2
        if value != 0.0 or rank < 3 or any(p < 0 for p in pads) \
                or any(pads[i] or pads[i + rank] for i in (0, 1)):
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type != "Conv" or u.input[0] != node.output[0]
                            or attr(u, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")
                            for u in users):
            continue
        spatial = rank - 2
        for u in users:
            old = attr(u, "pads", [0] * (2 * spatial))
            if attr(u, "auto_pad", "NOTSET") == "VALID":
                old = [0] * (2 * spatial)
                _set_string(u, "auto_pad", "NOTSET")
            new = [old[i] + pads[2 + i] for i in range(spatial)] + \
                  [old[spatial + i] + pads[rank + 2 + i] for i in range(spatial)]
            _set_ints(u, "pads", new)
            u.input[0] = node.input[0]
        removed.add(id(node))
    if removed:
        kept = [n for n in g.node if id(n) not in removed]
        del g.node[:]
        g.node.extend(kept)


def _set_string(node: onnx.NodeProto, name: str, value: str) -> None:
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(helper.make_attribute(name, value))


def _fold_batchnorm(m: onnx.ModelProto, keep: list[str]) -> None:
    """Conv -> BatchNormalization (inference, constant statistics) becomes one Conv."""
    g = m.graph
    consumers = _consumers(g)
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output} | set(keep)
    removed = set()
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
            continue
        if len([o for o in bn.output if o]) != 1 or attr(bn, "training_mode", 0):
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or conv.output[0] in outputs:
            continue
        if len(consumers.get(conv.output[0], [])) != 1:
            continue
        names = [conv.input[1], *bn.input[1:5]]
        if len(conv.input) > 2 and conv.input[2]:
            names.append(conv.input[2])
        if any(n not in inits for n in names):
            continue
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        scale, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64)
                                  for n in bn.input[1:5])
        bias = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
                if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0]))
        s = scale / np.sqrt(var + attr(bn, "epsilon", 1e-5))
        w_new = (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        b_new = ((bias - mean) * s + beta).astype(np.float32)
        w_name, b_name = f"{bn.output[0]}/fused_w", f"{bn.output[0]}/fused_b"
        g.initializer.extend([numpy_helper.from_array(w_new, w_name),
                              numpy_helper.from_array(b_new, b_name)])
        conv.input[:] = [conv.input[0], w_name, b_name]
        conv.output[0] = bn.output[0]
        removed.add(id(bn))
    if removed:
        kept = [n for n in g.node if id(n) not in removed]
        del g.node[:]
        g.node.extend(kept)
