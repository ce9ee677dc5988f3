"""An index over an ONNX graph: producers, consumers, stable node names, constant folding.

Every module that reads a graph goes through `Graph`, so that a node without a name gets the same
synthesized name in `inspect`, in `--layer` and in every picture.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import OnnxvizError, unknown_name

# Ops that constant folding may evaluate when all their inputs are constant. Bounded: none of
# them can turn a small constant into a huge one except those checked in `_check_size`.
FOLDABLE = frozenset((
    "Identity Cast CastLike Transpose Reshape Flatten Squeeze Unsqueeze DequantizeLinear "
    "ConstantOfShape Concat Gather Slice Mul Add Sub Div Neg Sqrt Reciprocal Pow Exp Log Abs "
    "Range Equal Less Greater Where Expand Tile Split Clip Min Max Floor Ceil Not And Or Shape "
    "Size ReduceProd ReduceSum ReduceMax ReduceMin ReduceMean Sign Round Mod QuantizeLinear "
    "GatherElements ScatterND NonZero Relu Sigmoid Tanh"
).split())
MAX_FOLD_ELEMENTS = 1 << 28
LAYER_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "Gemm", "MatMul",
             "QLinearMatMul", "MatMulInteger")


class NotConstant(OnnxvizError):
    """A tensor that constant folding cannot reduce to a value; `stopper` names the node."""

    def __init__(self, tensor: str, stopper: str) -> None:
        super().__init__(f"tensor {tensor!r} is not a constant: folding stops at {stopper}")
        self.tensor = tensor
        self.stopper = stopper


def _node_label(name: str, node: onnx.NodeProto) -> str:
    return f"node {name!r} ({node.op_type})"


def synthesize_node_names(nodes: list[onnx.NodeProto]) -> list[str]:
    """The node's own name, or `<OpType>_<k>` (k-th node of that type) for unnamed ones; unique."""
    taken = {n.name for n in nodes if n.name}
    counts: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    names = []
    for node in nodes:
        k = counts[node.op_type]
        counts[node.op_type] += 1
        name = node.name
        if not name:
            name = f"{node.op_type}_{k}"
            while name in taken:
                name += "_"
            taken.add(name)
        seen[name] += 1
        if seen[name] > 1:  # duplicate names in the file: keep them apart
            name = f"{name}#{seen[name]}"
        names.append(name)
    return names


class Graph:
    """Read-only index of a main graph (subgraphs of If/Loop are not indexed)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.nodes = list(self.graph.node)
        self.names = synthesize_node_names(self.nodes)
        self.opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for i, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = i
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(i)
        self.node_index = {name: i for i, name in enumerate(self.names)}
        self.inputs = [v for v in self.graph.input if v.name not in self.initializers]
        self.outputs = list(self.graph.output)
        self._const: dict[str, np.ndarray] = {}
        self._subgraph_tensors: set[str] | None = None

    # ----- names
    def node_name(self, i: int) -> str:
        return self.names[i]

    def tensor_names(self) -> list[str]:
        names = [v.name for v in self.inputs]
        for node in self.nodes:
            names.extend(o for o in node.output if o)
        return names

    def resolve_tensor(self, name: str, what: str = "layer") -> str:
        """A node name (meaning its first output) or a tensor name, to a tensor name."""
        if name in self.node_index:
            outs = [o for o in self.nodes[self.node_index[name]].output if o]
            if outs:
                return outs[0]
        if name in self.producer or name in {v.name for v in self.inputs}:
            return name
        if name in self.initializers:
            return name
        if name in self.subgraph_tensors():
            raise OnnxvizError(
                f"{name!r} lives inside a subgraph (If/Loop/Scan body), which onnxviz cannot "
                "expose; pick a tensor of the main graph (onnxviz inspect MODEL lists the layers)"
            )
        raise unknown_name(what, name, [*self.names, *self.producer],
                           "Run `onnxviz inspect MODEL` to list layers and tensors.")

    def subgraph_tensors(self) -> set[str]:
        if self._subgraph_tensors is None:
            found: set[str] = set()

            def walk(g: onnx.GraphProto) -> None:
                for n in g.node:
                    found.update(n.output)
                    for a in n.attribute:
                        for sub in [a.g, *a.graphs] if a.type in (5, 10) else []:
                            walk(sub)

            for n in self.nodes:
                for a in n.attribute:
                    for sub in [a.g, *a.graphs] if a.type in (5, 10) else []:
                        walk(sub)
            self._subgraph_tensors = found
        return self._subgraph_tensors

    # ----- constants
    def is_constant(self, name: str) -> bool:
        try:
            self.constant(name)
        except NotConstant:
            return False
        return True

    def constant(self, name: str) -> np.ndarray:
        """The value of a tensor computable from constants alone, or NotConstant naming the stop."""
        if name in self._const:
            return self._const[name]
        if name in self.initializers:
            # Old IR also lists initializers as graph inputs (overridable defaults); every
            # exporter means them as weights, so they count as constants.
            value = numpy_helper.to_array(self.initializers[name])
        elif name in self.producer:
            i = self.producer[name]
            node = self.nodes[i]
            value = self._fold_node(i, node, name)
        else:
            raise NotConstant(name, f"graph input {name!r}")
        self._const[name] = value
        return value

    def _fold_node(self, i: int, node: onnx.NodeProto, name: str) -> np.ndarray:
        label = _node_label(self.names[i], node)
        if node.op_type == "Constant":
            value = constant_node_value(node)
            if value is None:
                raise NotConstant(name, f"{label}, a Constant of a kind onnxviz does not read")
            return value
        if node.domain not in ("", "ai.onnx") or node.op_type not in FOLDABLE:
            raise NotConstant(name, f"{label}, which onnxviz does not fold")
        args = []
        for inp in node.input:
            if not inp:
                args.append(None)
                continue
            try:
                args.append(self.constant(inp))
            except NotConstant as exc:
                raise NotConstant(name, exc.stopper) from None
        _check_size(node, args, label)
        try:
            outs = evaluate_node(node, args, self.opsets.get("ai.onnx", 13))
        except Exception as exc:  # the reference implementation refused these inputs
            reason = " ".join(str(exc).split())[:160]
            raise NotConstant(name, f"{label}, which failed to evaluate ({reason})") from None
        for out_name, out in zip(node.output, outs, strict=True):
            if out_name:
                self._const[out_name] = out
        return self._const[name]


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a Constant node, or None for kinds onnxviz does not read (strings,
    sparse tensors)."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), np.float32)
        if a.name == "value_int":
            return np.array(a.i, np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), np.int64)
    return None


def _check_size(node: onnx.NodeProto, args: list, label: str) -> None:
    """Refuse folds that would build huge tensors (a hostile ConstantOfShape, Expand, Tile...)."""
    size = None
    if node.op_type in ("ConstantOfShape", "Expand") and args:
        shape = args[0] if node.op_type == "ConstantOfShape" else args[1]
        dims = [int(d) for d in np.asarray(shape).ravel()]
        if node.op_type == "Expand":
            dims = list(np.broadcast_shapes(tuple(args[0].shape), tuple(max(d, 1) for d in dims)))
        size = int(np.prod(dims, dtype=np.float64))
    elif node.op_type == "Tile" and len(args) > 1:
        size = int(np.prod(args[0].shape, dtype=np.float64)
                   * np.prod(np.asarray(args[1]).astype(np.float64)))
    elif node.op_type == "Range" and len(args) == 3:
        start, limit, delta = (float(np.asarray(a)) for a in args)
        size = int(abs((limit - start) / delta)) if delta else MAX_FOLD_ELEMENTS + 1
    if size is not None and size > MAX_FOLD_ELEMENTS:
        raise NotConstant(node.output[0], f"{label}, whose constant output would have "
                                          f"{size:,} elements")


@functools.lru_cache(maxsize=256)
def _single_node_model(node_bytes: bytes, opset: int, dtypes: tuple) -> object:
    from onnx.reference import ReferenceEvaluator

    node = onnx.NodeProto.FromString(node_bytes)
    inputs = [helper.make_tensor_value_info(f"in{k}", dt, None) for k, dt in enumerate(dtypes)]
    outputs = [helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _axes(node: onnx.NodeProto, args: list) -> list[int] | None:
    axes = _attrs(node).get("axes")
    if axes is None and len(args) > 1 and args[1] is not None:
        axes = [int(a) for a in np.asarray(args[1]).ravel()]
    return None if axes is None else list(axes)


def _dequantize(node: onnx.NodeProto, args: list) -> np.ndarray:
    x = args[0].astype(np.float32)
    scale = np.asarray(args[1], np.float32)
    zp = np.asarray(args[2] if len(args) > 2 and args[2] is not None else 0).astype(np.float32)
    if scale.ndim == 1 and x.ndim > 0:  # per-axis
        shape = [1] * x.ndim
        shape[int(_attrs(node).get("axis", 1))] = -1
        scale = scale.reshape(shape)
        zp = zp.reshape(shape) if zp.ndim == 1 else zp
    return ((x - zp) * scale).astype(np.float32)


def _reshape(node: onnx.NodeProto, args: list) -> np.ndarray:
    x, shape = args[0], [int(d) for d in np.asarray(args[1]).ravel()]
    if not _attrs(node).get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _unsqueeze(node: onnx.NodeProto, args: list) -> np.ndarray:
    x = args[0]
    axes = _axes(node, args) or []
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def _squeeze(node: onnx.NodeProto, args: list) -> np.ndarray:
    axes = _axes(node, args)
    return np.squeeze(args[0], axis=None if axes is None else tuple(axes))


_NUMPY_FOLDS = {
    "Identity": lambda n, a: a[0],
    "Cast": lambda n, a: a[0].astype(helper.tensor_dtype_to_np_dtype(_attrs(n)["to"])),
    "Transpose": lambda n, a: np.transpose(a[0], _attrs(n).get("perm")),
    "Reshape": _reshape,
    "Flatten": lambda n, a: a[0].reshape(
        int(np.prod(a[0].shape[:_attrs(n).get("axis", 1) % max(a[0].ndim, 1)])), -1),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "DequantizeLinear": _dequantize,
    "Concat": lambda n, a: np.concatenate([x for x in a if x is not None], _attrs(n)["axis"]),
}


def evaluate_node(node: onnx.NodeProto, args: list, opset: int) -> list[np.ndarray | None]:
    """Run one standard-domain node on numpy values (numpy for the common weight-encoding ops,
    the ONNX reference implementation for the rest).

    `args` holds None for omitted optional inputs; the result is aligned with `node.output`
    (None for omitted outputs).
    """
    fold = _NUMPY_FOLDS.get(node.op_type)
    if fold is not None and len(node.output) == 1:
        return [np.asarray(fold(node, [None if a is None else np.asarray(a) for a in args]))]
    renamed = onnx.NodeProto()
    renamed.CopyFrom(node)
    renamed.name = "fold"
    present = [np.asarray(a) for a in args if a is not None]
    names = iter(range(len(present)))
    renamed.input[:] = ["" if a is None else f"in{next(names)}" for a in args]
    renamed.output[:] = [f"out{j}" if o else "" for j, o in enumerate(node.output)]
    dtypes = tuple(helper.np_dtype_to_tensor_dtype(a.dtype) for a in present)
    ref = _single_node_model(renamed.SerializeToString(), opset, dtypes)
    values = iter(ref.run(None, {f"in{j}": a for j, a in enumerate(present)}))
    return [np.asarray(next(values)) if o else None for o in node.output]
