"""First-layer filters: every weight encoding renders the same filters; real models; rendering."""

from __future__ import annotations

import json

import make_fixtures as mf  # fixtures/ is put on sys.path by conftest
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxviz import OnnxvizError, layer_weights, load_model, weights_image
from onnxviz.cli import main
from onnxviz.render import render_filters, symmetric_scale

EXACT = ["initializer", "constant", "fp16_cast", "fp16", "nhwc", "external", "old_ir",
         "normalized", "batchnorm"]
QUANTIZED = ["qdq", "qlinearconv", "convinteger"]


@pytest.mark.parametrize("name", EXACT + QUANTIZED)
def test_every_encoding_gives_the_same_filters(fixture_models, name):
    lw = layer_weights(fixture_models / f"{name}.onnx")
    assert lw.layer == "conv"
    assert lw.weights.shape == (8, 3, 3, 3)
    assert lw.weights.dtype == np.float32
    assert lw.image_space
    if name in EXACT:
        atol = 1e-3 if name.startswith("fp16") else 0
        np.testing.assert_allclose(lw.weights, mf.FILTERS, atol=atol, rtol=0)
    else:
        # 8-bit quantization: within half a quantization step of each filter's scale
        step = np.abs(mf.FILTERS).reshape(8, -1).max(axis=1).max() / 127
        np.testing.assert_allclose(lw.weights, mf.FILTERS, atol=step / 2 + 1e-7, rtol=0)


@pytest.mark.parametrize("name", [n for n in EXACT if n != "normalized"])  # that one is BGR
def test_exact_encodings_render_identical_pixels(fixture_models, name):
    _, ref = weights_image(fixture_models / "initializer.onnx")
    _, img = weights_image(fixture_models / f"{name}.onnx")
    a = np.asarray(ref)
    b = np.asarray(img)
    # the title names the file; compare the filter grid below it
    assert a.shape[1] == b.shape[1]
    np.testing.assert_array_equal(a[-120:], b[-120:])


def test_known_filter_pictures(fixture_models):
    """Colours and signs land where the hand-set weights put them."""
    lw = layer_weights(fixture_models / "initializer.onnx")
    unit = symmetric_scale(lw.weights, per_filter=False)
    tiles = unit.transpose(0, 2, 3, 1)  # (O, kh, kw, RGB)
    assert tiles[0, 1, 1].tolist() == [1.0, 0.5, 0.5]      # red centre
    assert tiles[1, 1, 1].tolist() == [0.5, 1.0, 0.5]      # green centre
    assert tiles[2, 1, 1].tolist() == [0.5, 0.5, 1.0]      # blue centre
    assert np.all(tiles[6] == 0.5)                          # dead filter: mid-gray
    assert tiles[7, 1, 1, 0] == 0.0                         # negative red: dark
    assert np.all(tiles[3, 0] > 0.5) and np.all(tiles[3, 2] < 0.5)  # bright top, dark bottom


def test_bgr_channel_order_swaps_colours(fixture_models):
    w = layer_weights(fixture_models / "initializer.onnx").weights
    rgb = np.asarray(render_filters(w, channel_order="RGB", scale=1))
    bgr = np.asarray(render_filters(w, channel_order="BGR", scale=1))
    assert not np.array_equal(rgb, bgr)
    # the default follows the input contract: the caffe-normalized model is BGR
    assert layer_weights(fixture_models / "normalized.onnx").channel_order == "BGR"
    assert layer_weights(fixture_models / "initializer.onnx").channel_order == "RGB"


def test_per_filter_normalization_differs_from_global(fixture_models):
    w = layer_weights(fixture_models / "initializer.onnx").weights
    g = symmetric_scale(w, per_filter=False)
    f = symmetric_scale(w, per_filter=True)
    # filter 3 has max |w| 0.5: global maps it to 0.75, per-filter to 1.0
    assert g[3].max() == pytest.approx(0.75)
    assert f[3].max() == pytest.approx(1.0)
    assert np.all(f[6] == 0.5)  # an all-zero filter stays mid-gray, no division by zero


def test_fold_bn(fixture_models):
    lw = layer_weights(fixture_models / "batchnorm.onnx", fold_bn=True)
    factor = mf.BN_GAMMA / np.sqrt(mf.BN_VAR + mf.BN_EPS)
    np.testing.assert_allclose(lw.weights, mf.FILTERS * factor[:, None, None, None], rtol=1e-6)
    assert lw.folded_bn == "bn"
    with pytest.raises(OnnxvizError, match="no BatchNormalization"):
        layer_weights(fixture_models / "initializer.onnx", fold_bn=True)


@pytest.mark.parametrize("name", ["dense", "dense_nhwc"])
def test_dense_first_layer_templates(fixture_models, name):
    lw = layer_weights(fixture_models / f"{name}.onnx")
    assert lw.kind == "dense"
    assert lw.image_space
    np.testing.assert_array_equal(lw.weights, mf.dense_templates())


def test_default_model_first_layer():
    lw = layer_weights(None)
    assert lw.layer == "conv1"
    assert lw.weights.shape == (16, 1, 5, 5)
    proto = onnx.load(str(load_model(None).path))
    w = onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer
                                        if t.name == "conv1.weight"))
    np.testing.assert_array_equal(lw.weights, w)


def test_deeper_layers_and_other_geometries(fixture_models):
    deep = layer_weights(None, "conv2")
    assert deep.weights.shape == (32, 16, 3, 3) and not deep.image_space
    _, img = weights_image(None, "conv2", max_inputs=4)
    assert img.width < 400  # 4 input tiles per row, not 16
    dense = layer_weights(None, "fc1")  # reads pool3 (64 x 4 x 4), not the image
    assert dense.weights.shape == (64, 64, 4, 4) and not dense.image_space
    dw = layer_weights(fixture_models / "depthwise.onnx")
    assert dw.group == 3 and dw.weights.shape == (6, 1, 3, 3)
    assert any("depthwise" in n for n in dw.notes)
    c1 = layer_weights(fixture_models / "conv1d.onnx")
    assert c1.weights.shape == (8, 3, 1, 3)
    c3 = layer_weights(fixture_models / "conv3d.onnx")
    assert c3.weights.shape == (8, 6, 3, 3)
    focus = layer_weights(fixture_models / "focus.onnx")
    assert focus.layer == "conv" and focus.weights.shape == (8, 12, 3, 3) and focus.image_space
    for path in ["depthwise", "conv1d", "conv3d", "focus"]:
        _, img = weights_image(fixture_models / f"{path}.onnx")
        assert img.width > 0


def test_layer_name_forms_and_errors(fixture_models):
    assert layer_weights(None, "conv2").layer == "conv2"          # node name
    assert layer_weights(None, "conv2.weight").layer == "conv2"   # weight tensor
    with pytest.raises(OnnxvizError, match="Did you mean: conv2"):
        layer_weights(None, "conv_2")
    with pytest.raises(OnnxvizError, match=r"relu1.*is a Relu"):
        layer_weights(None, "relu1")
    with pytest.raises(OnnxvizError, match="no conv or dense layer"):
        layer_weights(fixture_models / "no_conv.onnx")


# ---------------------------------------------------------------- CLI

def test_cli_weights_writes_png_npz_and_metadata(tmp_path, fixture_models):
    out, npz = tmp_path / "w.png", tmp_path / "w.npz"
    res = CliRunner().invoke(main, ["weights", str(fixture_models / "qdq.onnx"), "-o", str(out),
                                    "--npz", str(npz), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["layer"] == "conv" and info["shape"] == [8, 3, 3, 3]
    data = np.load(npz)
    assert data["weights"].shape == (8, 3, 3, 3) and str(data["layer"]) == "conv"
    img = Image.open(out)
    assert img.text["onnxviz.layer"] == "conv"
    assert img.text["onnxviz.model_sha256"] == load_model(fixture_models / "qdq.onnx").sha256
    assert img.text["Software"].startswith("onnxviz ")


def test_cli_weights_default_model_says_so(tmp_path):
    res = CliRunner().invoke(main, ["weights", "-o", str(tmp_path / "w.png")])
    assert res.exit_code == 0, res.output
    assert "embedded default model" in res.stderr
    assert (tmp_path / "w.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--layer", "nope"], "no layer named 'nope'"),
    (["--layer", "relu1"], "is a Relu"),
    (["--fold-bn"], "no BatchNormalization"),
])
def test_cli_weights_errors_are_one_line_exit_2(tmp_path, args, message):
    out = tmp_path / "w.png"
    res = CliRunner().invoke(main, ["weights", "-o", str(out), *args])
    assert res.exit_code == 2
    assert message in res.stderr
    assert "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) <= 2  # the default-model notice + the error
    assert not out.exists()


def test_cli_no_conv_exit_2(tmp_path, fixture_models):
    out = tmp_path / "w.png"
    res = CliRunner().invoke(main, ["weights", str(fixture_models / "no_conv.onnx"),
                                    "-o", str(out)])
    assert res.exit_code == 2 and "no conv or dense layer" in res.stderr
    assert not out.exists()


# ---------------------------------------------------------------- real models

REAL_FIRST = {
    # key: (first layer name, weight shape)
    "ppocr_det": ("p2o.Conv.0", (16, 3, 3, 3)),
    "ppocr_cls": ("Conv@0", (8, 3, 3, 3)),
    "pplcnet": ("Conv.0", (16, 3, 3, 3)),
    "yolov8n": ("/model.0/conv/Conv", (16, 3, 3, 3)),
}


@pytest.mark.real
@pytest.mark.parametrize("key", sorted(REAL_FIRST))
def test_real_model_first_layer(real_model, key, tmp_path):
    path = real_model(key)
    name, shape = REAL_FIRST[key]
    model = load_model(path)
    assert model.summary.first_layer == name
    lw = layer_weights(model)
    assert lw.layer == name and lw.weights.shape == shape and lw.image_space
    # the values are the file's own: compare with a direct read of the conv's weight tensor
    g = model.graph
    node = g.nodes[g.node_index[name]]
    raw = g.constant(node.input[1])
    np.testing.assert_array_equal(lw.weights, raw.astype(np.float32))
    assert np.abs(lw.weights).max() > 0.05  # trained, not zeros
    assert lw.weights.std() > 0.01
    out = tmp_path / "w.png"
    res = CliRunner().invoke(main, ["weights", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(out).convert("RGB")).astype(float)
    assert img.std() > 10  # a picture, not a flat field
