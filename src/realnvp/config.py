"""The training recipe: every setting that changes a training run's result, in one dataclass.

Its field defaults are the library's defaults (the table recipe); a model kind that trains
differently carries its own recipe (``MultiScaleRealNVP.recipe``). The CLI, the estimator and
``train_run`` all start from a model's ``recipe``, so each default is written once, here or there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from realnvp.errors import ConfigError

#: the share of the rows held out for validation when nothing else is asked for
VAL_FRACTION = 0.1
#: the most rows held out for validation when nothing else is asked for: 100,000 rows measure an
#: NLL to a few thousandths of a nat, and scoring ten million at every evaluation would cost more
#: than training on a large table
VAL_ROWS = 100_000


def default_val_fraction(rows: int) -> float:
    """The share of ``rows`` held out when nothing else is asked for: ``VAL_FRACTION``, or
    ``VAL_ROWS`` rows of a table of more than a million.

    Examples:
        >>> default_val_fraction(50_000), default_val_fraction(10_000_000)
        (0.1, 0.01)
    """
    return min(VAL_FRACTION, VAL_ROWS / max(rows, 1))


@dataclass(frozen=True)
class TrainConfig:
    """How to train: every setting that changes the result, so a run can be repeated.

    ``schedule`` is ``"cosine"`` (learning rate annealed to 0 over ``steps``) or ``"constant"``.
    ``patience``: stop after this many evaluations without a better validation NLL (None: never).
    ``scale_l2``: weight of the flow's ``regularization()`` (the image model's L2 on weight-norm
    magnitudes, 5e-5 in the paper's code), added to the loss; 0 for none.
    ``bf16``: run the training forward pass under bfloat16 autocast (convolutions and matrix
    multiplies in bf16, the coupling arithmetic and log-dets in float32); evaluation stays float32.
    ``compile``: ``flow.compile()`` before training (torch.compile; faster steps after a one-off
    compilation).
    ``ema``: the decay of an exponential moving average of the weights (Polyak averaging), or
    0 for none. With it, validation, early stopping, checkpoints and the trained model use
    the averaged weights; the optimizer steps the raw ones. The decay warms up as
    ``min(ema, (1 + t) / (10 + t))`` at step t, so early averages do not cling to the
    initialisation: it is ``(1 + t) / (10 + t)`` until that reaches ``ema`` (step 890 for 0.99,
    1,790 for 0.995), an average over about the last tenth of the steps so far. Buffers (batch
    norms' running statistics) are the trained model's, not averaged.
    """

    steps: int = 5000
    batch_size: int = 512
    lr: float = 1e-3
    schedule: str = "cosine"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    scale_l2: float = 0.0
    bf16: bool = False
    compile: bool = False
    eval_every: int = 100
    patience: int | None = 20
    seed: int = 0
    ema: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be at least 1, got {getattr(self, name)}", name)
        if not self.lr > 0:
            raise ConfigError(f"must be positive, got {self.lr}", "lr")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"must be 'cosine' or 'constant', got {self.schedule!r}", "schedule")
        if self.scale_l2 < 0:
            raise ConfigError(f"must be non-negative, got {self.scale_l2}", "scale_l2")
        if not (isinstance(self.ema, int | float) and 0 <= self.ema < 1):
            raise ConfigError(f"must be in [0, 1), 0 for no averaging, got {self.ema}", "ema")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"must be at least 1, got {self.patience}", "patience")

    def to_dict(self) -> dict:
        return asdict(self)
