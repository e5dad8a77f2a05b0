"""What each ``realnvp`` command does: a thin layer over the library. The commands see a model
only through the ``Flow`` interface (``prepare``, ``mismatch``, ``metric``, ``to_data``,
``nll_units``); the shape of one example (``event_shape``) picks the file formats, CSV rows for
vectors or image sets and grids for images; the one place a kind is chosen is
``_training_data``, from the data."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import matplotlib.image
import numpy as np
import torch

from realnvp.audit import audit
from realnvp.cli.contexts import Layout, parse_context, read_contexts
from realnvp.cli.parser import MODEL_OPTIONS, OPTIONS, TRAIN_OPTIONS, flag, model_options
from realnvp.cli.tables import (
    Moments,
    check_training_table,
    convert,
    stream_table,
    training_table,
)
from realnvp.config import TrainConfig, default_val_fraction
from realnvp.data.images import IMAGE_DATASETS, is_image_source, load_images
from realnvp.data.sources import is_builtin, load_data
from realnvp.data.store import is_streamable
from realnvp.data.tabular import DataError, table_header
from realnvp.files import atomic_write
from realnvp.models import Flow, MultiScaleRealNVP, RealNVP, kind_of
from realnvp.plots import save_figure
from realnvp.plots.images import (
    mosaic,
    plot_manifold,
    plot_reconstructions,
    plot_samples,
    to_pixels,
)
from realnvp.studies.moons import MoonsStudyConfig, run_moons_study
from realnvp.training import History, evaluate_nll, train_run
from realnvp.training.checkpoint import load_model
from realnvp.training.distributed import init_from_env, rank, world_size
from realnvp.training.runs import (
    ResumeConflict,
    check_resume,
    resolve_device,
    saved_config,
    saved_settings,
    train_shape,
)


class UsageError(Exception):
    """Bad input from the user: reported as one line on stderr with exit code 2."""


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
    _write_parts(path, iter([(array, header)]))


def _write_parts(path: str, parts: Iterator[tuple[np.ndarray, list[str]]]) -> None:
    """Write a CSV file (or stdout, ``-``) part by part as ``parts`` yields ``(rows, header)``,
    the header once: a file through a temporary file renamed at the end, so a part that fails
    leaves nothing."""

    def write(stream) -> None:
        for k, (array, header) in enumerate(parts):
            if not k:
                csv.writer(stream, lineterminator="\n").writerow(header)  # quotes "price, usd"
            np.savetxt(stream, array, delimiter=",", fmt="%.9g")

    def write_file(tmp: Path) -> None:
        with open(tmp, "w") as f:
            write(f)

    if path == "-":
        write(sys.stdout)
    else:
        atomic_write(Path(path), write_file)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _write_images(path: Path, flow: MultiScaleRealNVP, x: torch.Tensor) -> None:
    """Model outputs as discrete grey levels: a .npy array (N, C, H, W) of uint8, or a .png
    grid."""
    if path.suffix == ".npy":
        grey = flow.to_data(x)
        atomic_write(path, lambda tmp: tmp.write_bytes(_npy_bytes(grey)))
        return
    grid = mosaic(to_pixels(flow, x), cols=math.ceil(math.sqrt(len(x))))
    atomic_write(
        path,
        lambda tmp: matplotlib.image.imsave(tmp, grid, cmap="gray", vmin=0, vmax=1, format="png"),
    )


# -- data in -------------------------------------------------------------------------------
def _is_table(flow: Flow) -> bool:
    """Whether the model's examples are rows of a table (a CSV can hold them)."""
    return len(flow.event_shape) == 1


def _table_model(flow: Flow) -> RealNVP:
    """A table model as the kind it is (``RealNVP``, the kind of every table run)."""
    return cast(RealNVP, flow)


def _image_model(flow: Flow) -> MultiScaleRealNVP:
    """An image model as the kind it is (``MultiScaleRealNVP``, the kind of every image run)."""
    return cast(MultiScaleRealNVP, flow)


def _examples(
    args: argparse.Namespace,
    spec: str,
    flow: Flow,
    seed: int,
    min_rows: int = 1,
    layout: Layout | None = None,
    as_given: bool = False,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """The examples of ``spec`` as the model scores them (``flow.prepare``; ``as_given``: as
    they are, ``flow.as_input``) and, for a conditional model, their contexts: the rows of a
    table, read into the run's ``layout`` (a value that overflows the model, after its
    standardization, is refused naming its row and column) or the test split of an image set
    (dequantized with ``seed``; its labels for a class-conditional model)."""
    levels, context = None, None
    if layout is not None:
        representable = _representable(flow, layout)
        table, _ = layout.read(spec, args.n, seed, args.drop_nonfinite, min_rows, representable)
        x, context = layout.split(table)
    else:
        data = load_images(spec)
        x, levels = data.test, data.levels
        if flow.context_shape is not None:
            context = _labels(spec, data.test_labels)
    _check_examples(spec, flow, x, context, levels)
    return (flow.as_input(x) if as_given else flow.prepare(x, seed)), context


def _representable(flow: Flow, layout: Layout):
    """What ``load_data`` checks of each value: that the model can take it (context columns
    are checked by the model's own ``context_mismatch``)."""

    def ok(a: np.ndarray) -> np.ndarray:
        out = np.ones(a.shape, dtype=bool)
        out[:, layout.modelled] = flow.in_range(torch.as_tensor(a[:, layout.modelled])).cpu()
        return out

    return ok


def _labels(spec: str, labels: np.ndarray | None) -> np.ndarray:
    if labels is None:
        raise DataError(f"{spec}: holds no labels, which a class-conditional model needs")
    return labels


def _latents(
    args: argparse.Namespace, spec: str, flow: Flow, layout: Layout
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Latent codes from a table laid out as ``encode`` writes them (the run's layout, latent
    codes in place of its modelled columns), in the model's dtype, and a conditional run's
    contexts; a value it cannot hold is refused."""
    limit = float(torch.finfo(flow.dtype).max)
    x, _ = load_data(
        spec,
        args.n,
        args.data_seed,
        args.drop_nonfinite,
        columns=layout.width,
        representable=lambda a: np.abs(a) <= limit,
    )
    x, context = layout.split(x)
    return torch.as_tensor(x, dtype=flow.dtype, device=flow.device), context


def _training_data(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The training data, their contexts (None for an unconditional model), a description for
    the run's records, and the model kind they call for: the multi-scale model for images,
    Real NVP for a table."""
    if is_image_source(args.data):
        if args.context:
            raise UsageError(
                "--context names a table's columns; images condition on their "
                "labels with --conditional"
            )
        if args.columns:
            raise UsageError(f"--columns names a table's columns; {args.data} holds images")
        data = load_images(args.data)
        source = args.data if args.data in IMAGE_DATASETS else str(Path(args.data).resolve())
        model = {"type": MultiScaleRealNVP.kind, "levels": data.levels}
        labels = _labels(args.data, data.train_labels) if args.conditional else None
        info = {"source": source, "dataset": data.name, "levels": data.levels}
        return data.train, labels, {**info, "conditional": args.conditional}, model
    if args.conditional:
        raise UsageError(
            "--conditional trains on image labels; for a table, name its context "
            "columns with --context"
        )
    layout = _training_layout(args)
    table, info, rows = training_table(args, layout)
    check_training_table(table, rows, args.data, layout)
    names = None if layout.names is None else layout.modelled_names()
    info = {**info, **layout.to_info(), **({"modelled": names} if names else {})}
    return table, None, info, {"type": RealNVP.kind}


def _training_layout(args: argparse.Namespace) -> Layout:
    """The columns a table run reads: those ``--columns`` and ``--context`` name (all without
    them; a built-in data set's two)."""
    if not is_builtin(args.data):
        return Layout.of(args.data, *table_header(args.data), args.columns, args.context)
    for option, value, what in [
        ("--columns", args.columns, "columns to choose"),
        ("--context", args.context, "context columns"),
    ]:
        if value:
            raise UsageError(
                f"{args.data}: a built-in data set has no {what}; {option} names columns of a "
                "table file (CSV, Parquet, Feather, NumPy)"
            )
    return Layout(2)


# -- train ---------------------------------------------------------------------------------
#: store_true options: left out, they read False, which is not a setting
SWITCHES = {"bf16", "compile"}


def _given(args: argparse.Namespace, options: dict[str, str]) -> dict[str, Any]:
    """The options the user set on the command line, by the library's parameter names (the
    switches that are only ever turned on, ``--bf16`` and ``--compile``, read False when left
    out)."""
    values = {name: getattr(args, dest) for name, dest in options.items()}
    return {
        name: v
        for name, v in values.items()
        if v is not None and not (v is False and name in SWITCHES)
    }


def _shown(value: Any) -> Any:
    """A setting as the command line spells it (``0``, not ``0.0``)."""
    return format(value, "g") if isinstance(value, float) else value


def _spelled(dest: str, value: Any, again: bool = True) -> str:
    """An option with its value as the command line spells it: ``--lr 0.001`` (or ``0.001``
    with ``again=False``, where the flag was just named); a switch ``--actnorm`` or
    ``--no-actnorm``."""
    if isinstance(value, bool) and dest not in SWITCHES:
        return flag(dest) if value else "--no-" + flag(dest)[2:]
    return f"{flag(dest)} {_shown(value)}" if again else str(_shown(value))


def _check_model_options(args: argparse.Namespace, kind: type[Flow]) -> None:
    """Refuse a model option that the data's kind of model does not take (--layers for images)."""
    foreign = [dest for name, dest in MODEL_OPTIONS.items() if name not in kind.defaults()]
    given = [flag(dest) for dest in foreign if getattr(args, dest) is not None]
    if given:
        own = ", ".join(flag(dest) for dest in model_options(kind).values())
        raise UsageError(
            f"{', '.join(given)}: not an option of {kind.__name__}, the model for {args.data}; "
            f"its options are {own}"
        )
    spline = [flag(d) for d in ("bins", "tail_bound") if getattr(args, d, None) is not None]
    if spline and getattr(args, "coupling", None) not in (None, "spline"):
        raise UsageError(
            f"{', '.join(spline)}: shape spline couplings, not --coupling {args.coupling}"
        )


def _resume_settings(args: argparse.Namespace, kind: type[Flow]) -> TrainConfig:
    """The recipe of the run being resumed; any option given must repeat its saved value."""
    saved = saved_settings(args.out)
    # a saved config leaves out arguments at their constructor defaults (masks, dequantize)
    saved["model"] = {**kind.defaults(), **saved["model"]}
    model = _given(args, model_options(kind))
    if model.pop("dequantize", "auto") == "none" and saved["model"]["dequantize"]:
        raise UsageError(
            f"{args.out}: was started dequantizing its rounded columns, not with --dequantize "
            "none; a resumed run keeps its settings (leave the option out, or start a new run "
            "with another --out)"
        )  # "auto" finds the saved steps again: the data are checked to be the same
    given = {
        "model": model,
        "train": _given(args, TRAIN_OPTIONS),
        "data": _given(args, {"val_fraction": "val_fraction"}),
    }
    try:
        check_resume(args.out, saved, given)
    except ResumeConflict as conflict:
        dest = OPTIONS.get(conflict.name, conflict.name)
        raise UsageError(
            f"{args.out}: was started with {_spelled(dest, conflict.saved)}, not "
            f"{_spelled(dest, conflict.given, again=False)}; a resumed run keeps its settings "
            "(leave the option out, or start a new run with another --out)"
        ) from None
    return saved_config(args.out, {**saved["train"], "compile": args.compile})


def _prepare_run(args: argparse.Namespace) -> str:
    """Refuse a missing GPU and an unwritable RUN before any work; join the process group when
    launched by torchrun. Returns the device to train on."""
    resolve_device(args.device)
    device = init_from_env(args.device)
    _make_folder(args.out)
    return args.device if device is None else str(device)


def _train(args: argparse.Namespace) -> int:
    model: dict[str, Any] | None  # None on --resume: the run's saved model
    x, context, info, model = _training_data(args)
    kind = kind_of(model)
    _check_model_options(args, kind)
    device = _prepare_run(args)
    if args.resume:
        config, model, val_fraction = _resume_settings(args, kind), None, None
    else:
        model = {**model, **_given(args, model_options(kind))}
        val_fraction = args.val_fraction
        shape = x.shape if isinstance(x, np.ndarray) else (len(x.rows), len(x.modelled))
        fraction = default_val_fraction(shape[0]) if val_fraction is None else val_fraction
        config = replace(
            kind.recipe_for(train_shape(shape, fraction)), **_given(args, TRAIN_OPTIONS)
        )
    try:
        flow, history = train_run(
            args.out,
            x,
            model,
            config,
            val_fraction,
            args.resume,
            device,
            progress=not args.no_progress,
            data_info=info,
            context=context,
        )
    except FileExistsError as error:
        if error.errno is not None:  # the system's, not the library's "already holds a run"
            raise
        raise UsageError(
            f"{args.out}: already holds a run; pass --resume to continue it, or choose another "
            "--out"
        ) from None
    _report(history, flow, args.out, info.get("modelled"))
    return 0


def _report(history: History, flow: Flow, out: Path, names: list[str] | None = None) -> None:
    if rank() != 0:
        return
    metric, best = flow.metric, "no validation set"
    if history.best_step and metric is not None:
        value = metric.of_nll(history.best_val_nll)
        best = f"best validation {value:.4f} {metric.unit} at step {history.best_step}"
    elif history.best_step:
        best = f"best validation NLL {history.best_val_nll:.4f} at step {history.best_step}"
    processes = f" on {world_size()} processes" if world_size() > 1 else ""
    print(
        f"trained {history.step[-1] if history.step else 0} steps{processes} in "
        f"{history.seconds:.0f} s; {best}; model in {out}",
        file=sys.stderr,
    )
    rounding = getattr(flow, "rounding", None)
    if rounding:
        print(_rounding_note(rounding, _table_model(flow).log_cell, names), file=sys.stderr)


def _rounding_note(rounding: list[float], log_cell: float, names: list[str] | None) -> str:
    """What the run did with rounded columns, for its summary."""
    names = names or [f"column {j + 1}" for j in range(len(rounding))]
    cols = ", ".join(f"{n} (step {s:.4g})" for n, s in zip(names, rounding, strict=True) if s)
    return (
        f"dequantized rounded columns: {cols}, with uniform noise over each step; NLLs are of "
        f"the dequantized rows (add {-log_cell:+.4f} for a bound on the rounded rows' NLL; "
        "--dequantize none to model them as they are)"
    )


# -- using a trained model -----------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    flow, config = load_model(args.run_dir)
    layout = _layout(config, flow)
    if layout is not None and is_streamable(args.data):
        nll = _streamed_nll(args, flow, layout)
    else:
        x, context = _examples(args, args.data, flow, args.data_seed, 2, layout)
        c = None if context is None else flow.as_context(context)
        nll = Moments()
        nll.add(evaluate_nll(flow, x, context=c).double().cpu().numpy())
    if nll.n < 2:
        raise DataError(f"{args.data}: has {nll.n} usable row, at least 2 needed")
    result: dict[str, Any] = {
        "nll": nll.mean,
        "nll_se": nll.se,
        "n": nll.n,
        "units": flow.nll_units,
    }
    metric = flow.metric
    if metric is not None:
        result[metric.name] = metric.of_nll(result["nll"])
        result[f"{metric.name}_se"] = metric.of_nll(result["nll_se"])
    if getattr(flow, "rounding", None):  # scored on dequantized rows (flow.prepare)
        result["rounded_nll_bound"] = result["nll"] - _table_model(flow).log_cell
    if args.json:
        print(json.dumps(result))
    elif metric is not None:
        print(
            f"{result[metric.name]:.4f} ± {result[f'{metric.name}_se']:.4f} {metric.unit} "
            f"(NLL {result['nll']:.2f} {flow.nll_units}, n = {result['n']:,})"
        )
    else:
        bound = result.get("rounded_nll_bound")
        rounded = "" if bound is None else f"; dequantized rows, rounded rows' NLL <= {bound:.4f}"
        print(
            f"NLL {result['nll']:.4f} ± {result['nll_se']:.4f} {flow.nll_units} "
            f"(n = {result['n']:,}{rounded})"
        )
    return 0


def _streamed_nll(args: argparse.Namespace, flow: Flow, layout: Layout) -> Moments:
    """The NLLs of a table read in place, chunk by chunk (each dequantized, for a model with
    rounded columns, with noise drawn from the seed and the chunk's number: the first chunk's
    is the noise the table gets when read whole)."""
    nll = Moments()
    for i, _, x, context in stream_table(args.data, layout, args.drop_nonfinite, _in_range(flow)):
        _check_examples(args.data, flow, x, context)
        c = None if context is None else flow.as_context(context)
        seed = args.data_seed + 1_000_003 * i
        nll.add(evaluate_nll(flow, flow.prepare(x, seed), context=c).double().cpu().numpy())
    return nll


def _in_range(flow: Flow):
    """Which values of a table's modelled columns the model can take (``Flow.in_range``)."""
    return lambda x: flow.in_range(torch.as_tensor(x)).cpu().numpy()


def _check_examples(
    spec: str, flow: Flow, x: np.ndarray, context: np.ndarray | None, levels: int | None = None
) -> None:
    """Refuse examples (and contexts) the model cannot take (``Flow.mismatch``)."""
    problem = flow.mismatch(x, levels)
    if problem is None and context is not None:
        problem = flow.context_mismatch(context)
    if problem is not None:
        raise DataError(f"{spec}: {problem}")


def _layout(config: dict[str, Any], flow: Flow) -> Layout | None:
    """Which columns of a table a table run reads, and which it conditions on (None: an image
    model)."""
    if not _is_table(flow):
        return None
    return Layout.from_info(config.get("data", {}), flow.event_shape[0])


def _transform(args: argparse.Namespace) -> int:
    _check_output(args.output)
    flow, config = load_model(args.run_dir)
    if not _is_table(flow):
        raise UsageError(
            f"{args.run_dir}: is an image model; '{args.command}' works on table models "
            "(use the Python API's log_prob/encode/decode for images)"
        )
    layout = _layout(config, flow)
    assert layout is not None  # a table model has one
    if is_streamable(args.data):
        _streamed_transform(args, flow, layout)
        return 0
    if args.command == "decode":
        x, context = _latents(args, args.data, flow, layout)
    else:  # each row's density and code at the row itself, not at a dequantized draw of it
        x, context = _examples(args, args.data, flow, args.data_seed, layout=layout, as_given=True)
    values = _applied(args, flow, x, context)
    _write_csv(args.output, *_transformed(args.command, layout, values, context))
    return 0


def _applied(
    args: argparse.Namespace,
    flow: Flow,
    x: torch.Tensor,
    context: np.ndarray | None,
    lines: np.ndarray | None = None,
    written: str = "nothing was written",
) -> np.ndarray:
    """What score, encode or decode computes of the rows ``x`` (rows ``lines`` of the input;
    None: 1, 2, ...); a non-finite result is refused, naming its row."""
    with torch.inference_mode():
        if args.command == "score":
            out = flow.log_prob(x, context)[:, None]
        elif args.command == "encode":
            out = flow.encode(x, context)
        else:
            out = flow.decode(x, context)
    values = out.double().cpu().numpy()
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        what = "log_prob" if args.command == "score" else "value"
        raise UsageError(
            f"{args.data}: row {_row(lines, int(np.argmax(bad)))} ({int(bad.sum())} rows in "
            f"all) gives a non-finite {what}: the row is too far outside what the model was "
            f"trained on; {written}"
        )
    return values


def _row(lines: np.ndarray | None, k: int) -> int:
    return k + 1 if lines is None else int(lines[k])


def _streamed_transform(args: argparse.Namespace, flow: Flow, layout: Layout) -> None:
    """score, encode or decode of a table read in place, written chunk by chunk (to a
    temporary file renamed at the end, so a failure leaves nothing)."""
    decode = args.command == "decode"
    limit = float(torch.finfo(flow.dtype).max)
    in_range = (lambda x: np.abs(x) <= limit) if decode else _in_range(flow)

    def parts() -> Iterator[tuple[np.ndarray, list[str]]]:
        done = 0
        for _, lines, x, context in stream_table(args.data, layout, args.drop_nonfinite, in_range):
            if not decode:
                _check_examples(args.data, flow, x, context)
            t = torch.as_tensor(x, dtype=flow.dtype if decode else None, device=flow.device)
            written = "nothing was written"
            if args.output == "-" and done:
                written = f"the {done:,} rows before its chunk were written"
            t = t if decode else flow.as_input(t)
            values = _applied(args, flow, t, context, lines, written)
            yield _transformed(args.command, layout, values, context)
            done += len(values)
        if not done:
            raise DataError(f"{args.data}: has no usable rows")

    _write_parts(args.output, parts())


def _transformed(
    command: str, layout: Layout, out: np.ndarray, context: np.ndarray | None
) -> tuple[np.ndarray, list[str]]:
    """What score, encode or decode writes, and its header: encode and decode keep a
    conditional run's context columns in place, so that their outputs read back."""
    if command == "score":
        return out, ["log_prob"]
    return layout.join(out, context), layout.header("z" if command == "encode" else "x")


def _sample(args: argparse.Namespace) -> int:
    _check_output(args.output)
    flow, config = load_model(args.run_dir)
    table = _is_table(flow)
    if not table and Path(args.output).suffix not in (".png", ".npy"):
        raise UsageError(f"{args.output}: an image model writes a .png grid or a .npy array")
    layout = _layout(config, flow)
    context = _sample_context(args, flow, layout)
    generator = torch.Generator(device=flow.device).manual_seed(args.seed)
    with torch.inference_mode():
        x = flow.sample(args.n, context, temperature=args.temperature, generator=generator)
    if layout is None:  # an image model
        _write_images(Path(args.output), _image_model(flow), x)
    elif context is None:
        _write_csv(args.output, flow.to_data(x), layout.header())
    else:
        _write_csv(args.output, *_conditional_samples(args, flow, layout, x, context))
    return 0


def _sample_context(args: argparse.Namespace, flow: Flow, layout: Layout | None):
    """The contexts ``sample`` draws for: ``--context`` (one), ``--context-file`` (one per
    row) or ``--label`` (an image class); refused when the model takes none, or needs one."""
    given = [
        f
        for f, v in [
            ("--context", args.context),
            ("--context-file", args.context_file),
            ("--label", args.label),
        ]
        if v is not None
    ]
    if flow.context_shape is None:
        if given:
            raise UsageError(f"{given[0]}: {args.run_dir} is not a conditional model")
        return None
    if len(given) > 1:
        raise UsageError(f"{given[0]} and {given[1]}: give one of them")
    if layout is None:  # class-conditional images
        if args.context is not None or args.context_file is not None:
            raise UsageError(f"{given[0]}: {args.run_dir} is class-conditional; give --label")
        classes = _image_model(flow).num_classes
        if args.label is None:
            raise UsageError(
                f"{args.run_dir}: is class-conditional; give --label (0 to {classes - 1})"
            )
        if not 0 <= args.label < classes:
            raise UsageError(f"--label: {args.label}; the model's labels are 0 to {classes - 1}")
        return args.label
    names = layout.context_names()
    if args.label is not None:
        raise UsageError(f"--label: {args.run_dir} conditions on columns; give --context")
    if args.context is not None:
        return parse_context(args.context, len(layout.context), names)[0]
    if args.context_file is not None:
        return read_contexts(args.context_file, layout)
    raise UsageError(
        f"{args.run_dir}: is conditional on {', '.join(names)}; give --context "
        "VALUES or --context-file FILE"
    )


def _conditional_samples(
    args: argparse.Namespace, flow: Flow, layout: Layout, x: torch.Tensor, context: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Samples laid out as the training table, the context in its columns; from a context
    file, grouped by context row, with the row's number first."""
    header = layout.header()
    if context.ndim == 1:
        rows = layout.join(flow.to_data(x), np.broadcast_to(context, (len(x), len(context))))
        return rows, header
    grouped = flow.to_data(x).transpose(1, 0, 2).reshape(-1, x.shape[-1])  # by context row
    repeated = np.repeat(context, args.n, axis=0)
    index = np.repeat(np.arange(1, len(context) + 1), args.n)[:, None]
    return np.hstack([index, layout.join(grouped, repeated)]), ["row", *header]


def _plot(args: argparse.Namespace) -> int:
    flow, config = load_model(args.run_dir)
    if _is_table(flow):
        raise UsageError(f"{args.run_dir}: 'plot' draws image models; this one is a table model")
    images = _image_model(flow)
    spec = args.data or config.get("data", {}).get("source")
    if spec is None:
        raise UsageError("name the test images: realnvp plot RUN DATA --out DIR")
    x, labels = _examples(args, spec, flow, seed=1)
    _make_folder(args.out)
    pick = torch.linspace(0, len(x) - 1, min(32, len(x))).long()
    y = None if labels is None else flow.as_context(labels)
    four, label = x[pick[:: max(1, len(pick) // 4)][:4]], None
    if y is not None:  # four test images of one class, the class of the first
        label = int(y[0])
        four = x[(y == label).nonzero().squeeze(1)[:4]]
    figures = {
        "samples.png": plot_samples(images, seed=args.seed),
        "reconstructions.png": plot_reconstructions(
            images, x[pick], 8, None if y is None else y[pick]
        ),
        "manifold.png": plot_manifold(images, four, label=label),
    }
    for name, figure in figures.items():
        save_figure(figure, args.out / name, dpi=150)
        print(args.out / name)
    return 0


def _audit(args: argparse.Namespace) -> int:
    flow, config = load_model(args.run_dir)
    # one backward pass per output value and point: a few points for images
    max_points = args.max_points if _is_table(flow) else min(args.max_points, 2)
    context: torch.Tensor | np.ndarray | None
    if args.data is None:
        context = None
        if flow.context_shape is not None:
            if _is_table(flow):
                raise UsageError(
                    f"{args.run_dir}: is conditional; name the rows to check, with "
                    "their context columns: realnvp audit RUN DATA"
                )
            context = torch.arange(4096) % _image_model(flow).num_classes
        with torch.no_grad():
            g = torch.Generator().manual_seed(args.data_seed)
            x = flow.sample(4096 if context is None else 1, context, generator=g)
            x = x.reshape(-1, *flow.event_shape)
    else:
        x, context = _examples(args, args.data, flow, args.data_seed, layout=_layout(config, flow))
    report = audit(flow, x, max_points, None if context is None else flow.as_context(context))
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


def _study(args: argparse.Namespace) -> int:
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


#: each command's function, by name
COMMANDS = {
    "train": _train,
    "eval": _eval,
    "score": _transform,
    "encode": _transform,
    "decode": _transform,
    "sample": _sample,
    "plot": _plot,
    "audit": _audit,
    "study": _study,
    "convert": convert,
}
