"""Top-k dataset examples: the running top-k against brute force, receptive-field crops mapped
back through every resize mode, unreadable files, flat memory, the picture and the CLI."""

from __future__ import annotations

import importlib
import json
import shutil
import weakref
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper
from PIL import Image

from onnxviz.cli import main
from onnxviz.errors import OnnxvizError
from onnxviz.examples import (
    examples,
    examples_image,
    list_files,
    parse_channels,
    to_original,
)
from onnxviz.features import choose_taps, exposed_session, iter_feature_maps, prepare
from onnxviz.images import Preprocess, choose_preprocess, main_input
from onnxviz.model import default_images_dir, default_model_path, load_model
from onnxviz.receptive import receptive_fields
from onnxviz.render import fit_text, fit_tile, font, render_examples
from onnxviz.rewrite import expose_tensors

# the module itself (`onnxviz.examples` may be the function once the package exports it)
ex = importlib.import_module("onnxviz.examples")
DIGITS = default_images_dir()


# ---------------------------------------------------------------- brute force

def brute_force(model, files, layer, channels, top, preprocess=None):
    """Per channel: (file, value, flat position) of the `top` images with the highest maximum,
    from the feature-map API run on each image alone (no batching, no running state)."""
    loaded = load_model(model)
    taps = choose_taps(loaded, [layer])
    session = exposed_session(loaded, taps)  # one session; images run one at a time
    per_image = []
    for f in files:
        feeds = prepare(loaded, f, preprocess).feeds
        (fm,) = iter_feature_maps(loaded, feeds, taps, session=session)
        per_image.append(fm.values[0].reshape(fm.values.shape[1], -1))
    out = {}
    for c in channels:
        maxima = [(float(v[c].max()), k, int(v[c].argmax())) for k, v in enumerate(per_image)]
        maxima.sort(key=lambda t: (-t[0], t[1]))  # ties: file order, as documented
        out[c] = [(files[k], value, pos) for value, k, pos in maxima[:top]]
    return out


def assert_same_as_brute(result, expected, width):
    assert [c.channel for c in result.channels] == list(expected)
    for ch in result.channels:
        want = expected[ch.channel]
        assert [h.file for h in ch.hits] == [w[0] for w in want], ch.channel
        np.testing.assert_allclose([h.value for h in ch.hits], [w[1] for w in want], rtol=1e-6)
        if width:
            assert [h.location for h in ch.hits] == [divmod(w[2], width) for w in want]


def test_topk_matches_brute_force_on_the_default_model_whatever_the_batch():
    files = list_files(DIGITS)
    assert len(files) == 100
    expected = brute_force(None, files, "relu2", range(8), 6)
    results = [examples(None, DIGITS, "relu2", channels="0-7", top=6, batch=b)
               for b in (None, 1, 7)]  # measured, one at a time, partial batches
    for r in results:
        assert r.images == 100 and not r.skipped
        assert r.map_shape == [32, 16, 16] and r.total_channels == 32
        assert_same_as_brute(r, expected, width=16)
    assert results[2].batch == 7 and results[1].batch == 1
    picked = examples(None, DIGITS, "relu2", channels="5,1,3", top=6, batch=16)
    assert_same_as_brute(picked, {c: expected[c] for c in (5, 1, 3)}, width=16)
    # every hit's crop is the pixels of its box in the original image
    for ch in results[0].channels:
        for h in ch.hits:
            pixels = np.asarray(Image.open(h.file))
            t, le, b, r = h.box
            assert h.crop.shape[:2] == (b - t, r - le)
            np.testing.assert_array_equal(h.crop[:, :, 0], pixels[t:b, le:r])


def test_conv3_vector_layer_and_dead_channels_on_the_default_model():
    r = examples(None, DIGITS, "relu3", channels="all", top=3)
    assert len(r.channels) == 64 and r.receptive_field.size == (20.0, 20.0)
    expected = brute_force(None, list_files(DIGITS), "relu3", range(64), 3)
    assert_same_as_brute(r, expected, width=8)
    for ch in r.channels:
        assert ch.all_zero == (ch.hits[0].value == 0.0)
    # the conv3 node (its pre-activation output): ReLU is monotone, so wherever relu3 is
    # positive the same images win at the same places with the same values
    pre_act = examples(None, DIGITS, "conv3", channels="all", top=3)
    assert pre_act.tap.tensor == "conv3"
    for a, b in zip(pre_act.channels, r.channels, strict=True):
        positive = [(h.file, h.value, h.location) for h in b.hits if h.value > 0]
        assert [(h.file, h.value, h.location) for h in a.hits][:len(positive)] == positive
    assert any(ch.hits[0].value < 0 for ch in pre_act.channels if ch.channel == 7)
    # the classifier's logits: a vector layer, whole-image crops, each class's own digits first
    r = examples(None, DIGITS, "logits", channels="all", top=5)
    assert r.map_shape == [10] and r.receptive_field is None
    for ch in r.channels:
        assert all(h.location is None and h.box == (0, 0, 32, 32) for h in ch.hits)
        assert all(h.file.name.startswith(f"{ch.channel}_") for h in ch.hits), ch.channel


def test_default_channel_cap_and_note():
    r = examples(None, DIGITS, "relu3", top=1)
    assert [c.channel for c in r.channels] == list(range(16))
    assert any("channels 0-15 of 64" in n for n in r.notes)


# ---------------------------------------------------------------- geometry: bright squares

def square_model(dynamic: bool = False, nhwc: bool = False, same: bool = False
                 ) -> onnx.ModelProto:
    """Channel 0 averages a 7x7 window (a bright-square detector), channel 1 its negative,
    then a 2x2 max pool: fields of 8x8 pixels, 2 pixels apart. `same`: the conv has stride 2
    and SAME_UPPER padding instead, whose offsets depend on the input size (fields of 9x9
    pixels, 4 apart)."""
    h, w = ("h", "w") if dynamic else (32, 32)
    shape = ["n", h, w, 1] if nhwc else ["n", 1, h, w]
    box = np.ones((1, 1, 7, 7), np.float32) / 49
    weight = numpy_helper.from_array(np.concatenate([box, -box]), "w")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2])] if nhwc else []
    geometry = ({"auto_pad": "SAME_UPPER", "strides": [2, 2]} if same else
                {"pads": [3, 3, 3, 3]})
    nodes += [helper.make_node("Conv", ["t" if nhwc else "x", "w"], ["c"], "conv",
                               kernel_shape=[7, 7], **geometry),
              helper.make_node("MaxPool", ["c"], ["pool"], "pool", kernel_shape=[2, 2],
                               strides=[2, 2])]
    graph = helper.make_graph(nodes, "squares", [helper.make_tensor_value_info("x", 1, shape)],
                              [helper.make_tensor_value_info("pool", 1, [None] * 4)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SIZES = [(64, 48), (40, 100), (120, 90), (32, 32), (50, 200), (301, 97)]


def visible_region(image_hw, mode, input_hw):
    """Where the model input comes from in the original image (written out independently of
    onnxviz: cover-and-center-crop, or the whole image when stretching)."""
    h, w = image_hw
    if mode == "stretch":
        return 0.0, 0.0, float(h), float(w)
    f = max(input_hw[0] / h, input_hw[1] / w)
    ch, cw = input_hw[0] / f, input_hw[1] / f
    return (h - ch) / 2, (w - cw) / 2, (h + ch) / 2, (w + cw) / 2


def make_squares(folder: Path, mode: str, input_hw_of, seed: int) -> dict[str, tuple]:
    """One black image per size with a white rectangle about 3.5 model pixels wide at a random
    place inside what the model sees; returns file name -> rectangle (t, l, b, r)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    squares = {}
    for k, (h, w) in enumerate(SIZES):
        ihw = input_hw_of((h, w))
        top, left, bottom, right = visible_region((h, w), mode, ihw)
        sy, sx = (bottom - top) / ihw[0], (right - left) / ihw[1]  # original px per model px
        rh, rw = max(1, round(3.5 * sy)), max(1, round(3.5 * sx))
        t = int(rng.integers(int(np.ceil(top)) + 1, int(bottom) - rh - 1))
        le = int(rng.integers(int(np.ceil(left)) + 1, int(right) - rw - 1))
        img = np.zeros((h, w), np.uint8)
        img[t:t + rh, le:le + rw] = 255
        name = f"sq_{k}_{h}x{w}.png"
        Image.fromarray(img).save(folder / name)
        squares[name] = (t, le, t + rh, le + rw, sy, sx)
    return squares


CASES = [  # (dynamic, nhwc, same, resize, size)
    (False, False, False, "shorter-side", None), (False, False, False, "center-crop", None),
    (False, False, False, "stretch", None), (False, True, False, "stretch", None),
    (True, False, False, "shorter-side", (32,)), (True, False, False, "center-crop", (32,)),
    (True, False, False, "stretch", (32, 48)), (True, True, False, "shorter-side", (40,)),
    (True, False, True, "shorter-side", (33,)),
]


@pytest.mark.parametrize(("dynamic", "nhwc", "same", "resize", "size"), CASES)
def test_crop_boxes_contain_the_square_in_original_pixels(tmp_path, dynamic, nhwc, same,
                                                          resize, size):
    model = load_model(square_model(dynamic, nhwc, same))
    contract = main_input(model)
    pre = choose_preprocess(contract, "unit", resize=resize, size=size)
    from onnxviz.images import target_size

    squares = make_squares(tmp_path / "imgs", resize,
                           lambda hw: target_size(hw, contract, pre)[0], seed=len(resize))
    r = examples(model, tmp_path / "imgs", "pool", channels="0", top=len(SIZES), preprocess=pre)
    (ch,) = r.channels
    assert sorted(h.file.name for h in ch.hits) == sorted(squares)
    for h in ch.hits:
        t, le, b, rt, sy, sx = squares[h.file.name]
        top, left, bottom, right = h.box
        assert top <= t and left <= le and bottom >= b and right >= rt, (h.file.name, h.box)
        # and it is the 8x8 (9x9) field, not the whole image (+1 pixel for rounding)
        side = 9 if same else 8
        assert bottom - top <= side * sy + 2 and right - left <= side * sx + 2, (h.file.name,
                                                                                 h.box)
        assert h.image_size == tuple(int(v) for v in h.file.stem.split("_")[2].split("x"))
        assert h.crop.shape[:2] == (bottom - top, right - left)
        assert h.crop.max() == 255  # the crop shows the square
        field = receptive_fields(model.proto, "x", h.input_size,
                                 layout="NHWC" if nhwc else "NCHW")["pool"]
        assert h.input_box == field.box(*h.location, *h.input_size)  # this size's own field


def test_size_groups_and_partial_batches_give_the_same_hits(tmp_path, monkeypatch):
    """Dynamic sizes: images wait in groups of one input size; with no room to wait, every
    group runs as soon as it has an image. Either way, the same hits."""
    model = load_model(square_model(dynamic=True))
    contract = main_input(model)
    pre = choose_preprocess(contract, "unit", size=(32,))
    from onnxviz.images import target_size

    for k in range(3):
        make_squares(tmp_path / f"imgs{k}", "shorter-side",
                     lambda hw: target_size(hw, contract, pre)[0], seed=k)
    runs = []
    for cap in (1 << 30, 0):
        monkeypatch.setattr(ex, "BUFFER_BYTES", cap)
        runs.append(examples(model, tmp_path, "pool", channels="all", top=7, preprocess=pre,
                             batch=4))
    for a, b in zip(runs[0].channels, runs[1].channels, strict=True):
        assert [(h.file, h.value, h.location) for h in a.hits] == [
            (h.file, h.value, h.location) for h in b.hits]
    assert len({h.input_size for h in runs[0].channels[0].hits}) > 1


def test_to_original_inverts_the_resize_of_a_box():
    # stretch 100x50 -> 32x32: model pixel rows 8..16 are original rows 25..50
    assert to_original((8, 0, 16, 32), (32, 32), (100, 50), "stretch") == (25, 0, 50, 50)
    # center-crop 40x100 -> 32x32: the model sees columns 30..70, 1.25 px per model px
    assert to_original((0, 0, 32, 32), (32, 32), (40, 100), "center-crop") == (0, 30, 40, 70)
    assert to_original((4, 8, 12, 16), (32, 32), (40, 100), "center-crop") == (5, 40, 15, 50)


# ---------------------------------------------------------------- files

def test_unreadable_files_are_skipped_and_counted_hidden_ones_ignored(tmp_path):
    files = sorted(DIGITS.iterdir())[:3]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    Image.open(files[0]).save(tmp_path / "sub" / "deeper" / "nested.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(files[1].read_bytes()[:60])
    shutil.copy(files[2], tmp_path / ".hidden.png")
    (tmp_path / ".cache").mkdir()
    shutil.copy(files[2], tmp_path / ".cache" / "x.png")
    r = examples(None, tmp_path, "relu2", channels="0", top=10)
    assert r.files == 7 and r.images == 4
    assert sorted(s.file.name for s in r.skipped) == ["empty.png", "notes.txt", "truncated.png"]
    assert all(s.reason for s in r.skipped)
    assert {h.file.name for h in r.channels[0].hits} == {*(f.name for f in files), "nested.jpg"}
    d = r.to_dict()
    assert sorted(s["file"] for s in d["skipped"]) == ["empty.png", "notes.txt", "truncated.png"]
    assert "sub/deeper/nested.jpg" in [h["file"] for h in d["channels"][0]["hits"]]


def test_crops_read_the_file_as_load_pixels_does(tmp_path):
    """Crops are converted after cropping; they must equal the same box of `load_pixels`
    (EXIF rotation, palette with transparency, gray + alpha, 16-bit, float)."""
    from onnxviz.images import load_pixels

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rotated.png", exif=exif.tobytes())
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(
        tmp_path / "palette.png", transparency=3)
    Image.fromarray(rgb).convert("LA").save(tmp_path / "gray_alpha.png")
    Image.fromarray((rng.random((40, 60)) * 65535).astype(np.uint16)).save(
        tmp_path / "sixteen.png")
    Image.fromarray(rng.random((40, 60)).astype(np.float32), mode="F").save(
        tmp_path / "float.tif")
    for f in sorted(tmp_path.iterdir()):
        pixels, _ = load_pixels(f)
        h, w = pixels.shape[:2]
        boxes = [(3, 5, 17, 30), (0, 0, h, w), (h - 4, w - 9, h, w)]
        hits = [ex.Hit(f, 1.0, (0, 0), (h, w), b, (h, w), b) for b in boxes]
        ex._crop_file(f, hits)
        for hit, (t, le, b, r) in zip(hits, boxes, strict=True):
            want = np.clip(np.round(pixels[t:b, le:r]), 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(hit.crop, want, err_msg=f.name)
    assert load_pixels(tmp_path / "rotated.png")[0].shape[:2] == (60, 40)


def test_file_order_is_deterministic_and_recursive(tmp_path):
    for rel in ["b/2.png", "a.png", "b/1.png", "a/z.png", "c.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_files(tmp_path)]
    assert names == ["a/z.png", "a.png", "b/1.png", "b/2.png", "c.png"]  # by path components
    assert list_files(tmp_path) == list_files(tmp_path)


def test_memory_holds_one_batch_of_activations_at_a_time(tmp_path, monkeypatch):
    """Spy on onnxruntime's outputs: when a batch runs, no earlier batch's activations are
    still alive, and the running top-k never grows past `top` entries per channel."""
    for k in range(3):
        shutil.copytree(DIGITS, tmp_path / f"copy{k}")
    alive: list[weakref.ref] = []
    calls: list[tuple[int, int]] = []
    real_run, real_update = ex.run, ex._TopK.update

    def spy_run(session, feeds, outputs):
        calls.append((sum(r() is not None for r in alive), next(iter(feeds.values())).shape[0]))
        out = real_run(session, feeds, outputs)
        alive.extend(weakref.ref(a) for a in out)
        return out

    widths = []

    def spy_update(self, acts, images, geom):
        real_update(self, acts, images, geom)
        widths.append((self.value.shape[1], self.pending_images))

    monkeypatch.setattr(ex, "run", spy_run)
    monkeypatch.setattr(ex._TopK, "update", spy_update)
    r = examples(None, tmp_path, "relu1", channels="0-3", top=5, batch=8)
    assert r.images == 300 and len(calls) == 300 // 8 + 1
    assert max(n for n, _ in calls) == 0, "an earlier batch's activations were still alive"
    assert max(b for _, b in calls) == 8
    assert max(w for w, _ in widths) == 5  # kept entries per channel
    assert max(p for _, p in widths) < ex._TopK.MERGE_EVERY  # per-image maxima waiting
    assert all(r() is None for r in alive)


# ---------------------------------------------------------------- errors

def test_errors_are_one_line_user_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("hello")
    cases = [
        (dict(images_dir=tmp_path / "nope"), "no such folder"),
        (dict(images_dir=DIGITS / "0_0276.png"), "is a file"),
        (dict(images_dir=tmp_path / "empty"), "no files in"),
        (dict(images_dir=tmp_path / "junk"), "none of the 1 file"),
        (dict(layer="relu9"), "Did you mean"),
        (dict(layer="image"), "graph input"),
        (dict(channels="3-1"), "bad channel spec"),
        (dict(channels="x"), "bad channel spec"),
        (dict(channels="0,40"), "out of range"),
        (dict(top=0), "top must be"),
        (dict(layer="flatten"), None),  # rank 2 through Flatten: allowed
    ]
    for kwargs, message in cases:
        args = {"images_dir": DIGITS, "layer": "relu2", "top": 2, "channels": "0"} | kwargs
        if message is None:
            assert examples(None, **args).channels
            continue
        with pytest.raises(OnnxvizError, match=message) as info:
            examples(None, **args)
        assert "\n" not in str(info.value)


def test_fixed_batch_dimension(fixture_models, photos, tmp_path):
    """The NHWC fixture has batch 1 fixed: images go one by one; another batch is refused."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos[:5]:
        shutil.copy(p, folder / p.name)
    path = fixture_models / "nhwc.onnx"
    r = examples(path, folder, "conv", channels="0-1", top=5)
    assert r.batch == 1 and r.images == 5 and len(r.channels[0].hits) == 5
    for h in r.channels[0].hits:
        assert 0 <= h.box[0] < h.box[2] <= h.image_size[0]
        assert 0 <= h.box[1] < h.box[3] <= h.image_size[1]
    with pytest.raises(OnnxvizError, match="fixed at 1"):
        examples(path, folder, "conv", batch=4)


def test_layer_model_keeps_only_what_computes_the_layer(fixture_models):
    """The cut model passes the checker, runs on the image alone, has the layer as its only
    output and gives the values of the whole model with the layer exposed."""
    import onnxruntime as ort

    for path, tensor in ((fixture_models / "old_ir.onnx", "conv"), (None, "relu2")):
        model = load_model(path)
        cut = ex.layer_model(model, tensor)
        onnx.checker.check_model(cut)
        assert [o.name for o in cut.graph.output] == [tensor]
        assert len(cut.graph.node) < len(model.proto.graph.node)
        whole = ort.InferenceSession(expose_tensors(model, [tensor]).SerializeToString(),
                                     providers=["CPUExecutionProvider"])
        part = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
        contract = main_input(model)
        assert [i.name for i in part.get_inputs()] == [contract.name]
        shape = [d if isinstance(d, int) else 2 for d in contract.shape]
        x = np.random.default_rng(0).random(shape, np.float32)
        np.testing.assert_array_equal(part.run(None, {contract.name: x})[0],
                                      whole.run([tensor], {contract.name: x})[0])


def test_parse_channels():
    assert parse_channels("0-3,8", 10) == ([0, 1, 2, 3, 8], None)
    assert parse_channels("5, 1,5", 10) == ([5, 1], None)
    assert parse_channels("all", 40)[0] == list(range(40))
    chosen, note = parse_channels(None, 40)
    assert chosen == list(range(16)) and "of 40" in note
    assert parse_channels(None, 8) == (list(range(8)), None)
    assert parse_channels([2, 3], None) == ([2, 3], None)
    for bad in ("", "1,,2", "a-b", "-1", "2-", "1.5"):
        with pytest.raises(OnnxvizError):
            parse_channels(bad, 10)


# ---------------------------------------------------------------- real models

def test_real_classifier_matches_brute_force_on_photos(real_model, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos:
        shutil.copy(p, folder / p.name)
    model = load_model(real_model("pplcnet"))
    pre = choose_preprocess(main_input(model), "imagenet")
    layer = "p2o.pd_op.hardswish.4.0"  # 56x56, fields of 11 pixels
    r = examples(model, folder, layer, channels="0-3", top=4, preprocess=pre)
    files = list_files(folder)
    assert r.images == len(files)
    assert_same_as_brute(r, brute_force(model, files, layer, range(4), 4, pre), width=56)
    f = r.receptive_field
    assert f.size == (11.0, 11.0) and f.jump == (4.0, 4.0)
    for ch in r.channels:  # fields of 11 model pixels, mapped to the photos' scale
        for h in ch.hits:
            scale = min(h.image_size) / 224
            assert h.box[2] - h.box[0] <= 11 * scale + 2 and h.box[3] - h.box[1] <= 11 * scale + 2


def test_real_detector_with_dynamic_sizes(real_model, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos[:6]:
        shutil.copy(p, folder / p.name)
    model = load_model(real_model("yolov8n"))
    pre = choose_preprocess(main_input(model), None, size=(96,))
    r = examples(model, folder, "/model.2/cv2/act/Mul_output_0", channels="0-2", top=6,
                 preprocess=pre)
    sizes = {h.input_size for ch in r.channels for h in ch.hits}
    assert len(sizes) > 1  # aspect ratios kept: several input sizes
    for ch in r.channels:
        assert len(ch.hits) == 6
        for h in ch.hits:
            assert min(h.input_size) == 96
            assert 0 <= h.box[0] < h.box[2] <= h.image_size[0]
            assert 0 <= h.box[1] < h.box[3] <= h.image_size[1]
            assert h.crop.shape[:2] == (h.box[2] - h.box[0], h.box[3] - h.box[1])
    assert [h.file for h in r.channels[0].hits] == [
        h.file for h in examples(model, folder, "/model.2/cv2/act/Mul_output_0",
                                 channels="0", top=6, preprocess=pre, batch=1).channels[0].hits]


# ---------------------------------------------------------------- picture

def test_tiles_and_picture():
    crop = np.arange(25, dtype=np.uint8).reshape(5, 5, 1) * 10
    tile = fit_tile(crop, 112)
    assert tile.shape == (112, 112, 3)
    assert len(np.unique(tile[1:-1, 1:-1, 0])) == 25  # each pixel a crisp 22x22 block
    big = fit_tile(np.full((500, 250, 3), 200, np.uint8), 112)
    assert (big[:, 28:84] == 200).all() and (big[:, :27] != 200).all()
    mid = fit_tile(np.full((80, 60, 3), 90, np.uint8), 112)  # resampled to fill the tile
    assert (mid[:, 14:98] == 90).all() and (mid[:, :13] != 90).all()
    assert fit_tile(None, 64).shape == (64, 64, 3)
    f = font(11)
    short = fit_text("a_very_long_file_name_for_a_photo.png", f, 80)
    assert f.getlength(short) <= 80 and short.endswith(".png") and "\u2026" in short
    r = examples(None, DIGITS, "relu2", channels="0-2", top=4)
    img = examples_image(r, tile=64)
    five = examples_image(examples(None, DIGITS, "relu2", channels="0-4", top=4), tile=64)
    assert five.height > img.height and img.width == five.width
    with pytest.raises(ValueError):
        render_examples([], [], [])


# ---------------------------------------------------------------- CLI

def _png_text(path: Path) -> dict:
    with Image.open(path) as im:
        return dict(im.text)


def test_cli_writes_png_with_provenance_and_json(tmp_path):
    out = tmp_path / "ex.png"
    res = CliRunner().invoke(main, ["examples", str(DIGITS), "--layer", "relu3", "--channels",
                                    "0-3", "--top", "4", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["layer"] == "relu3" and info["images"] == 100 and info["png"] == str(out)
    assert [c["channel"] for c in info["channels"]] == [0, 1, 2, 3]
    for c in info["channels"]:
        assert len(c["hits"]) == 4
        values = [h["value"] for h in c["hits"]]
        assert values == sorted(values, reverse=True)
        for h in c["hits"]:
            assert (DIGITS / h["file"]).is_file() and len(h["box"]) == 4
            assert 0 <= h["box"][0] < h["box"][2] <= h["image_size"][0]
    meta = _png_text(out)
    assert meta["onnxviz.layer"] == "relu3" and meta["onnxviz.model_sha256"] == info[
        "model_sha256"]
    assert "examples" in meta["onnxviz.command"] and meta["onnxviz.channels"] == "0,1,2,3"


def test_cli_text_output_and_optional_model(tmp_path):
    out = tmp_path / "a.png"
    model = str(default_model_path())
    res = CliRunner().invoke(main, ["examples", model, str(DIGITS), "--layer", "relu1",
                                    "--channels", "1,5", "--top", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "ch   1  best" in res.stdout and "ch   5  best" in res.stdout
    assert f"wrote {out}" in res.stdout and out.is_file()
    out2 = tmp_path / "b.png"
    res = CliRunner().invoke(main, ["examples", "--layer", "relu1", "--channels", "0", "--top",
                                    "2", "-o", str(out2)])
    assert res.exit_code == 0, res.output
    assert "bundled digits folder" in res.stderr and out2.is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["{empty}", "--layer", "relu1"], "no files in"),
    (["{junk}", "--layer", "relu1"], "none of the 1 file"),
    (["{digits}", "--layer", "relu7"], "Did you mean"),
    (["{digits}", "--layer", "relu1", "--channels", "0-99"], "out of range"),
    (["{digits}", "--layer", "relu1", "--channels", "one"], "bad channel spec"),
    (["{digits}/0_0276.png", "--layer", "relu1"], "is a file"),
    (["a.onnx", "b", "c", "--layer", "relu1"], "expected [MODEL] IMAGES_DIR"),
    (["{missing}.onnx", "{digits}", "--layer", "relu1"], "no such"),
])
def test_cli_errors_exit_2_without_writing(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.bin").write_bytes(b"\0" * 10)
    out = tmp_path / "out.png"
    paths = {"empty": tmp_path / "empty", "junk": tmp_path / "junk", "digits": DIGITS,
             "missing": tmp_path / "missing"}
    argv = ["examples", *(a.format(**paths) for a in args), "-o", str(out)]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.png*"))


def test_cli_refuses_an_unwritable_output_before_running(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    res = CliRunner().invoke(main, ["examples", str(DIGITS), "--layer", "relu1", "-o",
                                    str(tmp_path / "file" / "out.png")])
    assert res.exit_code == 2 and "cannot write" in res.stderr
    assert "images" not in res.stderr  # no progress: it stopped before the run


def test_preprocess_spec_is_recorded():
    r = examples(None, DIGITS, "relu1", channels="0", top=1,
                 preprocess=Preprocess.from_preset("unit", resize="stretch"))
    assert r.to_dict()["preprocess"]["resize"] == "stretch"
