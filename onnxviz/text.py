"""Short text forms of shapes and sizes, the same in the terminal, PNG titles and the report."""

from __future__ import annotations

from collections.abc import Sequence


def shape_text(shape: Sequence[int | str | None] | None) -> str:
    """[batch, 3, 224, 224]; unknown dims and unknown shapes as '?'."""
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def size_text(n: float) -> str:
    """A byte count in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
