"""expose_tensors: a copy with extra outputs; original outputs bit-identical; exposed values equal
the ONNX reference evaluator's; every refusal is one clear line.

The small models are built here with onnx.helper; `test_features.py` reuses the builders.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxviz.errors import OnnxvizError, UnknownNameError
from onnxviz.features import all_taps, default_taps
from onnxviz.model import load_model
from onnxviz.rewrite import expose_tensors, input_dependent
from onnxviz.runtime import make_session, run

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


# ---------------------------------------------------------------- model builders

def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(arr, name)


def _make(nodes, inputs, outputs, inits, opset: int = 17, ir: int | None = None,
          value_info=(), extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits,
                              value_info=list(value_info))
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxviz-tests")
    model.ir_version = ir or min(model.ir_version, 9)
    return model


def activation_nodes(act: str, x: str, out: str) -> tuple[list, list]:
    """Nodes computing out = act(x), and the initializers they need."""
    if act == "relu":
        return [helper.make_node("Relu", [x], [out])], []
    if act == "leakyrelu":
        return [helper.make_node("LeakyRelu", [x], [out], alpha=0.1)], []
    if act == "clip":
        return [helper.make_node("Clip", [x, "c_lo", "c_hi"], [out])], [
            _init("c_lo", np.array(0, np.float32)), _init("c_hi", np.array(6, np.float32))]
    if act == "silu":
        return [helper.make_node("Sigmoid", [x], [x + "_sig"]),
                helper.make_node("Mul", [x, x + "_sig"], [out])], []
    if act == "hardswish":
        return [helper.make_node("HardSwish", [x], [out])], []
    if act == "hardswish_decomposed":
        return [helper.make_node("Add", [x, "hs_3"], [x + "_p3"]),
                helper.make_node("Clip", [x + "_p3", "hs_0", "hs_6"], [x + "_r6"]),
                helper.make_node("Mul", [x, x + "_r6"], [x + "_m"]),
                helper.make_node("Div", [x + "_m", "hs_6"], [out])], [
            _init("hs_3", np.array(3, np.float32)), _init("hs_0", np.array(0, np.float32)),
            _init("hs_6", np.array(6, np.float32))]
    if act == "none":
        return [helper.make_node("Identity", [x], [out])], []
    raise ValueError(act)


def small_cnn(act: str = "relu", bn: bool = False, fp16: bool = False, layout: str = "NCHW",
              dynamic: bool = False, channels: int = 3, size: int = 12, seed: int = 0,
              strip_value_info: bool = True) -> onnx.ModelProto:
    """image -> [Transpose] -> conv1 (4 filters) -> [bn1] -> act -> conv2 (6, stride 2) -> relu2
    -> GlobalAveragePool -> Flatten -> fc (Gemm 6 -> 3) -> y."""
    rng = np.random.default_rng(seed)
    dt = np.float16 if fp16 else np.float32
    elem = F16 if fp16 else F32
    h = w = "H" if dynamic else size
    shape = (["N", channels, h, w] if layout == "NCHW" else ["N", h, w, channels])
    nodes, inits = [], []
    x = "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    inits += [_init("w1", (rng.standard_normal((4, channels, 3, 3)) * 0.5).astype(dt)),
              _init("b1", (rng.standard_normal(4) * 0.1).astype(dt)),
              _init("w2", (rng.standard_normal((6, 4, 3, 3)) * 0.3).astype(dt)),
              _init("b2", (rng.standard_normal(6) * 0.1).astype(dt)),
              _init("wf", (rng.standard_normal((3, 6)) * 0.5).astype(dt)),
              _init("bf", np.zeros(3, dt))]
    nodes.append(helper.make_node("Conv", [x, "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1],
                                  name="conv1"))
    pre = "conv1"
    if bn:
        inits += [_init("bn_s", (1 + 0.1 * rng.standard_normal(4)).astype(dt)),
                  _init("bn_b", (0.1 * rng.standard_normal(4)).astype(dt)),
                  _init("bn_m", (0.1 * rng.standard_normal(4)).astype(dt)),
                  _init("bn_v", (1 + 0.1 * rng.random(4)).astype(dt))]
        nodes.append(helper.make_node("BatchNormalization", ["conv1", "bn_s", "bn_b", "bn_m",
                                                             "bn_v"], ["bn1"], name="bn1"))
        pre = "bn1"
    act_nodes, act_inits = activation_nodes(act, pre, "act1")
    nodes += act_nodes
    inits += act_inits
    nodes += [helper.make_node("Conv", ["act1", "w2", "b2"], ["conv2"], pads=[1, 1, 1, 1],
                               strides=[2, 2], name="conv2"),
              helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
              helper.make_node("GlobalAveragePool", ["relu2"], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
              helper.make_node("Gemm", ["flat", "wf", "bf"], ["y"], transB=1, name="fc")]
    model = _make(nodes, [helper.make_tensor_value_info("image", elem, shape)],
                  [helper.make_tensor_value_info("y", elem, ["N", 3])], inits)
    if not strip_value_info:
        model = onnx.shape_inference.infer_shapes(model)
    return model


def qdq_cnn(seed: int = 0) -> onnx.ModelProto:
    """QDQ: x -> Q -> DQ -> Conv (int8 weights through DQ) -> Relu -> Q -> DQ -> Conv -> y."""
    rng = np.random.default_rng(seed)
    f = lambda v: np.array(v, np.float32)  # noqa: E731
    inits = [
        _init("x_s", f(1 / 255)), _init("x_z", np.array(0, np.uint8)),
        _init("w1_q", rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)),
        _init("w1_s", f(0.005)), _init("w_z", np.array(0, np.int8)),
        _init("a_s", f(0.02)), _init("a_z", np.array(0, np.uint8)),
        _init("w2_q", rng.integers(-100, 100, (2, 4, 1, 1)).astype(np.int8)),
        _init("w2_s", f(0.01)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "w_z"], ["w1"]),
        helper.make_node("Conv", ["x_dq", "w1"], ["conv1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("QuantizeLinear", ["relu1", "a_s", "a_z"], ["relu1_q"], name="q1"),
        helper.make_node("DequantizeLinear", ["relu1_q", "a_s", "a_z"], ["relu1_dq"], name="dq1"),
        helper.make_node("DequantizeLinear", ["w2_q", "w2_s", "w_z"], ["w2"]),
        helper.make_node("Conv", ["relu1_dq", "w2"], ["y"], name="conv2"),
    ]
    return _make(nodes, [helper.make_tensor_value_info("x", F32, [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("y", F32, [1, 2, 8, 8])], inits, opset=19)


def if_model() -> onnx.ModelProto:
    """x -> conv -> relu -> If(cond: then Neg, else Abs inside subgraphs) -> y."""
    rng = np.random.default_rng(1)
    then_g = helper.make_graph([helper.make_node("Neg", ["r"], ["inner_then"])], "then", [],
                               [helper.make_tensor_value_info("inner_then", F32, None)])
    else_g = helper.make_graph([helper.make_node("Abs", ["r"], ["inner_else"])], "else", [],
                               [helper.make_tensor_value_info("inner_else", F32, None)])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("If", ["cond"], ["branch"], then_branch=then_g,
                              else_branch=else_g, name="if"),
             helper.make_node("Add", ["branch", "r"], ["y"], name="add")]
    inits = [_init("w", rng.standard_normal((2, 1, 3, 3)).astype(np.float32))]
    return _make(nodes, [helper.make_tensor_value_info("x", F32, [1, 1, 6, 6]),
                         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                 [helper.make_tensor_value_info("y", F32, [1, 2, 6, 6])], inits)


def two_input_model() -> onnx.ModelProto:
    """image [1, 3, 8, 8] and gain [1, 4, 1, 1]: conv -> * gain -> relu -> y."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Mul", ["c", "gain"], ["g"], name="mul"),
             helper.make_node("Relu", ["g"], ["y"], name="relu")]
    inits = [_init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))]
    return _make(nodes, [helper.make_tensor_value_info("image", F32, [1, 3, 8, 8]),
                         helper.make_tensor_value_info("gain", F32, [1, 4, 1, 1])],
                 [helper.make_tensor_value_info("y", F32, [1, 4, 8, 8])], inits)


def reference_values(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    """Every intermediate value, from the ONNX reference evaluator. Its (De)QuantizeLinear
    exist from opset 19 on; older QDQ models are run as opset 19 (same semantics here)."""
    ops = {n.op_type for n in model.graph.node}
    default = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if ops & {"QuantizeLinear", "DequantizeLinear"} and default is not None \
            and default.version < 19:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        next(o for o in model.opset_import if o.domain in ("", "ai.onnx")).version = 19
    return ReferenceEvaluator(model).run(None, feeds, intermediate=True)


def _image(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


def _outputs(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output]


def check_exposed(model: onnx.ModelProto, names: list[str], feeds: dict,
                  optimization: str = "all", reference: bool = True, rtol=1e-4, atol=1e-5):
    """The core property: original outputs bit-identical; exposed values = reference's."""
    originals = _outputs(model)
    before = model.SerializeToString()
    exposed = expose_tensors(model, names, exact=True)
    assert model.SerializeToString() == before, "expose_tensors must not modify its input"
    ref_out = run(make_session(model, optimization=optimization), feeds, originals)
    got = run(make_session(exposed, optimization=optimization), feeds,
              [*originals, *names])
    for a, b in zip(ref_out, got[:len(originals)], strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=True), "original outputs changed"
    values = dict(zip(names, got[len(originals):], strict=True))
    if reference:
        ref = reference_values(model, feeds)
        for name, v in values.items():
            np.testing.assert_allclose(v.astype(np.float64), np.asarray(ref[name], np.float64),
                                       rtol=rtol, atol=atol, err_msg=name)
    return exposed, values


# ---------------------------------------------------------------- the property on fixtures

def test_default_model_every_tensor_bit_identical_and_matches_reference():
    m = load_model(None)
    names = sorted({t.tensor for t in all_taps(m, every=True)}
                   | {t.tensor for t in default_taps(m)} - set(_outputs(m.proto)))
    assert {"conv1", "relu1", "pool2", "relu3", "relu4"} <= set(names)
    feeds = {"image": _image((1, 1, 32, 32))}
    # default (post-activation) taps and --all keep onnxruntime's fusions: identical with all
    # graph optimizations
    check_exposed(m.proto, [t.tensor for t in default_taps(m) if t.tensor != "logits"], feeds)
    check_exposed(m.proto, [t.tensor for t in all_taps(m)], feeds)
    # any selection is identical when both run the same kernels (no graph rewriting by ORT)
    exposed, _ = check_exposed(m.proto, names, feeds, optimization="disable")
    onnx.checker.check_model(exposed)
    assert [o.name for o in exposed.graph.output] == ["logits", *names]
    assert all(o.type.tensor_type.elem_type == F32 for o in exposed.graph.output)


@pytest.mark.parametrize("act", ["relu", "leakyrelu", "clip", "silu", "hardswish",
                                 "hardswish_decomposed"])
@pytest.mark.parametrize("bn", [False, True])
def test_small_cnn_exposes_every_tensor(act, bn):
    model = small_cnn(act=act, bn=bn)
    m = load_model(model)
    feeds = {"image": _image((1, 3, 12, 12))}
    live = sorted(input_dependent(m.graph) - {"image", "y"})
    check_exposed(model, live, feeds, optimization="disable")
    check_exposed(model, [t.tensor for t in default_taps(m) if t.tensor != "y"], feeds)
    check_exposed(model, [t.tensor for t in all_taps(m)], feeds)


def test_nhwc_dynamic_without_value_info_gets_typed_outputs():
    model = small_cnn(layout="NHWC", dynamic=True)
    assert not model.graph.value_info
    feeds = {"image": _image((2, 20, 20, 3))}
    exposed, values = check_exposed(model, ["nchw", "act1", "relu2", "flat"], feeds)
    onnx.checker.check_model(exposed)
    shapes = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]
              for o in exposed.graph.output}
    assert shapes["nchw"][1] == 3 and shapes["relu2"][1] == 6 and len(shapes["flat"]) == 2
    assert values["nchw"].shape == (2, 3, 20, 20)
    np.testing.assert_array_equal(values["nchw"], feeds["image"].transpose(0, 3, 1, 2))


def test_fp16_model():
    model = small_cnn(fp16=True)
    feeds = {"image": _image((1, 3, 12, 12), dtype=np.float16)}
    exposed, values = check_exposed(model, ["conv1", "act1", "relu2"], feeds, rtol=2e-2,
                                    atol=2e-2)
    assert values["act1"].dtype == np.float16
    assert exposed.graph.output[1].type.tensor_type.elem_type == F16


def test_qdq_model_integer_tensor_and_fusions_kept():
    model = qdq_cnn()
    feeds = {"x": _image((1, 3, 8, 8))}
    _, values = check_exposed(model, ["relu1_q"], feeds, rtol=0, atol=1)
    assert values["relu1_q"].dtype == np.uint8
    check_exposed(model, ["x_q", "relu1_q", "relu1_dq", "conv1"], feeds,
                  optimization="disable", rtol=0, atol=1e-5)


def test_if_graph_main_tensors_exposed_subgraph_tensor_refused():
    model = if_model()
    for cond in (True, False):
        feeds = {"x": _image((1, 1, 6, 6)), "cond": np.array(cond)}
        check_exposed(model, ["c", "r", "branch"], feeds)
    with pytest.raises(OnnxvizError, match="subgraph") as err:
        expose_tensors(model, ["inner_then"])
    assert "\n" not in str(err.value)


def test_names_resolve_dedupe_and_existing_outputs():
    m = load_model(None)
    # a node name means its first output; repeated names and existing outputs are not duplicated
    exposed = expose_tensors(m, ["pool1", "pool1", "logits", "fc2"])
    assert [o.name for o in exposed.graph.output] == ["logits", "pool1"]
    node_named = small_cnn()
    exposed = expose_tensors(node_named, ["gap"])  # node "gap" -> tensor "gap"
    assert exposed.graph.output[-1].name == "gap"


def test_refusals_are_one_line_with_a_reason():
    m = load_model(None)
    with pytest.raises(UnknownNameError, match=r"Did you mean: .*relu1") as err:
        expose_tensors(m, ["relu_1"])
    assert "onnxviz inspect" in str(err.value)
    with pytest.raises(OnnxvizError, match="graph input"):
        expose_tensors(m, ["image"])
    weight = next(iter(m.graph.initializers))
    with pytest.raises(OnnxvizError, match="initializer"):
        expose_tensors(m, [weight])
    # a tensor made from constants only (a Constant node, shape arithmetic) is refused too
    model = small_cnn()
    ones = numpy_helper.from_array(np.ones(2, np.float32))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["k"], name="konst", value=ones))
    model.graph.node.insert(1, helper.make_node("Mul", ["k", "k"], ["k2"], name="kk"))
    for name in ("k", "k2", "konst"):
        with pytest.raises(OnnxvizError, match="constant") as err:
            expose_tensors(model, [name])
        assert "\n" not in str(err.value)


def test_untyped_output_where_inference_fails():
    """A contrib op ONNX shape inference does not know: its consumer's output stays untyped and
    still runs in onnxruntime."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("FastGelu", ["c"], ["g"], domain="com.microsoft", name="gelu"),
             helper.make_node("Relu", ["g"], ["r"], name="relu"),
             helper.make_node("Neg", ["r"], ["y"], name="neg")]
    model = _make(nodes, [helper.make_tensor_value_info("x", F32, [1, 1, 5, 5])],
                  [helper.make_tensor_value_info("y", F32, None)],
                  [_init("w", rng.standard_normal((2, 1, 3, 3)).astype(np.float32))],
                  extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    exposed = expose_tensors(model, ["c", "r"])
    outs = {o.name: o for o in exposed.graph.output}
    assert outs["c"].type.tensor_type.elem_type == F32  # inference got this far
    assert not outs["r"].HasField("type")  # ... and no further: untyped
    x = _image((1, 1, 5, 5))
    c, r, y = run(make_session(exposed), {"x": x}, ["c", "r", "y"])
    gelu = c * 0.5 * (1 + np.tanh(0.7978845608 * (c + 0.044715 * c ** 3)))
    np.testing.assert_allclose(r, np.maximum(gelu, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(y, -r)


def test_external_data(tmp_path):
    model = small_cnn()
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").is_file()
    feeds = {"image": _image((1, 3, 12, 12))}
    # loaded through onnxviz: the data is inlined, the copy runs from bytes
    loaded = load_model(path)
    check_exposed(loaded.proto, ["act1", "relu2"], feeds)
    # a proto that still refers to its external file keeps the reference in the copy
    lazy = onnx.load(str(path), load_external_data=False)
    exposed = expose_tensors(lazy, ["act1"])
    assert any(t.data_location == TensorProto.EXTERNAL for t in exposed.graph.initializer)
    out_path = tmp_path / "exposed.onnx"
    onnx.save_model(exposed, str(out_path))
    import onnxruntime as ort

    got = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"]).run(
        ["y", "act1"], feeds)
    want = run(make_session(loaded.proto), feeds, ["y"])[0]
    assert np.array_equal(got[0], want)
    assert got[1].shape == (1, 4, 12, 12)


def test_old_ir_with_initializers_as_inputs():
    model = small_cnn()
    model.ir_version = 3
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 9))
    for init in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(
            init.name, init.data_type, list(init.dims)))
    feeds = {"image": _image((1, 3, 12, 12))}
    check_exposed(model, ["conv1", "act1", "relu2"], feeds)
    with pytest.raises(OnnxvizError, match="initializer"):
        expose_tensors(model, ["w1"])


# ---------------------------------------------------------------- real models

@pytest.mark.real
def test_ppocr_det_real_model(real_model):
    m = load_model(real_model("ppocr_det"))
    feeds = {m.summary.inputs[0].name: _image((1, 3, 96, 128))}
    originals = _outputs(m.proto)
    taps = [t.tensor for t in default_taps(m)]
    plain = run(make_session(m.proto), feeds, originals)
    exposed = expose_tensors(m, taps)
    got = run(make_session(exposed), feeds, [*originals, *taps])
    assert all(np.array_equal(a, b) for a, b in zip(plain, got, strict=False))
    values = dict(zip(taps, got[len(originals):], strict=True))
    # the last default tap is the model's own output: identical to the plain run
    assert taps[-1] == originals[0] and np.array_equal(values[taps[-1]], plain[0])
    # --all keeps the fusions too: identical with all optimizations
    some = [t.tensor for t in all_taps(m)]
    assert len(taps) < len(some) < 200
    got = run(make_session(expose_tensors(m, some, exact=True)), feeds, originals)
    assert all(np.array_equal(a, b) for a, b in zip(plain, got, strict=True))
    # exposing every tensor: identical when onnxruntime does not rewrite the graph
    every = [t.tensor for t in all_taps(m, every=True)]
    assert len(every) > 300
    plain0 = run(make_session(m.proto, optimization="disable"), feeds, originals)
    got0 = run(make_session(expose_tensors(m, every), optimization="disable"), feeds, originals)
    assert all(np.array_equal(a, b) for a, b in zip(plain0, got0, strict=True))


@pytest.mark.real
def test_yolov8n_real_model(real_model):
    m = load_model(real_model("yolov8n"))
    feeds = {"images": _image((1, 3, 160, 160))}
    originals = _outputs(m.proto)
    taps = [t.tensor for t in all_taps(m, every=True)]
    plain = run(make_session(m.proto), feeds, originals)
    got = run(make_session(expose_tensors(m, taps, exact=True)), feeds, [*originals, *taps])
    assert all(np.array_equal(a, b) for a, b in zip(plain, got, strict=False))
    values = dict(zip(taps, got[len(originals):], strict=True))
    # the SiLU taps equal x * sigmoid(x) of the exposed conv outputs
    conv, act = "/model.0/conv/Conv_output_0", "/model.0/act/Mul_output_0"
    c = values[conv].astype(np.float64)
    np.testing.assert_allclose(values[act], c / (1 + np.exp(-c)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the committed fixture models

def _fixture_paths():
    from conftest import FIXTURES

    return sorted((FIXTURES / "models").glob("*.onnx"))


def random_feeds(m) -> dict[str, np.ndarray]:
    """Random feeds for every input (dynamic dims 16; integer inputs 0..255)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for c in m.summary.inputs:
        shape = [d if isinstance(d, int) else 16 for d in c.shape]
        dt = np.dtype(c.dtype)
        feeds[c.name] = (rng.random(shape) * (255 if dt.kind in "ui" else 1)).astype(dt)
    return feeds


@pytest.mark.parametrize("path", _fixture_paths(), ids=lambda p: p.stem)
def test_fixture_models(path):
    m = load_model(path)
    feeds = random_feeds(m)
    originals = set(_outputs(m.proto))
    tol = 2e-3 if "fp16" in path.stem else 1e-4
    default = [t.tensor for t in default_taps(m) if t.tensor not in originals]
    if default:  # post-activation taps keep every fusion: identical with all optimizations
        check_exposed(m.proto, default, feeds, rtol=tol, atol=tol)
    kept = [t.tensor for t in all_taps(m) if t.tensor not in originals]
    if kept:  # so does --all
        check_exposed(m.proto, kept, feeds, rtol=tol, atol=tol)
    every = sorted({t.tensor for t in all_taps(m, every=True)} | set(default) - originals)
    if every:
        check_exposed(m.proto, every, feeds, optimization="disable", rtol=tol, atol=tol)
