"""The emitter that VJP rules write the backward graph through.

A rule never builds protos itself: it asks the `Builder` for nodes, constants, shapes of forward
tensors and small opset-aware helpers (ReduceSum/Squeeze axes as attribute or input, ...), so that
the same rule text is valid from opset 11 to the newest one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UnsupportedError
from ..graph import Graph, NotConstant

FLOAT = onnx.TensorProto.FLOAT


def attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's value (bytes decoded to str), or `default` when absent."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            if isinstance(value, bytes):
                return value.decode()
            return value
    return default


class Builder:
    """Collects the backward nodes and constants; answers questions about the forward graph.

    graph: index of the prepared forward graph; shapes: static shape of every forward tensor;
    opset: the ai.onnx opset of the gradient model; differentiable: tensors on the
    differentiable path (rules skip gradients for inputs not in it).
    """

    def __init__(self, graph: Graph, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, int],
                 opset: int, differentiable: set[str], taken: set[str]) -> None:
        self.graph = graph
        self.shapes = shapes
        self.dtypes = dtypes
        self.opset = opset
        self.differentiable = differentiable
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.taken = set(taken)
        self.dequantized_units: set[str] = set()  # int tensors whose gradient is in float units
        self.extra_outputs: dict[int, dict[int, str]] = {}  # forward node -> {output k: name}
        self.targets: set[str] = set()
        # forward nodes whose rule a later-run rule already applied (their gradient passes
        # through unchanged: see rules.max_pool)
        self.passed_through: set[int] = set()
        self.node_index = -1  # the forward node whose rule is running
        self.node_name = ""
        self._consts: dict[tuple, str] = {}
        self._counter = 0

    # ---------------------------------------------------------------- names and emission
    def fresh(self, hint: str) -> str:
        base = "grad/" + hint.replace(" ", "_")
        name = base
        while name in self.taken:
            self._counter += 1
            name = f"{base}_{self._counter}"
        self.taken.add(name)
        return name

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs):
        """Emit one node; returns its output name (or the list of names when outputs > 1)."""
        hint = f"{self.node_name}/{op_type}" if self.node_name else op_type
        outs = [self.fresh(hint) for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self.fresh(f"{hint}_node"), **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value, dtype=np.float32) -> str:
        """An initializer holding `value` (deduplicated); floats default to float32."""
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh(f"c/{self.node_name}" if self.node_name else "c")
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
            self._consts[key] = name
        return self._consts[key]

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64).reshape(-1), np.int64)

    def forward_output(self, k: int) -> str:
        """Name of output k of the current forward node, adding the output if it is absent
        (MaxPool's Indices): the forward node is rewritten in the gradient model."""
        node = self.graph.nodes[self.node_index]
        if k < len(node.output) and node.output[k]:
            return node.output[k]
        outs = self.extra_outputs.setdefault(self.node_index, {})
        if k not in outs:
            outs[k] = self.fresh(f"{self.node_name}/out{k}")
        return outs[k]

    # ---------------------------------------------------------------- forward queries
    def shape(self, tensor: str) -> tuple[int, ...]:
        shape = self.shapes.get(tensor)
        if shape is None:
            raise UnsupportedError(f"the shape of tensor {tensor!r} (node {self.node_name!r}) "
                                   "is not static after pinning the input shape; onnxviz needs "
                                   "it to differentiate")
        return shape

    def graph_dtype(self, tensor: str) -> int:
        """The onnx element type of a forward tensor (0 when unknown)."""
        return self.dtypes.get(tensor, 0)

    def value(self, tensor: str) -> np.ndarray | None:
        """The constant value of a forward tensor, or None when it depends on an input."""
        if not tensor:
            return None
        try:
            return self.graph.constant(tensor)
        except NotConstant:
            return None

    def constant(self, tensor: str, what: str) -> np.ndarray:
        value = self.value(tensor)
        if value is None:
            raise UnsupportedError(f"node {self.node_name!r}: its {what} ({tensor!r}) must be "
                                   "a constant to differentiate it")
        return value

    def wants(self, tensor: str) -> bool:
        return bool(tensor) and tensor in self.differentiable

    def unsupported(self, why: str) -> UnsupportedError:
        node = self.graph.nodes[self.node_index]
        return UnsupportedError(f"cannot differentiate node {self.node_name!r} "
                                f"({node.op_type}): {why}")

    # ---------------------------------------------------------------- small helpers
    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b])

    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b])

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", [a, b])

    def neg(self, a: str) -> str:
        return self.op("Neg", [a])

    def scale(self, a: str, factor: float) -> str:
        if factor == 1.0:
            return a
        if factor == -1.0:
            return self.neg(a)
        return self.mul(a, self.const(factor))

    def zeros(self, shape: Sequence[int]) -> str:
        return self.op("ConstantOfShape", [self.ints(shape)],
                       value=numpy_helper.from_array(np.zeros(1, np.float32)))

    def mask(self, cond: str, g: str) -> str:
        """g where the boolean tensor cond holds, 0 elsewhere. A Mul by the cast mask:
        onnxruntime's Where is several times slower than Cast + Mul on large tensors."""
        return self.mul(g, self.op("Cast", [cond], to=FLOAT))

    def step(self, y: str, threshold: float, above: bool = True) -> str:
        """The float mask [y > threshold] (or [y < threshold]) as ONE HardSigmoid with a huge
        slope: clip(big * (y - threshold), 0, 1). Exactly 0 or 1 except where |y - threshold|
        < 2**-100 or so; unlike comparisons + Cast, HardSigmoid and Mul stay in onnxruntime's
        blocked (NCHWc) layout, so no reorders are inserted around them."""
        t = float(threshold)
        exponent = 126 if t == 0.0 else min(126, int(np.floor(np.log2(1e38 / abs(t)))))
        big = float(2.0 ** exponent)
        if above:
            return self.op("HardSigmoid", [y], alpha=big, beta=-big * t)
        return self.op("HardSigmoid", [y], alpha=-big, beta=big * t)

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.ints(shape)])

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        if list(perm) == list(range(len(perm))):
            return x
        return self.op("Transpose", [x], perm=list(perm))

    def reduce(self, op: str, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        """ReduceSum/ReduceMean/ReduceMax over `axes` (attribute or input by opset)."""
        axes = [int(a) for a in axes]
        input_since = 13 if op == "ReduceSum" else 18
        if self.opset >= input_since:
            return self.op(op, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op(op, [x], axes=axes, keepdims=int(keepdims))

    def reduce_sum(self, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        if not axes:
            return x
        return self.reduce("ReduceSum", x, axes, keepdims)

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(axes)])
        return self.op("Unsqueeze", [x], axes=list(axes))

    def split(self, x: str, axis: int, sizes: Sequence[int]) -> list[str]:
        sizes = [int(s) for s in sizes]
        if len(sizes) == 1:
            return [x]
        if self.opset >= 13:
            return self.op("Split", [x, self.ints(sizes)], outputs=len(sizes), axis=axis)
        return self.op("Split", [x], outputs=len(sizes), axis=axis, split=sizes)

    def slice(self, x: str, starts, ends, axes, steps=None) -> str:
        inputs = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            inputs.append(self.ints(steps))
        return self.op("Slice", inputs)

    def unbroadcast(self, g: str, g_shape: Sequence[int], x_shape: Sequence[int]) -> str:
        """Sum a gradient of the broadcast shape back to the shape of one operand."""
        g_shape, x_shape = tuple(g_shape), tuple(x_shape)
        if g_shape == x_shape:
            return g
        lead = len(g_shape) - len(x_shape)
        padded = (1,) * lead + x_shape
        axes = [i for i, (gd, xd) in enumerate(zip(g_shape, padded, strict=True))
                if i < lead or (xd == 1 and gd != 1)]
        out = self.reduce_sum(g, axes, keepdims=True)
        if tuple(d for i, d in enumerate(g_shape) if i not in axes) != x_shape or lead:
            out = self.reshape(out, x_shape)
        return out

    def axis_matrix(self, g: str, g_shape: Sequence[int], axis: int, matrix: np.ndarray) -> str:
        """Apply the adjoint of a linear map along one axis: out[..i..] = sum_o g[..o..] M[o, i].

        matrix has shape (size of g along axis, size of the result along axis).
        """
        rank = len(g_shape)
        axis %= rank
        m = np.asarray(matrix, np.float32)
        if axis == rank - 1:
            return self.op("MatMul", [g, self.const(m)])
        if axis == rank - 2:
            return self.op("MatMul", [self.const(m.T.copy()), g])
        perm = [i for i in range(rank) if i != axis] + [axis]
        moved = self.op("MatMul", [self.transpose(g, perm), self.const(m)])
        inverse = list(np.argsort(perm))
        return self.transpose(moved, inverse)

    def sum(self, terms: Sequence[str]) -> str:
        if len(terms) == 1:
            return terms[0]
        if len(terms) == 2:
            return self.add(terms[0], terms[1])
        return self.op("Sum", list(terms))
