"""Copy a model and mark chosen intermediate tensors as extra graph outputs.

Nothing else in the graph changes: no node is added, removed or reordered, so the original
outputs compute exactly what they computed before (tested bit-identical in onnxruntime).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import onnx

from .errors import OnnxvizError
from .graph import Graph
from .model import Model

# Ops whose outputs are not constant even when none of their inputs depend on the graph inputs.
RANDOM_OPS = frozenset(("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                        "Multinomial", "Bernoulli"))


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    subs = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            subs.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            subs.extend(a.graphs)
    return subs


def _names_read_by(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name read by the nodes of a subgraph, recursively (outer-scope reads too)."""
    names: set[str] = set()
    for node in graph.node:
        names.update(x for x in node.input if x)
        for sub in _subgraphs(node):
            names |= _names_read_by(sub)
    return names


def input_dependent(g: Graph) -> set[str]:
    """Tensors of the main graph whose value depends on a graph input (everything else is a
    constant: weights, shape arithmetic on constants). Old IR's initializers-as-inputs are
    constants, as in `Graph.inputs`."""
    live = {v.name for v in g.inputs}
    for node in g.nodes:
        reads = [x for x in node.input if x]
        for sub in _subgraphs(node):
            reads.extend(_names_read_by(sub))
        if node.op_type in RANDOM_OPS or any(x in live for x in reads):
            live.update(o for o in node.output if o)
    return live


def _typed_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> dict[str, onnx.ValueInfoProto]:
    """A typed ValueInfo for each name where the model or ONNX shape inference knows the type."""
    def collect(graph: onnx.GraphProto, into: dict[str, onnx.ValueInfoProto]) -> None:
        for vi in [*graph.value_info, *graph.output, *graph.input]:
            if (vi.name in wanted and vi.name not in into and vi.type.HasField("tensor_type")
                    and vi.type.tensor_type.elem_type):
                into[vi.name] = vi

    wanted = set(names)
    found: dict[str, onnx.ValueInfoProto] = {}
    collect(proto.graph, found)
    if wanted - found.keys():
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        except Exception:  # inference is best effort: untyped outputs still run in onnxruntime
            inferred = None
        if inferred is not None:
            collect(inferred.graph, found)
    return found


def resolve_exposable(g: Graph, names: Iterable[str], live: set[str] | None = None,
                      exact: bool = False) -> list[str]:
    """Node or tensor names to the tensor names to expose, in the order given, deduplicated.

    A name that is both a node's and another tensor's means the node's first output, as
    everywhere in onnxviz, unless `exact` (names are tensor names). Unknown names raise with
    close matches; tensors inside If/Loop/Scan bodies, graph inputs and constants are refused
    with the reason.
    """
    live = input_dependent(g) if live is None else live
    inputs = {v.name for v in g.inputs}
    out: list[str] = []
    for name in names:
        if exact and (name in g.producer or name in inputs or name in g.initializers):
            tensor = name
        else:
            tensor = g.resolve_tensor(name, what="layer or tensor")
        if tensor in inputs:
            raise OnnxvizError(f"{name!r} is a graph input: it is what you feed the model, not "
                               "something the model computes; pick a layer or tensor (onnxviz "
                               "inspect MODEL lists the layers)")
        if tensor not in live:
            what = "an initializer (weights)" if tensor in g.initializers else (
                "a constant: it is computed without the input (weights or shape arithmetic)")
            raise OnnxvizError(f"{name!r} is {what}, so it is the same for every image; use "
                               "`onnxviz weights` for weights, or pick a tensor that depends on "
                               "the input")
        if tensor not in out:
            out.append(tensor)
    return out


def expose_tensors(model: Model | onnx.ModelProto, names: Iterable[str],
                   exact: bool = False) -> onnx.ModelProto:
    """A copy of the model with the named tensors (node names mean their first output; with
    `exact`, names are tensor names only) added as graph outputs, typed where the model or
    shape inference knows the type (untyped otherwise: onnxruntime runs such outputs, but
    `onnx.checker` wants a type on every graph output).

    Tensors that already are graph outputs are left as they are. External-data references
    stay as they are in the copy (load the model with `load_model(path)` to inline them).
    """
    proto = model.proto if isinstance(model, Model) else model
    g = model.graph if isinstance(model, Model) else Graph(proto)
    tensors = resolve_exposable(g, names, exact=exact)
    existing = {o.name for o in proto.graph.output}
    new = [t for t in tensors if t not in existing]
    typed = _typed_outputs(proto, new) if new else {}
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for t in new:
        vi = out.graph.output.add()
        if t in typed:
            vi.CopyFrom(typed[t])
        else:
            vi.name = t  # untyped: onnxruntime infers the type when it runs
    return out
