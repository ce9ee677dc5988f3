"""Images to model inputs: decoding (modes, EXIF, 16-bit), channels, resizing, presets, the
affine display -> model map with its adjoint and inverse, ready tensors and several inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from onnxviz.errors import OnnxvizError, UnknownNameError
from onnxviz.images import (
    PRESETS,
    Preprocess,
    check_tensor,
    choose_preprocess,
    from_model_input,
    image_to_input,
    load_pixels,
    load_tensor,
    model_input_size,
    prepare_inputs,
    resize_pixels,
    target_size,
    to_channels,
    to_model_input,
    to_model_input_adjoint,
)
from onnxviz.model import InputContract, NormStep, load_model


def contract(layout="NCHW", channels=3, h=8, w=8, dtype="float32", batch="N", norm=(),
             color_order=None) -> InputContract:
    shape = [batch, channels, h, w] if layout == "NCHW" else [batch, h, w, channels]
    return InputContract("x", shape, dtype, layout=layout, channels=channels, height=h,
                         width=w, normalization=list(norm), color_order=color_order)


# ---------------------------------------------------------------- presets and the affine map

def test_presets_follow_their_formulas():
    # one display pixel per channel: R = 1.0 (255), G = 0.5 (127.5), B = 0 (0)
    display = np.array([1.0, 0.5, 0.0]).reshape(1, 3, 1, 1)
    rgb = np.array([255.0, 127.5, 0.0])
    c = contract(h=1, w=1, dtype="float64")
    expect = {
        "unit": rgb / 255,
        "imagenet": (rgb / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
        "raw255": rgb,
        "caffe": rgb[::-1] - [104, 117, 123],  # BGR order, B G R means
        "tf": rgb / 127.5 - 1,
    }
    assert set(expect) == set(PRESETS)
    for name, want in expect.items():
        got = to_model_input(display, c, Preprocess.from_preset(name)).ravel()
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)


def test_overrides_replace_preset_values_and_are_recorded():
    c = contract(h=1, w=1, dtype="float64")
    pre = choose_preprocess(c, "imagenet", mean=(0.5,), std=(0.25,), channel_order="bgr")
    assert pre.channel_order == "BGR" and pre.mean == (0.5,) and pre.std == (0.25,)
    assert pre.scale == pytest.approx(1 / 255) and "imagenet + mean, std" in pre.preset
    display = np.array([1.0, 0.5, 0.0]).reshape(1, 3, 1, 1)
    got = to_model_input(display, c, pre).ravel()
    np.testing.assert_allclose(got, (np.array([0.0, 0.5, 1.0]) - 0.5) / 0.25)
    pre = choose_preprocess(c, "caffe", scale=0.5)
    np.testing.assert_allclose(to_model_input(display, c, pre).ravel(),
                               np.array([0.0, 127.5, 255.0]) * 0.5 - [104, 117, 123])
    with pytest.raises(UnknownNameError, match="imagenet"):
        choose_preprocess(c, "imagenett")


def test_default_rule():
    plain = choose_preprocess(contract())
    assert plain.preset == "unit" and "chosen by default" in plain.notes[0]
    # the graph divides by 255 and subtracts means: it wants raw pixels, nothing applied outside
    in_graph = contract(norm=[NormStep("Div", [255.0]), NormStep("Sub", [0.485, 0.456, 0.406])])
    pre = choose_preprocess(in_graph)
    assert (pre.preset, pre.scale, pre.mean, pre.std) == ("raw255", 1.0, (0.0,), (1.0,))
    assert "normalizes its input itself" in pre.notes[0]
    # ImageNet stats in the graph on [0, 1] values: unit, and an explicit imagenet is not doubled
    imagenet_graph = contract(norm=[NormStep("Sub", [0.485, 0.456, 0.406]),
                                    NormStep("Div", [0.229, 0.224, 0.225])])
    assert choose_preprocess(imagenet_graph).preset == "unit"
    pre = choose_preprocess(imagenet_graph, "imagenet")
    assert pre.mean == (0.0,) and pre.std == (1.0,) and pre.scale == pytest.approx(1 / 255)
    assert any("not applied again" in n for n in pre.notes)
    # explicit numbers are applied, with a warning note
    pre = choose_preprocess(imagenet_graph, mean=(0.1,))
    assert pre.mean == (0.1,) and any("on top of the graph" in n for n in pre.notes)
    # integer inputs get raw pixels; a BGR graph gets BGR
    assert choose_preprocess(contract(dtype="uint8")).preset == "raw255"
    assert choose_preprocess(contract(color_order="BGR")).channel_order == "BGR"
    assert choose_preprocess(contract(color_order="BGR"), channel_order="rgb").channel_order \
        == "RGB"


CASES = [("NCHW", 3, "RGB"), ("NCHW", 3, "BGR"), ("NHWC", 3, "BGR"), ("NHWC", 1, "RGB"),
         ("NCHW", 1, "RGB")]


@pytest.mark.parametrize(("layout", "channels", "order"), CASES)
@pytest.mark.parametrize("preset", ["imagenet", "caffe", "tf"])
def test_adjoint_dot_product_and_inverse(layout, channels, order, preset):
    rng = np.random.default_rng(0)
    c = contract(layout=layout, channels=channels, h=5, w=7, dtype="float64")
    pre = dataclasses.replace(Preprocess.from_preset(preset), channel_order=order)
    x = rng.random((2, channels, 5, 7))
    zero = to_model_input(np.zeros_like(x), c, pre)
    ax = to_model_input(x, c, pre) - zero  # the linear part
    y = rng.standard_normal(ax.shape)
    aty = to_model_input_adjoint(y, c, pre)
    assert aty.shape == x.shape
    assert np.vdot(ax, y) == pytest.approx(np.vdot(x, aty), rel=1e-12)
    np.testing.assert_allclose(from_model_input(to_model_input(x, c, pre), c, pre), x,
                               rtol=1e-6, atol=1e-6)


def test_dtype_cast_fp16_and_uint8():
    x = np.linspace(0, 1, 3 * 4).reshape(1, 3, 2, 2)
    half = to_model_input(x, contract(h=2, w=2, dtype="float16"), Preprocess.from_preset("unit"))
    assert half.dtype == np.float16
    u8 = to_model_input(x, contract(h=2, w=2, dtype="uint8"), Preprocess.from_preset("caffe"))
    assert u8.dtype == np.uint8 and u8.min() == 0  # negative values clipped


def test_nhwc_layout():
    x = np.random.default_rng(1).random((1, 3, 4, 6))
    y = to_model_input(x, contract(layout="NHWC", h=4, w=6), Preprocess.from_preset("raw255"))
    assert y.shape == (1, 4, 6, 3)
    np.testing.assert_allclose(y, (x * 255).transpose(0, 2, 3, 1), rtol=1e-6)


# ---------------------------------------------------------------- decoding

def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_modes_grayscale_rgba_palette_16bit(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    px, notes = load_pixels(_save(Image.fromarray(rgb), tmp_path / "rgb.png"))
    assert px.shape == (6, 5, 3) and px.dtype == np.float32 and np.array_equal(px, rgb)
    gray = rgb[:, :, 0]
    px, _ = load_pixels(_save(Image.fromarray(gray), tmp_path / "l.png"))
    assert px.shape == (6, 5, 1) and np.array_equal(px[:, :, 0], gray)
    rgba = np.dstack([rgb, np.full((6, 5), 7, np.uint8)])
    px, notes = load_pixels(_save(Image.fromarray(rgba), tmp_path / "rgba.png"))
    assert np.array_equal(px, rgb) and any("alpha" in n for n in notes)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    px, _ = load_pixels(_save(pal, tmp_path / "p.png"))
    assert np.array_equal(px, np.asarray(pal.convert("RGB"), np.float32))
    sixteen = (rng.integers(0, 65536, (6, 5))).astype(np.uint16)
    path = _save(Image.fromarray(sixteen), tmp_path / "16.png")
    assert Image.open(path).mode.startswith("I")
    px, notes = load_pixels(path)
    np.testing.assert_allclose(px[:, :, 0], sixteen / 257.0, rtol=1e-6)
    assert any("16-bit" in n for n in notes)
    px, _ = load_pixels(_save(Image.fromarray(gray).convert("1"), tmp_path / "1.png"))
    assert set(np.unique(px)) <= {0.0, 255.0}
    cmyk = Image.fromarray(rgb).convert("CMYK")
    px, _ = load_pixels(_save(cmyk, tmp_path / "c.jpg", quality=100))
    assert px.shape == (6, 5, 3)


def test_exif_orientation(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :10] = 255  # left half white as stored
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    path = tmp_path / "exif.jpg"
    img.save(path, exif=exif, quality=95)
    px, _ = load_pixels(path)
    assert px.shape == (20, 10, 3)
    assert px[:8].mean() > 200 and px[-8:].mean() < 50  # the white half is now on top


def test_image_that_does_not_decode(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really an image")
    with pytest.raises(OnnxvizError, match=r"cannot read .*bad\.png as an image") as err:
        load_pixels(bad)
    assert "\n" not in str(err.value) and "--tensor" in str(err.value)
    good = tmp_path / "t.jpg"
    Image.fromarray(np.full((64, 64, 3), 99, np.uint8)).save(good)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(OnnxvizError, match="cannot read"):
        load_pixels(truncated)
    with pytest.raises(OnnxvizError, match="no such image"):
        load_pixels(tmp_path / "missing.png")


def test_channel_conversion():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3)).astype(np.uint8)
    lum = to_channels(rgb.astype(np.float32), 1)
    pil = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)
    assert lum.shape == (4, 4, 1) and np.abs(lum[:, :, 0] - pil).max() <= 1.0
    gray = rgb[:, :, :1].astype(np.float32)
    assert np.array_equal(to_channels(gray, 3), np.repeat(gray, 3, axis=2))
    with pytest.raises(OnnxvizError, match="4 channels"):
        to_channels(gray, 4)


# ---------------------------------------------------------------- resizing

def test_resize_modes():
    img = np.zeros((40, 120, 1), np.float32)
    img[:, 40:80] = 255  # a white center third
    stretched = resize_pixels(img, (20, 30), "stretch")
    assert stretched.shape == (20, 30, 1) and 0 < stretched.mean() < 255
    cropped = resize_pixels(img, (20, 20), "center-crop")
    # only the center is left (the filter reads half a pixel past the edges of the crop)
    assert cropped.shape == (20, 20, 1) and cropped[:, 1:-1].min() > 254 and cropped.min() > 200


def test_target_size_rules():
    pre = Preprocess()
    fixed = contract(h=32, w=48)
    assert target_size((100, 300), fixed, pre)[0] == (32, 48)
    with pytest.raises(OnnxvizError, match="fixed at 32x48"):
        target_size((100, 300), fixed, dataclasses.replace(pre, size=(64,)))
    dyn = contract(h="H", w="W")
    assert target_size((100, 300), dyn, pre)[0] == (224, 672)  # default 224, shorter side
    size, notes = target_size((100, 250), dyn, dataclasses.replace(pre, size=(64,)))
    assert size == (64, 160) and any("multiple of 32" in n for n in notes)
    assert target_size((300, 100), dyn, dataclasses.replace(pre, size=(64,)))[0] == (192, 64)
    assert target_size((100, 250), dyn, dataclasses.replace(pre, size=(64, 80)))[0] == (64, 80)
    assert target_size((100, 250), dyn, dataclasses.replace(pre, resize="stretch"))[0] == (
        224, 224)
    half = contract(h=48, w="W")  # a text recognizer: fixed height, free width
    assert target_size((100, 400), half, pre)[0] == (48, 192)


def test_model_input_size():
    pre = Preprocess()
    assert model_input_size(contract(h=32, w=48), pre) == (32, 48)
    assert model_input_size(contract(h="H", w="W"), pre) == (224, 224)
    assert model_input_size(contract(h="H", w="W"), dataclasses.replace(pre, size=(64,))) == (
        64, 64)
    assert model_input_size(contract(h=48, w="W"), dataclasses.replace(pre, size=(9, 100))) == (
        48, 100)


def test_image_to_input_end_to_end(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (30, 50, 3)).astype(np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(a).save(path)
    c = contract(layout="NHWC", channels=3, h="H", w="W", dtype="float16", batch=1)
    pre = choose_preprocess(c, "imagenet", size=(32,), resize="shorter-side")
    tensor, display, _ = image_to_input(path, c, pre)
    assert tensor.shape == (1, 32, 64, 3) and tensor.dtype == np.float16
    assert display.shape == (3, 32, 64) and display.min() >= 0 and display.max() <= 1
    back = from_model_input(tensor, c, pre)[0]
    np.testing.assert_allclose(back, display, atol=5e-3)  # fp16 rounding only


# ---------------------------------------------------------------- ready tensors and feeds

def test_tensor_files_are_checked_exactly(tmp_path):
    c = contract(h=8, w="W")
    good = np.zeros((1, 3, 8, 11), np.float32)
    check_tensor(good, c)  # dynamic dims are free
    with pytest.raises(OnnxvizError, match=r"float64 .* wants float32 .*astype") as err:
        check_tensor(good.astype(np.float64), c)
    assert "\n" not in str(err.value)
    with pytest.raises(OnnxvizError, match=r"\[1, 3, 9, 11\] but input 'x' wants"):
        check_tensor(np.zeros((1, 3, 9, 11), np.float32), c)
    with pytest.raises(OnnxvizError, match="wants"):
        check_tensor(np.zeros((3, 8, 11), np.float32), c)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(OnnxvizError, match=r"cannot read .* as a \.npy"):
        load_tensor(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(OnnxvizError, match="cannot read"):
        load_tensor(tmp_path / "junk.npy")
    np.savez(tmp_path / "z.npz", a=good)
    with pytest.raises(OnnxvizError, match="npz"):
        load_tensor(tmp_path / "z.npz")


def test_several_inputs(tmp_path):
    from test_rewrite import two_input_model

    m = load_model(two_input_model())
    img = tmp_path / "i.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(img)
    with pytest.raises(OnnxvizError, match=r"other inputs .*'gain' \(float32 \[1, 4, 1, 1\]\)"
                       r".*--tensor NAME=FILE.npy"):
        prepare_inputs(m, image=img)
    gain = np.ones((1, 4, 1, 1), np.float32)
    np.save(tmp_path / "gain.npy", gain)
    prep = prepare_inputs(m, image=img, tensors={"gain": tmp_path / "gain.npy"})
    assert set(prep.feeds) == {"image", "gain"} and prep.image_input == "image"
    np.testing.assert_allclose(prep.feeds["image"], 200 / 255, rtol=1e-6)
    with pytest.raises(UnknownNameError, match="Did you mean: gain"):
        prepare_inputs(m, image=img, tensors={"gian": gain})
    with pytest.raises(OnnxvizError, match="not both"):
        prepare_inputs(m, image=img, tensors={None: np.zeros((1, 3, 8, 8), np.float32),
                                              "gain": gain})
    with pytest.raises(OnnxvizError, match="nothing to feed input 'image'"):
        prepare_inputs(m, tensors={"gain": gain})
