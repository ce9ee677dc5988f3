"""The `onnxviz` command: parse options, call one library function, write, print.

The only module that prints. User errors (`OnnxvizError`) become one line on stderr and exit
code 2; set ONNXVIZ_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import OnnxvizError
from .model import DEFAULT_MAX_BYTES, Model, ModelSummary, load_model
from .outputs import provenance, save_npz, save_png, to_json


class OnnxvizGroup(click.Group):
    """Turns user errors into one line and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OnnxvizError as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except MemoryError:
            click.secho("error: out of memory; try a smaller --size or fewer layers", err=True,
                        fg="red")
            ctx.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("ONNXVIZ_DEBUG"):
                raise
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            click.secho(f"internal error: {type(exc).__name__}: {first} (a bug in onnxviz; "
                        "rerun with ONNXVIZ_DEBUG=1 for the traceback and please report it)",
                        err=True, fg="red")
            ctx.exit(3)


@click.group(cls=OnnxvizGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxviz")
def main() -> None:
    """See what a convolutional network has learned, from its .onnx file alone.

    Every command takes MODEL, a path to an .onnx file; without it, commands use the embedded
    default (a small CNN trained on scikit-learn's digits). Errors in the input print one line
    and exit with status 2.
    """


model_argument = click.argument("model", required=False, metavar="[MODEL]")
max_bytes_option = click.option(
    "--max-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BYTES, show_default=True,
    help="Refuse model files (with external data) larger than this many bytes.")


def _load(model: str | None, max_bytes: int) -> Model:
    loaded = load_model(model, max_bytes=max_bytes)
    if loaded.is_default:
        click.echo(f"(no MODEL given: using the embedded default model {loaded.path.name}, a "
                   "digits CNN; pass a path to an .onnx file to use your own)", err=True)
    if loaded.custom_ops:
        ops = ", ".join(sorted({f"{d}::{op}" for d, op, _ in loaded.custom_ops}))
        click.secho(f"warning: ops from custom domains that onnxruntime cannot run without "
                    f"their library: {ops}", err=True, fg="yellow")
    return loaded


# ---------------------------------------------------------------- inspect

def _fmt_shape(shape) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _fmt_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        out.append("  ".join(cells).rstrip())
    return out


def format_summary(s: ModelSummary) -> str:
    lines = [
        f"model      {s.file}  ({_fmt_size(s.file_size)}, sha256 {s.sha256[:16]})",
        f"producer   {s.producer or '?'} {s.producer_version}".rstrip(),
        f"format     IR {s.ir_version}, opsets "
        + ", ".join(f"{d} {v}" for d, v in sorted(s.opsets.items())),
        f"params     {s.params:,}",
    ]
    if s.custom_ops:
        lines.append(f"custom ops {', '.join(s.custom_ops[:5])}"
                     + (f" (+{len(s.custom_ops) - 5} more)" if len(s.custom_ops) > 5 else ""))
    lines.append("inputs")
    for c in s.inputs:
        lines.append(f"  {c.name}  {c.dtype} {_fmt_shape(c.shape)}")
        if c.layout:
            size = f"{c.height or '?'}x{c.width or '?'}"
            lines.append(f"    layout {c.layout} ({c.layout_reason}); {c.channels or '?'} "
                         f"channel(s); spatial size {size}")
            if c.normalization:
                steps = ", ".join(f"{n.op} {_fmt_values(n.value)}" for n in c.normalization)
                lines.append(f"    normalization in the graph: {steps}")
            else:
                lines.append("    normalization in the graph: none found")
            if c.channels == 3:
                lines.append(f"    color order: {c.color_order or '?'} ({c.color_order_reason})")
        else:
            lines.append(f"    not an image input ({c.layout_reason})")
    lines.append("outputs")
    for o in s.outputs:
        lines.append(f"  {o.name}  {o.dtype} {_fmt_shape(o.shape)}")
    lines.append(f"layers ({len(s.layers)}; * = first layer that sees the image)")
    if s.layers:
        rows = [["", "#", "name", "op", "weight", "output", "shape", "params", "min", "max",
                 "mean", "std", "zeros", "dead"]]
        for x in s.layers:
            st = x.stats
            rows.append([
                "*" if x.name == s.first_layer else "", str(x.index), x.name, x.op,
                "x".join(map(str, x.weight_shape)) if x.weight_shape else "?", x.output,
                _fmt_shape(x.output_shape), f"{x.params:,}",
                *([f"{st.min:.3g}", f"{st.max:.3g}", f"{st.mean:.3g}", f"{st.std:.3g}",
                   f"{st.zero_fraction:.0%}", str(st.zero_filters)] if st else ["-"] * 6),
            ])
        lines += ["  " + ln for ln in _table(rows, right={1, 7, 8, 9, 10, 11, 12, 13})]
        notes = [f"  {x.name}: {x.note}" for x in s.layers if x.note]
        lines += notes
    else:
        lines.append("  (no conv or dense layers with constant weights)")
    return "\n".join(lines)


def _fmt_values(v: list[float]) -> str:
    return " ".join(f"{x:.4g}" for x in v) if len(v) > 1 else f"{v[0]:.4g}"


@main.command()
@model_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@max_bytes_option
def inspect(model: str | None, as_json: bool, max_bytes: int) -> None:
    """Summarize MODEL: producer, inputs and their image contract, outputs, layers.

    The input contract is inferred from the graph: layout (NCHW/NHWC), channels, spatial size,
    normalization applied inside the graph, and a color-order hint. The layer table lists
    Conv/ConvTranspose/QLinearConv/ConvInteger/Gemm/MatMul layers with constant weights in
    graph order, with weight statistics; * marks the first layer that sees the image.
    """
    loaded = _load(model, max_bytes)
    summary = loaded.summary
    if as_json:
        click.echo(to_json(summary.to_dict()))
    else:
        click.echo(format_summary(summary))


# ---------------------------------------------------------------- weights

@main.command()
@model_argument
@click.option("--layer", help="Layer (node name, output or weight tensor name). Default: the "
              "first conv that sees the image, else the first dense layer.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="weights.png",
              show_default=True, help="PNG file to write.")
@click.option("--npz", type=click.Path(dir_okay=False),
              help="Also write the filters as rendered, float32 (O, C, kh, kw), key 'weights'.")
@click.option("--normalize", type=click.Choice(["global", "filter"]), default="global",
              show_default=True, help="Scale all filters by one max |w|, or each by its own.")
@click.option("--channel-order", type=click.Choice(["rgb", "bgr"], case_sensitive=False),
              help="Order of the model's 3 input channels. Default: inferred from the graph, "
                   "else rgb.")
@click.option("--fold-bn", is_flag=True, help="Fold a following BatchNormalization into the "
              "filters (show the effective filters).")
@click.option("--scale", type=click.IntRange(1, 64), help="Zoom each weight to NxN pixels "
              "(default: tiles about 56 px).")
@click.option("--max-inputs", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="For filters that are not 1- or 3-channel: input channels shown per filter.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@max_bytes_option
def weights(model: str | None, layer: str | None, output: str, npz: str | None,
            normalize: str, channel_order: str | None, fold_bn: bool, scale: int | None,
            max_inputs: int, as_json: bool, max_bytes: int) -> None:
    """Render the learned filters of a layer as a grid of small images.

    First-layer filters of a 3-channel model are color patches; 1-channel ones grayscale.
    Mid-gray is zero, brighter positive, darker negative. Filters of deeper layers are shown per
    input channel and do not live in image space. A dense first layer is shown as one template
    per unit, reshaped to the input image.
    """
    from .weights import weights_image

    loaded = _load(model, max_bytes)
    lw, img = weights_image(loaded, layer, normalize=normalize, channel_order=channel_order,
                            fold_bn=fold_bn, scale=scale, max_inputs=max_inputs)
    meta = provenance(model_sha256=loaded.sha256, model=loaded.label, layer=lw.layer,
                      normalize=normalize)
    if npz:
        save_npz(npz, {"weights": lw.weights, "layer": lw.layer})
    save_png(img, output, meta)
    info = {"model": loaded.label, "layer": lw.layer, "op": lw.op, "kind": lw.kind,
            "shape": list(lw.weights.shape), "image_space": lw.image_space,
            "channel_order": lw.channel_order, "folded_bn": lw.folded_bn, "notes": lw.notes,
            "png": str(Path(output)), "npz": npz}
    if as_json:
        click.echo(to_json(info))
    else:
        click.echo(f"{lw.layer} ({lw.op}): {lw.weights.shape[0]} {lw.kind} filters "
                   f"{'x'.join(map(str, lw.weights.shape[1:]))} -> {output}"
                   + (f", {npz}" if npz else ""))
        for note in lw.notes:
            click.echo(f"  note: {note}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
