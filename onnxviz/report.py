"""The audit report: one self-contained HTML file that says what a network has learned.

Seven sections, in this order (their ids are the page anchors):

1. ``model``      model card: file, size, sha256, producer, IR and opsets, parameters, inputs
                  with the inferred contract and the preprocessing used, outputs;
2. ``layers``     every layer with weight statistics and audit flags (thresholds in `AUDIT`);
3. ``filters``    first-layer filters (plain, BN-folded, dense templates over the image);
4. ``features``   feature maps of each image for a spread of conv layers, dead-channel counts;
5. ``maximize``   activation maximization of the first channels of a few layers spread across
                  depth, and of the top classes of a classifier;
6. ``examples``   top-k dataset patches per channel when a folder of images is given;
7. ``provenance`` command line, versions, seed, timings.

The file needs nothing but itself: every picture is a data: URI (PNG, or JPEG where that is much
smaller), the CSS is inline, there is no script, and a Content-Security-Policy forbids any
request. Every string that comes from the model (names, metadata, producer) or the user (file
names) is HTML-escaped: model files are untrusted. The library never prints; progress goes to
an optional callback, one event per section start and end (and per step inside long sections).
"""

from __future__ import annotations

import ast
import base64
import datetime as _dt
import html
import io
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import __version__
from .audit import AUDIT, Flag, LayerAudit, audit_layers, list_ids, nonfinite_constants
from .errors import OnnxvizError
from .model import Model, default_image_path, default_images_dir, load_model
from .text import shape_text, size_text
from .weights import CONV_OPS, DENSE_OPS

SECTIONS = (
    ("model", "Model card"),
    ("layers", "Layer audit"),
    ("filters", "First-layer filters"),
    ("features", "Feature maps"),
    ("maximize", "Activation maximization"),
    ("examples", "Dataset examples"),
    ("provenance", "Provenance"),
)


# Report limits that keep the file small and the run short (all stated in the report).
FEATURE_LAYERS = 24  # feature-map layers shown by default (spread across depth)
FEATURE_CHANNELS = 32  # channels drawn per feature-map layer
MAXIMIZE_LAYERS = 4  # layers whose first channels are maximized by default
EXAMPLES_TOP = 6  # dataset patches per channel
JPEG_QUALITY = 85
DEFAULT_STEPS = 128


# ==================================================================== data returned


@dataclass
class ReportProgress:
    """A progress event: a section starts (done=False), advances (detail) or ends (done=True)."""

    index: int  # 1-based section number
    total: int
    section: str  # section id
    title: str
    done: bool = False
    detail: str = ""


@dataclass
class SectionRecord:
    id: str
    title: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why the section could not be produced, if it could not


@dataclass
class ReportResult:
    """What `report` wrote and found."""

    path: Path
    bytes: int
    seconds: float
    sections: list[SectionRecord]
    audit: list[LayerAudit]
    flags: list[Flag]
    images: list[str]
    feature_layers: list[str]
    maximize_targets: list[str]
    examples_layers: list[str]
    preprocess: dict | None
    seed: int
    pictures: int  # inlined pictures

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "bytes": self.bytes, "seconds": round(self.seconds, 3),
            "sections": [{"id": s.id, "title": s.title, "seconds": round(s.seconds, 3),
                          "notes": s.notes, "error": s.error} for s in self.sections],
            "flags": [{"severity": f.severity, "kind": f.kind, "layer": f.layer,
                       "message": f.message} for f in self.flags],
            "images": self.images, "feature_layers": self.feature_layers,
            "maximize_targets": self.maximize_targets, "examples_layers": self.examples_layers,
            "preprocess": self.preprocess, "seed": self.seed, "pictures": self.pictures,
        }


# ==================================================================== HTML helpers


def esc(value: object) -> str:
    """HTML-escape anything for text and attribute values (quotes included)."""
    return html.escape(str(value), quote=True)


def _shape_cell(shape) -> str:
    """A shape for a table cell: long symbolic dims (shape-inference formulas) shortened to
    '?', the full shape in the tooltip."""
    full = shape_text(shape)
    if shape is None or all(len(str(d)) <= 16 for d in shape):
        return esc(full)
    short = shape_text([d if len(str(d)) <= 16 else None for d in shape])
    return f'<span title="{esc(full)}">{esc(short)}</span>'


def _g(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3g}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int] = frozenset(),
           row_classes: Sequence[str] | None = None, cls: str = "") -> str:
    """A table from already-escaped cell HTML."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{h}</th>"
                   for i, h in enumerate(headers))
    body = []
    for k, r in enumerate(rows):
        rc = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        cells = "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>"
                        for i, c in enumerate(r))
        body.append(f"<tr{rc}>{cells}</tr>")
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column key/value table; keys are ours, values already escaped."""
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<div class="scroll"><table class="kv"><tbody>{body}</tbody></table></div>'


class Pictures:
    """Encodes PIL images as data: URIs and counts them."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    def img(self, image: Image.Image, alt: str, pixelated: bool = False, zoom: float = 1,
            fmt: str = "auto") -> str:
        """An <img> with the picture inlined; `zoom` sizes it on screen only (an integer
        enlarges small pictures pixel by pixel, a fraction shows big ones smaller)."""
        mime, data = encode_image(image, fmt)
        self.count += 1
        self.bytes += len(data)
        cls = ' class="px"' if pixelated else ""
        w, h = round(image.width * zoom), round(image.height * zoom)
        return (f'<img{cls} src="data:{mime};base64,{data}" width="{w}" height="{h}" '
                f'alt="{esc(alt)}">')


def encode_image(image: Image.Image, fmt: str = "auto") -> tuple[str, str]:
    """(mime type, base64) of a picture: PNG, or JPEG when `fmt` says so or, with "auto", when
    the PNG would be over 1.6x the JPEG's size (photographic content; flat tiles and text stay
    PNG, which keeps them crisp)."""
    rgb = image if image.mode in ("RGB", "L") else image.convert("RGB")
    buf = io.BytesIO()
    if fmt in ("png", "auto"):
        rgb.save(buf, format="PNG", optimize=False, compress_level=9)
        png = buf.getvalue()
        if fmt == "png" or len(png) < 24_000:
            return "image/png", base64.b64encode(png).decode("ascii")
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0 if min(rgb.size) < 64 else 2,
             optimize=True)
    jpeg = buf.getvalue()
    if fmt == "auto" and len(png) <= 1.6 * len(jpeg):
        return "image/png", base64.b64encode(png).decode("ascii")
    return "image/jpeg", base64.b64encode(jpeg).decode("ascii")


# ==================================================================== choosing what to show


def spread(items: Sequence, n: int) -> list:
    """`n` items evenly spread from first to last (all of them if there are no more than n)."""
    if len(items) <= n:
        return list(items)
    if n <= 1:
        return [items[-1]] if n == 1 else []
    idx = sorted({round(float(x)) for x in np.linspace(0, len(items) - 1, n)})
    return [items[i] for i in idx]


def conv_taps(model: Model, spatial: bool = True) -> list:
    """The post-activation tap of every conv layer that the input reaches, in graph order;
    with `spatial`, not those whose output is known to be 1x1 (convs after a global pool,
    such as squeeze-and-excitation gates: one value per channel, no map to show)."""
    from .features import default_taps
    from .objectives import tensor_shape

    convs = {x.name for x in model.summary.layers if x.op in CONV_OPS}
    taps = [t for t in default_taps(model) if t.layer in convs]
    if not spatial:
        return taps

    def is_map(tensor: str) -> bool:
        shape = tensor_shape(model, tensor)
        if shape is None or len(shape) < 3:
            return shape is None
        space = shape[2:]
        return not all(isinstance(d, int) for d in space) or int(np.prod(space)) > 1

    return [t for t in taps if is_map(t.tensor)]


@dataclass
class Classifier:
    """An (N, K) float output read as class scores."""

    output: str  # the graph output
    logits: str  # the tensor to maximize: the Softmax input when the output is a Softmax
    classes: int
    is_softmax: bool
    labels: list[str] | None
    note: str


def find_classifier(model: Model) -> Classifier | None:
    """The first graph output of shape (N, K), K >= 2, float: class scores."""
    g = model.graph
    for out in model.summary.outputs:
        shape = out.shape
        if (shape is None or len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 2
                or not out.dtype.startswith("float")):
            continue
        k = shape[1]
        logits, softmax = out.name, False
        prod = g.producer.get(out.name)
        if prod is not None and g.nodes[prod].op_type in ("Softmax", "LogSoftmax"):
            softmax = True
            logits = g.nodes[prod].input[0]
        labels = class_labels(model, k)
        note = (f"output {out.name!r} of shape {shape_text(shape)} read as {k} class scores"
                + (f"; it is a {g.nodes[prod].op_type}, so its input {logits!r} (the logits) is "
                   "maximized" if softmax else ""))
        return Classifier(out.name, logits, k, softmax, labels, note)
    return None


def class_labels(model: Model, k: int) -> list[str] | None:
    """Class names from the model metadata when they match K: a comma list under classes /
    labels, or a {index: name} literal under names (Ultralytics)."""
    meta = model.summary.metadata
    for key in ("classes", "labels", "class_names"):
        if key in meta:
            parts = [p.strip() for p in meta[key].split(",")]
            if len(parts) == k:
                return parts
    text = meta.get("names", "")
    if text and len(text) < 1 << 20:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if isinstance(value, dict) and len(value) == k:
            return [str(value.get(i, i)) for i in range(k)]
        if isinstance(value, list) and len(value) == k:
            return [str(v) for v in value]
    return None


def _class_name(c: Classifier, k: int) -> str:
    return f"{k} ({c.labels[k]})" if c.labels and c.labels[k] != str(k) else str(k)


# ==================================================================== the report


@dataclass
class _Context:
    """What the sections share while the report is built."""

    model: Model
    images: list[str]
    prepared: list  # PreparedInputs per image
    preprocess: object  # Preprocess or None
    examples_dir: Path | None
    layer_names: list[str] | None
    maximize: int
    steps: int
    seed: int
    method: str
    providers: list[str] | None
    pics: Pictures
    emit: Callable[[str], None]
    max_channels: int = FEATURE_CHANNELS
    classifier: Classifier | None = None
    top_classes: list[int] = field(default_factory=list)
    audit: list[LayerAudit] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    feature_layers: list[str] = field(default_factory=list)
    maximize_targets: list[str] = field(default_factory=list)
    examples_layers: list[str] = field(default_factory=list)
    am_taps: list = field(default_factory=list)
    nav: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def report(model=None, images: Sequence[str | os.PathLike] = (),
           examples_dir: str | os.PathLike | None = None,
           layers: Sequence[str] | None = None, maximize: int = 8, steps: int = DEFAULT_STEPS,
           preprocess=None, output: str | os.PathLike = "report.html",
           progress: Callable[[ReportProgress], None] | None = None, seed: int = 0,
           method: str = "autodiff", providers: Sequence[str] | None = None,
           max_channels: int = FEATURE_CHANNELS, defaults: bool = True,
           command: str | None = None) -> ReportResult:
    """Analyse `model` and write one self-contained HTML report to `output`.

    model: path, bytes, ModelProto or Model (None: the embedded default). images: photos for
    the feature maps (and the classifier's top classes). examples_dir: a folder of images for
    top-k dataset examples. layers: node or tensor names for sections 4-6 (default: a spread of
    conv layers). maximize: channels (and top classes) per layer for activation maximization
    (0: skip). steps: optimization steps per image. preprocess: a `Preprocess`, a preset name,
    or None (the default rule). method: gradient backend for maximization ("autodiff",
    "numeric", "ort-training", "auto"). max_channels: feature-map channels drawn per layer.
    defaults: on the embedded default model without images, use its
    bundled test digit and digits folder. command: the command line to record (default: this
    Python call). progress: called with `ReportProgress` events.

    Inputs are validated before any work; the file is written at the end, whole or not at all
    (no half-written report). Returns a `ReportResult`.
    """
    from .images import Preprocess, choose_preprocess, main_input, prepare_inputs
    from .outputs import atomic_write

    t_start = time.perf_counter()
    out_path = Path(output)
    if out_path.is_dir():
        raise OnnxvizError(f"output {out_path} is a folder; give a file name such as "
                           f"{out_path / 'report.html'}")
    if maximize < 0:
        raise OnnxvizError(f"maximize must be 0 or more channels, not {maximize}")
    if steps < 1:
        raise OnnxvizError(f"steps must be at least 1, not {steps}")
    if max_channels < 1:
        raise OnnxvizError(f"max_channels must be at least 1, not {max_channels}")
    loaded = load_model(model)
    images = [str(p) for p in images]
    if defaults and loaded.is_default:
        if not images:
            images = [str(default_image_path())]
        if examples_dir is None:
            examples_dir = default_images_dir()
    if examples_dir is not None:
        examples_dir = Path(examples_dir)
        if not examples_dir.is_dir():
            raise OnnxvizError(f"examples folder {examples_dir} does not exist or is not a "
                               "folder; give a folder of images with --examples DIR")
    contract = main_input(loaded) if loaded.summary.inputs else None
    image_input = contract is not None and contract.layout is not None
    if images and not image_input:
        raise OnnxvizError("the model has no image input (a rank-4 tensor), so --image cannot "
                           "be fed; onnxviz inspect MODEL shows its inputs")
    pre = None
    if image_input:
        pre = preprocess if isinstance(preprocess, Preprocess) else choose_preprocess(
            contract, preprocess)
    prepared = [prepare_inputs(loaded, image=p, preprocess=pre) for p in images]
    layer_names = list(layers) if layers else None
    if layer_names:
        from .features import choose_taps

        choose_taps(loaded, layer_names)  # unknown names fail now, with close matches

    def emit_factory(k: int, sid: str, title: str) -> Callable[[str], None]:
        def emit(detail: str) -> None:
            if progress:
                progress(ReportProgress(k, len(SECTIONS), sid, title, False, detail))
        return emit

    ctx = _Context(loaded, images, prepared, pre, examples_dir, layer_names, maximize, steps,
                   seed, method, list(providers) if providers else None, Pictures(),
                   emit=lambda d: None, max_channels=max_channels)
    ctx.classifier = find_classifier(loaded)
    builders = {"model": _section_model, "layers": _section_layers,
                "filters": _section_filters, "features": _section_features,
                "maximize": _section_maximize, "examples": _section_examples}
    bodies: dict[str, str] = {}
    records: list[SectionRecord] = []
    for k, (sid, title) in enumerate(SECTIONS, start=1):
        if sid == "provenance":
            continue
        if progress:
            progress(ReportProgress(k, len(SECTIONS), sid, title))
        ctx.emit = emit_factory(k, sid, title)
        rec = SectionRecord(sid, title)
        t0 = time.perf_counter()
        try:
            bodies[sid] = builders[sid](ctx, rec)
        except OnnxvizError as exc:
            if sid in ("model", "layers"):
                raise
            rec.error = str(exc)
            bodies[sid] = (f'<p class="error">This section could not be produced: '
                           f"{esc(exc)}</p>")
        rec.seconds = time.perf_counter() - t0
        records.append(rec)
        if progress:
            progress(ReportProgress(k, len(SECTIONS), sid, title, True))
    k = len(SECTIONS)
    if progress:
        progress(ReportProgress(k, k, "provenance", SECTIONS[-1][1]))
    prov = SectionRecord("provenance", SECTIONS[-1][1])
    records.append(prov)
    total = time.perf_counter() - t_start
    bodies["provenance"] = _section_provenance(ctx, records, total, command or _python_call(
        model, images, examples_dir, layers, maximize, steps, preprocess, output, seed, method))
    page = _page(ctx, bodies, records)
    data = page.encode("utf-8")
    atomic_write(out_path, lambda fh: fh.write(data))
    prov.seconds = time.perf_counter() - t_start - total
    if progress:
        progress(ReportProgress(k, k, "provenance", SECTIONS[-1][1], True))
    return ReportResult(
        path=out_path, bytes=len(data), seconds=time.perf_counter() - t_start,
        sections=records, audit=ctx.audit, flags=ctx.flags, images=images,
        feature_layers=ctx.feature_layers, maximize_targets=ctx.maximize_targets,
        examples_layers=ctx.examples_layers,
        preprocess=pre.to_dict() if pre is not None else None, seed=seed,
        pictures=ctx.pics.count)


def _python_call(model, images, examples_dir, layers, maximize, steps, preprocess, output,
                 seed, method) -> str:
    args = {"model": model if isinstance(model, (str, os.PathLike, type(None))) else "<model>",
            "images": list(images), "examples_dir": examples_dir, "layers": layers,
            "maximize": maximize, "steps": steps,
            "preprocess": preprocess if isinstance(preprocess, (str, type(None))) else
            getattr(preprocess, "preset", "<Preprocess>"), "output": output, "seed": seed,
            "method": method}
    parts = ", ".join(f"{k}={str(v) if isinstance(v, os.PathLike) else v!r}"
                      for k, v in args.items())
    return f"onnxviz.report({parts})"


# ==================================================================== 1. model card


def _section_model(ctx: _Context, rec: SectionRecord) -> str:
    s = ctx.model.summary
    proto = ctx.model.proto
    n_conv = sum(1 for x in s.layers if x.op in CONV_OPS)
    n_dense = len(s.layers) - n_conv
    rows = [
        ("File", f"<code>{esc(s.file)}</code>"),
        ("Size", f"{s.file_size:,} bytes ({size_text(s.file_size)})"),
        ("SHA-256", f"<code>{esc(s.sha256)}</code>"),
        ("Producer", esc(f"{s.producer or '?'} {s.producer_version}".strip())),
        ("IR version", esc(s.ir_version)),
        ("Opsets", esc(", ".join(f"{d} {v}" for d, v in sorted(s.opsets.items())))),
        ("Parameters", f"{s.params:,}"),
        ("Layers", f"{len(s.layers)} with constant weights: {n_conv} conv, {n_dense} dense"),
        ("Nodes", f"{len(ctx.model.graph.nodes):,}"),
    ]
    if proto.model_version:
        rows.append(("Model version", esc(proto.model_version)))
    if proto.domain:
        rows.append(("Domain", esc(proto.domain)))
    if proto.doc_string.strip():
        rows.append(("Description", esc(_clip(proto.doc_string.strip(), 600))))
    if ctx.model.is_default:
        rows.append(("Note", "the embedded default model of onnxviz: a small CNN trained on "
                     "scikit-learn's digits (white digits on black, 32x32)"))
    if s.custom_ops:
        rows.append(("Custom ops", '<span class="flag-warning">'
                     + esc(", ".join(s.custom_ops[:8])) + "</span>"))
    html_parts = [_kv(rows)]
    if s.metadata:
        meta_rows = [[f"<code>{esc(_clip(k, 80))}</code>", esc(_clip(v, 300))]
                     for k, v in list(s.metadata.items())[:40]]
        html_parts.append("<h3>Metadata</h3>" + _table(["key", "value"], meta_rows))
        if len(s.metadata) > 40:
            html_parts.append(f'<p class="note">{len(s.metadata) - 40} more entries not '
                              "shown.</p>")
    html_parts.append("<h3>Inputs</h3>")
    for c in s.inputs:
        items = [("Name", f"<code>{esc(c.name)}</code>"),
                 ("Type", esc(f"{c.dtype} {shape_text(c.shape)}"))]
        if c.layout:
            items += [
                ("Layout", esc(f"{c.layout} ({c.layout_reason})")),
                ("Channels", esc(c.channels if c.channels is not None else "?")),
                ("Spatial size", esc(f"{c.height or '?'} x {c.width or '?'}")),
                ("Normalization in the graph",
                 esc(", ".join(f"{n.op} {' '.join(f'{v:.4g}' for v in n.value)}"
                               for n in c.normalization) or "none found")),
            ]
            if c.channels == 3:
                items.append(("Color order", esc(f"{c.color_order or '?'} "
                                                 f"({c.color_order_reason})")))
        else:
            items.append(("Image input", esc(f"no ({c.layout_reason})")))
        html_parts.append(_kv(items))
    if ctx.preprocess is not None:
        pre = ctx.preprocess
        ch = next((c.channels for c in s.inputs if c.layout), 3)
        items = [("Preprocessing used", f"<code>{esc(pre.describe(ch))}</code>")]
        if pre.size:
            items.append(("Size for dynamic dims", esc("x".join(map(str, pre.size)))))
        items += [("Why", esc(n)) for n in pre.notes]
        html_parts.append("<h3>Preprocessing</h3>" + _kv(items))
    html_parts.append("<h3>Outputs</h3>")
    html_parts.append(_table(["name", "type", "shape"], [
        [f"<code>{esc(o.name)}</code>", esc(o.dtype), esc(shape_text(o.shape))]
        for o in s.outputs]))
    if ctx.classifier:
        c = ctx.classifier
        labels = (f"; class names from the metadata: {esc(_clip(', '.join(c.labels), 300))}"
                  if c.labels else "")
        html_parts.append(f'<p class="note">Classifier: {esc(c.note)}{labels}.</p>')
    return "".join(html_parts)


def _clip(text: str, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n] + "…"


# ==================================================================== 2. layer audit


def _section_layers(ctx: _Context, rec: SectionRecord) -> str:
    ctx.audit = audit_layers(ctx.model)
    weights = {a.layer.weight for a in ctx.audit if a.layer.weight}
    ctx.flags = [f for a in ctx.audit for f in a.flags] + nonfinite_constants(ctx.model, weights)
    s = ctx.model.summary
    t = AUDIT
    thresholds = (
        "<ul>"
        "<li><b>NaN/Inf weights</b> (error): any non-finite weight; other float constants "
        "(biases, BatchNorm statistics) are checked too.</li>"
        "<li><b>Dead filters</b> (warning; error when the whole layer is zero): filters whose "
        "weights are all exactly zero. A dead filter outputs only its bias.</li>"
        f"<li><b>Near-duplicate filters</b> (warning): two filters of one layer whose "
        f"flattened weights have cosine similarity above {t.duplicate_cosine}; checked for "
        f"filters of at least {t.duplicate_min_weights} weights (in fewer dimensions, such as "
        "3x3 depthwise kernels, trained filters are often this close without being "
        "redundant).</li>"
        f"<li><b>Extreme magnitudes</b> (warning): max |w| of at least {t.extreme_abs:g}, or "
        f"at least {t.extreme_stds:g} standard deviations of the layer's weights (a few "
        "weights dominate the layer; fp16 export may overflow).</li></ul>"
        "<p class=note>A flag is a reason to look, not a verdict: near-duplicates, for "
        "instance, are expected between neighbouring bins of a distribution head.</p>")
    parts = ['<p>Every layer with constant weights (conv and dense), in graph order, as '
             "<code>onnxviz inspect</code> lists it. Statistics are over the layer's weights "
             "(dequantized where the model is quantized). Audit flags:</p>", thresholds]
    errors = [f for f in ctx.flags if f.severity == "error"]
    warns = [f for f in ctx.flags if f.severity == "warning"]
    if ctx.flags:
        parts.append(f"<h3>Findings: {len(errors)} error(s), {len(warns)} warning(s)</h3>"
                     "<ul class=findings>")
        for f in ctx.flags[:200]:
            parts.append(f'<li class="flag-{esc(f.severity)}">{esc(f.severity)}: '
                         f"{esc(f.message)}</li>")
        if len(ctx.flags) > 200:
            parts.append(f"<li>... {len(ctx.flags) - 200} more</li>")
        parts.append("</ul>")
    else:
        parts.append('<p class="ok">No audit flags: no NaN/Inf, dead, near-duplicate or '
                     "extreme filters.</p>")
    rec.notes.append(f"{len(errors)} error(s), {len(warns)} warning(s)")
    headers = ["", "#", "layer", "op", "weight", "output shape", "params", "min", "max", "mean",
               "std", "zeros", "dead", "near-dup", "flags"]
    rows, classes = [], []
    for a in ctx.audit:
        x, st = a.layer, a.layer.stats
        sev = ("error" if any(f.severity == "error" for f in a.flags) else
               "warning" if any(f.severity == "warning" for f in a.flags) else "")
        first = "★" if x.name == s.first_layer else ""
        dup = (str(a.duplicate_filters) if not a.duplicates_note.startswith("not checked")
               else '<span class="note" title="' + esc(a.duplicates_note) + '">-</span>')
        rows.append([
            first, str(x.index), f"<code>{esc(x.name)}</code>", esc(x.op),
            esc("x".join(map(str, x.weight_shape)) if x.weight_shape else "?"),
            _shape_cell(x.output_shape), f"{x.params:,}",
            *([_g(st.min), _g(st.max), _g(st.mean), _g(st.std), f"{st.zero_fraction:.0%}",
               str(len(a.dead_filters))] if st else ["-"] * 6),
            dup, esc("; ".join(f.kind for f in a.flags if f.severity != "note")) or "",
        ])
        classes.append(sev)
    if rows:
        parts.append(_table(headers, rows, numeric={1, 6, 7, 8, 9, 10, 11, 12, 13},
                            row_classes=classes, cls="layers"))
        parts.append('<p class="note">★ first layer that sees the image. dead: all-zero '
                     "filters. near-dup: filters with a near-duplicate partner (- = not "
                     "checked, too few weights per filter).</p>")
    else:
        parts.append("<p>The model has no conv or dense layer with constant weights.</p>")
    notes = [x for x in s.layers if x.note]
    if notes:
        parts.append("<ul>" + "".join(f"<li><code>{esc(x.name)}</code>: {esc(x.note)}</li>"
                                      for x in notes[:50]) + "</ul>")
    return "".join(parts)


# ==================================================================== 3. first-layer filters

FIRST_LAYER_TEXT = (
    "<p>The first layer is the only one whose weights live in image space. Each of its "
    "filters is multiplied, weight by weight, with a patch of pixels, so a filter has the "
    "shape of an image patch and responds most (for a given patch contrast) to the patch that "
    "looks like the filter itself: the picture of the weights <em>is</em> the pattern it "
    "detects, typically oriented edges, color blobs and gratings. Every later layer reads the "
    "feature maps of the layer before it, whose channels are not colors but detector "
    "responses; its weights are recipes for combining those responses and have no direct "
    "pictorial meaning. That is why deeper layers are shown through what they do instead: "
    "their feature maps on real images (section 4), images synthesized to excite them "
    "(section 5) and the real image patches that excite them most (section 6).</p>"
    "<p>Mid-gray is zero, brighter is positive and darker negative; all filters share one "
    "scale (the layer's max |w|).</p>")


def _section_filters(ctx: _Context, rec: SectionRecord) -> str:
    from .render import render_filters
    from .weights import layer_weights

    s = ctx.model.summary
    parts = [FIRST_LAYER_TEXT]
    if s.first_layer is None:
        parts.append("<p>The model has no conv or dense layer with constant weights that "
                     "reads the image, so there are no filters to show.</p>")
        return "".join(parts)
    info = s.layer(s.first_layer)
    lw = layer_weights(ctx.model, info.name)
    kind = "templates" if lw.kind == "dense" else "filters"
    pic = render_filters(lw.weights, channel_order=lw.channel_order,
                         image_space=lw.image_space, notes=lw.notes)
    shape = "x".join(map(str, lw.weights.shape[1:]))
    caption = (f"<code>{esc(lw.layer)}</code> ({esc(lw.op)}): {lw.weights.shape[0]} {kind} of "
               f"{esc(shape)}" + (f", {esc(lw.channel_order)}" if lw.in_channels == 3 else "")
               + f", max |w| = {_g(float(np.nanmax(np.abs(lw.weights))))}")
    if lw.kind == "dense":
        caption += ("; a dense first layer: each unit's weights reshaped to the input image "
                    "form a template it matches")
    parts.append(_figure(ctx.pics.img(pic, f"filters of {lw.layer}", pixelated=True), caption))
    if lw.kind == "conv":
        try:
            folded = layer_weights(ctx.model, info.name, fold_bn=True)
        except OnnxvizError:
            folded = None
        if folded is not None:
            pic = render_filters(folded.weights, channel_order=folded.channel_order,
                                 image_space=folded.image_space, notes=folded.notes)
            parts.append(_figure(
                ctx.pics.img(pic, f"BN-folded filters of {lw.layer}", pixelated=True),
                f"The same filters with BatchNormalization <code>{esc(folded.folded_bn)}</code>"
                " folded in (each scaled by gamma / sqrt(var + eps)): the effective filters. "
                "Folding rescales each filter, so their relative strengths change."))
        else:
            parts.append('<p class="note">No BatchNormalization follows this layer (it may '
                         "already be folded into the weights), so there is no BN-folded "
                         "view.</p>")
    dense = [x for x in s.layers if x.op in DENSE_OPS and x.sees_image and x.name != info.name]
    if dense:
        d = dense[0]
        dw = layer_weights(ctx.model, d.name)
        pic = render_filters(dw.weights[:64], channel_order=dw.channel_order, notes=dw.notes)
        parts.append(_figure(ctx.pics.img(pic, f"templates of {d.name}", pixelated=True),
                             f"Dense layer <code>{esc(d.name)}</code> reads the image directly: "
                             f"each unit's weights as an image template"
                             + (f" (first 64 of {dw.weights.shape[0]})"
                                if dw.weights.shape[0] > 64 else "")))
    elif lw.kind == "conv":
        parts.append('<p class="note">No dense layer reads the image directly, so there are '
                     "no dense-layer templates in image space (dense layers deeper in the "
                     "network read feature maps).</p>")
    return "".join(parts)


def _figure(img_html: str, caption: str, above: bool = False) -> str:
    cap = f"<figcaption>{caption}</figcaption>"
    return f"<figure>{cap}{img_html}</figure>" if above else f"<figure>{img_html}{cap}</figure>"


# ==================================================================== 4. feature maps


def _section_features(ctx: _Context, rec: SectionRecord) -> str:
    from .features import choose_taps, exposed_session, iter_feature_maps, layer_stats
    from .images import display_to_pil
    from .render import picture_kind, render_feature_maps

    if not ctx.images:
        return ("<p>No image given: pass <code>--image FILE</code> (repeatable) to see what "
                "each layer computes on real pictures.</p>")
    if ctx.layer_names:
        taps = choose_taps(ctx.model, ctx.layer_names)
        chosen = "the layers asked for"
    else:
        all_convs = conv_taps(ctx.model)
        taps = spread(all_convs, FEATURE_LAYERS)
        chosen = (f"every conv layer ({len(taps)})" if len(taps) == len(all_convs) else
                  f"{len(taps)} of the {len(all_convs)} conv layers, evenly spread from the "
                  "first to the last")
        skipped = len(conv_taps(ctx.model, spatial=False)) - len(all_convs)
        if skipped:
            chosen += (f" ({skipped} conv layer(s) with a 1x1 output, such as "
                       "squeeze-and-excitation gates, left out)")
        if not taps:
            taps = choose_taps(ctx.model, None)
            chosen = "every layer (the model has no conv layer)"
    ctx.feature_layers = [t.tensor for t in taps]
    extra = []
    if ctx.classifier and ctx.classifier.output not in ctx.feature_layers:
        from .features import Tap

        extra = [Tap(ctx.classifier.output, "", "", None, "classifier output")]
    session = exposed_session(ctx.model, [*taps, *extra], ctx.providers)
    parts = [f"<p>Each layer's output after its activation (what the next layer reads), for "
             f"{chosen}; {ctx.max_channels} channels at most per layer, tiles downscaled. Each "
             "tile is one channel, colored from its own low (dark) to its own high (yellow). "
             "A <em>dead</em> channel is exactly zero everywhere on this image: often normal "
             "for one image after a ReLU, suspicious when the same channels are dead on every "
             "image.</p>"]
    nav = []
    for k, (path, prep) in enumerate(zip(ctx.images, ctx.prepared, strict=True)):
        ctx.emit(f"image {k + 1}/{len(ctx.images)}")
        anchor = f"features-{k}"
        nav.append((anchor, Path(path).name))
        parts.append(f'<h3 id="{anchor}">Image {k + 1}: <code>{esc(Path(path).name)}</code>'
                     "</h3>")
        pic = display_to_pil(prep.display)
        zoom = max(1, 128 // max(1, min(pic.size)))
        fed = list(prep.feeds[prep.image_input].shape)
        info = [f"fed as {esc(prep.image_input)} {esc(fed)}"] + [esc(n) for n in prep.notes]
        top_html = ""
        stream = iter_feature_maps(ctx.model, prep.feeds, [*taps, *extra], session=session)
        rows, figures = [], []
        for fm in stream:
            if fm.tap in extra or (ctx.classifier and fm.tap.tensor == ctx.classifier.output
                                   and fm.tap.tensor not in ctx.feature_layers):
                top_html = _top_classes(ctx, fm.values, k)
                continue
            if ctx.classifier and fm.tap.tensor == ctx.classifier.output:
                top_html = _top_classes(ctx, fm.values, k)
            values = fm.values
            st = layer_stats(values)
            kind, _ = picture_kind(values.shape)
            dead = len(st.dead_channels)
            rows.append([f"<code>{esc(fm.tap.tensor)}</code>", esc(shape_text(st.shape)),
                         esc(fm.tap.why), _g(st.max), f"{st.zero_fraction:.0%}",
                         f"{dead}/{st.channels}" if st.channels else "-"])
            if kind is None:
                continue
            grid = render_feature_maps(values[0], max_channels=ctx.max_channels,
                                       notes=fm.notes)
            cap = (f"<code>{esc(fm.tap.tensor)}</code> {esc(shape_text(st.shape))} "
                   f"({esc(fm.tap.why)}): max {_g(st.max)}, zeros {st.zero_fraction:.0%}, "
                   f"<b>{dead} of {st.channels} channels dead</b>"
                   + (f" ({esc(list_ids(st.dead_channels, 16))})" if dead else ""))
            figures.append(_figure(ctx.pics.img(grid, f"feature maps of {fm.tap.tensor}"),
                                   cap, above=True))
            del fm, values
        parts.append('<div class="row">'
                     + _figure(ctx.pics.img(pic, f"input {Path(path).name}", pixelated=True,
                                            zoom=zoom), "the input as fed (after resizing)")
                     + f'<div class="info"><p>{"<br>".join(info)}</p>{top_html}</div></div>')
        parts.append(_table(["tensor", "shape", "tap", "max", "zeros", "dead channels"], rows,
                            numeric={3, 4, 5}))
        parts.extend(figures)
    ctx.nav["features"] = nav
    return "".join(parts)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - np.max(x)
    e = np.exp(z)
    return e / e.sum()


def _top_classes(ctx: _Context, values: np.ndarray, image_index: int, n: int = 5) -> str:
    c = ctx.classifier
    scores = np.asarray(values, np.float64).reshape(values.shape[0], -1)[0]
    probs = scores if c.is_softmax else _softmax(scores)
    order = [int(i) for i in np.argsort(-probs, kind="stable")]
    if image_index == 0:
        ctx.top_classes = order
    what = "softmax output" if c.is_softmax else "softmax of the scores"
    rows = [[esc(_class_name(c, i)), f"{scores[i]:.4g}", f"{probs[i]:.1%}"]
            for i in order[:n]]
    return (f"<p>Top {min(n, len(order))} classes ({esc(what)}):</p>"
            + _table(["class", "score", "probability"], rows, numeric={1, 2}))


# ==================================================================== 5. activation maximization


def _am_taps(ctx: _Context) -> list:
    from .features import choose_taps

    if ctx.layer_names:
        return choose_taps(ctx.model, ctx.layer_names)
    return spread(conv_taps(ctx.model), MAXIMIZE_LAYERS)


def _section_maximize(ctx: _Context, rec: SectionRecord) -> str:
    if ctx.maximize == 0:
        return "<p>Skipped (<code>--maximize 0</code>).</p>"
    return _maximize_body(ctx, rec)


def display_zoom(size: tuple[int, int], small: int = 96, large: int = 160) -> float:
    """On-screen scale of a maximized image: small canvases enlarged by a whole factor to at
    least `small` pixels (crisp pixels), large ones shown at most `large` pixels wide."""
    side = max(1, min(size))
    if side < small:
        return float(-(-small // side))
    return min(1.0, large / side)


def _channel_count(model: Model, tensor: str) -> int | None:
    from .objectives import channel_axis, tensor_shape

    shape = tensor_shape(model, tensor)
    if shape is None:
        return None
    axis, _ = channel_axis(model, tensor, len(shape))
    n = shape[axis] if axis < len(shape) else None
    return n if isinstance(n, int) and n > 0 else None


def _maximize_body(ctx: _Context, rec: SectionRecord) -> str:
    from .images import display_to_pil

    n = ctx.maximize
    jobs: list[tuple[str, str, list[str], list[str]]] = []  # (anchor, title, targets, labels)
    ctx.am_taps = _am_taps(ctx)
    for k, tap in enumerate(ctx.am_taps):
        count = _channel_count(ctx.model, tap.tensor)
        m = min(n, count) if count else n
        jobs.append((f"maximize-{k}", tap.tensor, [f"{tap.tensor}:0-{m - 1}"],
                     [f"channel {c}" for c in range(m)]))
    c = ctx.classifier
    if c is not None:
        classes = (ctx.top_classes or list(range(c.classes)))[:n]
        why = ("the classes the model ranks highest on the first image" if ctx.top_classes
               else f"the first {len(classes)} classes (no image given to rank them)")
        jobs.append(("maximize-classes", f"classes of {c.logits}",
                     [f"{c.logits}:{','.join(map(str, classes))}"],
                     [f"class {_class_name(c, i)}" for i in classes]))
    if not jobs:
        return "<p>No conv layer or classifier output to maximize.</p>"
    parts = [
        "<p>Images synthesized to excite one channel (its mean activation) or one class logit "
        "as much as possible: start from faint random noise and climb the gradient of the "
        "objective with respect to the image, as in Lucid. The image is parameterized in "
        "the Fourier domain with decorrelated color, randomly padded, jittered, scaled and "
        "rotated at each step but the last eighth (so only patterns that survive those "
        "transforms are kept), and fed through the same preprocessing as a photo. Under "
        "each image: the objective it reaches and, for scale, what a uniform mid-gray image "
        "scores. Early layers give "
        "edges and colors, deeper ones textures and parts; a classifier's class images show "
        "what the model looks for, not what the class looks like.</p>"]
    nav = []
    method_line = ""
    seen_notes: set[str] = set()
    for anchor, title, targets, labels in jobs:
        is_classes = anchor == "maximize-classes"
        nav.append((anchor, "top classes" if is_classes else title))
        head = (f"Top classes: <code>{esc(c.logits)}</code>" if is_classes
                else f"Layer <code>{esc(title)}</code>: channels 0-{len(labels) - 1}")
        parts.append(f'<h3 id="{anchor}">{head}</h3>')
        if is_classes:
            parts.append(f'<p class="note">{esc(why)}; {esc(c.note)}.</p>')
        try:
            result = _run_maximize(ctx, targets, title)
        except OnnxvizError as exc:
            rec.notes.append(f"{title}: {exc}")
            parts.append(f'<p class="error">Not produced: {esc(exc)}</p>')
            continue
        ctx.maximize_targets.extend(result.targets)
        tiles, fallbacks, width = [], [], 0
        for k, img in enumerate(result.images):
            pic = display_to_pil(img)
            zoom = display_zoom(pic.size)
            width = max(width, round(pic.width * zoom))
            label = labels[k] if k < len(labels) else result.targets[k]
            fallback = result.fallback[k] if result.fallback else ""
            if fallback:
                fallbacks.append(f"{label}: {fallback}")
            cap = (f"{esc(label)}{' *' if fallback else ''}<br>{result.values[k]:.3g} "
                   f'<span class=note title="objective of the mean-gray image">'
                   f"(gray {result.reference[k]:.2g})</span>")
            tiles.append(_figure(ctx.pics.img(pic, f"maximized {result.targets[k]}",
                                              pixelated=zoom > 1, zoom=zoom), cap))
        parts.append(f'<div class="gallery" style="grid-template-columns:repeat(auto-fill,'
                     f'{width + 30}px)">' + "".join(tiles) + "</div>")
        pre_notes = set(getattr(ctx.preprocess, "notes", ()))  # already in the model card
        notes = [x for x in result.notes if x not in seen_notes and x not in pre_notes]
        seen_notes.update(notes)
        lines = ([f'<span class="flag-warning">{esc(w)}</span>' for w in result.warnings]
                 + [f"* {esc(f)}" for f in fallbacks] + [esc(x) for x in notes])
        if lines:
            parts.append('<p class="note">' + "<br>".join(lines) + "</p>")
        o = result.options
        method_line = (f"Method: gradient backend {result.method}; {o['param']} "
                       f"parameterization{' with decorrelated color' if o['decorrelate'] else ''};"
                       f" {o['transforms']} transforms; Adam, lr {o['lr']}; {result.steps} steps; "
                       f"canvas {result.canvas[0]}x{result.canvas[1]} (model input "
                       f"{result.model_size[0]}x{result.model_size[1]}); seed {o['seed']}.")
    if method_line:
        parts.insert(1, f'<p class="explain">{esc(method_line)}</p>')
        rec.notes.append(method_line)
    ctx.nav["maximize"] = nav
    return "".join(parts)


def _run_maximize(ctx: _Context, targets: list[str], title: str):
    from .grad import GradientWarning
    from .maximize import iter_maximize

    result = None
    last = -1.0
    with warnings.catch_warnings():  # they reach the report through result.warnings
        warnings.simplefilter("ignore", GradientWarning)
        for step in iter_maximize(ctx.model, targets, steps=ctx.steps, seed=ctx.seed,
                                  method=ctx.method, preprocess=ctx.preprocess,
                                  providers=ctx.providers):
            frac = step.done / max(1, step.total)
            if frac - last >= 0.05 or step.result is not None:
                last = frac
                ctx.emit(f"{title} step {step.done}/{step.total}")
            if step.result is not None:
                result = step.result
    if result is None:
        raise OnnxvizError(f"activation maximization of {title} produced no result")
    return result


# ==================================================================== 6. dataset examples


def _section_examples(ctx: _Context, rec: SectionRecord) -> str:
    if ctx.examples_dir is None:
        return ("<p>Not requested: pass <code>--examples DIR</code>, a folder of images, to "
                "see the real image patches that excite each channel most.</p>")
    return _examples_body(ctx, rec)


def _examples_body(ctx: _Context, rec: SectionRecord) -> str:
    from .examples import examples, examples_image

    n = ctx.maximize or 8
    taps = ctx.am_taps or _am_taps(ctx)
    if not taps:
        return "<p>No conv layer to find dataset examples for.</p>"
    parts = [f"<p>For each layer (the same ones as in section 5), the {EXAMPLES_TOP} images of "
             f"<code>{esc(ctx.examples_dir)}</code> that excite each of its first {n} channels "
             "most. Each crop is the receptive field of the unit where the channel peaks, "
             "mapped back to the original image, so it shows exactly what that unit saw; the "
             "label gives the activation value and the file. Compare each row with the "
             "synthesized image of the same channel in section 5: the synthetic image shows "
             "what the unit looks for, the crops what in real data comes closest.</p>"]
    nav = []
    for k, tap in enumerate(taps):
        anchor = f"examples-{k}"
        nav.append((anchor, tap.tensor))
        parts.append(f'<h3 id="{anchor}">Layer <code>{esc(tap.tensor)}</code></h3>')
        count = _channel_count(ctx.model, tap.tensor)
        channels = list(range(min(n, count) if count else n))
        last = [0.0]

        def progress(p, title=tap.tensor, last=last) -> None:
            if p.done == p.total or time.perf_counter() - last[0] > 0.5:
                last[0] = time.perf_counter()
                ctx.emit(f"{title} {p.done}/{p.total} images ({p.rate:.0f}/s)")

        try:
            result = examples(ctx.model, ctx.examples_dir, tap.tensor, channels=channels,
                              top=EXAMPLES_TOP, preprocess=ctx.preprocess,
                              providers=ctx.providers, progress=progress)
        except OnnxvizError as exc:
            rec.notes.append(f"{tap.tensor}: {exc}")
            parts.append(f'<p class="error">Not produced: {esc(exc)}</p>')
            continue
        ctx.examples_layers.append(tap.tensor)
        pic = examples_image(result)
        rate = result.images / result.seconds if result.seconds else 0.0
        cap = (f"<code>{esc(tap.tensor)}</code>: top {result.top} of {result.images} images "
               f"per channel ({result.seconds:.1f} s, {rate:.0f} images/s)"
               + (f"; {len(result.skipped)} of {result.files} files skipped (not decodable "
                  "images)" if result.skipped else ""))
        parts.append(_figure(ctx.pics.img(pic, f"dataset examples of {tap.tensor}"), cap,
                             above=True))
    ctx.nav["examples"] = nav
    return "".join(parts)


# ==================================================================== 7. provenance


def _versions() -> list[tuple[str, str]]:
    import onnx
    import onnxruntime
    import PIL

    return [("onnxviz", __version__), ("onnx", onnx.__version__),
            ("onnxruntime", onnxruntime.__version__), ("numpy", np.__version__),
            ("Pillow", PIL.__version__), ("Python", platform.python_version()),
            ("Platform", platform.platform())]


def _section_provenance(ctx: _Context, records: list[SectionRecord], total: float,
                        command: str) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    rows = [("Command", f"<code>{esc(command)}</code>"),
            ("Generated", esc(now)),
            ("Model SHA-256", f"<code>{esc(ctx.model.sha256)}</code>"),
            ("Seed", esc(ctx.seed)),
            ("Images", esc(", ".join(ctx.images) or "none")),
            ("Examples folder", esc(ctx.examples_dir or "none")),
            ("Maximization", esc(f"{ctx.maximize} channel(s) per layer, {ctx.steps} steps, "
                                 f"gradient method {ctx.method}"))]
    rows += [(name, esc(v)) for name, v in _versions()]
    timing = [[esc(f"{i + 1}. {r.title}"), f"{r.seconds:.2f} s",
               esc("; ".join([*r.notes, *([f"error: {r.error}"] if r.error else [])]))]
              for i, r in enumerate(records) if r.id != "provenance"]
    timing.append(["total (before writing)", f"{total:.2f} s", ""])
    return (_kv(rows) + "<h3>Timings</h3>"
            + _table(["section", "time", "notes"], timing, numeric={1}))


# ==================================================================== the page

CSS = """
:root{color-scheme:dark;--bg:#14161b;--panel:#1b1e25;--text:#e4e6eb;--muted:#9aa1ad;
--accent:#6cb6ff;--warn:#f0b429;--err:#ff6b6b;--ok:#5bd68a;--line:#2c313b}
*{box-sizing:border-box}
html{scroll-behavior:smooth}
body{margin:0;background:var(--bg);color:var(--text);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif}
nav{position:fixed;top:0;left:0;bottom:0;width:250px;overflow-y:auto;padding:18px 10px;
background:var(--panel);border-right:1px solid var(--line)}
nav .brand{font-weight:700;font-size:17px;padding:0 8px 2px}
nav .file{color:var(--muted);font-size:12px;padding:0 8px 12px;word-break:break-all}
nav ol{list-style:none;margin:0;padding:0}
nav ol ol{margin:0 0 4px 14px}
nav a{color:var(--text);text-decoration:none;display:block;padding:3px 8px;border-radius:5px}
nav a:hover{background:#2a2f3a}
nav ol ol a{color:var(--muted);font-size:13px;padding:1px 8px;white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}
.badge{display:inline-block;margin-left:6px;padding:0 7px;border-radius:9px;font-size:12px;
background:#30353f;color:var(--muted)}
.badge.error{background:#5a2626;color:#ffd6d6}.badge.warning{background:#4d3d12;color:#ffe7a8}
main{margin-left:250px;padding:26px 36px 80px;max-width:1240px}
header h1{margin:0 0 4px;font-size:26px}
header p{margin:0 0 28px;color:var(--muted)}
section{margin-bottom:52px;scroll-margin-top:10px}
h2{font-size:22px;border-bottom:1px solid var(--line);padding-bottom:6px;margin:0 0 14px}
h3{font-size:17px;margin:24px 0 8px;scroll-margin-top:10px}
h4{font-size:15px;margin:18px 0 6px;scroll-margin-top:10px}
p{max-width:900px}
a{color:var(--accent)}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
font-size:.9em;overflow-wrap:break-word}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{padding:3px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{color:var(--muted);font-weight:600}
table.kv th{width:190px}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.layers td:nth-child(3){max-width:260px}
table.layers td:nth-child(5),table.layers td:nth-child(6){white-space:nowrap}
tr.error td{background:rgba(255,107,107,.10)}tr.warning td{background:rgba(240,180,41,.08)}
.flag-error,.error{color:var(--err)}.flag-warning{color:var(--warn)}.ok{color:var(--ok)}
.note{color:var(--muted);font-size:13px}
ul.findings{font-size:14px}
img{max-width:100%;height:auto;display:block;background:#181a20}
img.px{image-rendering:pixelated;image-rendering:crisp-edges}
figure{margin:10px 0 26px}
figcaption{color:var(--muted);font-size:13px;margin-top:4px;max-width:900px}
.row{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}
.row figure{margin:6px 0}
.info{flex:1;min-width:260px}
.gallery{display:grid;gap:12px 4px;margin:6px 0 18px}
.gallery figure{margin:0}
.gallery img{max-width:none}
.gallery figcaption{font-size:12px;line-height:1.35;overflow-wrap:anywhere}
figure figcaption:first-child{margin:0 0 6px;color:var(--text);font-size:14px}
.explain{border-left:3px solid var(--accent);padding:2px 14px;background:#1a1e27}
@media (max-width:820px){nav{position:static;width:auto;border-right:0}main{margin-left:0}}
@media print{nav{display:none}main{margin-left:0}}
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _page(ctx: _Context, bodies: dict[str, str], records: list[SectionRecord]) -> str:
    s = ctx.model.summary
    errors = sum(1 for f in ctx.flags if f.severity == "error")
    warns = sum(1 for f in ctx.flags if f.severity == "warning")
    nav_items = []
    for k, (sid, title) in enumerate(SECTIONS, start=1):
        badge = ""
        if sid == "layers" and (errors or warns):
            sev = "error" if errors else "warning"
            badge = f' <span class="badge {sev}">{errors + warns}</span>'
        rec = next((r for r in records if r.id == sid), None)
        if rec and rec.error:
            badge = ' <span class="badge error">!</span>'
        children = "".join(f'<li><a href="#{esc(a)}" title="{esc(t)}">{esc(t)}</a></li>'
                           for a, t in ctx.nav.get(sid, []))
        sub = f"<ol>{children}</ol>" if children else ""
        nav_items.append(f'<li><a href="#{sid}">{k}. {esc(title)}{badge}</a>{sub}</li>')
    sections = "".join(f'<section id="{sid}"><h2>{k}. {esc(title)}</h2>{bodies[sid]}</section>'
                       for k, (sid, title) in enumerate(SECTIONS, start=1))
    flags = (f"{errors} error(s), {warns} warning(s) in the layer audit" if ctx.flags
             else "no audit flags")
    subtitle = (f"{s.params:,} parameters · {len(s.layers)} layers · {flags} · "
                f"onnxviz {__version__}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>onnxviz report: {esc(s.file)}</title><style>{CSS}</style></head><body>"
        f'<nav><div class="brand">onnxviz report</div><div class="file">{esc(s.file)}</div>'
        f"<ol>{''.join(nav_items)}</ol></nav>"
        f"<main><header><h1>What has <code>{esc(s.file)}</code> learned?</h1>"
        f"<p>{esc(subtitle)}</p></header>{sections}</main></body></html>\n")
