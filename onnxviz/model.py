"""Load an ONNX model safely and summarize it: inputs and their contract, outputs, layers.

Third-party files are untrusted: loading caps the size, confines external data to the model's
folder, turns every parse or checker failure into one line, and names ops from custom domains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper

from .errors import ModelLoadError, OnnxvizError
from .graph import LAYER_OPS, Graph, NotConstant

DEFAULT_MAX_BYTES = 4 << 30
# Domains onnxruntime runs out of the box (standard ops and its own contrib ops).
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                           "ai.onnx.preview.training", "com.ms.internal.nhwc"})
PASS_THROUGH_NORMALIZE = ("Cast", "Identity", "Transpose")


def default_model_path() -> Path:
    """The embedded default: a small CNN trained by the project on scikit-learn's digits."""
    return Path(str(resources.files("onnxviz") / "data" / "digits_cnn.onnx"))


def default_image_path() -> Path:
    """A held-out test digit shipped with the package, for the default model."""
    return Path(str(resources.files("onnxviz") / "data" / "digit.png"))


def default_images_dir() -> Path:
    """100 held-out test digits shipped with the package: the default model's example folder."""
    return Path(str(resources.files("onnxviz") / "data" / "digits"))


@dataclass(eq=False)
class Model:
    """A loaded, checked model: the proto plus where it came from."""

    proto: onnx.ModelProto
    path: Path | None
    sha256: str
    file_size: int
    is_default: bool = False

    @property
    def label(self) -> str:
        return self.path.name if self.path else "<in-memory model>"

    @functools.cached_property
    def graph(self) -> Graph:
        return Graph(self.proto)

    @functools.cached_property
    def summary(self) -> ModelSummary:
        return summarize(self)

    @functools.cached_property
    def custom_ops(self) -> list[tuple[str, str, str]]:
        """(domain, op_type, node name) of nodes in domains onnxruntime does not know."""
        g = self.graph
        return [(n.domain, n.op_type, g.names[i]) for i, n in enumerate(g.nodes)
                if n.domain not in KNOWN_DOMAINS]


# ---------------------------------------------------------------- loading

def load_model(source: str | os.PathLike | bytes | onnx.ModelProto | Model | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES, check: bool = True) -> Model:
    """Load and check a model from a path, bytes or a ModelProto (None: the embedded default)."""
    if isinstance(source, Model):
        return source
    if source is None:
        model = load_model(default_model_path(), max_bytes, check)
        model.is_default = True
        return model
    if isinstance(source, onnx.ModelProto):
        _refuse_unloaded_external(source, "an in-memory ModelProto")
        data = source.SerializeToString()
        if check:
            _run_checker(source, "the model")
        return Model(source, None, hashlib.sha256(data).hexdigest(), len(data))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), max_bytes, "the model bytes")
        proto = _parse(data, "the model bytes")
        _refuse_unloaded_external(proto, "model bytes")
        if check:
            _run_checker(proto, "the model bytes")
        return Model(proto, None, hashlib.sha256(data).hexdigest(), len(data))
    return _load_path(Path(source), max_bytes, check)


def _load_path(path: Path, max_bytes: int, check: bool) -> Model:
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not an .onnx file (a TensorFlow SavedModel? "
                             "convert it with tf2onnx first)")
    if not path.is_file():
        raise ModelLoadError(f"no such model file: {path}")
    size = path.stat().st_size
    _check_size(size, max_bytes, str(path))
    data = path.read_bytes()
    proto = _parse(data, str(path))
    external = _external_tensors(proto)
    total = size
    if external:
        total += _confine_external_data(proto, external, path, max_bytes - size)
        try:
            external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise ModelLoadError(f"cannot read the external data of {path}: "
                                 f"{_first_line(exc)}") from None
    if check:
        _run_checker(proto, str(path))
    return Model(proto, path, hashlib.sha256(data).hexdigest(), total)


def _check_size(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise ModelLoadError(f"{what} is {size:,} bytes, over the limit of {max_bytes:,}; "
                             "pass --max-bytes N (max_bytes= in the API) if you trust it")


_SIGNATURES = (
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pth checkpoint?); export it with "
                    "torch.onnx.export first"),
    (b"\x89HDF", "an HDF5 file (a Keras .h5 model?); convert it with tf2onnx first"),
    (b"\x89PNG", "a PNG image, not a model"),
    (b"\xff\xd8\xff", "a JPEG image, not a model"),
    (b"\x80\x02", "a Python pickle, not an ONNX model"),
)


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    for magic, meaning in _SIGNATURES:
        if data.startswith(magic):
            raise ModelLoadError(f"{what} is {meaning}")
    if data[4:8] == b"TFL3":
        raise ModelLoadError(f"{what} is a TensorFlow Lite model; convert it with tf2onnx first")
    if not data:
        raise ModelLoadError(f"{what} is empty")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:
        raise ModelLoadError(f"{what} is not a valid ONNX file (protobuf: {_first_line(exc)}); "
                             "is it truncated or another format?") from None
    if not proto.HasField("graph") or not proto.graph.node or proto.ir_version <= 0:
        raise ModelLoadError(f"{what} is not an ONNX model (no graph or no IR version); "
                             "is it truncated or another format?")
    _check_integrity(proto, what)
    return proto


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for a in node.attribute:
            for sub in [a.g] if a.HasField("g") else []:
                yield from _graphs(sub)
            for sub in a.graphs:
                yield from _graphs(sub)


def _tensor_byte_mismatch(t: onnx.TensorProto) -> str | None:
    """Why a tensor's raw data cannot match its dims, or None (external data: checked later)."""
    if t.data_location == onnx.TensorProto.EXTERNAL or not t.HasField("raw_data"):
        return None
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:
        return None
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return None
    expected = int(np.prod(t.dims, dtype=np.float64)) * itemsize
    if len(t.raw_data) != expected:
        return f"holds {len(t.raw_data)} bytes where its shape {list(t.dims)} needs {expected}"
    return None


_DATA_TYPES = frozenset(onnx.TensorProto.DataType.values())


def _check_integrity(proto: onnx.ModelProto, what: str) -> None:
    """Catch damage the checker lets through: undecodable names, tensors of the wrong size."""
    for graph in _graphs(proto.graph):
        tensors = list(graph.initializer)
        names = [graph.name]
        for node in graph.node:
            names += [node.name, node.op_type, node.domain, *node.input, *node.output]
            tensors += [a.t for a in node.attribute if a.HasField("t")]
        infos = (*graph.input, *graph.output, *graph.value_info)
        names += [v.name for v in infos]
        bad_type = next((v.name for v in infos if v.type.HasField("tensor_type")
                         and v.type.tensor_type.elem_type not in _DATA_TYPES), None)
        bad_type = bad_type or next((t.name for t in tensors if t.data_type not in _DATA_TYPES),
                                    None)
        if bad_type is not None:
            raise ModelLoadError(f"{what} is corrupt: {bad_type!r} has an unknown data type")
        for t in tensors:
            names += [t.name, *(x for e in t.external_data for x in (e.key, e.value))]
            problem = _tensor_byte_mismatch(t)
            if problem:
                raise ModelLoadError(f"{what} is corrupt: tensor {t.name!r} {problem}")
        if any(not isinstance(n, str) for n in names):
            raise ModelLoadError(f"{what} is corrupt: it contains names that are not valid UTF-8")


def _external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in external_data_helper._get_all_tensors(proto)
            if external_data_helper.uses_external_data(t)]


def _refuse_unloaded_external(proto: onnx.ModelProto, what: str) -> None:
    if _external_tensors(proto):
        raise ModelLoadError(f"{what} refers to external data files, which need the model's "
                             "folder; pass the path of the .onnx file instead")


def _confine_external_data(proto: onnx.ModelProto, tensors: list[onnx.TensorProto],
                           path: Path, budget: int) -> int:
    """Check every external location stays inside the model's folder; return the bytes used."""
    folder = path.parent.resolve()
    files: dict[Path, int] = {}
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        parts = Path(loc).parts
        if not loc or os.path.isabs(loc) or Path(loc).drive or ".." in parts or "\\" in loc:
            raise ModelLoadError(f"refusing external data location {loc!r} of tensor {t.name!r}: "
                                 "it must be a plain relative path inside the model's folder")
        target = (folder / loc).resolve()
        if not target.is_relative_to(folder):
            raise ModelLoadError(f"refusing external data {loc!r} of tensor {t.name!r}: it leads "
                                 f"outside {folder} (a symlink?)")
        if not target.is_file():
            raise ModelLoadError(f"external data file {loc!r} of tensor {t.name!r} is missing; "
                                 "keep it next to the .onnx file")
        size = target.stat().st_size
        offset, length = int(info.get("offset", 0)), info.get("length")
        if length is not None and offset + int(length) > size:
            raise ModelLoadError(f"external data of tensor {t.name!r} runs past the end of "
                                 f"{loc!r} (truncated file?)")
        files[target] = size
    used = sum(files.values())
    if used > budget:
        raise ModelLoadError(f"the model's external data is {used:,} bytes, over the size limit; "
                             "pass --max-bytes N if you trust it")
    return used


def _run_checker(proto: onnx.ModelProto, what: str) -> None:
    try:
        if proto.ByteSize() < (2 << 30) - 1:
            onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(f"{what} fails the ONNX checker: {_first_line(exc)} "
                             "(a corrupt file or a buggy exporter)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = next((x.strip() for x in text if x.strip()), type(exc).__name__)
    return line[:300]


# ---------------------------------------------------------------- summary

Dim = int | str | None


@dataclass
class TensorInfo:
    name: str
    shape: list[Dim] | None
    dtype: str


@dataclass
class NormStep:
    """An elementwise op with a constant right after the input: x <op> value."""

    op: str
    value: list[float]


@dataclass
class InputContract(TensorInfo):
    """What the model expects of an image: layout, channels, size, built-in normalization."""

    layout: str | None = None  # "NCHW", "NHWC" or None (not an image input)
    layout_reason: str = ""
    channels: int | None = None
    height: Dim = None
    width: Dim = None
    normalization: list[NormStep] = field(default_factory=list)
    color_order: str | None = None  # "RGB", "BGR" or None (unknown)
    color_order_reason: str = ""


@dataclass
class WeightStats:
    min: float
    max: float
    mean: float
    std: float
    zero_fraction: float
    zero_filters: int
    nonfinite: int


@dataclass
class LayerInfo:
    index: int
    name: str
    op: str
    weight: str | None
    weight_shape: list[int] | None
    output: str
    output_shape: list[Dim] | None
    params: int
    stats: WeightStats | None
    sees_image: bool
    note: str = ""


@dataclass
class ModelSummary:
    file: str
    file_size: int
    sha256: str
    producer: str
    producer_version: str
    ir_version: int
    opsets: dict[str, int]
    params: int
    inputs: list[InputContract]
    outputs: list[TensorInfo]
    layers: list[LayerInfo]
    first_layer: str | None
    custom_ops: list[str]
    metadata: dict[str, str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def layer(self, name: str) -> LayerInfo | None:
        return next((x for x in self.layers if x.name == name), None)


def dtype_name(elem_type: int) -> str:
    try:
        return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:
        names = {v: k for k, v in onnx.TensorProto.DataType.items()}
        return names.get(elem_type, f"type{elem_type}").lower()


def _value_info_shape(vi: onnx.ValueInfoProto) -> list[Dim] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def inferred_shapes(proto: onnx.ModelProto) -> dict[str, tuple[list[Dim] | None, str]]:
    """Tensor name -> (shape, dtype) from ONNX shape inference (best effort, never raises)."""
    known: dict[str, tuple[list[Dim] | None, str]] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        graph = inferred.graph
    except Exception:
        graph = proto.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.HasField("tensor_type"):
            known[vi.name] = (_value_info_shape(vi), dtype_name(vi.type.tensor_type.elem_type))
    return known


def summarize(model: Model) -> ModelSummary:
    """Everything `inspect` prints, as data."""
    g = model.graph
    proto = model.proto
    shapes = inferred_shapes(proto)
    layers = find_layers(g, shapes)
    first = first_layer(g, layers)
    inputs = [input_contract(g, vi, layers) for vi in g.inputs]
    outputs = [TensorInfo(o.name, _value_info_shape(o), dtype_name(o.type.tensor_type.elem_type))
               for o in g.outputs]
    return ModelSummary(
        file=model.label,
        file_size=model.file_size,
        sha256=model.sha256,
        producer=proto.producer_name,
        producer_version=proto.producer_version,
        ir_version=proto.ir_version,
        opsets=dict(g.opsets),
        params=parameter_count(g),
        inputs=inputs,
        outputs=outputs,
        layers=layers,
        first_layer=first.name if first else None,
        custom_ops=[f"{d}::{op} (node {n})" for d, op, n in model.custom_ops],
        metadata={p.key: p.value for p in proto.metadata_props},
    )


def parameter_count(g: Graph) -> int:
    """Elements of floating-point and 8-bit constant tensors (weights, not shape constants)."""
    weight_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                    onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    total = sum(int(np.prod(t.dims)) for t in g.initializers.values()
                if t.data_type in weight_types)
    for node in g.nodes:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in weight_types:
                    total += int(np.prod(a.t.dims))
    return total


def _layer_weight_input(g: Graph, node: onnx.NodeProto) -> tuple[str | None, int]:
    """(weight tensor, index of the data input) of a layer node, or (None, -1)."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose", "ConvInteger"):
        return node.input[1], 0
    if op == "QLinearConv":
        return node.input[3], 0
    if op == "Gemm":
        return (node.input[1], 0) if g.is_constant(node.input[1]) else (None, -1)
    if op in ("MatMul", "MatMulInteger"):
        if g.is_constant(node.input[1]) and not g.is_constant(node.input[0]):
            return node.input[1], 0
        if g.is_constant(node.input[0]) and not g.is_constant(node.input[1]):
            return node.input[0], 1
        return None, -1
    if op == "QLinearMatMul" and g.is_constant(node.input[3]) and not g.is_constant(node.input[0]):
        return node.input[3], 0
    return None, -1


def find_layers(g: Graph, shapes: dict | None = None) -> list[LayerInfo]:
    """Conv-like and dense layers with constant weights, in topological (graph) order."""
    from .weights import filter_rows, layer_weight_array  # weights needs model's types only

    shapes = shapes or {}
    image_inputs = {vi.name for vi in g.inputs}
    reach = image_reach(g, image_inputs)
    layers: list[LayerInfo] = []
    for i, node in enumerate(g.nodes):
        if node.op_type not in LAYER_OPS or node.domain not in ("", "ai.onnx"):
            continue
        weight, data_idx = _layer_weight_input(g, node)
        if weight is None:
            continue
        note = ""
        stats = None
        wshape = None
        try:
            w = layer_weight_array(g, i)
            wshape = list(w.shape)
            stats = weight_stats(w, filter_rows(node, w))
        except NotConstant as exc:
            note = f"weights not constant: folding stops at {exc.stopper}"
        except OnnxvizError as exc:
            note = str(exc)
        out = node.output[0]
        out_shape = shapes.get(out, (None, ""))[0]
        layers.append(LayerInfo(
            index=len(layers), name=g.names[i], op=node.op_type, weight=weight,
            weight_shape=wshape, output=out, output_shape=out_shape,
            params=_params(g, node, wshape), stats=stats,
            sees_image=node.input[data_idx] in reach, note=note,
        ))
    return layers


def _params(g: Graph, node: onnx.NodeProto, wshape: list[int] | None) -> int:
    n = int(np.prod(wshape)) if wshape else 0
    bias_idx = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2, "QLinearConv": 8}.get(node.op_type)
    if bias_idx is not None and len(node.input) > bias_idx and node.input[bias_idx]:
        with contextlib.suppress(NotConstant):
            n += int(g.constant(node.input[bias_idx]).size)
    return n


def weight_stats(w: np.ndarray, rows: np.ndarray) -> WeightStats:
    """Statistics of a weight tensor; `rows` is the same weights one row per output unit
    (`weights.filter_rows`), for counting all-zero filters."""
    w = np.asarray(w, dtype=np.float64)
    finite = np.isfinite(w)
    wf = w[finite]
    nan = float("nan")
    return WeightStats(
        min=float(wf.min()) if wf.size else nan,
        max=float(wf.max()) if wf.size else nan,
        mean=float(wf.mean()) if wf.size else nan,
        std=float(wf.std()) if wf.size else nan,
        zero_fraction=float((w == 0).mean()) if w.size else nan,
        zero_filters=int((~np.any(rows != 0, axis=1)).sum()),
        nonfinite=int((~finite).sum()),
    )


def image_reach(g: Graph, inputs: set[str]) -> set[str]:
    """Tensors computed from the inputs without passing through a layer (what 'sees the image')."""
    reach = set(inputs)
    for node in g.nodes:
        if node.op_type in LAYER_OPS:
            continue
        if any(x in reach for x in node.input if x):
            reach.update(o for o in node.output if o)
    return reach


def first_layer(g: Graph, layers: list[LayerInfo]) -> LayerInfo | None:
    """The first conv that sees the image, else the first dense layer that does."""
    seeing = [x for x in layers if x.sees_image]
    convs = [x for x in seeing if x.op in ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")]
    if convs:
        return convs[0]
    return seeing[0] if seeing else None


# ---------------------------------------------------------------- input contract

_CAFFE_BGR = np.array([103.939, 116.779, 123.68])
_IMAGENET_RGB = np.array([0.485, 0.456, 0.406])


def _single_consumer(g: Graph, tensor: str) -> onnx.NodeProto | None:
    users = g.consumers.get(tensor, [])
    return g.nodes[users[0]] if len(users) == 1 else None


def input_contract(g: Graph, vi: onnx.ValueInfoProto, layers: list[LayerInfo]) -> InputContract:
    """Infer layout, channels, size, built-in normalization and color order of one input."""
    shape = _value_info_shape(vi)
    dtype = dtype_name(vi.type.tensor_type.elem_type)
    c = InputContract(vi.name, shape, dtype)
    if shape is None or len(shape) != 4 or not dtype.startswith(("float", "uint8", "int8")):
        c.layout_reason = "not a rank-4 image tensor"
        return c
    c.layout, c.layout_reason = _layout(g, vi.name, shape)
    ch_axis, h_axis, w_axis = (1, 2, 3) if c.layout == "NCHW" else (3, 1, 2)
    c.height, c.width = shape[h_axis], shape[w_axis]
    c.channels = shape[ch_axis] if isinstance(shape[ch_axis], int) else _channels_from_conv(
        g, vi.name, layers)
    c.normalization = _normalization(g, vi.name)
    c.color_order, c.color_order_reason = _color_order(g, c)
    return c


def _layout(g: Graph, name: str, shape: list[Dim]) -> tuple[str, str]:
    tensor = name
    for _ in range(8):
        node = _single_consumer(g, tensor)
        if node is None:
            break
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm == [0, 3, 1, 2]:
                return "NHWC", "a Transpose to NCHW follows the input"
            if perm == [0, 2, 3, 1]:
                return "NCHW", "a Transpose to NHWC follows the input"
            break
        if node.op_type in ("Conv", "QLinearConv", "ConvInteger", "MaxPool", "AveragePool"):
            return "NCHW", f"the input feeds a {node.op_type} (NCHW in ONNX)"
        if node.op_type not in ("Cast", "Identity", "Sub", "Div", "Mul", "Add",
                                "QuantizeLinear", "DequantizeLinear", "Pad"):
            break
        tensor = node.output[0]

    def small(d: Dim) -> bool:
        return isinstance(d, int) and d in (1, 2, 3, 4)

    if small(shape[1]) and not small(shape[3]):
        return "NCHW", f"dimension 1 ({shape[1]}) looks like channels"
    if small(shape[3]) and not small(shape[1]):
        return "NHWC", f"dimension 3 ({shape[3]}) looks like channels"
    return "NCHW", "ONNX's default layout (shape alone does not tell)"


def _channels_from_conv(g: Graph, name: str, layers: list[LayerInfo]) -> int | None:
    first = first_layer(g, layers)
    if first is None or not first.weight_shape or first.op not in ("Conv", "QLinearConv",
                                                                     "ConvInteger"):
        return None
    node = g.nodes[g.node_index[first.name]]
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return first.weight_shape[1] * group


def _normalization(g: Graph, name: str) -> list[NormStep]:
    steps: list[NormStep] = []
    tensor = name
    for _ in range(8):
        node = _single_consumer(g, tensor)
        if node is None:
            break
        if node.op_type in PASS_THROUGH_NORMALIZE:
            tensor = node.output[0]
            continue
        if node.op_type not in ("Sub", "Div", "Mul", "Add"):
            break
        other = [x for x in node.input if x != tensor]
        if len(other) != 1 or not g.is_constant(other[0]):
            break
        value = np.asarray(g.constant(other[0]), dtype=np.float64).ravel()
        if value.size > 16:
            break
        op = node.op_type
        if node.input[0] != tensor:  # c - x or c / x
            op = {"Sub": "RSub", "Div": "RDiv"}.get(op, op)
        steps.append(NormStep(op, [round(float(v), 6) for v in value]))
        tensor = node.output[0]
    return steps


def _color_order(g: Graph, c: InputContract) -> tuple[str | None, str]:
    for p in g.model.metadata_props:
        text = f"{p.key}={p.value}".lower()
        if "bgr" in text:
            return "BGR", f"model metadata {p.key!r}"
        if "rgb" in text:
            return "RGB", f"model metadata {p.key!r}"
    if c.channels != 3:
        return None, "not a 3-channel input"
    for step in c.normalization:
        v = np.abs(np.array(step.value))
        if v.size != 3:
            continue
        for ref, ref_name in ((_CAFFE_BGR, "caffe"), (_IMAGENET_RGB, "ImageNet"),
                              (_IMAGENET_RGB * 255, "ImageNet")):
            if np.allclose(v, ref, rtol=0.02):
                order = "BGR" if ref_name == "caffe" else "RGB"
                return order, f"{ref_name} channel means in {order} order in the graph"
            if np.allclose(v, ref[::-1], rtol=0.02):
                order = "RGB" if ref_name == "caffe" else "BGR"
                return order, f"{ref_name} channel means in {order} order in the graph"
    return None, "unknown (most exporters expect RGB)"
