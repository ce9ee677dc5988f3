"""Safe loading and `inspect`: limits, external data confinement, corrupt files, the contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import make_fixtures as mf  # fixtures/ is put on sys.path by conftest
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from onnxviz import OnnxvizError, load_model
from onnxviz.cli import main
from onnxviz.errors import ModelLoadError
from onnxviz.graph import Graph, synthesize_node_names


def test_fixture_files_match_the_script(tmp_path, fixture_models):
    """The committed fixtures are exactly what fixtures/make_fixtures.py writes."""
    for path in mf.write_all(tmp_path):
        assert path.read_bytes() == (fixture_models / path.name).read_bytes(), path.name


def test_load_from_path_bytes_and_proto(fixture_models):
    path = fixture_models / "initializer.onnx"
    a = load_model(path)
    b = load_model(path.read_bytes())
    c = load_model(onnx.load(str(path)))
    assert a.sha256 == b.sha256 == c.sha256
    assert a.file_size == path.stat().st_size
    assert load_model(a) is a


def test_default_model_is_embedded():
    m = load_model(None)
    assert m.is_default and m.path.name == "digits_cnn.onnx"
    s = m.summary
    assert s.inputs[0].layout == "NCHW" and s.inputs[0].channels == 1
    assert (s.inputs[0].height, s.inputs[0].width) == (32, 32)
    assert s.first_layer == "conv1"
    assert [x.name for x in s.layers] == ["conv1", "conv2", "conv3", "fc1", "fc2"]


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"PK\x03\x04rest-of-a-zip", "PyTorch"),
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
    (b"\x00\x00\x00\x00TFL3", "TensorFlow Lite"),
    (b"hello, I am not a model at all\n" * 10, "not"),
    (bytes(range(256)) * 4, "not"),
])
def test_not_onnx_files_give_one_line(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_truncated_file(tmp_path, fixture_models):
    data = (fixture_models / "initializer.onnx").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        load_model(path)


def test_size_limit(tmp_path, fixture_models):
    path = fixture_models / "initializer.onnx"
    with pytest.raises(ModelLoadError, match="--max-bytes"):
        load_model(path, max_bytes=100)
    assert load_model(path, max_bytes=10_000).sha256


def test_checker_failure_is_one_line(tmp_path):
    node = helper.make_node("Conv", ["x"], ["y"])  # Conv needs a weight input
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "broken.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="ONNX checker") as info:
        load_model(path)
    assert "\n" not in str(info.value)


def _external_model(tmp_path, location: str):
    """The initializer fixture with one tensor pointing at `location`."""
    model = mf.initializer()
    tensor = next(t for t in model.graph.initializer if t.name == "conv.w")
    raw = tensor.raw_data or numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = k, v
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path, raw


def test_external_data_inside_folder_loads(tmp_path, fixture_models):
    m = load_model(fixture_models / "external.onnx")
    from onnxviz import layer_weights

    np.testing.assert_array_equal(layer_weights(m).weights, mf.FILTERS)
    assert m.file_size > (fixture_models / "external.onnx").stat().st_size


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, location):
    path, raw = _external_model(tmp_path, location)
    (tmp_path / "secret.bin").write_bytes(raw)
    with pytest.raises(ModelLoadError, match="refusing external data"):
        load_model(path)


def test_external_data_symlink_leaving_the_folder_is_refused(tmp_path):
    path, raw = _external_model(tmp_path, "weights.bin")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(raw)
    os.symlink(outside, path.parent / "weights.bin")
    with pytest.raises(ModelLoadError, match="outside"):
        load_model(path)
    # a real file in the folder is fine
    (path.parent / "weights.bin").unlink()
    shutil.copy(outside, path.parent / "weights.bin")
    assert load_model(path).sha256


def test_external_data_missing_or_short(tmp_path):
    path, raw = _external_model(tmp_path, "weights.bin")
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(path)
    (path.parent / "weights.bin").write_bytes(raw[:10])
    with pytest.raises(ModelLoadError, match="runs past the end"):
        load_model(path)


def test_bytes_with_external_data_refused(tmp_path):
    path, _ = _external_model(tmp_path, "weights.bin")
    with pytest.raises(ModelLoadError, match=r"path of the \.onnx"):
        load_model(path.read_bytes())


def test_custom_domain_ops_are_named():
    x = helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", 1, [1, 3, 8, 8])
    node = helper.make_node("MagicBlur", ["x"], ["y"], "blur", domain="com.example")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("com.example", 1)])
    m = load_model(model)
    assert m.custom_ops == [("com.example", "MagicBlur", "blur")]
    assert m.summary.custom_ops == ["com.example::MagicBlur (node blur)"]


def test_hostile_constant_of_shape_is_not_folded():
    """A ConstantOfShape asking for 2**40 elements must not allocate them."""
    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["w"], "bomb"),
             helper.make_node("MatMul", ["x", "w"], ["y"], "mm")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 1 << 20])],
                          [helper.make_tensor_value_info("y", 1, [1, 1 << 20])],
                          initializer=[shape]),
        opset_imports=[helper.make_opsetid("", 17)])
    g = Graph(model)
    assert not g.is_constant("w")
    assert load_model(model).summary.layers == []


def test_synthesized_node_names_are_stable_and_unique():
    nodes = [helper.make_node("Relu", ["a"], ["b"]), helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("Relu", ["c"], ["d"], "Relu_0"),
             helper.make_node("Add", ["d", "d"], ["e"], "dup"),
             helper.make_node("Add", ["e", "e"], ["f"], "dup")]
    names = synthesize_node_names(nodes)
    assert len(set(names)) == len(names)
    assert names[1] == "Relu_1" and names[2] == "Relu_0" and names[0] != "Relu_0"
    assert names == synthesize_node_names(nodes)


# ---------------------------------------------------------------- contract

def test_contract_nhwc_and_normalization(fixture_models):
    nhwc = load_model(fixture_models / "nhwc.onnx").summary.inputs[0]
    assert nhwc.layout == "NHWC" and nhwc.channels == 3 and nhwc.height == 16
    norm = load_model(fixture_models / "normalized.onnx").summary.inputs[0]
    assert [s.op for s in norm.normalization] == ["Sub", "Mul"]
    assert norm.normalization[0].value == pytest.approx([103.939, 116.779, 123.68])
    assert norm.color_order == "BGR"
    dense_nhwc = load_model(fixture_models / "dense_nhwc.onnx").summary.inputs[0]
    assert dense_nhwc.layout == "NHWC"
    assert load_model(fixture_models / "no_conv.onnx").summary.first_layer is None


@pytest.mark.real
def test_contract_of_real_models(real_model):
    yolo = load_model(real_model("yolov8n")).summary
    c = yolo.inputs[0]
    assert c.layout == "NCHW" and c.channels == 3
    assert c.height == "height" and c.width == "width"  # symbolic dims kept
    assert yolo.first_layer == "/model.0/conv/Conv"
    assert len(yolo.layers) == 64
    det = load_model(real_model("ppocr_det")).summary
    assert det.producer == "" or isinstance(det.producer, str)
    assert det.params > 1_000_000  # weights in Constant nodes are counted


# ---------------------------------------------------------------- CLI

def test_cli_inspect_text_and_json(fixture_models):
    res = CliRunner().invoke(main, ["inspect", str(fixture_models / "batchnorm.onnx")])
    assert res.exit_code == 0, res.output
    assert "layout NCHW" in res.stdout and "conv" in res.stdout
    res = CliRunner().invoke(main, ["inspect", str(fixture_models / "nhwc.onnx"), "--json"])
    data = json.loads(res.stdout)
    assert data["inputs"][0]["layout"] == "NHWC" and data["inputs"][0]["channels"] == 3
    assert data["first_layer"] == "conv"
    assert {"name", "op", "output", "weight_shape"} <= set(data["layers"][0])
    assert data["layers"][0]["stats"]["zero_filters"] == 1  # filter 6 is dead


def test_cli_inspect_default_model_says_so():
    res = CliRunner().invoke(main, ["inspect", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["first_layer"] == "conv1"
    assert "embedded default model" in res.stderr


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.write_bytes(b"garbage" * 50), "not"),
    (lambda p: None, "no such model file"),
    (lambda p: p.mkdir(), "is a folder"),
])
def test_cli_bad_model_exit_2_without_traceback(tmp_path, setup, message):
    path = tmp_path / "m.onnx"
    setup(path)
    res = CliRunner().invoke(main, ["inspect", str(path)])
    assert res.exit_code == 2
    assert message in res.stderr and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_console_script_and_module_entry_points(tmp_path):
    """`python -m onnxviz` works and a bad file exits 2 in a real process."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    proc = subprocess.run([sys.executable, "-m", "onnxviz", "inspect", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error:")
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "onnxviz", "--version"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "onnxviz" in proc.stdout


def test_no_framework_imports_in_the_package():
    import pathlib

    pkg = pathlib.Path(__file__).resolve().parent.parent / "onnxviz"
    for py in pkg.rglob("*.py"):
        text = py.read_text()
        for banned in ("import torch", "from torch", "import tensorflow", "from tensorflow"):
            assert banned not in text, f"{py} imports a framework ({banned})"


def test_onnxviz_error_is_one_line():
    assert "\n" not in str(OnnxvizError("a\nb\n  c"))


@pytest.mark.parametrize("name", ["batchnorm", "qdq", "constant", "external", "focus"])
def test_mutated_files_never_crash(fixture_models, tmp_path, name):
    """Random byte flips and truncations of a fixture: a summary or a one-line error, never
    an internal error (exit 3) or a traceback. (A longer campaign of 11,000 runs found the
    cases the integrity checks in model.py now catch.)"""
    data = bytearray((fixture_models / f"{name}.onnx").read_bytes())
    rng = np.random.default_rng(0)
    runner = CliRunner()
    codes = []
    for trial in range(30):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            mutated[pos] = int(rng.integers(0, 256))
        if trial % 4 == 0:
            mutated = mutated[: int(rng.integers(1, len(data)))]
        path = tmp_path / f"m{trial}.onnx"
        path.write_bytes(bytes(mutated))
        for args in (["inspect", str(path)], ["weights", str(path), "-o", str(tmp_path / "w.png")]):
            res = runner.invoke(main, args)
            assert res.exit_code in (0, 2), (trial, args[0], res.output)
            codes.append(res.exit_code)
    assert 2 in codes


def _with_initializer(tensor: onnx.TensorProto) -> onnx.ModelProto:
    model = mf.initializer()
    model.graph.initializer.append(tensor)
    return model


def test_tensor_with_wrong_byte_count_is_corrupt(tmp_path):
    t = numpy_helper.from_array(np.zeros((2, 3), np.float32), "extra")
    t.raw_data = t.raw_data[:-4]
    path = tmp_path / "m.onnx"
    path.write_bytes(_with_initializer(t).SerializeToString())
    with pytest.raises(ModelLoadError, match="'extra' holds 20 bytes where its shape"):
        load_model(path)


def test_unknown_data_type_is_corrupt(tmp_path):
    t = numpy_helper.from_array(np.zeros(2, np.float32), "extra")
    t.data_type = 99
    path = tmp_path / "m.onnx"
    path.write_bytes(_with_initializer(t).SerializeToString())
    with pytest.raises(ModelLoadError, match="unknown data type"):
        load_model(path)


def test_dead_units_of_dense_layers_are_counted_per_unit():
    """Gemm with transB=1 (PyTorch's layout) stores units as rows, MatMul as columns."""
    w = np.ones((4, 6), np.float32)
    w[2] = 0  # unit 2 of the Gemm is dead
    x = helper.make_tensor_value_info("x", 1, [1, 6])
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], "gemm", transB=1),
             helper.make_node("MatMul", ["h", "m"], ["y"], "matmul")]
    m = np.ones((4, 5), np.float32)
    m[:, 1] = 0  # unit 1 of the MatMul is dead
    model = helper.make_model(helper.make_graph(
        nodes, "g", [x], [helper.make_tensor_value_info("y", 1, [1, 5])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(m, "m")]),
        opset_imports=[helper.make_opsetid("", 17)])
    layers = {x.name: x for x in load_model(model).summary.layers}
    assert layers["gemm"].stats.zero_filters == 1
    assert layers["matmul"].stats.zero_filters == 1
