"""The HTML audit report: sections, inlined pictures, no external requests, escaping of hostile
names, the layer audit, the `report` command on the default and real models, errors."""

from __future__ import annotations

import base64
import html
import io
import os
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxviz.audit import AUDIT, audit_layers, near_duplicates
from onnxviz.cli import main
from onnxviz.errors import OnnxvizError
from onnxviz.model import load_model
from onnxviz.report import SECTIONS, encode_image, find_classifier, report, spread
from onnxviz.weights import filter_rows

report_module = sys.modules["onnxviz.report"]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

SECTION_IDS = [sid for sid, _ in SECTIONS]


# ---------------------------------------------------------------- parsing the page


class Page(HTMLParser):
    """Every start tag with its attributes, the text, and the ids, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: (v or "") for k, v in attrs}))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]

    @property
    def ids(self) -> list[str]:
        return [a["id"] for _, a in self.tags if "id" in a]


def check_self_contained(text: str, urls_in_text: bool = False) -> Page:
    """Assert the page needs nothing outside itself; return it parsed. `urls_in_text`: the model
    has strings with URLs in them, shown as (escaped) text."""
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "form", "frame"}, tags
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)  # no event handlers
            if name in ("src", "srcset", "data", "poster", "action", "formaction", "background"):
                assert value.startswith("data:image/"), (tag, name, value[:60])
            if name == "href":
                assert value.startswith("#"), (tag, value)  # in-page links only
    if not urls_in_text:
        lowered = re.sub(r"data:[^\"']*", "", text.lower())
        assert "http:" not in lowered and "https:" not in lowered and "//" not in lowered
    style = "".join(re.findall(r"<style>(.*?)</style>", text, flags=re.S))
    assert "url(" not in style and "@import" not in style and "@font-face" not in style
    csp = [a for a in page.find("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]
    return page


def decoded_images(page: Page) -> list[Image.Image]:
    """Every <img> decoded from its data: URI (PNG or JPEG), sizes checked against its tag."""
    out = []
    for attrs in page.find("img"):
        m = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", attrs["src"])
        assert m, attrs["src"][:60]
        data = base64.b64decode(m.group(2), validate=True)
        img = Image.open(io.BytesIO(data))
        assert img.format == m.group(1).upper()
        img.load()
        w, h = int(attrs["width"]), int(attrs["height"])
        if w >= img.width:  # shown enlarged by a whole factor, or as it is
            assert w % img.width == 0 and h % img.height == 0
            assert w // img.width == h // img.height
        else:  # shown smaller, aspect ratio kept
            assert abs(w / img.width - h / img.height) < 2 / min(img.size)
        assert attrs.get("alt")
        out.append(img)
    return out


def sections_in_order(page: Page) -> list[str]:
    return [i for i in page.ids if i in SECTION_IDS]


# ---------------------------------------------------------------- the default model


@pytest.fixture(scope="module")
def default_report(tmp_path_factory):
    """`onnxviz report` with no arguments, as README command 1 runs it (default steps)."""
    cwd = tmp_path_factory.mktemp("default")
    before = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(main, ["report"], catch_exceptions=False)
    finally:
        os.chdir(before)
    return r, (cwd / "report.html").read_text(encoding="utf-8")


def test_default_command_writes_every_section(default_report):
    r, text = default_report
    assert r.exit_code == 0, r.output
    assert "wrote report.html" in r.stdout
    page = check_self_contained(text)
    assert sections_in_order(page) == SECTION_IDS
    nav_links = [a["href"] for a in page.find("a")]
    assert all(f"#{sid}" in nav_links for sid in SECTION_IDS)
    assert all(link[1:] in page.ids for link in nav_links)  # no dangling anchor
    body = html.unescape("".join(page.text))
    assert "could not be produced" not in body and "Not produced" not in body
    # the default model's digit, filters, 3 conv feature maps, maximized channels and classes,
    # dataset examples of the bundled digits
    assert "digit.png" in body and "digits_cnn.onnx" in body
    assert re.search(r"relu3 \[1, 64, 8, 8\].*?\d+ of 64 channels dead", body, flags=re.S)
    alts = [a["alt"] for a in page.find("img")]
    assert any(a.startswith("filters of conv1") for a in alts)
    assert sum(a.startswith("feature maps of") for a in alts) == 3
    maximized = [a for a in alts if a.startswith("maximized")]
    assert len(maximized) == 3 * 8 + 8  # 3 conv layers x 8 channels, 8 top classes
    assert any(a.startswith("maximized logits:") for a in maximized)
    assert sum(a.startswith("dataset examples of") for a in alts) == 3
    assert "Method: gradient backend autodiff" in body
    assert "onnxruntime" in body and "Command" in body


def test_default_report_images_are_valid_inlined_pictures(default_report):
    _, text = default_report
    images = decoded_images(Page(text))
    assert len(images) >= 40
    assert all(img.width > 0 and img.height > 0 for img in images)
    # pictures have content: none is a single flat color
    assert all(len(img.convert("RGB").getcolors(1 << 16) or [0, 0]) > 1 for img in images)


def test_api_progress_and_result(tmp_path):
    events = []
    out = tmp_path / "sub" / "r.html"
    res = report(images=(), maximize=2, steps=3, output=out, progress=events.append)
    assert res.path == out and out.stat().st_size == res.bytes
    assert [s.id for s in res.sections] == SECTION_IDS
    assert all(s.error is None for s in res.sections)
    starts = [e.section for e in events if not e.done and not e.detail]
    ends = [e.section for e in events if e.done]
    assert starts == SECTION_IDS and ends == SECTION_IDS
    assert all(e.total == len(SECTIONS) for e in events)
    assert any(e.detail and e.section == "maximize" for e in events)
    assert res.images and Path(res.images[0]).name == "digit.png"  # bundled defaults
    assert res.examples_layers == ["relu1", "relu2", "relu3"]
    assert res.maximize_targets[:2] == ["relu1:0", "relu1:1"]
    assert len(res.maximize_targets) == 3 * 2 + 2
    assert res.pictures == len(Page(out.read_text()).find("img"))
    assert res.preprocess["preset"] == "unit"


def test_defaults_off_and_maximize_zero(tmp_path):
    res = report(maximize=0, defaults=False, output=tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    page = check_self_contained(text)
    assert sections_in_order(page) == SECTION_IDS
    assert res.images == [] and res.maximize_targets == [] and res.examples_layers == []
    body = html.unescape("".join(page.text))
    assert "No image given" in body and "Skipped (--maximize 0)" in body
    assert "Not requested: pass --examples DIR" in body


# ---------------------------------------------------------------- hostile names

EVIL = '<script>alert("pwned")</script>'
EVIL_ATTR = '"><img src=x onerror=alert(1)>'
EVIL_STYLE = "</style><link rel=stylesheet href=http://evil.example/x.css>"


def hostile_model() -> onnx.ModelProto:
    """A small classifier whose every name and string is an injection attempt."""
    rng = np.random.default_rng(0)
    conv_out, relu_out = f"conv{EVIL}", f"relu{EVIL_ATTR}"
    logits = f"logits{EVIL_STYLE}"
    inits = [
        numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
                                f"w{EVIL}"),
        numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), f"fc{EVIL}"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", f"w{EVIL}"], [conv_out], name=f"Conv{EVIL_ATTR}",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [conv_out], [relu_out], name=EVIL),
        helper.make_node("GlobalAveragePool", [relu_out], ["pooled"], name=EVIL_STYLE),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", f"fc{EVIL}"], [logits], name=f"Gemm{EVIL}",
                         transB=1),
    ]
    graph = helper.make_graph(
        nodes, EVIL, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name=EVIL, producer_version=EVIL_ATTR, doc_string=EVIL)
    model.ir_version = 8
    helper.set_model_props(model, {EVIL: EVIL_ATTR, "classes": f"a{EVIL},b,c{EVIL_ATTR},d",
                                   "note": EVIL_STYLE})
    onnx.checker.check_model(model)
    return model


def test_hostile_names_are_escaped(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    model_path = folder / "evil<b>'\".onnx"
    onnx.save(hostile_model(), model_path)
    image = folder / "img<i>'\"&.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(image)
    ex = tmp_path / f"ex{EVIL_ATTR}".replace("/", "_")
    ex.mkdir()
    shutil.copy(image, ex / "a.png")
    res = report(model_path, images=[image], examples_dir=ex, maximize=2, steps=2,
                 output=tmp_path / "r.html")
    assert all(s.error is None for s in res.sections), [s.error for s in res.sections]
    text = (tmp_path / "r.html").read_text()
    page = check_self_contained(text, urls_in_text=True)  # no script, handler, external URL
    assert sections_in_order(page) == SECTION_IDS
    assert "<script" not in text.lower() and "onerror=" not in text.replace("onerror=alert(1)&gt;",
                                                                             "")
    assert text.count("</style>") == 1
    body = html.unescape("".join(page.text))
    for s in (EVIL, EVIL_ATTR, EVIL_STYLE, model_path.name, image.name):
        assert s in body  # shown, as text
    assert len(decoded_images(page)) == res.pictures
    # the classifier's labels came from hostile metadata and are shown escaped too
    assert f"class 0 (a{EVIL})" in body


# ---------------------------------------------------------------- the layer audit


def audit_model() -> onnx.ModelProto:
    """Conv (8 filters of 4x3x3) with a dead, a near-duplicate pair, a NaN and an extreme
    weight; Gemm transB=1 with a dead unit; MatMul with a dead unit; a NaN bias."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 4, 3, 3)) * 0.1).astype(np.float32)
    w[0] = 0.0  # dead
    w[2] = 1.7 * w[1] + 1e-4 * rng.standard_normal((4, 3, 3))  # near-duplicate of 1
    w[5, 0, 0, 0] = np.nan
    w[6, 1, 1, 1] = 5000.0  # extreme
    fc = (rng.standard_normal((10, 8)) * 0.1).astype(np.float32)
    fc[3] = 0.0  # unit 3 of Gemm (transB=1: rows are units) is dead
    mm = (rng.standard_normal((10, 5)) * 0.1).astype(np.float32)
    mm[:, 4] = 0.0  # unit 4 of MatMul (columns are units) is dead
    bias = np.zeros(5, np.float32)
    bias[2] = np.inf
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w, "w"), (fc, "fc.w"), (mm, "mm.w"), (bias, "mm.b"))]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w"], ["g"], name="gemm", transB=1),
        helper.make_node("MatMul", ["g", "mm.w"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "mm.b"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "audit", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_audit_flags_each_problem():
    model = load_model(audit_model())
    rows = {a.layer.name: a for a in audit_layers(model)}
    conv = rows["conv"]
    kinds = {f.kind: f for f in conv.flags}
    assert set(kinds) == {"nonfinite", "dead-filters", "near-duplicates", "extreme"}
    assert kinds["nonfinite"].severity == "error"
    assert conv.dead_filters == [0]
    assert [(a, b) for a, b, _ in conv.duplicate_pairs] == [(1, 2)]
    assert conv.duplicate_pairs[0][2] > AUDIT.duplicate_cosine
    assert conv.duplicate_filters == 2
    assert "5000" in kinds["extreme"].message
    assert rows["gemm"].dead_filters == [3]  # units, not input features
    assert rows["matmul"].dead_filters == [4]
    assert rows["gemm"].filters == 10 and rows["matmul"].filters == 5
    assert not [f for f in rows["gemm"].flags if f.kind != "dead-filters"]


def test_audit_flags_reach_the_page(tmp_path):
    res = report(audit_model(), maximize=0, output=tmp_path / "a.html")
    kinds = {(f.layer, f.kind) for f in res.flags}
    assert ("conv", "near-duplicates") in kinds and ("gemm", "dead-filters") in kinds
    assert (None, "nonfinite") in kinds  # the Inf bias, outside any layer's weights
    page = Page((tmp_path / "a.html").read_text())
    body = html.unescape("".join(page.text))
    assert "Findings: 2 error(s)" in body
    assert "constant 'mm.b' holds 1 NaN/Inf value(s)" in body
    assert f"cosine similarity above {AUDIT.duplicate_cosine}" in body  # thresholds stated
    rows = [a.get("class") for a in page.find("tr")]
    assert rows.count("error") == 1 and rows.count("warning") == 2


def test_healthy_model_has_no_flags():
    assert not [f for a in audit_layers(load_model(None)) for f in a.flags]


def test_near_duplicates_match_brute_force():
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((40, 50))
    rows[7] = 3 * rows[30] + 0.01 * rng.standard_normal(50)
    rows[12] = -rows[4]  # anti-parallel: not a duplicate
    rows[20] = 0.0  # dead: left out
    pairs, n, note = near_duplicates(rows, 0.99, limit=1000)
    norms = np.linalg.norm(rows, axis=1)
    brute = [(i, j) for i in range(40) for j in range(i + 1, 40)
             if norms[i] > 0 and norms[j] > 0
             and rows[i] @ rows[j] / (norms[i] * norms[j]) > 0.99]
    assert sorted((a, b) for a, b, _ in pairs) == brute == [(7, 30)]
    assert n == 2 and note == ""
    _, _, note = near_duplicates(rows, 0.99, limit=10)
    assert "first 10 of 40" in note


def test_filter_rows_orientation():
    w = np.arange(24, dtype=np.float32).reshape(2, 12)
    gemm_t = helper.make_node("Gemm", ["a", "b"], ["c"], transB=1)
    gemm = helper.make_node("Gemm", ["a", "b"], ["c"])
    matmul = helper.make_node("MatMul", ["a", "b"], ["c"])
    assert filter_rows(gemm_t, w).shape == (2, 12)
    assert filter_rows(gemm, w).shape == (12, 2)
    np.testing.assert_array_equal(filter_rows(matmul, w)[5], w[:, 5])
    ct = helper.make_node("ConvTranspose", ["a", "b"], ["c"], group=2)
    wt = np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)  # C_in 4, O/g 3
    rows = filter_rows(ct, wt)
    assert rows.shape == (6, 2 * 4)
    np.testing.assert_array_equal(rows[4], wt[2:4, 1].ravel())  # group 1, its output 1


# ---------------------------------------------------------------- pieces


def test_spread_keeps_first_and_last():
    assert spread(list(range(3)), 5) == [0, 1, 2]
    picked = spread(list(range(53)), 24)
    assert picked[0] == 0 and picked[-1] == 52 and len(picked) == 24
    assert spread(list(range(10)), 1) == [9] and spread([], 3) == []


def test_encode_image_picks_png_for_flat_and_jpeg_for_noise():
    flat = Image.new("RGB", (300, 300), (20, 40, 60))
    assert encode_image(flat)[0] == "image/png"
    noise = Image.fromarray(
        (np.random.default_rng(0).random((400, 400, 3)) * 255).astype(np.uint8))
    mime, data = encode_image(noise)
    assert mime == "image/jpeg"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (400, 400)
    assert encode_image(noise, "png")[0] == "image/png"


def test_classifier_detection():
    c = find_classifier(load_model(None))
    assert c.output == "logits" and c.classes == 10 and not c.is_softmax
    assert c.labels == [str(i) for i in range(10)]


def test_feature_layers_capped_and_spread(tmp_path, monkeypatch):
    from synthetic import resnet18

    from onnxviz.report import conv_taps

    model = load_model(resnet18(size=64, width=8))
    monkeypatch.setattr(report_module, "FEATURE_LAYERS", 5)
    image = tmp_path / "noise.png"
    Image.fromarray((np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)
                    ).save(image)
    res = report(model, images=[image], maximize=1, steps=2, output=tmp_path / "r.html",
                 max_channels=8)
    convs = [t.tensor for t in conv_taps(model)]
    assert len(convs) == 20
    assert res.feature_layers == spread(convs, 5)
    assert res.feature_layers[0] == convs[0] and res.feature_layers[-1] == convs[-1]
    page = Page((tmp_path / "r.html").read_text())
    assert sum(a["alt"].startswith("feature maps of") for a in page.find("img")) == 5
    # maximization: 4 layers spread across depth, 1 channel each, plus 1 top class
    assert len(res.maximize_targets) == 4 + 1 and res.maximize_targets[-1].startswith("logits:")
    assert res.bytes < 1_500_000


# ---------------------------------------------------------------- the command: errors


def _invoke(args):
    return CliRunner().invoke(main, ["report", *args])


@pytest.mark.parametrize("args, words", [
    (["--image", "missing.png"], "no such image file"),
    (["--examples", "no_such_dir"], "examples folder"),
    (["--layers", "conv9"], "Did you mean"),
    (["--layers", "conv1,bogus"], "no layer or tensor named 'bogus'"),
])
def test_command_errors_are_one_line_and_write_nothing(tmp_path, args, words):
    out = tmp_path / "r.html"
    r = _invoke([*args, "-o", str(out)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and words in lines[-1]
    assert not any(ln.startswith("Traceback") for ln in lines)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_command_output_folder_and_bad_model(tmp_path):
    r = _invoke(["-o", str(tmp_path)])  # click's own usage error
    assert r.exit_code == 2 and "is a directory" in r.stderr
    with pytest.raises(OnnxvizError, match="is a folder"):
        report(output=tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = _invoke([str(bad), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 2 and r.stderr.strip().startswith("error:")
    assert not (tmp_path / "r.html").exists()


def test_no_half_written_file(tmp_path, monkeypatch):
    out = tmp_path / "r.html"
    out.write_text("the previous report")

    def boom(ctx, rec):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report_module, "_section_examples", boom)
    with pytest.raises(RuntimeError):
        report(maximize=1, steps=2, output=out)
    assert out.read_text() == "the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temp file left


def test_section_failure_is_shown_not_fatal(tmp_path, monkeypatch):
    def unsupported(ctx, targets, title):
        raise OnnxvizError(f"autodiff has no gradient rule for FancyOp ({title})")

    monkeypatch.setattr(report_module, "_run_maximize", unsupported)
    res = report(maximize=1, steps=2, output=tmp_path / "r.html")
    body = html.unescape("".join(Page((tmp_path / "r.html").read_text()).text))
    assert body.count("Not produced: autodiff has no gradient rule for FancyOp") == 4
    assert res.maximize_targets == []
    assert any("FancyOp" in n for s in res.sections for n in s.notes)


# ---------------------------------------------------------------- real models


@pytest.mark.real
@pytest.mark.slow
def test_command_on_real_classifier(real_model, photos, tmp_path):
    """PP-LCNet (PaddlePaddle, 4-class softmax): photos, dataset examples, maximization."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "lcnet.html"
    r = _invoke([str(real_model("pplcnet")), "--image", str(photos[0]), "--image",
                 str(photos[1]), "--examples", str(folder), "--maximize", "2", "--steps", "3",
                 "--max-channels", "8", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert "could not be produced" not in r.stderr
    import json

    info = json.loads(r.stdout)
    assert [s["error"] for s in info["sections"]] == [None] * len(SECTIONS)
    text = out.read_text()
    page = check_self_contained(text)
    assert sections_in_order(page) == SECTION_IDS
    assert len(decoded_images(page)) == info["pictures"]
    body = html.unescape("".join(page.text))
    assert "it is a Softmax, so its input" in body  # logits, not probabilities, maximized
    assert "Top 4 classes (softmax output)" in body
    assert len(info["feature_layers"]) == 24  # capped, of the 27 conv layers with maps
    assert "5 conv layer(s) with a 1x1 output, such as squeeze-and-excitation gates" in body
    assert len(info["examples_layers"]) == 4
    assert "1 of 4 files skipped" in body
    alts = [a["alt"] for a in page.find("img")]
    assert sum(a.startswith("maximized") for a in alts) == 4 * 2 + 2


@pytest.mark.real
def test_command_on_real_detector_dynamic_size(real_model, photos, tmp_path):
    """PP-OCRv4 det (dynamic H/W, no classifier): feature maps at --size, no maximization."""
    out = tmp_path / "det.html"
    r = _invoke([str(real_model("ppocr_det")), "--image", str(photos[0]), "--maximize", "0",
                 "--size", "96", "--max-channels", "4", "-o", str(out)])
    assert r.exit_code == 0, r.output
    page = check_self_contained(out.read_text())
    assert sections_in_order(page) == SECTION_IDS
    decoded_images(page)
    body = html.unescape("".join(page.text))
    assert "Classifier" not in body and "Skipped (--maximize 0)" in body
