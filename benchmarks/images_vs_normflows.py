"""Multi-scale Real NVP on images, ours against normflows', with the same data, recipe and loop.

Both models: the logit preprocessing (alpha = 0.05) inside the likelihood; per scale 3 checkerboard
couplings, squeeze, 3 channel-wise couplings, factor out half; the last scale 4 checkerboard
couplings; affine couplings whose conditioners are ResNets of the same width (doubled per scale)
and depth, with batch norm, zero-initialised outputs; a standard normal base. Ours also has the
paper's batch-norm bijection after each coupling (``--variant`` may trade it for Glow's actnorm),
weight norm and the tanh-bounded log-scale; normflows has none of them (its ``exp`` scale is
unbounded). normflows' checkerboard split needs an
even width, so MNIST uses 2 scales here (28 -> 14) for both.

One loop trains both: the same Adam (lr 1e-3, fused into one kernel per step, as realnvp's
``make_optimizer`` builds it; records before 2026-11-30's third session used torch's default,
unfused, for both) with cosine decay, batch 64, fresh uniform dequantization noise per batch,
global gradient-norm clip 100, a fixed number of steps (or ``--seconds`` of training), and the
same batches.
Test bits/dim: the fixed test split dequantized once (seed 1), ``-log p(x + u) / (D log 2)`` in
pixel units for both (normflows models ``(x + u) / K``, so ``D log K`` is added back).
Sizes: README's for each data set unless ``--channels``/``--blocks`` say otherwise
(``SHAPES``).

``--seconds S --select best-val`` (the default with ``--seconds``) holds out the last
``VAL_FRACTION`` of the training images (a fixed permutation) for both libraries, and each point
of the curve is the test bits/dim of the weights with the best validation bits/dim so far: what
early stopping hands a user who stops at that moment (``realnvp train --patience`` keeps the
best validation weights the same way). The last weights' test bits/dim is recorded beside it.

``--compile regional`` compiles each coupling's conditioner network with ``torch.compile`` in
both libraries alike (ours ``realnvp.nn.ResNet``, normflows' ``ConvResidualNet``); the first
``FIRST_STEPS`` steps, where compilation happens, are also reported apart
(``first_steps_seconds``, ``steps_per_second_after_first``).

Needs normflows (``pip install .[bench]``); the library never does. Run one at a time:
    python benchmarks/images_vs_normflows.py --data digits --steps 3000 --lib ours
    python benchmarks/images_vs_normflows.py --data digits --steps 3000 --lib normflows
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR

import realnvp.nn
from realnvp.data.images import load_images
from realnvp.models import MultiScaleRealNVP, bits_per_dim, dequantize
from realnvp.training.loop import batch_indices, make_optimizer

#: the convolutions' memory layouts (``--memory-format``)
FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}

#: the first training steps, where torch.compile compiles: reported apart
FIRST_STEPS = 3

#: Adam's learning rate, for both libraries
LR = 1e-3

#: (hidden channels, residual blocks) per data set: README's shapes
SHAPES = {"digits": (32, 2), "mnist5k": (16, 1)}

#: the share of the training images held out for validation under ``--select best-val``
VAL_FRACTION = 0.1

#: our model's variants (``--variant``): the paper's, and with Glow's layers before each coupling
VARIANTS: dict[str, dict[str, bool]] = {
    "paper": {},
    "actnorm": {"actnorm": True, "batch_norm": False},
    "conv1x1": {"conv1x1": True},
    "glow": {"actnorm": True, "conv1x1": True, "batch_norm": False},
    "packed": {"packed": True},
    "packed-glow": {"packed": True, "actnorm": True, "conv1x1": True, "batch_norm": False},
}


def compile_conditioners(model: nn.Module, lib: str) -> None:
    """``torch.compile`` every conditioner network of ``model`` in place (``--compile
    regional``): couplings of one shape share one compiled graph."""
    if lib == "ours":
        kind: type[nn.Module] = realnvp.nn.ResNet
    else:
        import normflows as nf

        kind = nf.nets.ConvResidualNet
    for module in model.modules():
        if isinstance(module, kind):
            module.compile()


def normflows_model(shape, levels: int, scales: int, hidden: int, blocks: int) -> nn.Module:
    import normflows as nf

    def coupling(channels: int, width: int, mode: str) -> nn.Module:
        half = channels if "checkerboard" in mode else channels // 2
        net = nf.nets.ConvResidualNet(half, 2 * half, width, num_blocks=blocks, use_batch_norm=True)
        nn.init.zeros_(net.final_layer.weight)
        nn.init.zeros_(net.final_layer.bias)
        return nf.flows.AffineCouplingBlock(net, scale=True, scale_map="exp", split_mode=mode)

    c, h, w = shape
    # normflows lists levels coarsest first, each in the sampling direction (latent -> data).
    sizes = [(c * 2**i, h // 2**i, w // 2**i) for i in range(scales)]  # input of each scale
    q0, flows, merges = [], [], []
    for i in reversed(range(scales)):
        ci, hi, wi = sizes[i]
        width = hidden * 2**i
        checker = [
            coupling(ci, width, "checkerboard" if k % 2 else "checkerboard_inv")
            for k in range(3 if i < scales - 1 else 4)
        ]
        if i == scales - 1:
            q0.append(nf.distributions.DiagGaussian((ci, hi, wi), trainable=False))
            flows.append(list(reversed(checker)))
        else:
            q0.append(nf.distributions.DiagGaussian((2 * ci, hi // 2, wi // 2), trainable=False))
            merges.append(nf.flows.Merge())
            channel = [
                coupling(4 * ci, width, "channel" if k % 2 == 0 else "channel_inv")
                for k in range(3)
            ]
            flows.append([*reversed(channel), nf.flows.Squeeze(), *reversed(checker)])
    model = nf.MultiscaleFlow(
        q0, flows, merges, transform=nf.transforms.Logit(0.05), class_cond=False
    )
    dims, log_k = c * h * w, math.log(levels)

    class PixelUnits(nn.Module):  # log p(x + u) in pixel units, like ours
        def __init__(self):
            super().__init__()
            self.model = model

        def log_prob(self, x):
            return self.model.log_prob(x / levels, None) - dims * log_k

    return PixelUnits()


def build_model(
    lib: str, variant: str, data, scales: int, channels: int, blocks: int, layout
) -> nn.Module:
    """``lib``'s model for images like ``data``: ours (``VARIANTS[variant]``) or normflows'
    (its convolutions' weights converted to ``layout``; ours converts in each conditioner)."""
    if lib == "ours":
        return MultiScaleRealNVP(
            data.shape, data.levels, scales, channels, blocks, **VARIANTS[variant]
        )
    model = normflows_model(data.shape, data.levels, scales, channels, blocks)
    return model.to(memory_format=layout)


def train_step(model: nn.Module, optimizer, x: Tensor, scale_l2: float = 0.0) -> bool:
    """One step of the loop on the batch ``x``: the mean NLL (plus ours' recipe L2 when
    ``scale_l2``), gradient-norm clip 100, Adam. False, with nothing updated, when the loss is
    not finite, so a diverging model is reported, not hidden."""
    loss = -model.log_prob(x).mean()
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return False
    if scale_l2:  # ours: the recipe's L2 (MultiScaleRealNVP.recipe.scale_l2)
        loss = loss + scale_l2 * model.regularization()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
    optimizer.step()
    return True


def latest_curves(jsonl: str) -> dict[tuple[str, str], dict]:
    """The last ``--seconds`` run of each (data set, library and variant) in ``jsonl``."""
    runs: dict[tuple[str, str], dict] = {}
    for line in Path(jsonl).read_text().splitlines():
        r = json.loads(line)
        if r.get("curve"):
            label = r["lib"] + (f" ({r['variant']})" if "variant" in r else "")
            runs[(r["data"], label)] = r
    return runs


def table(jsonl: str, points: int = 4) -> str:
    """README's table of the runs ``figure`` draws: steps/s, the test bits/dim at the first
    ``points`` evaluations and at the end (± its standard error over the test images)."""
    runs = latest_curves(jsonl)
    first = next(iter(runs.values()))["curve"][:points]
    times = " | ".join(f"{p[0]:.0f} s" for p in first)
    lines = [
        f"| data | model | steps/s | {times} | end |",
        "|---|---|---|" + "---|" * points + "---|",
    ]
    for (data, label), r in sorted(runs.items()):
        at = " | ".join(f"{p[2]:.3f}" for p in r["curve"][:points])
        end = f"{r['test_bits_per_dim']:.3f} ± {r['test_bits_per_dim_se']:.3f}"
        lines.append(f"| {data} | {label} | {r['steps_per_second']:.2f} | {at} | {end} |")
    return "\n".join(lines)


def figure(jsonl: str, png: str) -> None:
    """Test bits/dim against seconds of training, one axis per data set, one line per run of
    ``--seconds`` in ``jsonl`` (the last of each library, variant and data set).
    Under best-val selection, the last weights' test bits/dim is drawn dotted beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = latest_curves(jsonl)
    data = sorted({d for d, _ in runs})
    fig, axes = plt.subplots(1, len(data), figsize=(5.5 * len(data), 4.2), squeeze=False)
    for ax, name in zip(axes[0], data, strict=True):
        mine = {label: r for (d, label), r in sorted(runs.items()) if d == name}
        for label, r in mine.items():
            t = [p[0] for p in r["curve"]]
            best = ", best validation so far" if r.get("select") else ""
            rate = f"{r['steps_per_second']} steps/s"
            line = ax.plot(
                t, [p[2] for p in r["curve"]], marker="o", ms=3, label=f"{label}{best}, {rate}"
            )
            if r.get("select"):
                ax.plot(
                    t,
                    [p[3] for p in r["curve"]],
                    ls=":",
                    color=line[0].get_color(),
                    label=f"{label}, last weights",
                )
        # the selected curves set the scale; an overfitting last-weights curve may leave it
        top = max(p[2] for r in mine.values() for p in r["curve"])
        low = min(p[2] for r in mine.values() for p in r["curve"])
        ax.set_ylim(low - 0.05 * (top - low), top + 0.15 * (top - low))
        r = next(iter(mine.values()))
        ax.set_title(
            f"{name}: {r['channels']} channels, {r['blocks']} block(s), {r['threads']} thread each"
        )
        ax.set_xlabel("training seconds (evaluation not counted)")
        ax.set_ylabel("test bits/dim")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--lib", choices=["ours", "normflows"], default="ours")
    parser.add_argument(
        "--variant",
        choices=list(VARIANTS),
        default="paper",
        help="ours only: the paper's model; with Glow's actnorm and/or 1x1 convolutions; packed "
        "conditioners (MultiScaleRealNVP(packed=True)); or packed with Glow's layers",
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--scales", type=int, default=2)
    parser.add_argument("--channels", type=int, help="default: SHAPES[data], else 16")
    parser.add_argument("--blocks", type=int, help="default: SHAPES[data], else 1")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seconds",
        type=float,
        help="train for this many seconds of training (evaluations not counted) instead of "
        "--steps, the learning rate's cosine decay over that time",
    )
    parser.add_argument(
        "--eval-seconds",
        type=float,
        default=60.0,
        help="with --seconds: the test bits/dim after every this many seconds of training",
    )
    parser.add_argument(
        "--memory-format",
        choices=list(FORMATS),
        default="channels_last",
        help="the layout the convolutions run in: ours through realnvp.nn.CONV_MEMORY_FORMAT; "
        "normflows' model and batches converted",
    )
    parser.add_argument(
        "--compile",
        choices=["none", "regional"],
        default="none",
        help="regional: torch.compile each coupling's conditioner network (ours: realnvp.nn.ResNet;"
        " normflows: its ConvResidualNet), the same compile for both libraries",
    )
    parser.add_argument(
        "--select",
        choices=["best-val", "last"],
        default="best-val",
        help="with --seconds: each point's test bits/dim is that of the weights with the best "
        "validation bits/dim so far (VAL_FRACTION of the training images held out), or of the "
        "last weights (all training images used)",
    )
    parser.add_argument(
        "--scale-l2",
        type=float,
        default=0.0,
        help="ours only: the L2 on the couplings' scales and weight-norm magnitudes that realnvp's "
        f"image recipe adds to the loss ({MultiScaleRealNVP.recipe.scale_l2:g} there); 0: none",
    )
    parser.add_argument("--out", help="append the result as a JSON line to this file")
    parser.add_argument(
        "--figure",
        nargs=2,
        metavar=("JSONL", "PNG"),
        help="draw test bits/dim against training seconds from the --seconds runs of JSONL",
    )
    parser.add_argument(
        "--table", metavar="JSONL", help="print the table of the --seconds runs of JSONL"
    )
    args = parser.parse_args()
    if args.figure:
        figure(*args.figure)
        return
    if args.table:
        print(table(args.table))
        return
    if args.lib != "ours" and (args.variant != "paper" or args.scale_l2):
        parser.error("--variant and --scale-l2 are options of ours: use them with --lib ours")
    channels, blocks = SHAPES.get(args.data, (16, 1))
    args.channels = channels if args.channels is None else args.channels
    args.blocks = blocks if args.blocks is None else args.blocks
    result = run(args)
    print(json.dumps(result))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


def image_bits_per_dim(model: nn.Module, x: Tensor, dims: int) -> Tensor:
    """Each image's bits/dim under ``model`` in evaluation mode, in batches of 500; the model's
    mode is put back after."""
    mode = model.training
    model.eval()
    with torch.no_grad():
        nll = torch.cat([-model.log_prob(b) for b in x.split(500)])
    model.train(mode)
    return bits_per_dim(-nll, dims)


class Selection:
    """The curve's points under ``--select``: the test bits/dim of the last weights, or of the
    weights with the best validation bits/dim so far (kept as a copy)."""

    def __init__(self, model: nn.Module, x_val: Tensor | None, x_test: Tensor, dims: int):
        self.model, self.x_val, self.x_test, self.dims = model, x_val, x_test, dims
        self.best_val, self.best_step, self.best_state = math.inf, 0, None
        self.best_test = math.nan  # until a validation score is finite

    def point(self, seconds: float, step: int) -> list:
        """``[seconds, step, test bits/dim]``, then (best-val) the last weights' test bits/dim,
        the best validation bits/dim and its step."""
        last = image_bits_per_dim(self.model, self.x_test, self.dims).mean().item()
        if self.x_val is None:
            return [round(seconds, 1), step, round(last, 4)]
        val = image_bits_per_dim(self.model, self.x_val, self.dims).mean().item()
        if val < self.best_val:
            self.best_val, self.best_step, self.best_test = val, step, last
            self.best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        return [
            round(seconds, 1),
            step,
            round(self.best_test, 4),
            round(last, 4),
            round(self.best_val, 4),
            self.best_step,
        ]

    def final(self) -> Tensor:
        """The selected weights' test bits/dim per image (the model keeps them)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return image_bits_per_dim(self.model, self.x_test, self.dims)


def run(args: argparse.Namespace) -> dict:
    """Train one library's model under the loop above; the record of the run."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    layout = FORMATS[args.memory_format]
    realnvp.nn.CONV_MEMORY_FORMAT = layout
    data = load_images(args.data)
    model = build_model(
        args.lib, args.variant, data, args.scales, args.channels, args.blocks, layout
    )
    params = sum(p.numel() for p in model.parameters())
    if args.compile == "regional":
        compile_conditioners(model, args.lib)
    dims = math.prod(data.shape)
    x_train = torch.as_tensor(data.train, dtype=torch.float32)
    x_test = dequantize(torch.as_tensor(data.test), torch.Generator().manual_seed(1))
    x_val = None
    select = args.select if args.seconds else "last"
    if select == "best-val":  # the same held-out images for both libraries
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(2))
        n_val = round(VAL_FRACTION * len(x_train))
        x_val = dequantize(x_train[order[-n_val:]], torch.Generator().manual_seed(3))
        x_train = x_train[order[:-n_val]]
    selection = Selection(model, x_val, x_test, dims)
    optimizer = make_optimizer(model.parameters(), LR)
    steps = math.inf if args.seconds else args.steps
    schedule = None if args.seconds else CosineAnnealingLR(optimizer, args.steps)
    batches = batch_indices(len(x_train), args.batch_size, args.seed)
    noise = torch.Generator().manual_seed(args.seed)

    model.train()
    seconds, done, nonfinite, curve, first_seconds = 0.0, 0, 0, [], math.nan
    while done < steps and (not args.seconds or seconds < args.seconds):
        start = time.perf_counter()
        if args.seconds:  # cosine decay over the training time
            for group in optimizer.param_groups:
                group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * min(1.0, seconds / args.seconds)))
        x = dequantize(x_train[next(batches)], noise)
        if args.lib == "normflows":  # ours converts inside each conditioner
            x = x.contiguous(memory_format=layout)
        if not train_step(model, optimizer, x, args.scale_l2):
            nonfinite += 1  # skipped, so a diverging model is reported, not hidden
        if schedule is not None:
            schedule.step()
        done += 1
        seconds += time.perf_counter() - start
        if done == FIRST_STEPS:
            first_seconds = seconds
        if args.seconds and seconds >= args.eval_seconds * (len(curve) + 1):
            curve.append(selection.point(seconds, done))
            print(json.dumps(curve[-1]), file=sys.stderr, flush=True)
    bpd = selection.final()
    return {
        "lib": args.lib,
        **({"variant": args.variant} if args.lib == "ours" else {}),
        "data": data.name,
        "scales": args.scales,
        "channels": args.channels,
        "blocks": args.blocks,
        "params": params,
        "steps": done,
        "train_seconds": round(seconds, 1),
        "steps_per_second": round(done / seconds, 2),
        "compile": args.compile,
        # where compilation happens; the rate after them is the compiled code's
        "first_steps_seconds": round(first_seconds, 2),
        "steps_per_second_after_first": round((done - FIRST_STEPS) / (seconds - first_seconds), 2),
        "test_bits_per_dim": round(bpd.mean().item(), 4),
        "test_bits_per_dim_se": round(bpd.std().item() / math.sqrt(len(bpd)), 4),
        "nonfinite_steps": nonfinite,
        **({"scale_l2": args.scale_l2} if args.scale_l2 else {}),
        **({"budget_seconds": args.seconds, "curve": curve} if args.seconds else {}),
        **({"select": select, "best_step": selection.best_step} if x_val is not None else {}),
        "optimizer": "adam-fused" if optimizer.defaults.get("fused") else "adam-foreach",
        "memory_format": args.memory_format,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


if __name__ == "__main__":
    main()
