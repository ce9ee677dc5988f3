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


# ---------------------------------------------------------------- features (and preprocess options)

def _floats_option(ctx: click.Context, param: click.Parameter, value: str | None):
    """'0.485 0.456 0.406' or '0.485,0.456,0.406' -> a tuple of floats."""
    if value is None:
        return None
    try:
        return tuple(float(x) for x in value.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of numbers (e.g. '0.485 0.456 0.406')"
                                 ) from None


def _size_option(ctx: click.Context, param: click.Parameter, value: str | None):
    """'224' -> (224,), '224x320' -> (224, 320)."""
    if value is None:
        return None
    try:
        size = tuple(int(x) for x in value.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) not in (1, 2) or min(size) < 1:
        raise click.BadParameter(f"{value!r} is not H or HxW (e.g. 224 or 224x320)")
    return size


def preprocess_options(f):
    """The image preprocessing options (keyword names of `images.choose_preprocess`), shared by
    every command that feeds an image to a model."""
    from .images import DEFAULT_RULE, DEFAULT_SIZE, PRESETS, RESIZE_MODES

    presets = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    options = [
        click.option("--preset", type=click.Choice(list(PRESETS)),
                     help=f"Named preprocessing. {presets}. Default: {DEFAULT_RULE}."),
        click.option("--scale", type=float, help="Multiply pixel values (0..255) by this; "
                     "overrides the preset."),
        click.option("--mean", callback=_floats_option, metavar="'M [M M]'",
                     help="Subtract per channel after scaling, in the model's channel order; "
                          "overrides the preset."),
        click.option("--std", callback=_floats_option, metavar="'S [S S]'",
                     help="Divide per channel after subtracting the mean; overrides the preset."),
        click.option("--channel-order", type=click.Choice(["rgb", "bgr"], case_sensitive=False),
                     help="Channel order of 3-channel inputs. Default: what the graph says "
                          "(metadata, channel means), else the preset's (caffe: bgr, others "
                          "rgb)."),
        click.option("--resize", type=click.Choice(RESIZE_MODES),
                     help="stretch: to the input size, aspect ratio not kept; center-crop: "
                          "scale to cover, crop the center; shorter-side (default): the shorter "
                          "side to the size, aspect kept (the longer side rounded to a multiple "
                          "of 32) where dims are dynamic, center-crop where they are fixed."),
        click.option("--size", callback=_size_option, metavar="H[xW]",
                     help=f"Input size for models with dynamic height/width (default "
                          f"{DEFAULT_SIZE}; with shorter-side, H is the shorter side)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _parse_tensor_options(values: tuple[str, ...], input_names: list[str]) -> dict:
    """'FILE.npy' (the main input) or 'NAME=FILE.npy' (input NAME) -> {name or None: path}."""
    out: dict = {}
    for v in values:
        name, path = None, v
        if "=" in v:
            left, right = v.split("=", 1)
            if left in input_names or not Path(v).is_file():
                name, path = left, right
        if name in out:
            raise OnnxvizError(f"--tensor given twice for {name or 'the main input'}")
        out[name] = path
    return out


def _safe_name(name: str) -> str:
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return (safe or "tensor")[:80]


@main.command()
@model_argument
@click.argument("image", required=False, metavar="[IMAGE]")
@click.option("--tensor", "tensors", multiple=True, metavar="[NAME=]FILE.npy",
              help="Feed a ready tensor (exact dtype and shape) instead of an IMAGE; "
                   "NAME=FILE.npy for the model's other inputs. Repeatable.")
@click.option("--layer", "layers", multiple=True, metavar="NAME",
              help="Node or tensor name to show (repeatable). Default: the output after the "
                   "activation of every layer in `onnxviz inspect`'s table.")
@click.option("--all", "all_tensors", is_flag=True,
              help="Every floating-point tensor of rank >= 3 that the input reaches, except "
                   "the insides of conv -> BN -> activation chains that onnxruntime fuses "
                   "(pre-activation outputs, activation gates; --layer NAME shows them).")
@click.option("-o", "--output", type=click.Path(file_okay=False), default="features",
              show_default=True, help="Folder to write NN_<name>.png, summary.json, ... into.")
@click.option("--npz", is_flag=True, help="Also write features.npz: every shown tensor at full "
              "precision (fp16 as float32, quantized tensors dequantized), keyed by tensor name.")
@click.option("--max-channels", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Channels drawn per layer (a note says how many were left out).")
@click.option("--sort", type=click.Choice(["index", "mean", "max"]), default="index",
              show_default=True, help="Order of the tiles: channel index, or highest mean/max "
              "activation first.")
@click.option("--colormap", default="viridis", show_default=True,
              help="matplotlib colormap for the tiles.")
@click.option("--normalize", type=click.Choice(["channel", "layer"]), default="channel",
              show_default=True, help="Scale colors per channel (each tile to its own 0.5th.."
              "99.5th percentile) or once per layer (tiles comparable).")
@click.option("--overlay", is_flag=True, help="Also write NN_<name>_overlay.png: the channel-mean "
              "activation upsampled over the input image.")
@click.option("--provider", "providers", multiple=True, metavar="NAME",
              help="onnxruntime execution provider (repeatable, in order). Default: CPU.")
@click.option("--threads", type=click.IntRange(1, 1024),
              help="onnxruntime intra-op threads (default: onnxruntime's choice).")
@click.option("--json", "as_json", is_flag=True,
              help="Print summary.json to stdout instead of text.")
@preprocess_options
@max_bytes_option
def features(model: str | None, image: str | None, tensors: tuple[str, ...],
             layers: tuple[str, ...], all_tensors: bool, output: str, npz: bool,
             max_channels: int, sort: str, colormap: str, normalize: str, overlay: bool,
             providers: tuple[str, ...], threads: int | None, as_json: bool,
             preset: str | None, scale: float | None, mean: tuple | None, std: tuple | None,
             channel_order: str | None, resize: str | None, size: tuple | None,
             max_bytes: int) -> None:
    """Show what each layer computes for IMAGE: one picture per layer, a tile per channel.

    The chosen tensors are made extra outputs of the graph (a copy; the original outputs stay
    bit-identical) and the model runs once in onnxruntime. Writes DIR/NN_<name>.png per layer
    and DIR/summary.json (model hash, the preprocessing used, per-layer and per-channel
    statistics, dead channels); --npz adds DIR/features.npz. Without MODEL (or with only an
    image file): the default digits model; without IMAGE on the default model: its bundled
    test digit.
    """
    from .features import choose_taps, iter_feature_maps, layer_stats
    from .images import choose_preprocess, main_input, prepare_inputs
    from .model import default_image_path
    from .outputs import save_json
    from .render import colormap_lut, picture_kind, render_feature_maps, render_overlay

    if model and image is None and not tensors and Path(model).suffix.lower() in (
            ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"):
        model, image = None, model  # `onnxviz features IMAGE`: the default model on IMAGE
    if layers and all_tensors:
        raise OnnxvizError("give --layer NAME or --all, not both")
    loaded = _load(model, max_bytes)
    colormap_lut(colormap)  # an unknown colormap fails before the run
    main_in = main_input(loaded)
    tensor_map = _parse_tensor_options(tensors, [c.name for c in loaded.summary.inputs])
    if image is None and main_in.name not in tensor_map and None not in tensor_map:
        if not loaded.is_default:
            raise OnnxvizError("give an IMAGE, or a ready tensor with --tensor FILE.npy")
        image = str(default_image_path())
        click.echo(f"(no IMAGE given: using the default model's test digit {Path(image).name})",
                   err=True)
    pre = None
    pre_options = {"scale": scale, "mean": mean, "std": std, "channel_order": channel_order,
                   "resize": resize, "size": size}
    if image is not None:
        pre = choose_preprocess(main_in, preset, **pre_options)
    elif preset or any(v is not None for v in pre_options.values()):
        click.secho("warning: preprocessing options are ignored when a ready --tensor is fed",
                    err=True, fg="yellow")
    prepared = prepare_inputs(loaded, image=image, tensors=tensor_map, preprocess=pre)
    taps = choose_taps(loaded, "all" if all_tensors else (list(layers) or None))

    out_dir = Path(output)
    digits = max(2, len(str(len(taps) - 1)))
    arrays: dict = {}
    entries: list[dict] = []
    no_picture: list[str] = []
    meta_common = {"model_sha256": loaded.sha256, "model": loaded.label,
                   "input": prepared.source,
                   "preprocess": (pre.describe(main_in.channels) if pre
                                  else "ready tensor (--tensor)")}
    stream = iter_feature_maps(loaded, prepared.feeds, taps, providers=list(providers) or None,
                               threads=threads)
    with click.progressbar(length=len(taps), label="writing layers", file=sys.stderr,
                           show_pos=True) as bar:
        k = -1  # a counter, not enumerate(), which would keep the previous map alive
        for fm in stream:
            k += 1
            tap, values = fm.tap, fm.values
            stats = layer_stats(values)
            kind, why_not = picture_kind(values.shape)
            stem = f"{k:0{digits}d}_{_safe_name(tap.tensor)}"
            entry = {"index": k, "tensor": tap.tensor, "node": tap.node, "op": tap.op,
                     "layer": tap.layer, "chosen_as": tap.why, "dtype": fm.source_dtype,
                     **stats.to_dict(), "notes": list(fm.notes), "png": None, "overlay": None}
            if kind is None:
                entry["no_picture"] = why_not
                no_picture.append(tap.tensor)
            else:
                title = f"{tap.tensor}  {list(values.shape)}  ({tap.why})"
                img = render_feature_maps(values[0], title=title, normalize=normalize,
                                          max_channels=max_channels, sort=sort,
                                          colormap=colormap, notes=fm.notes)
                path = out_dir / f"{stem}.png"
                save_png(img, path, provenance(tensor=tap.tensor, **meta_common))
                entry["png"] = str(path)
                if overlay and kind == "2d" and prepared.display is not None:
                    ov = render_overlay(prepared.display, values[0],
                                        title=f"{tap.tensor}  {list(values.shape)}",
                                        colormap=colormap)
                    ov_path = out_dir / f"{stem}_overlay.png"
                    save_png(ov, ov_path, provenance(tensor=tap.tensor, **meta_common))
                    entry["overlay"] = str(ov_path)
                elif overlay:
                    entry["no_overlay"] = ("not a 2-D map" if kind != "2d"
                                           else "no input image to draw over")
            if npz or kind is None:
                arrays[tap.tensor] = values
            entries.append(entry)
            del fm, values
            bar.update(1)
    npz_path = None
    if arrays:
        npz_path = out_dir / "features.npz"
        save_npz(npz_path, arrays)
        del arrays
    info = {
        "model": loaded.label, "model_sha256": loaded.sha256,
        "onnxviz_version": __version__, "command": provenance()["onnxviz.command"],
        "input": prepared.to_dict(), "selection": "all" if all_tensors else (
            "layers" if layers else "default (post-activation output of every layer)"),
        "normalize": normalize, "sort": sort, "colormap": colormap,
        "max_channels": max_channels, "npz": str(npz_path) if npz_path else None,
        "npz_contents": ("every shown tensor" if npz else
                         "only tensors without a picture" if npz_path else None),
        "layers": entries,
    }
    summary_path = save_json(out_dir / "summary.json", info)
    if as_json:
        click.echo(to_json(info))
        return
    if pre is not None:
        click.echo(f"input {prepared.source} -> {prepared.image_input} "
                   f"{list(prepared.feeds[prepared.image_input].shape)}; "
                   f"{pre.describe(main_in.channels)}")
    else:
        click.echo(f"input {prepared.source} (ready tensor, no preprocessing)")
    for note in prepared.notes:
        click.echo(f"  note: {note}")
    for e in entries:
        dead = f", {len(e['dead_channels'])}/{e['channels']} dead" if e["channels"] else ""
        where = Path(e["png"]).name if e["png"] else f"no picture: {e['no_picture']}"
        click.echo(f"{e['index']:>{digits}}  {e['tensor']}  {e['shape']}  max {e['max']:.4g}, "
                   f"zeros {e['zero_fraction']:.0%}{dead} -> {where}")
    if no_picture and not npz:
        click.echo(f"{len(no_picture)} tensor(s) without a picture are in {npz_path}")
    elif npz_path:
        click.echo(f"all {len(entries)} tensors in {npz_path}")
    click.echo(f"wrote {len(entries)} layer(s) to {out_dir}/ (summary: {summary_path.name})")


# ---------------------------------------------------------------- gradcheck

@main.command()
@model_argument
@click.option("--target", required=True, metavar="SPEC",
              help="What to differentiate: TENSOR (mean of squares), TENSOR:C (channel, or "
                   "class for an (N, K) output), TENSOR:C@Y,X (neuron); TENSOR is a node or "
                   "tensor name. Several channels (A-B, A,B,C) are checked as their sum.")
@click.option("--method", type=click.Choice(["autodiff", "numeric", "ort-training", "auto"]),
              default="autodiff", show_default=True, help="Gradient backend to check.")
@click.option("--image", type=click.Path(dir_okay=False),
              help="Check at this image (preprocessed for the model). Default: a seeded random "
                   "input in [0, 1].")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="Largest relative error that counts as agreement.")
@click.option("--step", type=click.FloatRange(min=0, min_open=True), default=3e-3,
              show_default=True, help="Finite-difference step along each unit direction, in "
                                      "image units ([0, 1]).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random input and the random directions.")
@click.option("--provider", "providers", multiple=True, metavar="NAME",
              help="onnxruntime execution provider (repeatable, in order). Default: CPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@preprocess_options
@max_bytes_option
def gradcheck(model: str | None, target: str, method: str, image: str | None, tolerance: float,
              step: float, seed: int, providers: tuple[str, ...], as_json: bool,
              preset: str | None, scale: float | None, mean: tuple | None, std: tuple | None,
              channel_order: str | None, resize: str | None, size: tuple | None,
              max_bytes: int) -> None:
    """Check a gradient backend against finite differences on MODEL.

    Compares the backend's directional derivative with central finite differences (2 forwards
    each, retried at step/3 and step/10 where they disagree) along the gradient direction and
    two random directions, prints the relative errors and their cosine, and exits with 0 when
    they agree within --tolerance (or within the float32 noise of the objective), 1 when not.
    Float32 forwards near ReLU kinks and MaxPool ties differ at ~1e-4, so agreement is
    judged by a tolerance, never bit-exactness.
    """
    import warnings

    from .grad import GradientWarning
    from .grad.check import gradcheck as run_gradcheck
    from .images import choose_preprocess, main_input
    from .objectives import describe_axis, parse_targets

    loaded = _load(model, max_bytes)
    pre = None
    pre_options = {"scale": scale, "mean": mean, "std": std, "channel_order": channel_order,
                   "resize": resize, "size": size}
    if image is not None:
        pre = choose_preprocess(main_input(loaded), preset, **pre_options)
    elif preset or any(v is not None for k, v in pre_options.items() if k != "size"):
        click.secho("warning: preprocessing options are ignored without --image", err=True,
                    fg="yellow")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GradientWarning)
        result = run_gradcheck(loaded, target, method=method, image=image, preprocess=pre,
                               size=size[0] if size else 64, step=step, tolerance=tolerance,
                               seed=seed, providers=list(providers) or None)
    for w in caught:
        click.secho(f"warning: {w.message}", err=True, fg="yellow")
    axis_notes = [n for o in parse_targets(target, loaded) for n in describe_axis(o)]
    if as_json:
        info = result.to_dict()
        info.update(model=loaded.label, model_sha256=loaded.sha256, channel_axes=axis_notes,
                    onnxviz_version=__version__)
        click.echo(to_json(info))
    else:
        click.echo(result.summary())
        for note in axis_notes[:4]:
            click.echo(f"  note: {note}")
    if not result.passed:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
