"""Writing results: every file appears whole or not at all (temp file + rename), with provenance."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, PngImagePlugin

from . import __version__


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write` on a temp file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; honour the umask instead
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def provenance(command: str | None = None, **items: object) -> dict[str, str]:
    """Text chunks that say how a file was made: onnxviz version, the command line (default:
    this process's arguments), and `items`."""
    command = command or " ".join(["onnxviz", *sys.argv[1:]])
    meta = {"Software": f"onnxviz {__version__}", "onnxviz.command": command}
    meta.update({f"onnxviz.{k}": str(v) for k, v in items.items() if v is not None})
    return meta


def save_png(img: Image.Image, path: str | os.PathLike,
             metadata: dict[str, str] | None = None) -> Path:
    """Write a PNG with iTXt chunks holding `metadata`."""
    info = PngImagePlugin.PngInfo()
    for k, v in (metadata or {}).items():
        info.add_itxt(k, str(v))
    return atomic_write(path, lambda fh: img.save(fh, format="PNG", pnginfo=info))


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def save_json(path: str | os.PathLike, data: object) -> Path:
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def to_json(data: object) -> str:
    return json.dumps(data, indent=2, default=_json_default)
