"""Objectives: the target grammar, channel-axis detection, values, and every objective's seeds
(its gradient w.r.t. the activations) against central differences in float64."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxviz.errors import OnnxvizError, UnknownNameError
from onnxviz.model import load_model
from onnxviz.objectives import (
    Channel,
    ClassLogit,
    Direction,
    Diversity,
    LayerL2,
    Neuron,
    Objective,
    Sum,
    channel_axis,
    describe_axis,
    parse_target,
    parse_targets,
    per_item,
    split_target,
)


@pytest.fixture(scope="module")
def digits():
    return load_model(None)


# ---------------------------------------------------------------- grammar


def test_grammar_on_the_default_model(digits):
    (layer,) = parse_target("conv3", digits)
    assert isinstance(layer, LayerL2) and layer.tensor == "conv3"
    (ch,) = parse_target("relu2:5", digits)
    assert isinstance(ch, Channel) and (ch.tensor, ch.channel, ch.axis) == ("relu2", 5, 1)
    (logit,) = parse_target("logits:3", digits)
    assert isinstance(logit, ClassLogit) and logit.index == 3
    (neuron,) = parse_target("conv1:2@3,4", digits)
    assert isinstance(neuron, Neuron) and neuron.position == (3, 4) and neuron.channel == 2
    # a node name means its first output: node fc2 writes tensor "logits"
    (by_node,) = parse_target("fc2:1", digits)
    assert by_node.tensor == "logits"


def test_ranges_and_lists_expand(digits):
    assert [o.channel for o in parse_target("conv3:0-15", digits)] == list(range(16))
    assert [o.channel for o in parse_target("conv3:1,5,9", digits)] == [1, 5, 9]
    assert [o.channel for o in parse_target("conv3:0-2,7,1", digits)] == [0, 1, 2, 7]
    neurons = parse_target("conv2:0-2@1,1", digits)
    assert [(n.channel, n.position) for n in neurons] == [(0, (1, 1)), (1, (1, 1)), (2, (1, 1))]
    many = parse_targets(["logits:0-1", "conv3"], digits)
    assert [str(o) for o in many] == ["logits:0", "logits:1", "conv3"]


def test_names_with_colons_win_over_the_suffix():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("conv/Relu:0", TensorProto.FLOAT, [1, 2, 4, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["conv/Relu:0"], name="relu")],
                          "g", [x], [y])
    m = load_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    (whole,) = parse_target("conv/Relu:0", m)
    assert isinstance(whole, LayerL2) and whole.tensor == "conv/Relu:0"
    (ch,) = parse_target("conv/Relu:0:1", m)
    assert isinstance(ch, Channel) and ch.tensor == "conv/Relu:0" and ch.channel == 1
    assert split_target("a:b:3").name == "a:b"


@pytest.mark.parametrize("spec, words", [
    ("conv33:1", ["conv33", "Did you mean", "conv3"]),
    ("nonsense", ["nonsense", "inspect"]),
    ("conv3:64", ["channel 64", "64 channels", "0-63"]),
    ("logits:10", ["channel 10", "10 classes"]),
    ("conv3:x", ["bad target", "'x'"]),
    ("conv3:5-2", ["backwards"]),
    ("conv3:1@1", ["2 spatial axes"]),
    ("conv3:1@8,0", ["position 8", "size 8"]),
    ("", ["empty target"]),
    ("conv3@2", ["bad target"]),
    (":3", ["no tensor name"]),
])
def test_user_errors_are_one_line(digits, spec, words):
    with pytest.raises(OnnxvizError) as info:
        parse_target(spec, digits)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_unknown_name_is_an_unknown_name_error(digits):
    with pytest.raises(UnknownNameError):
        parse_target("relu9:1", digits)


# ---------------------------------------------------------------- channel axis


def _nhwc_model() -> onnx.ModelProto:
    """NHWC input (as TF exporters emit) -> Transpose to NCHW -> Conv -> Transpose back to
    NHWC -> Relu -> Add bias -> Transpose to NCHW again."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2], name="in_t"),
        helper.make_node("Conv", ["x_nchw", "w"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Transpose", ["conv"], ["conv_nhwc"], perm=[0, 2, 3, 1], name="out_t"),
        helper.make_node("Relu", ["conv_nhwc"], ["relu"], name="relu"),
        helper.make_node("Add", ["relu", "b"], ["biased"], name="add"),
        helper.make_node("Transpose", ["biased"], ["back"], perm=[0, 3, 1, 2], name="back_t"),
    ]
    g = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 8, 8, 3])], [helper.make_tensor_value_info(
            "back", TensorProto.FLOAT, ["N", 4, 8, 8])], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_channel_axis_follows_transposes_and_elementwise_ops():
    m = load_model(_nhwc_model())
    assert channel_axis(m, "conv")[0] == 1
    axis, reason = channel_axis(m, "conv_nhwc")
    assert axis == 3 and "Transpose" in reason
    assert channel_axis(m, "relu")[0] == 3  # through Relu
    assert channel_axis(m, "biased")[0] == 3  # through Add with a constant
    assert channel_axis(m, "back")[0] == 1  # transposed back to channels-first
    axis, reason = channel_axis(m, "x")
    assert axis == 3 and "NHWC" in reason
    (ch,) = parse_target("relu:2", m)
    assert ch.axis == 3 and "Transpose" in ch.axis_reason
    assert describe_axis(ch) and "axis 3" in describe_axis(ch)[0]
    with pytest.raises(OnnxvizError, match="4 channels"):
        parse_target("relu:4", m)  # range checked on the last axis, not on H


def test_nhwc_channel_objective_reads_the_last_axis():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 5, 6, 4))
    values = Channel("t", 3, axis=3).value({"t": a})
    np.testing.assert_allclose(values, a[..., 3].mean(axis=(1, 2)))
    n = Neuron("t", 1, (2, 4), axis=3).value({"t": a})
    np.testing.assert_allclose(n, a[:, 2, 4, 1])


def test_channel_axis_of_a_fixture_with_nhwc_input(fixture_models):
    m = load_model(fixture_models / "nhwc.onnx")
    assert channel_axis(m, "x")[0] == 3
    assert channel_axis(m, "conv")[0] == 1


# ---------------------------------------------------------------- values


def test_values_are_what_the_names_say():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 4, 5, 6))
    logits = rng.standard_normal((3, 7))
    acts = {"a": a, "logits": logits}
    np.testing.assert_allclose(Channel("a", 2).value(acts), a[:, 2].mean(axis=(1, 2)))
    np.testing.assert_allclose(ClassLogit("logits", 5).value(acts), logits[:, 5])
    np.testing.assert_allclose(Channel("logits", 5).value(acts), logits[:, 5])
    np.testing.assert_allclose(Neuron("a", 1, (4, 0)).value(acts), a[:, 1, 4, 0])
    np.testing.assert_allclose(LayerL2("a").value(acts), (a ** 2).mean(axis=(1, 2, 3)))
    v = rng.standard_normal(4)
    parallel = {"a": np.broadcast_to(v[None, :, None, None] * 3.0, a.shape)}
    np.testing.assert_allclose(Direction("a", v).value(parallel), 1.0, atol=1e-6)
    np.testing.assert_allclose(Direction("a", -v).value(parallel), -1.0, atol=1e-6)
    same = {"a": np.repeat(a[:1], 3, axis=0)}
    np.testing.assert_allclose(Diversity("a").value(same), -2.0 / 3.0, atol=1e-9)
    assert Diversity("a").value({"a": a[:1]})[0] == 0.0
    assert Channel("a", 2, batch=1).value(acts)[[0, 2]].tolist() == [0.0, 0.0]


def test_algebra():
    rng = np.random.default_rng(3)
    acts = {"a": rng.standard_normal((2, 3, 4, 4)), "b": rng.standard_normal((2, 5))}
    c, k, layer = Channel("a", 1), ClassLogit("b", 2), LayerL2("a")
    combo = c + 2 * k - 0.5 * layer
    want = c.value(acts) + 2 * k.value(acts) - 0.5 * layer.value(acts)
    np.testing.assert_allclose(combo.value(acts), want)
    np.testing.assert_allclose((-c).value(acts), -c.value(acts))
    np.testing.assert_allclose((c / 4).value(acts), c.value(acts) / 4)
    assert isinstance(combo, Sum) and len(combo.terms) == 3
    assert str(combo) == "a:1 + 2*b:2 - 0.5*a"
    assert str(-c) == "-a:1"
    assert combo.tensors == ("a", "b")
    assert (c + k).linear and not combo.linear
    assert (c + Diversity("a")).couples_batch
    with pytest.raises(TypeError):
        c * "2"


def test_per_item_gives_each_batch_item_its_own_objective():
    rng = np.random.default_rng(4)
    acts = {"a": rng.standard_normal((3, 4, 2, 2))}
    obj = per_item([Channel("a", 0), Channel("a", 3), Neuron("a", 2, (1, 1))])
    a = acts["a"]
    want = [a[0, 0].mean(), a[1, 3].mean(), a[2, 2, 1, 1]]
    np.testing.assert_allclose(obj.value(acts), want)
    with pytest.raises(OnnxvizError):
        per_item([Diversity("a")])
    with pytest.raises(OnnxvizError, match="batch item 5"):
        Channel("a", 0, batch=5).value(acts)


def test_evaluation_errors_are_user_errors():
    acts = {"a": np.zeros((2, 3, 4, 4))}
    with pytest.raises(OnnxvizError, match="out of range"):
        Channel("a", 3).value(acts)
    with pytest.raises(OnnxvizError, match="no activations"):
        Channel("b", 0).value(acts)
    with pytest.raises(OnnxvizError, match="3 channels"):
        Direction("a", [1.0, 2.0]).value(acts)
    with pytest.raises(OnnxvizError, match="nonzero"):
        Direction("a", [0.0, 0.0, 0.0])


# ---------------------------------------------------------------- seeds vs central differences


def _numeric_seeds(obj: Objective, acts: dict[str, np.ndarray], h: float = 1e-6
                   ) -> dict[str, np.ndarray]:
    """d sum(values) / d activations by central differences, element by element (float64)."""
    out = {}
    for name, a in acts.items():
        grad = np.zeros_like(a)
        flat = grad.reshape(-1)
        for i in range(a.size):
            plus = {k: v.copy() for k, v in acts.items()}
            minus = {k: v.copy() for k, v in acts.items()}
            plus[name].reshape(-1)[i] += h
            minus[name].reshape(-1)[i] -= h
            flat[i] = (obj.value(plus).sum() - obj.value(minus).sum()) / (2 * h)
        out[name] = grad
    return out


def _objectives_to_check() -> list[tuple[str, Objective]]:
    v = np.array([0.5, -1.0, 2.0])
    return [
        ("channel", Channel("a", 1)),
        ("channel nhwc", Channel("a", 2, axis=3)),
        ("channel one item", Channel("a", 0, batch=1)),
        ("logit", ClassLogit("b", 3)),
        ("neuron", Neuron("a", 2, (1, 2))),
        ("layer l2", LayerL2("a")),
        ("direction", Direction("a", v)),
        ("direction nhwc", Direction("a", np.array([1.0, 2.0, -1.0, 0.5]), axis=3)),
        ("diversity", Diversity("a")),
        ("diversity nhwc", Diversity("a", axis=3)),
        ("sum", Channel("a", 1) - 0.3 * LayerL2("a") + 2.5 * ClassLogit("b", 0)
         + 0.7 * Diversity("a")),
        ("negated", -Direction("a", v)),
    ]


@pytest.mark.parametrize("name, obj", _objectives_to_check(), ids=lambda p: str(p)[:20])
def test_seeds_match_central_differences(name, obj):
    rng = np.random.default_rng(5)
    acts = {"a": rng.standard_normal((3, 3, 3, 4)), "b": rng.standard_normal((3, 6))}
    if name.startswith("direction nhwc"):
        acts["a"] = rng.standard_normal((3, 3, 2, 4))
    acts = {k: v for k, v in acts.items() if k in obj.tensors}
    values, seeds = obj.value_and_seeds(acts)
    np.testing.assert_allclose(values, obj.value(acts))
    assert set(seeds) == set(obj.tensors)
    expected = _numeric_seeds(obj, acts)
    for t in obj.tensors:
        assert seeds[t].shape == acts[t].shape
        np.testing.assert_allclose(seeds[t], expected[t], rtol=1e-5, atol=1e-7)


def test_linear_objectives_have_value_independent_seeds():
    rng = np.random.default_rng(6)
    for obj in (Channel("a", 1), Neuron("a", 0, (0, 1)), Channel("a", 2, axis=3)):
        assert obj.linear
        s1 = obj.value_and_seeds({"a": rng.standard_normal((2, 3, 2, 3))})[1]["a"]
        s0 = obj.value_and_seeds({"a": np.zeros((2, 3, 2, 3))})[1]["a"]
        np.testing.assert_array_equal(s0, s1)
    for obj in (LayerL2("a"), Direction("a", [1, 2, 3]), Diversity("a")):
        assert not obj.linear
