"""The `onnxviz` command: parse options, call one library function, write, print.

The only module that prints. User errors (`OnnxvizError`) become one line on stderr and exit
code 2; set ONNXVIZ_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .errors import OnnxvizError
from .model import DEFAULT_MAX_BYTES, Model, ModelSummary, load_model
from .outputs import provenance, save_npz, save_png, to_json
from .text import shape_text, size_text


class OnnxvizGroup(click.Group):
    """Turns user errors into one line and exit code 2, never a traceback; remembers the
    arguments it was called with, for the provenance recorded in every output."""

    def make_context(self, info_name, args, parent=None, **extra):
        argv = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta["onnxviz.argv"] = argv
        return ctx

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


def command_line() -> str:
    """The command as the user typed it (recorded in outputs)."""
    ctx = click.get_current_context(silent=True)
    argv = ctx.find_root().meta.get("onnxviz.argv") if ctx else None
    return shlex.join(["onnxviz", *(argv if argv is not None else sys.argv[1:])])


def _provenance(**items: object) -> dict[str, str]:
    return provenance(command=command_line(), **items)


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

def _table(rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        out.append("  ".join(cells).rstrip())
    return out


def format_summary(s: ModelSummary) -> str:
    lines = [
        f"model      {s.file}  ({size_text(s.file_size)}, sha256 {s.sha256[:16]})",
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
        lines.append(f"  {c.name}  {c.dtype} {shape_text(c.shape)}")
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
        lines.append(f"  {o.name}  {o.dtype} {shape_text(o.shape)}")
    lines.append(f"layers ({len(s.layers)}; * = first layer that sees the image)")
    if s.layers:
        rows = [["", "#", "name", "op", "weight", "output", "shape", "params", "min", "max",
                 "mean", "std", "zeros", "dead"]]
        for x in s.layers:
            st = x.stats
            rows.append([
                "*" if x.name == s.first_layer else "", str(x.index), x.name, x.op,
                "x".join(map(str, x.weight_shape)) if x.weight_shape else "?", x.output,
                shape_text(x.output_shape), f"{x.params:,}",
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
    meta = _provenance(model_sha256=loaded.sha256, model=loaded.label, layer=lw.layer,
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


def preprocess_options(f=None, *, size_help: str | None = None):
    """The image preprocessing options (keyword names of `images.choose_preprocess`), shared by
    every command that feeds an image to a model. Use bare, or with `size_help` to say what
    --size means for that command."""
    if f is None:
        return lambda g: preprocess_options(g, size_help=size_help)
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
                     help=size_help or f"Input size for models with dynamic height/width "
                          f"(default {DEFAULT_SIZE}; with shorter-side, H is the shorter side)."),
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
                save_png(img, path, _provenance(tensor=tap.tensor, **meta_common))
                entry["png"] = str(path)
                if overlay and kind == "2d" and prepared.display is not None:
                    ov = render_overlay(prepared.display, values[0],
                                        title=f"{tap.tensor}  {list(values.shape)}",
                                        colormap=colormap)
                    ov_path = out_dir / f"{stem}_overlay.png"
                    save_png(ov, ov_path, _provenance(tensor=tap.tensor, **meta_common))
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
        "onnxviz_version": __version__, "command": command_line(),
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


# ---------------------------------------------------------------- report

@main.command()
@model_argument
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
              metavar="IMG", help="Image for the feature maps (and a classifier's top classes); "
              "repeatable. Default on the embedded model: its bundled test digit.")
@click.option("--examples", "examples_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Folder of images (searched recursively) for the top-k dataset examples of "
              "each channel. Default on the embedded model: its bundled digits folder.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="report.html",
              show_default=True, help="HTML file to write (one self-contained file).")
@click.option("--layers", multiple=True, metavar="NAME[,NAME...]",
              help="Layers (node or tensor names) for the feature maps, activation "
                   "maximization and dataset examples; comma-separated or repeated. Default: "
                   "a spread of conv layers across depth.")
@click.option("--maximize", type=click.IntRange(0, 512), default=8, show_default=True,
              help="Channels per layer (and top classes of a classifier) to maximize; 0 skips "
                   "activation maximization.")
@click.option("--steps", type=click.IntRange(1, 100_000), default=128, show_default=True,
              metavar="N", help="Optimization steps per maximized image. Each step runs the "
              "model forward and backward: on large models lower it (e.g. --steps 32) or "
              "maximize fewer channels.")
@click.option("--max-channels", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Feature-map channels drawn per layer.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of every random choice (same seed, same report pictures).")
@click.option("--method", type=click.Choice(["autodiff", "numeric", "ort-training", "auto"]),
              default="autodiff", show_default=True,
              help="Gradient backend for activation maximization.")
@click.option("--provider", "providers", multiple=True, metavar="NAME",
              help="onnxruntime execution provider (repeatable, in order). Default: CPU.")
@click.option("--json", "as_json", is_flag=True,
              help="Print what was written (sections, timings, audit flags) as JSON.")
@preprocess_options
@max_bytes_option
def report(model: str | None, images: tuple[str, ...], examples_dir: str | None, output: str,
           layers: tuple[str, ...], maximize: int, steps: int, max_channels: int,
           seed: int, method: str,
           providers: tuple[str, ...], as_json: bool, preset: str | None, scale: float | None,
           mean: tuple | None, std: tuple | None, channel_order: str | None,
           resize: str | None, size: tuple | None, max_bytes: int) -> None:
    """Write one self-contained HTML report of what MODEL has learned.

    Sections: model card; layer table with audit flags (NaN/Inf, dead and near-duplicate
    filters, extreme magnitudes); first-layer filters; feature maps of each --image;
    activation maximization; top-k dataset examples (--examples DIR); provenance. Every
    picture is inlined: the file opens offline in any browser and makes no request. Without
    MODEL: the embedded digits model, its test digit and its bundled digits folder.
    """
    from .images import choose_preprocess, main_input
    from .report import SECTIONS
    from .report import report as build_report

    loaded = _load(model, max_bytes)
    names = [n.strip() for v in layers for n in v.split(",") if n.strip()] or None
    pre_options = {"scale": scale, "mean": mean, "std": std, "channel_order": channel_order,
                   "resize": resize, "size": size}
    contract = main_input(loaded)
    pre = None
    if contract.layout is not None:
        pre = choose_preprocess(contract, preset, **pre_options)
    elif preset or any(v is not None for v in pre_options.values()):
        click.secho("warning: the model has no image input; preprocessing options are ignored",
                    err=True, fg="yellow")
    tty = sys.stderr.isatty()
    with click.progressbar(length=len(SECTIONS), label="report", file=sys.stderr,
                           show_pos=True) as bar:
        def progress(event) -> None:
            if event.done:
                bar.update(1)
            elif tty or not event.detail:  # in a log file, one line per section
                detail = f": {event.detail}" if event.detail else ""
                bar.label = f"{event.index}/{event.total} {event.title}{detail}"
                bar.render_progress()

        result = build_report(loaded, images=images, examples_dir=examples_dir, layers=names,
                              maximize=maximize, steps=steps, preprocess=pre,
                              output=output, progress=progress, seed=seed, method=method,
                              providers=list(providers) or None, max_channels=max_channels,
                              command=command_line())
    for rec in result.sections:
        if rec.error:
            click.secho(f"warning: section {rec.title!r} could not be produced: {rec.error}",
                        err=True, fg="yellow")
    if as_json:
        click.echo(to_json(result.to_dict()))
        return
    errors = sum(1 for f in result.flags if f.severity == "error")
    warnings = sum(1 for f in result.flags if f.severity == "warning")
    click.echo(f"audit: {errors} error(s), {warnings} warning(s)"
               + "".join(f"\n  {f.severity}: {f.message}" for f in result.flags[:10]
                         if f.severity != "note")
               + (f"\n  ... see the report for all {len(result.flags)}"
                  if len(result.flags) > 10 else ""))
    click.echo(f"wrote {result.path} ({size_text(result.bytes)}, {result.pictures} pictures) "
               f"in {result.seconds:.1f} s")


# ---------------------------------------------------------------- examples

@main.command()
@click.argument("paths", nargs=-1, metavar="[MODEL] IMAGES_DIR")
@click.option("--layer", required=True, metavar="NAME",
              help="Node or tensor name whose channels to rank (a node name means its first "
                   "output; name the activation, e.g. relu1, to rank post-activation values). "
                   "`onnxviz inspect MODEL` lists the layers.")
@click.option("--channels", metavar="SPEC",
              help="Channels to show: a range 0-15, a list 1,5,9, both (0-3,8), or all. "
                   "Default: the first 16.")
@click.option("--top", type=click.IntRange(1, 100), default=9, show_default=True,
              help="Images kept per channel.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="examples.png",
              show_default=True, help="PNG file to write.")
@click.option("--tile", type=click.IntRange(16, 512), default=112, show_default=True,
              help="Side of each crop's square tile in the picture, in pixels.")
@click.option("--batch", type=click.IntRange(1, 4096),
              help="Images per onnxruntime run (default: measured, the fastest of 1, 4, 16, 64; "
                   "a model with a fixed batch dimension always gets its own).")
@click.option("--provider", "providers", multiple=True, metavar="NAME",
              help="onnxruntime execution provider (repeatable, in order). Default: CPU.")
@click.option("--json", "as_json", is_flag=True,
              help="Print, per channel, the files, locations, crop boxes (original-image "
                   "pixels) and values as JSON.")
@preprocess_options
@max_bytes_option
def examples(paths: tuple[str, ...], layer: str, channels: str | None, top: int, output: str,
             tile: int, batch: int | None, providers: tuple[str, ...], as_json: bool,
             preset: str | None, scale: float | None, mean: tuple | None, std: tuple | None,
             channel_order: str | None, resize: str | None, size: tuple | None,
             max_bytes: int) -> None:
    """Find the image patches in IMAGES_DIR that most excite each channel of --layer.

    Every image in IMAGES_DIR (searched recursively; files Pillow cannot decode are skipped
    and counted) runs through MODEL; per channel, the --top images with the highest maximal
    activation are kept, and each is cropped to the receptive field of that maximum, mapped
    back through the resize to the original image. Writes a grid: a row per channel, its
    crops left to right, labelled with the value and the file.

    With one path, it is IMAGES_DIR and MODEL is the embedded default (the digits CNN); with
    none, the default model runs on its bundled folder of 100 digits.
    """
    import contextlib

    from .examples import examples as find_examples
    from .examples import examples_image
    from .images import choose_preprocess, main_input
    from .model import default_images_dir

    if len(paths) > 2:
        raise OnnxvizError(f"expected [MODEL] IMAGES_DIR, got {len(paths)} paths")
    model, images_dir = ([None, None, *paths])[-2:] if len(paths) < 2 else paths
    if images_dir is not None and Path(images_dir).is_file() and len(paths) == 1:
        raise OnnxvizError(f"{images_dir} is a file; give a folder of images (onnxviz examples "
                           "[MODEL] IMAGES_DIR --layer NAME)")
    loaded = _load(model, max_bytes)
    if images_dir is None:
        if not loaded.is_default:
            raise OnnxvizError("give IMAGES_DIR, a folder of images")
        images_dir = str(default_images_dir())
        click.echo("(no IMAGES_DIR given: using the default model's bundled digits folder)",
                   err=True)
    pre = choose_preprocess(main_input(loaded), preset, scale=scale, mean=mean, std=std,
                            channel_order=channel_order, resize=resize, size=size)
    folder = Path(output).resolve().parent  # fail before the run, not after it
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        raise OnnxvizError(f"cannot write {output}: {existing} is not a writable folder; "
                           "choose another -o")
    with contextlib.ExitStack() as stack:
        bars: list = []

        def progress(p) -> None:
            if not bars:
                bars.append(stack.enter_context(click.progressbar(
                    length=p.total, label="images", file=sys.stderr, show_pos=True,
                    item_show_func=lambda q: f"{q.rate:.0f} img/s" if q else "")))
            bars[0].update(p.done - bars[0].pos, p)

        result = find_examples(loaded, images_dir, layer, channels=channels, top=top,
                               preprocess=pre, providers=list(providers) or None, batch=batch,
                               progress=progress)
    img = examples_image(result, tile=tile)
    meta = _provenance(model_sha256=loaded.sha256, model=loaded.label, layer=result.layer,
                      images_dir=Path(images_dir).resolve(), images=result.images,
                      channels=",".join(str(c.channel) for c in result.channels), top=top,
                      preprocess=pre.describe(result.input_channels))
    try:
        save_png(img, output, meta)
    except OSError as exc:
        raise OnnxvizError(f"cannot write {output}: {exc.strerror or exc}") from None
    if as_json:
        info = result.to_dict()
        info.update(png=str(Path(output)), onnxviz_version=__version__,
                    command=command_line())
        click.echo(to_json(info))
        return
    rate = result.images / result.seconds if result.seconds else 0.0
    click.echo(f"{result.layer} {result.map_shape}: {result.images} images from {images_dir} "
               f"in {result.seconds:.1f} s ({rate:.0f} images/s, batch {result.batch}); "
               f"{pre.describe(result.input_channels)}")
    for ch in result.channels[:16]:
        if ch.hits:
            best = ch.hits[0]
            click.echo(f"  ch {ch.channel:>3}  best {best.value:.4g}  "
                       f"{best.file.relative_to(result.images_dir).as_posix()}  box "
                       f"(top, left, bottom, right) {best.box}")
    if len(result.channels) > 16:
        click.echo(f"  ... {len(result.channels) - 16} more channels (--json lists them all)")
    if result.skipped:
        names = ", ".join(s.file.name for s in result.skipped[:3])
        more = f" and {len(result.skipped) - 3} more" if len(result.skipped) > 3 else ""
        click.secho(f"skipped {len(result.skipped)} of {result.files} files Pillow cannot "
                    f"decode: {names}{more}", err=True, fg="yellow")
    for note in result.notes:
        click.echo(f"  note: {note}")
    click.echo(f"wrote {output}")


# ---------------------------------------------------------------- maximize

def _split_model_targets(args: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """[MODEL] TARGET...: the first argument is the model when it is an existing file or ends
    in .onnx; otherwise every argument is a target on the embedded default model."""
    if not args:
        return None, []
    first = args[0]
    if first.lower().endswith(".onnx") or Path(first).is_file():
        return first, list(args[1:])
    return None, list(args)


def _check_writable(path: str | None, what: str) -> None:
    """Fail before a long run, not after it, when an output cannot be written."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise OnnxvizError(f"{what} {path} is a folder; give a file name")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise OnnxvizError(f"cannot write {what} {path}: {parent} is not a writable folder")


def _am_tiles(images) -> list:
    """Display images (N, C, H, W) as tiles for render_grid: gray for 1 channel, the first
    three channels otherwise."""
    import numpy as np

    out = []
    for im in images:
        im = np.asarray(im, np.float32)
        out.append(im[0] if im.shape[0] < 3 else im[:3].transpose(1, 2, 0))
    return out


def _am_picture(images, labels, title: str, notes: list[str]):
    from .render import render_grid

    side = max(images.shape[2], images.shape[3])
    return render_grid(_am_tiles(images), scale=max(1, round(128 / side)), labels=labels,
                       title=title, notes=notes)


@main.command("maximize")
@click.argument("args", nargs=-1, metavar="[MODEL] TARGET...")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="maximize.png",
              show_default=True, help="PNG file to write: one tile per image, labelled with its "
              "target and final objective.")
@click.option("--npz", type=click.Path(dir_okay=False),
              help="Also write the images (float32, display space, key 'images'), their final "
                   "model inputs ('inputs'), 'targets', 'values', 'start' and 'reference'.")
@click.option("--json", "as_json", is_flag=True,
              help="Print per target the start and final objective, steps, seconds, method and "
                   "the mean-gray reference as JSON.")
@click.option("--steps", type=click.IntRange(1, 1_000_000), default=512, show_default=True,
              help="Optimization steps.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="Adam learning rate.")
@click.option("--param", type=click.Choice(["fourier", "pixel"]), default="fourier",
              show_default=True, help="Image parameterization: scaled Fourier coefficients "
              "(smooth images, Lucid's default) or plain pixels.")
@click.option("--decorrelate/--no-decorrelate", default=True, show_default=True,
              help="Optimize RGB images in Lucid's decorrelated color space.")
@click.option("--transforms", type=click.Choice(["standard", "none"]), default="standard",
              show_default=True, help="Random pad/jitter/scale/rotation at every step "
              "(Lucid's standard set; pixel amounts scaled down on canvases under 128).")
@click.option("--polish", type=click.IntRange(min=0), metavar="N",
              help="Run the last N steps without the random transforms, fitting the model's "
                   "exact pixel grid, at twice --lr (default: 1/8 of --steps; 0: transforms "
                   "throughout, as Lucid).")
@click.option("--tv", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of the total-variation penalty (mean over pixels).")
@click.option("--l2", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of the L2 penalty pulling pixels to mid-gray (mean over pixels).")
@click.option("--blur", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of the blur penalty (detail at the pixel scale).")
@click.option("--diversity", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of Lucid's diversity term across the --variants images of a target.")
@click.option("--variants", type=click.IntRange(1, 64),
              help="Images per target (default 1; 4 with --diversity).")
@click.option("--negative", is_flag=True, help="Minimize the objective instead.")
@click.option("--init", default="noise", show_default=True, metavar="noise|IMAGE",
              help="Start from faint noise, or from IMAGE (with a layer target: DeepDream).")
@click.option("--method", type=click.Choice(["auto", "autodiff", "numeric", "ort-training"]),
              default="auto", show_default=True,
              help="Gradient backend; auto falls back to numeric (with a warning) where "
                   "autodiff has no rule for an op.")
@click.option("--batch", type=click.IntRange(1, 1024),
              help="Images per onnxruntime call (default 8 where the model's batch dimension "
                   "is dynamic, else its fixed batch).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the initial noise and the transforms (same seed, same image).")
@click.option("--every", type=click.IntRange(1, 1_000_000), metavar="N",
              help="Also write a snapshot grid every N steps (OUT_stepNNNN.png).")
@click.option("--provider", "providers", multiple=True, metavar="NAME",
              help="onnxruntime execution provider (repeatable, in order). Default: CPU.")
@preprocess_options(size_help="Canvas size H[xW] where the model's height/width are dynamic "
                    "(default 128, as Lucid); a fixed model size is used as it is.")
@max_bytes_option
def maximize_command(args: tuple[str, ...], output: str, npz: str | None, as_json: bool,
                     steps: int, lr: float, param: str, decorrelate: bool, transforms: str,
                     polish: int | None, tv: float, l2: float, blur: float, diversity: float,
                     variants: int | None, negative: bool, init: str, method: str,
                     batch: int | None, seed: int, every: int | None,
                     providers: tuple[str, ...], preset: str | None,
                     scale: float | None, mean: tuple | None, std: tuple | None,
                     channel_order: str | None, resize: str | None, size: tuple | None,
                     max_bytes: int) -> None:
    """Synthesize the images that most excite each TARGET of MODEL (activation maximization).

    TARGET: TENSOR (mean of squares: DeepDream), TENSOR:C (channel C's mean, or class C of an
    (N, K) output), TENSOR:C@Y,X (one neuron), TENSOR:A-B or TENSOR:A,B,C (one image per
    channel); TENSOR is a node or tensor name (`onnxviz inspect MODEL` lists them). Starting
    from faint noise, Adam climbs the objective's gradient with respect to the image, which is
    parameterized in the Fourier domain with decorrelated color and randomly transformed each
    step (Lucid's recipe), then preprocessed like a photo (--preset etc.). --size sets the
    canvas (default 128 where the model's size is dynamic, else the model's size). Without
    MODEL: the embedded digits CNN (e.g. `onnxviz maximize logits:0-9`).
    """
    import warnings

    import numpy as np

    from .grad import GradientWarning
    from .images import choose_preprocess, main_input
    from .maximize import iter_maximize

    model, targets = _split_model_targets(args)
    if not targets:
        raise OnnxvizError("give at least one TARGET, e.g. `onnxviz maximize MODEL conv1:0-7` "
                           "(`onnxviz inspect MODEL` lists the layers)")
    for path, what in ((output, "the output"), (npz, "the --npz file")):
        _check_writable(path, what)
    stem = Path(output)
    loaded = _load(model, max_bytes)
    contract = main_input(loaded)
    pre = choose_preprocess(contract, preset, scale=scale, mean=mean, std=std,
                            channel_order=channel_order, resize=resize)
    if init != "noise" and not Path(init).is_file():
        raise OnnxvizError(f"--init must be 'noise' or an image file; no such file: {init}")
    options = dict(steps=steps, size=size, lr=lr, param=param, decorrelate=decorrelate,
                   transforms=transforms, polish=polish, tv=tv, l2=l2, blur=blur,
                   diversity=diversity, variants=variants, negative=negative, init=init,
                   method=method, batch=batch, seed=seed, every=every, preprocess=pre,
                   providers=list(providers) or None)
    result = None
    snapshots: list[str] = []
    bar = None
    shown = 0
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", GradientWarning)
            for step in iter_maximize(loaded, targets, **options):
                while shown < len(caught):  # warnings as they come (e.g. the numeric fallback)
                    click.secho(f"\nwarning: {caught[shown].message}", err=True, fg="yellow")
                    shown += 1
                if bar is None:
                    bar = click.progressbar(length=step.total, label="maximizing",
                                            file=sys.stderr, show_pos=True,
                                            item_show_func=lambda s: s)
                    bar.__enter__()
                what = (f"run {step.run + 1}/{step.runs} " if step.runs > 1 else "") + (
                    f"step {step.index + 1} objective {float(np.mean(step.values)):.4g}"
                    + (" (mean)" if len(step.values) > 1 else ""))
                bar.update(1, what)
                if step.image is not None and every and (step.index + 1) % every == 0:
                    run = f"_run{step.run + 1}" if step.runs > 1 else ""
                    path = stem.with_name(f"{stem.stem}{run}_step{step.index + 1:04d}.png")
                    labels = [f"{lb} {v:.3g}" for lb, v in zip(step.labels, step.values,
                                                                strict=True)]
                    pic = _am_picture(step.image, labels, f"step {step.index + 1}/{step.steps}",
                                      [])
                    save_png(pic, path, _provenance(model_sha256=loaded.sha256,
                                                   model=loaded.label, step=step.index + 1))
                    snapshots.append(str(path))
                if step.result is not None:
                    result = step.result
            while shown < len(caught):
                click.secho(f"warning: {caught[shown].message}", err=True, fg="yellow")
                shown += 1
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if result is None:  # pragma: no cover - iter_maximize always ends with the result
        raise OnnxvizError("activation maximization produced no result")
    o = result.options
    title = (f"{loaded.label}: activation maximization, {result.steps} steps, {result.method}, "
             f"seed {seed}")
    color = ", decorrelated color" if o["decorrelate"] and result.images.shape[1] == 3 else ""
    notes = [f"{o['param']} parameterization{color}, {o['transforms']} transforms (the last "
             f"{o['polish']} steps without), lr {lr}; "
             f"canvas {result.canvas[0]}x{result.canvas[1]} -> model input "
             f"{result.model_size[0]}x{result.model_size[1]}; {pre.describe(contract.channels)}"]
    if negative:
        notes.append("--negative: the objective was minimized")
    notes += [f"{t}: {f}" for t, f in zip(result.targets, result.fallback, strict=True) if f]
    meta = _provenance(model_sha256=loaded.sha256, model=loaded.label,
                      targets=" ".join(targets), seed=seed, steps=result.steps,
                      method=result.method, preprocess=pre.describe(contract.channels),
                      options=to_json(o).replace("\n", " "))
    pic = _am_picture(result.images, result.labels, title, notes)
    if npz:
        save_npz(npz, {"images": result.images, "inputs": result.inputs,
                       "targets": np.array(result.targets), "values": result.values,
                       "start": result.start, "reference": result.reference,
                       "history": result.history})
    save_png(pic, output, meta)
    info = {"model": loaded.label, "model_sha256": loaded.sha256, "onnxviz_version": __version__,
            "command": command_line(), **result.to_dict(),
            "png": str(output), "npz": npz, "snapshots": snapshots}
    if as_json:
        click.echo(to_json(info))
        return
    width = max(len(t) for t in result.targets)
    for row in result.per_target():
        flag = f"  ({row['fallback']})" if row["fallback"] else ""
        click.echo(f"{row['target']:<{width}}  {row['start_objective']:>9.4g} -> "
                   f"{row['final_objective']:<9.4g} (mean gray {row['mean_gray_objective']:.4g})"
                   f"{flag}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    click.echo(f"wrote {output}" + (f", {npz}" if npz else "")
               + (f" and {len(snapshots)} snapshot(s)" if snapshots else "")
               + f" ({result.method}, {float(result.seconds.max()):.1f} s per run)")



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
