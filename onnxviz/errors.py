"""User-facing errors: one line that says what is wrong and what to do; the CLI exits with 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class OnnxvizError(Exception):
    """A problem with the user's input (model, image, option), not a bug in onnxviz."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ModelLoadError(OnnxvizError):
    """The model file cannot be read, is not ONNX, is too large, or is unsafe."""


class UnknownNameError(OnnxvizError):
    """A layer, node or tensor name that the model does not have."""


class UnsupportedError(OnnxvizError):
    """The model uses something onnxviz (or onnxruntime) cannot handle."""


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """' Did you mean: a, b?' for the closest candidates, or '' when none is close."""
    pool = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(name, pool, n=n, cutoff=0.5)
    if not close:
        lowered = name.lower()
        close = [c for c in pool if lowered in c.lower()][:n]
    return f" Did you mean: {', '.join(close)}?" if close else ""


def unknown_name(kind: str, name: str, candidates: Iterable[str], hint: str) -> UnknownNameError:
    """The standard error for a name the model does not have, with close matches and a hint."""
    close = did_you_mean(name, candidates)
    return UnknownNameError(f"no {kind} named {name!r} in the model.{close} {hint}")
