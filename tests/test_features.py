"""Feature maps: default layer choice, values against the reference evaluator, dequantization,
statistics, rendering, the `features` command and real models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper
from PIL import Image
from test_rewrite import (
    _image,
    if_model,
    qdq_cnn,
    reference_values,
    small_cnn,
    two_input_model,
)

from onnxviz.cli import main
from onnxviz.errors import OnnxvizError, UnknownNameError
from onnxviz.features import (
    all_taps,
    choose_taps,
    default_taps,
    feature_maps,
    layer_stats,
    quantization_params,
)
from onnxviz.images import Preprocess
from onnxviz.model import default_image_path, load_model
from onnxviz.render import (
    channel_order_by,
    colormap_lut,
    picture_kind,
    render_feature_maps,
    render_overlay,
)

# ---------------------------------------------------------------- default layer choice

EXPECTED_TAP = {"relu": ("act1", "Relu"), "leakyrelu": ("act1", "LeakyRelu"),
                "clip": ("act1", "Clip"), "silu": ("act1", "SiLU"),
                "hardswish": ("act1", "HardSwish"), "hardswish_decomposed": ("act1", "HardSwish"),
                "none": ("act1", "Identity")}


@pytest.mark.parametrize("act", list(EXPECTED_TAP))
@pytest.mark.parametrize("bn", [False, True])
def test_default_taps_are_post_activation(act, bn):
    m = load_model(small_cnn(act=act, bn=bn))
    taps = default_taps(m)
    tensor, word = EXPECTED_TAP[act]
    assert [t.layer for t in taps] == ["conv1", "conv2", "fc"]
    assert [t.tensor for t in taps] == [tensor, "relu2", "y"]
    assert word in taps[0].why and (("BatchNormalization" in taps[0].why) == bn)


def test_default_taps_stop_at_branches_and_take_quantized_outputs():
    m = load_model(qdq_cnn())
    taps = default_taps(m)
    assert taps[0].tensor == "relu1_q" and taps[0].why.endswith("QuantizeLinear")
    # a conv output with two readers (a residual) is shown as it is
    model = small_cnn()
    model.graph.node.append(helper.make_node("Add", ["conv1", "act1"], ["res"], name="res"))
    model.graph.output.append(helper.make_tensor_value_info("res", 1, ["N", 4, 12, 12]))
    assert default_taps(load_model(model))[0].tensor == "conv1"


def test_all_taps_are_float_rank3_and_input_dependent():
    m = load_model(None)
    every = [t.tensor for t in all_taps(m, every=True)]
    assert every == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3",
                     "pool3"]
    # --all leaves out the pre-activation insides of fused conv -> relu chains
    taps = all_taps(m)
    assert [t.tensor for t in taps] == ["relu1", "pool1", "relu2", "pool2", "relu3", "pool3"]
    assert choose_taps(m, "all") == taps and choose_taps(m, "every") == all_taps(m, every=True)
    assert [t.tensor for t in choose_taps(m, ["conv2", "relu4"])] == ["conv2", "relu4"]
    # SiLU: neither the conv output nor the Sigmoid gate; BN output skipped too
    silu = [t.tensor for t in all_taps(load_model(small_cnn(act="silu", bn=True)))]
    assert silu == ["act1", "relu2", "gap"]
    # QDQ: the quantized activation instead of its float neighbours
    assert [t.tensor for t in all_taps(load_model(qdq_cnn()))] == ["x_q", "relu1_q", "y"]


# ---------------------------------------------------------------- values

def test_feature_maps_default_model_match_reference():
    maps = feature_maps(None, default_image_path())
    assert list(maps) == ["relu1", "relu2", "relu3", "relu4", "logits"]
    m = load_model(None)
    x = np.asarray(Image.open(default_image_path()).convert("L").resize((32, 32),
                                                                         Image.BILINEAR))
    assert maps["relu1"].shape == (1, 16, 32, 32) and maps["relu1"].dtype == np.float32
    # the same tensor fed directly gives the same maps; the reference evaluator agrees
    from onnxviz.images import prepare_inputs

    feeds = prepare_inputs(m, image=default_image_path()).feeds
    assert abs(float(feeds["image"].mean()) - x.mean() / 255) < 0.02
    again = feature_maps(None, feeds["image"], layers="all")
    ref = reference_values(m.proto, feeds)
    for name, v in again.items():
        np.testing.assert_allclose(v, ref[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(again["relu1"], maps["relu1"])


def test_fp16_maps_come_back_float32():
    model = small_cnn(fp16=True, act="relu")
    x = _image((1, 3, 12, 12), dtype=np.float16)
    maps = feature_maps(model, x)
    ref = reference_values(model, {"image": x})
    for name, v in maps.items():
        assert v.dtype == np.float32
        np.testing.assert_allclose(v, ref[name].astype(np.float32), rtol=2e-2, atol=2e-2)


def test_quantized_tensors_are_dequantized():
    model = qdq_cnn()
    m = load_model(model)
    scale, zp, _ = quantization_params(m.graph, "relu1_q")
    assert float(scale) == pytest.approx(0.02) and int(zp) == 0
    x = _image((1, 3, 8, 8))
    maps = feature_maps(model, x, layers=["relu1_q", "x_q"])
    ref = reference_values(model, {"x": x})
    assert maps["relu1_q"].dtype == np.float32
    np.testing.assert_allclose(maps["relu1_q"], ref["relu1_dq"], atol=0.0201)
    np.testing.assert_allclose(maps["x_q"], ref["x_dq"], atol=1e-6)


def test_several_inputs_if_graph_and_preprocess_presets(tmp_path):
    gain = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1)
    image = _image((1, 3, 8, 8))
    maps = feature_maps(two_input_model(), {"image": image, "gain": gain}, layers=["c", "g"])
    np.testing.assert_allclose(maps["g"], maps["c"] * gain, rtol=1e-6)
    maps = feature_maps(if_model(), {"x": _image((1, 1, 6, 6)), "cond": np.array(True)},
                        layers=["r", "branch"])
    np.testing.assert_allclose(maps["branch"], -maps["r"])
    # a preset changes the input exactly as documented: tf maps pixels to [-1, 1]
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((12, 12, 3), 255, np.uint8)).save(path)
    a = feature_maps(small_cnn(act="none"), path, layers=["conv1"], preprocess="tf")
    b = feature_maps(small_cnn(act="none"), np.ones((1, 3, 12, 12), np.float32),
                     layers=["conv1"])
    np.testing.assert_allclose(a["conv1"], b["conv1"], rtol=1e-6)
    c = feature_maps(small_cnn(act="none"), path, layers=["conv1"],
                     preprocess=Preprocess.from_preset("raw255"))
    d = feature_maps(small_cnn(act="none"), np.full((1, 3, 12, 12), 255, np.float32),
                     layers=["conv1"])
    np.testing.assert_allclose(c["conv1"], d["conv1"], rtol=1e-6)


def test_error_paths():
    with pytest.raises(UnknownNameError, match="relu1"):
        feature_maps(None, default_image_path(), layers=["relu_1"])
    with pytest.raises(OnnxvizError, match="subgraph"):
        feature_maps(if_model(), {"x": _image((1, 1, 6, 6)), "cond": np.array(True)},
                     layers=["inner_else"])
    with pytest.raises(OnnxvizError, match="wants float32"):
        feature_maps(None, np.zeros((1, 1, 32, 32), np.float64))
    with pytest.raises(OnnxvizError, match=r"wants float32 \[batch, 1, 32, 32\]"):
        feature_maps(None, np.zeros((1, 1, 28, 28), np.float32))


# ---------------------------------------------------------------- statistics

def test_layer_stats():
    v = np.zeros((1, 4, 3, 3), np.float32)
    v[0, 1] = 2.0
    v[0, 2, 0, 0] = -1.0
    v[0, 3] = np.arange(9).reshape(3, 3)
    s = layer_stats(v)
    assert s.shape == [1, 4, 3, 3] and s.channels == 4
    assert s.dead_channels == [0]  # channel 2 has one non-zero value: not dead
    assert s.min == -1.0 and s.max == 8.0
    assert s.zero_fraction == pytest.approx((9 + 8 + 1) / 36, abs=1e-6)
    assert s.channel_max == [0.0, 2.0, 0.0, 8.0]
    np.testing.assert_allclose(s.channel_mean, [0, 2, -1 / 9, 4], rtol=1e-5)
    assert s.mean == pytest.approx(v.mean(), rel=1e-5)
    dense = layer_stats(np.array([[0.0, 3.0]], np.float32))
    assert dense.dead_channels == [0] and dense.channel_max == [0.0, 3.0]
    nan = layer_stats(np.array([[[np.nan, 1.0]]], np.float32))
    assert nan.nonfinite == 1 and nan.max == 1.0


# ---------------------------------------------------------------- rendering

def test_render_feature_maps_and_overlay():
    rng = np.random.default_rng(0)
    fmap = rng.random((10, 6, 8)).astype(np.float32)
    fmap[3] = 0
    img = render_feature_maps(fmap, title="t  [1, 10, 6, 8]", max_channels=4, sort="max")
    assert img.mode == "RGB" and img.width > 100
    order = channel_order_by(fmap, "max")
    assert order[-1] == 3 and list(channel_order_by(fmap, "index")) == list(range(10))
    lut = colormap_lut("magma")
    assert lut.shape == (256, 3)
    with pytest.raises(UnknownNameError, match="viridis"):
        colormap_lut("viridiss")
    one_d = render_feature_maps(rng.random((5, 40)), normalize="layer")
    three_d = render_feature_maps(rng.random((3, 4, 5, 6)))
    assert one_d.width > 40 and three_d.height > 10
    ov = render_overlay(rng.random((3, 20, 30)), fmap)
    assert ov.width >= 2 * 224
    assert picture_kind([1, 8, 4, 4])[0] == "2d"
    assert picture_kind([1, 8, 1, 1])[0] is None
    assert "dense" in picture_kind([1, 64])[1]
    assert picture_kind([1, 2, 30])[0] == "1d" and picture_kind([1, 2, 3, 4, 5])[0] == "3d"


def test_channel_scaling_changes_tiles():
    fmap = np.stack([np.full((4, 4), 1.0), np.arange(16.0).reshape(4, 4) * 100])
    fmap[0, 0, 0] = 0.0
    per_channel = np.asarray(render_feature_maps(fmap, normalize="channel"))
    per_layer = np.asarray(render_feature_maps(fmap, normalize="layer"))
    assert per_channel.shape == per_layer.shape
    assert not np.array_equal(per_channel, per_layer)


# ---------------------------------------------------------------- the command

def _invoke(args, tmp_path):
    runner = CliRunner()
    return runner.invoke(main, args, catch_exceptions=False)


def test_cli_default_model_writes_everything(tmp_path):
    out = tmp_path / "f"
    r = _invoke(["features", "-o", str(out), "--npz", "--overlay"], tmp_path)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00_relu1.png", "00_relu1_overlay.png", "01_relu2.png",
                     "01_relu2_overlay.png", "02_relu3.png", "02_relu3_overlay.png",
                     "features.npz", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_sha256"] == load_model(None).sha256
    assert summary["input"]["preprocess"]["preset"] == "unit"
    assert "chosen by default" in summary["input"]["preprocess"]["notes"][0]
    layers = {e["tensor"]: e for e in summary["layers"]}
    assert "dense" in layers["relu4"]["no_picture"] and layers["relu1"]["png"]
    z = np.load(out / "features.npz")
    maps = feature_maps(None, default_image_path())
    assert sorted(z.files) == sorted(maps)
    for k in maps:
        np.testing.assert_array_equal(z[k], maps[k])
        st = layer_stats(maps[k])
        assert layers[k]["dead_channels"] == st.dead_channels
        assert layers[k]["channel_max"] == st.channel_max
    png = Image.open(out / "00_relu1.png")
    assert png.text["onnxviz.tensor"] == "relu1" and "model_sha256" in "".join(png.text)
    assert not list(out.glob("*.part"))
    r = _invoke(["features", "-o", str(out), "--json"], tmp_path)
    data = json.loads(r.output[r.output.index("{"):])
    assert data["layers"][0]["tensor"] == "relu1" and data["npz"].endswith("features.npz")


def test_cli_tensor_size_and_layer_options(tmp_path):
    model_path = tmp_path / "dyn.onnx"
    onnx.save_model(small_cnn(layout="NHWC", dynamic=True, act="silu"), str(model_path))
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 60, 3)).astype(np.uint8)
                    ).save(img)
    out = tmp_path / "o"
    r = _invoke(["features", str(model_path), str(img), "-o", str(out), "--size", "32",
                 "--preset", "imagenet", "--all", "--max-channels", "2", "--sort", "mean"],
                tmp_path)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"]["feeds"]["image"]["shape"] == [1, 32, 64, 3]
    assert summary["input"]["preprocess"]["preset"] == "imagenet"
    assert {e["tensor"] for e in summary["layers"]} == {"nchw", "act1", "relu2", "gap"}
    x = np.random.default_rng(1).random((1, 16, 24, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out2 = tmp_path / "o2"
    r = _invoke(["features", str(model_path), "--tensor", str(tmp_path / "x.npy"), "-o",
                 str(out2), "--layer", "act1", "--layer", "conv2"], tmp_path)
    assert r.exit_code == 0, r.output
    summary = json.loads((out2 / "summary.json").read_text())
    assert [e["shape"] for e in summary["layers"]] == [[1, 4, 16, 24], [1, 6, 8, 12]]
    assert summary["input"]["preprocess"] is None


@pytest.mark.parametrize(("args", "message"), [
    (["--layer", "relu_1"], "Did you mean: relu1"),
    (["--layer", "image"], "graph input"),
    (["--colormap", "nope"], "no colormap named 'nope'"),
    (["--layer", "relu1", "--all"], "not both"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    out = tmp_path / "e"
    r = CliRunner().invoke(main, ["features", "-o", str(out), *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists() or not list(out.iterdir())


def test_cli_bad_inputs(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    model = str(load_model(None).path)
    for args, message in [
        ([model, str(bad)], "cannot read"),
        ([str(bad)], "cannot read"),  # a lone image: the default model on that image
        ([model, "--tensor", str(tmp_path / "none.npy")], "no such tensor file"),
    ]:
        r = CliRunner().invoke(main, ["features", "-o", str(tmp_path / "o"), *args])
        assert r.exit_code == 2 and message in r.output, r.output
    np.save(tmp_path / "wrong.npy", np.zeros((1, 1, 30, 32), np.float32))
    r = CliRunner().invoke(main, ["features", model, "--tensor", str(tmp_path / "wrong.npy"),
                                  "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "wants float32 [batch, 1, 32, 32]" in r.output
    onnx.save_model(two_input_model(), str(tmp_path / "two.onnx"))
    img = tmp_path / "i.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    r = CliRunner().invoke(main, ["features", str(tmp_path / "two.onnx"), str(img),
                                  "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--tensor NAME=FILE.npy" in r.output
    np.save(tmp_path / "gain.npy", np.ones((1, 4, 1, 1), np.float32))
    r = CliRunner().invoke(main, ["features", str(tmp_path / "two.onnx"), str(img), "--tensor",
                                  f"gain={tmp_path / 'gain.npy'}", "-o", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert not list((tmp_path / "o").glob(".*.part"))


# ---------------------------------------------------------------- real models and photos

@pytest.mark.real
def test_ppocr_det_on_a_document(real_model, photos, tmp_path):
    page = next(p for p in photos if p.name == "page.png")
    m = load_model(real_model("ppocr_det"))
    maps = feature_maps(m, page, preprocess="imagenet", layers=None)
    out_name = m.summary.outputs[0].name
    prob = maps[out_name]
    assert prob.shape[2:] == (224, 448)  # default --size 224 on the shorter side, aspect kept
    # text probability: confident somewhere (the lines), low on most of the page
    assert prob.max() > 0.9 and 0.02 < (prob > 0.5).mean() < 0.5
    # the exposed original output equals a plain run of the unmodified model
    from onnxviz.images import prepare_inputs
    from onnxviz.runtime import make_session, run

    feeds = prepare_inputs(m, image=page, preprocess="imagenet").feeds
    plain = run(make_session(m.proto), feeds, [out_name])[0]
    assert np.array_equal(plain, prob)
    r = CliRunner().invoke(main, ["features", str(m.path), str(page), "-o", str(tmp_path / "d"),
                                  "--size", "128", "--layer", out_name, "--overlay"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / f"00_{out_name}_overlay.png").is_file()


@pytest.mark.real
def test_yolov8n_on_a_photo(real_model, photos):
    photo = next(p for p in photos if p.name == "grace_hopper.jpg")
    m = load_model(real_model("yolov8n"))
    maps = feature_maps(m, photo, preprocess=Preprocess(size=(160,)))
    first = maps["/model.0/act/Mul_output_0"]
    assert first.shape[:2] == (1, 16) and min(first.shape[2:]) == 80  # stride 2, shorter side
    assert len(maps) == len(m.summary.layers)
    stats = layer_stats(first)
    assert stats.min > -0.3 and stats.dead_channels == []  # SiLU's minimum is -0.278
    from onnxviz.images import prepare_inputs
    from onnxviz.runtime import make_session, run

    feeds = prepare_inputs(m, image=photo, preprocess=Preprocess(size=(160,))).feeds
    want = run(make_session(m.proto), feeds)[0]
    got = feature_maps(m, feeds["images"], layers=[m.summary.outputs[0].name])
    assert np.array_equal(got[m.summary.outputs[0].name], want)


# ---------------------------------------------------------------- the committed fixture models

def test_graph_normalization_is_not_applied_twice(fixture_models, tmp_path):
    """normalized.onnx subtracts caffe BGR means and scales by 1/255 itself: the default feeds
    raw BGR pixels, so the maps equal those of the pixels fed directly."""
    m = load_model(fixture_models / "normalized.onnx")
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    path = tmp_path / "p.png"
    Image.fromarray(rgb).save(path)
    from onnxviz.images import prepare_inputs

    prep = prepare_inputs(m, image=path)
    assert prep.preprocess.preset == "raw255" and prep.preprocess.channel_order == "BGR"
    assert any("normalizes its input itself" in n for n in prep.notes)
    direct = rgb[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)
    a = feature_maps(m, path)
    b = feature_maps(m, direct)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_quantized_operator_model_dequantizes(fixture_models):
    m = load_model(fixture_models / "qlinearconv.onnx")
    tap = default_taps(m)[0]
    assert tap.op == "QLinearConv"
    x = np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)
    maps = feature_maps(m, x, layers=[tap.tensor])
    scale, zp, _ = quantization_params(m.graph, tap.tensor)
    from onnxviz.rewrite import expose_tensors
    from onnxviz.runtime import make_session, run

    raw = run(make_session(expose_tensors(m, [tap.tensor], exact=True)), {"x": x},
              [tap.tensor])[0]
    assert raw.dtype in (np.uint8, np.int8) and maps[tap.tensor].dtype == np.float32
    np.testing.assert_allclose(maps[tap.tensor], (raw.astype(np.float32) - zp) * scale)


@pytest.mark.parametrize(("name", "shape"), [("conv1d", (1, 3, 32)), ("conv3d", (1, 3, 4, 8, 8))])
def test_1d_and_3d_convs_get_pictures(fixture_models, tmp_path, name, shape):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random(shape).astype(np.float32))
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["features", str(fixture_models / f"{name}.onnx"), "--tensor",
                                  str(tmp_path / "x.npy"), "-o", str(out), "--overlay"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["layers"][0]
    assert entry["png"] and Image.open(entry["png"]).width > 100
    assert entry["overlay"] is None and entry["no_overlay"] == "not a 2-D map"


def test_maps_are_released_one_by_one():
    """iter_feature_maps drops its reference to each array once yielded: a consumer that
    renders and forgets layers never holds all activations twice."""
    import gc
    import weakref

    from onnxviz.features import iter_feature_maps

    class Tracked(np.ndarray):
        pass

    m = load_model(None)
    taps = default_taps(m)[:3]
    arrays = [np.ones((1, 4, 8, 8), np.float32).view(Tracked) for _ in taps]
    refs = [weakref.ref(a) for a in arrays]

    held = {"arrays": arrays}
    del arrays

    class FakeSession:  # hands its arrays over, as onnxruntime does
        def run(self, outputs, feeds):
            assert outputs == [t.tensor for t in taps]
            return held.pop("arrays")

    stream = iter_feature_maps(m, {}, taps, session=FakeSession())
    k = 0  # (enumerate would keep the last item alive)
    for fm in stream:
        assert fm.values.shape == (1, 4, 8, 8)
        del fm
        gc.collect()
        assert refs[k]() is None, f"layer {k} is still held after it was consumed"
        assert all(r() is not None for r in refs[k + 1:])  # later layers not yet consumed
        k += 1
    assert k == len(taps)


def test_cli_lone_image_uses_the_default_model(tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["features", str(default_image_path()), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_sha256"] == load_model(None).sha256
    assert summary["input"]["source"] == str(default_image_path())
