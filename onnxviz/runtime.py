"""onnxruntime sessions: the one place that builds an `InferenceSession`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx

from .errors import OnnxvizError, UnsupportedError

_SESSION_ERRORS_HINT = ("the model may use an op or opset this onnxruntime does not support, "
                        "or be malformed")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def make_session(model: onnx.ModelProto | bytes, providers: Sequence[str] | None = None,
                 threads: int | None = None, optimization: str = "all",
                 spinning: bool | None = None):
    """An InferenceSession for a model proto or its bytes.

    providers: execution providers in order of preference (default: CPU). threads: intra-op
    threads (default: onnxruntime's choice, or ONNXVIZ_THREADS). optimization: "all", "extended",
    "basic" or "disable" graph optimizations. spinning: allow intra-op thread spinning.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    opts.graph_optimization_level = levels[optimization]
    threads = threads or int(os.environ.get("ONNXVIZ_THREADS", "0") or 0)
    if threads:
        opts.intra_op_num_threads = threads
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    data = model if isinstance(model, bytes) else model.SerializeToString()
    available = set(ort.get_available_providers())
    wanted = list(providers or ["CPUExecutionProvider"])
    missing = [p for p in wanted if p not in available]
    if missing:
        raise OnnxvizError(f"execution provider(s) {', '.join(missing)} not available in this "
                           f"onnxruntime build; available: {', '.join(sorted(available))}")
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=wanted)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:400]
        raise UnsupportedError(f"onnxruntime cannot load the model: {msg} "
                               f"({_SESSION_ERRORS_HINT})") from None


def run(session, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None
        ) -> list[np.ndarray]:
    """Run a session; onnxruntime failures (bad shapes, dtypes) become one-line user errors."""
    try:
        return session.run(list(outputs) if outputs is not None else None, feeds)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:400]
        raise OnnxvizError(f"onnxruntime failed to run the model: {msg}") from None
