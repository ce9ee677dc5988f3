"""The ort-training backend, in a separate virtual environment with the pinned
onnxruntime-training build (it replaces plain onnxruntime where it is installed, so it never
goes into the main environment). The environment is created once and cached under the test
cache folder; onnxviz runs from the source tree in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from onnxviz.errors import UnsupportedError
from onnxviz.grad import gradient_function, ort_training

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("ONNXVIZ_TEST_CACHE", Path.home() / ".cache" / "onnxviz-tests"))
VENV = CACHE / "venv-ort-training"
REQUIREMENTS = [ort_training.PIN, "onnx", "numpy", "pillow", "matplotlib", "click"]
NETWORK_WORDS = ("NewConnectionError", "Max retries", "Temporary failure in name resolution",
                 "Network is unreachable", "Connection refused", "ConnectTimeout",
                 "ReadTimeout", "Could not fetch URL", "connection broken", "Name or service")


def _base_python() -> str:
    if sys.version_info[:2] <= (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if not found:
        pytest.skip(f"{ort_training.PIN} has wheels for Python <= 3.11 only and no python3.11 "
                    "is on PATH")
    return found


def _venv_python() -> Path:
    """The cached venv's python, creating the venv (pinned training build) when missing."""
    python = VENV / "bin" / "python"
    ready = VENV / ".onnxviz-ready"
    if ready.is_file() and python.is_file():
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([_base_python(), "-m", "venv", str(VENV)], check=True, timeout=300)
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         *REQUIREMENTS], capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        text = proc.stdout + proc.stderr
        shutil.rmtree(VENV, ignore_errors=True)
        if any(w.lower() in text.lower() for w in NETWORK_WORDS):
            pytest.skip(f"the package registry cannot be reached to install {ort_training.PIN}: "
                        f"{text.strip().splitlines()[-1:]}")
        pytest.fail(f"pip install {' '.join(REQUIREMENTS)} failed:\n{text[-3000:]}")
    check = subprocess.run([str(python), "-c", "import onnxruntime.capi._pybind_state as C; "
                            "assert hasattr(C, 'GradientGraphBuilder')"],
                           capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        pytest.fail(f"the venv has no onnxruntime-training build:\n{check.stderr[-2000:]}")
    ready.write_text(" ".join(REQUIREMENTS))
    return python


@pytest.fixture(scope="module")
def venv_python() -> Path:
    return _venv_python()


def _run(python: Path, args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONHOME", None)
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxviz.errors import OnnxvizError, UnsupportedError
    from onnxviz.grad import gradient_function, ort_training
    from onnxviz.grad.check import gradcheck
    from onnxviz.model import default_model_path

    fixtures = sys.argv[1]
    out = {"available": ort_training.available()}

    checks = {}
    for target in ["logits:3", "conv3:5", "conv2", "conv1:1@3,4", "relu2:0-3"]:
        r = gradcheck(None, target, method="ort-training")
        checks[target] = {"passed": r.passed, "max_rel_error": r.max_rel_error}
    out["default"] = checks

    # the same gradient from the numeric backend, projected: ort-training must match it
    fn = gradient_function(None, "conv3:5", (2, 1, 32, 32), method="ort-training")
    num = gradient_function(None, "conv3:5", (2, 1, 32, 32), method="numeric", size=16)
    x = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    v1, g1 = fn(x)
    v2, g2 = num(x)
    d = num.backend._direction_images(np.arange(num.backend.directions)).astype(np.float64)
    proj = num.backend._assemble(d.reshape(len(d), -1) @ g1.reshape(2, -1).T.astype(np.float64),
                                 x.shape)
    out["values_match"] = bool(np.allclose(v1, v2, rtol=1e-4, atol=1e-5))
    out["cos_numeric"] = [float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
                          for a, b in zip(g2, proj)]

    fn = gradient_function(fixtures + "/batchnorm.onnx", "act:1", (1, 3, 16, 16),
                           method="ort-training")
    out["bn_notes"] = fn.notes
    out["bn_check"] = gradcheck(fixtures + "/batchnorm.onnx", "act:1",
                                method="ort-training").passed

    # IR 11 is lowered to 10 for the builder
    m = onnx.load(str(default_model_path()))
    m.ir_version = 11
    out["ir11"] = gradcheck(m, "logits:1", method="ort-training").passed

    # a stride-2 SAME_UPPER Conv on an odd input: onnxruntime-training's gradient is wrong,
    # and the self-check must refuse it
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
        "same", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 5, 5])], [w])
    same = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    same.ir_version = 8
    try:
        gradient_function(same, "y:1", (1, 3, 9, 9), method="ort-training")
        out["same_upper"] = "accepted"
    except OnnxvizError as exc:
        out["same_upper"] = str(exc)
    out["same_upper_unchecked"] = gradcheck(same, "y:1", method="ort-training").passed

    # an op without a gradient in onnxruntime-training: a clear refusal naming it
    g = helper.make_graph([helper.make_node("HardSwish", ["x"], ["y"], name="hs")], "hs",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])])
    hs = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    hs.ir_version = 8
    try:
        gradient_function(hs, "y:0", (1, 3, 4, 4), method="ort-training")
        out["hardswish"] = "accepted"
    except UnsupportedError as exc:
        out["hardswish"] = str(exc)
    print("RESULT " + json.dumps(out))
''')


def test_ort_training_backend_in_its_own_venv(venv_python, tmp_path):
    script = tmp_path / "check_ort_training.py"
    script.write_text(SCRIPT)
    proc = _run(venv_python, [str(script), str(ROOT / "fixtures" / "models")])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["available"]
    for target, check in out["default"].items():
        assert check["passed"], (target, check)
    assert out["values_match"]
    assert min(out["cos_numeric"]) > 0.999
    assert any("BatchNormalization" in n for n in out["bn_notes"])
    assert out["bn_check"]
    assert out["ir11"]
    assert "disagrees with finite differences" in out["same_upper"]
    assert out["same_upper_unchecked"] is False  # gradcheck itself reports the wrong gradient
    assert "HardSwish" in out["hardswish"] and "autodiff" in out["hardswish"]


def test_gradcheck_cli_with_ort_training(venv_python):
    ok = _run(venv_python, ["-m", "onnxviz", "gradcheck", "--target", "logits:3",
                            "--method", "ort-training", "--json"])
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    info = json.loads(ok.stdout)
    assert info["passed"] and info["method"] == "ort-training"


def test_main_environment_refuses_clearly():
    """Here (plain onnxruntime) the backend says how to get the training build."""
    if ort_training.available():
        pytest.skip("this environment has the onnxruntime-training build")
    with pytest.raises(UnsupportedError) as info:
        gradient_function(None, "logits:3", (1, 1, 32, 32), method="ort-training")
    msg = str(info.value)
    assert ort_training.PIN in msg and "autodiff" in msg and "\n" not in msg
