"""The layer audit: findings in a model's weights that deserve a look.

NaN/Inf weights, all-zero (dead) filters, near-duplicate filters and extreme magnitudes, per
layer of `inspect`'s table, with the thresholds in `AUDIT` (stated wherever the findings are
shown). A flag is a reason to look, not a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import OnnxvizError
from .graph import NotConstant
from .model import LayerInfo, Model, WeightStats
from .weights import filter_rows, layer_weight_array


@dataclass(frozen=True)
class AuditThresholds:
    """When the layer audit raises a flag; stated in the report next to the table."""

    duplicate_cosine: float = 0.99  # two filters of a layer this parallel are near-duplicates
    duplicate_min_weights: int = 32  # ...checked for filters with at least this many weights
    duplicate_max_filters: int = 8192  # layers with more filters: the first this many checked
    extreme_abs: float = 1e3  # any |w| this large is extreme
    extreme_stds: float = 200.0  # ...or this many standard deviations of the layer's weights


AUDIT = AuditThresholds()


@dataclass
class Flag:
    """One audit finding: severity "error" (NaN/Inf), "warning" or "note"."""

    severity: str
    kind: str  # "nonfinite", "dead-filters", "near-duplicates", "extreme", "not-constant"
    layer: str | None
    message: str


@dataclass
class LayerAudit:
    """A row of the layer table: `inspect`'s layer plus what the audit found."""

    layer: LayerInfo
    filters: int = 0
    dead_filters: list[int] = field(default_factory=list)
    duplicate_pairs: list[tuple[int, int, float]] = field(default_factory=list)
    duplicate_filters: int = 0
    duplicates_note: str = ""
    max_abs: float = float("nan")
    flags: list[Flag] = field(default_factory=list)


def near_duplicates(rows: np.ndarray, cosine: float, limit: int
                    ) -> tuple[list[tuple[int, int, float]], int, str]:
    """Pairs (i, j, cos) of rows with cosine similarity above `cosine`, the number of rows that
    have such a partner, and a note on what was skipped. All-zero rows are left out (they are
    dead filters, flagged apart)."""
    note = ""
    x = np.asarray(rows, np.float64)
    x = np.where(np.isfinite(x), x, 0.0)
    if x.shape[0] > limit:
        note = f"the first {limit} of {x.shape[0]} filters checked"
        x = x[:limit]
    norms = np.linalg.norm(x, axis=1)
    alive = np.flatnonzero(norms > 0)
    if alive.size < 2:
        return [], 0, note
    unit = (x[alive] / norms[alive, None]).astype(np.float32)
    pairs: list[tuple[int, int, float]] = []
    partnered = np.zeros(alive.size, bool)
    block = 1024
    for start in range(0, alive.size, block):
        sims = unit[start:start + block] @ unit.T  # (b, n)
        rows_i, cols_j = np.nonzero(sims > cosine)
        for a, b in zip(rows_i, cols_j, strict=True):
            i = start + int(a)
            if i < b:
                pairs.append((int(alive[i]), int(alive[b]), float(sims[a, b])))
                partnered[i] = partnered[b] = True
    pairs.sort(key=lambda p: -p[2])
    return pairs, int(partnered.sum()), note


def audit_layers(model: Model, thresholds: AuditThresholds = AUDIT) -> list[LayerAudit]:
    """Audit every layer of `inspect`'s table: NaN/Inf weights, dead (all-zero) filters,
    near-duplicate filters, extreme magnitudes."""
    g = model.graph
    out: list[LayerAudit] = []
    for info in model.summary.layers:
        row = LayerAudit(info)
        out.append(row)
        if info.stats is None:
            row.flags.append(Flag("note", "not-constant", info.name,
                                  f"{info.name}: weights not audited ({info.note or 'unknown'})"))
            continue
        i = g.node_index[info.name]
        try:
            w = layer_weight_array(g, i)
        except (NotConstant, OnnxvizError) as exc:
            row.flags.append(Flag("note", "not-constant", info.name, f"{info.name}: {exc}"))
            continue
        rows = filter_rows(g.nodes[i], np.asarray(w, np.float32))
        row.filters = rows.shape[0]
        finite = np.isfinite(rows)
        absw = np.abs(np.where(finite, rows, 0.0))
        row.max_abs = float(absw.max()) if absw.size else float("nan")
        row.dead_filters = [int(k) for k in np.flatnonzero(~np.any(rows != 0, axis=1))]
        st: WeightStats = info.stats
        if st.nonfinite:
            row.flags.append(Flag("error", "nonfinite", info.name,
                                  f"{info.name}: {st.nonfinite} NaN/Inf weight(s) in "
                                  f"{int((~finite.all(axis=1)).sum())} filter(s)"))
        if row.dead_filters:
            k = len(row.dead_filters)
            sev = "error" if k == row.filters else "warning"
            row.flags.append(Flag(sev, "dead-filters", info.name,
                                  f"{info.name}: {k} of {row.filters} filters are all zero "
                                  f"(dead): {list_ids(row.dead_filters)}"))
        if rows.shape[1] >= thresholds.duplicate_min_weights and rows.shape[0] >= 2:
            pairs, n, note = near_duplicates(rows, thresholds.duplicate_cosine,
                                             thresholds.duplicate_max_filters)
            row.duplicate_pairs, row.duplicate_filters, row.duplicates_note = pairs, n, note
            if pairs:
                shown = ", ".join(f"{a}~{b} ({c:.4f})" for a, b, c in pairs[:4])
                more = f" and {len(pairs) - 4} more pairs" if len(pairs) > 4 else ""
                row.flags.append(Flag("warning", "near-duplicates", info.name,
                                      f"{info.name}: {n} of {row.filters} filters have a "
                                      f"near-duplicate (cosine > {thresholds.duplicate_cosine}):"
                                      f" {shown}{more}"))
        else:
            row.duplicates_note = (f"not checked: {rows.shape[1]} weight(s) per filter, fewer "
                                   f"than {thresholds.duplicate_min_weights}")
        std = st.std if np.isfinite(st.std) else 0.0
        extreme_abs = row.max_abs >= thresholds.extreme_abs
        extreme_rel = std > 0 and row.max_abs >= thresholds.extreme_stds * std
        if extreme_abs or extreme_rel:
            why = (f"max |w| = {row.max_abs:.4g}" + (f" (>= {thresholds.extreme_abs:g})"
                                                     if extreme_abs else "")
                   + (f", {row.max_abs / std:.0f} standard deviations (std {std:.3g})"
                      if extreme_rel else ""))
            row.flags.append(Flag("warning", "extreme", info.name,
                                  f"{info.name}: extreme weight magnitude: {why}"))
    return out


def nonfinite_constants(model: Model, layer_weights: set[str]) -> list[Flag]:
    """NaN/Inf in float constants other than layer weights (biases, BN statistics, ...)."""
    import onnx
    from onnx import numpy_helper

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    tensors = [t for t in model.graph.initializers.values()]
    for node in model.graph.nodes:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.name == "value"]
    flags = []
    for t in tensors:
        if t.data_type not in floats or t.name in layer_weights:
            continue
        try:
            v = numpy_helper.to_array(t)
        except Exception:
            continue
        bad = int(v.size - np.count_nonzero(np.isfinite(v)))
        if bad:
            flags.append(Flag("error", "nonfinite", None,
                              f"constant {t.name!r} holds {bad} NaN/Inf value(s)"))
    return flags


def list_ids(ids: Sequence[int], n: int = 12) -> str:
    text = ", ".join(map(str, ids[:n]))
    return text + (f" (+{len(ids) - n} more)" if len(ids) > n else "")
