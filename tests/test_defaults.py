"""Every default lives once, in the library: the command line shows and uses the models'
constructor defaults and recipes, and so does the estimator."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from helpers import fails
from realnvp import RealNVPDensity
from realnvp.cli import main
from realnvp.cli.parser import SHOWN_ROWS
from realnvp.config import VAL_FRACTION
from realnvp.models import MultiScaleRealNVP, RealNVP


def train_help(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["train", "--help"]) == 0
    options = capsys.readouterr().out.split("options:", 1)[1]  # not the usage line
    return " ".join(options.split())  # argparse wraps lines


def option_help(text: str, option: str) -> str:
    """The help of one option: from its name to the next option."""
    match = re.search(rf"{option}(?: \S+)? (.*?)(?= --[a-z]|$)", text)
    assert match, option
    return match.group(1)


def expected_help() -> dict[str, list[str]]:
    """What each option's help must show, read from the library."""
    table, image = RealNVP.defaults(), MultiScaleRealNVP.defaults()
    t, i = RealNVP.recipe, MultiScaleRealNVP.recipe
    sized = [(n, RealNVP.defaults_for((n, 4)), RealNVP.recipe_for((n, 4))) for n in SHOWN_ROWS]
    return {
        "--layers": [f"default {table['num_layers']}"],
        "--hidden": [f"{m['hidden_features']} for {n:,} rows" for n, m, _ in sized],
        "--hidden-layers": [f"default {table['num_hidden_layers']}"],
        "--channels": [f"default {image['hidden_channels']}"],
        "--blocks": [f"default {image['num_blocks']}"],
        "--steps": [f"default {t.steps}"],
        "--batch-size": [f"{r.batch_size} for {n:,} rows" for n, _, r in sized]
        + [f"{i.batch_size} for images"],
        "--lr": [f"default {t.lr:g}"],
        "--eval-every": [f"{r.eval_every} for {n:,} rows" for n, _, r in sized]
        + [f"{i.eval_every} for images"],
        "--patience": [f"default {t.patience}"],
        "--seed": [f"default {t.seed}"],
        "--grad-clip": ["default none for tables", f"{i.grad_clip:g} for images"],
        "--l2": [f"default {t.scale_l2:g} for tables", f"{i.scale_l2:g} for images"],
        "--val-fraction": [f"default {VAL_FRACTION}"],
    }


@pytest.mark.parametrize("option", list(expected_help()))
def test_train_help_shows_the_library_defaults(option: str, capsys) -> None:
    shown = option_help(train_help(capsys), option)
    for text in expected_help()[option]:
        assert text in shown, (option, shown)


def test_train_help_follows_the_library_when_it_changes(capsys, monkeypatch) -> None:
    """The help is read from the library, not copied: change a recipe and a constructor
    default, and the help changes with them."""
    monkeypatch.setattr(RealNVP, "recipe", replace(RealNVP.recipe, lr=0.25))
    sized = classmethod(lambda cls, shape: replace(cls.recipe, batch_size=777))
    monkeypatch.setattr(RealNVP, "recipe_for", sized)
    defaults = {**RealNVP.defaults(), "num_layers": 13}
    monkeypatch.setattr(RealNVP, "defaults", classmethod(lambda cls: defaults))
    text = train_help(capsys)
    assert "default 777 for tables" in option_help(text, "--batch-size")
    assert "default 0.25" in option_help(text, "--lr")
    assert "default 13" in option_help(text, "--layers")


def saved(run: Path) -> dict:
    return json.loads((run / "model.json").read_text())


def test_train_without_options_uses_the_table_defaults_for_its_size(tmp_path: Path) -> None:
    """The model and recipe a table gets are the library's for its training rows: the
    constructor's defaults where ``defaults_for`` says nothing, ``recipe_for`` its size."""
    run = tmp_path / "run"
    assert main(["train", "moons", "--n", "200", "--steps", "2", "--out", str(run)]) == 0
    config = saved(run)
    shape = (200 - round(VAL_FRACTION * 200), 2)
    assert config["train"] == replace(RealNVP.recipe_for(shape), steps=2).to_dict()
    assert config["data"]["val_fraction"] == VAL_FRACTION
    defaults = {**RealNVP.defaults(), **RealNVP.defaults_for(shape)}
    for name in ("num_layers", "hidden_features", "num_hidden_layers", "coupling"):
        assert config["model"][name] == defaults[name], name


def test_train_without_options_uses_the_image_recipe(tmp_path: Path) -> None:
    """Images train with their own recipe (batch 64, clip 100, L2 5e-5) unless told otherwise."""
    run = tmp_path / "run"
    args = ["train", "digits", "--steps", "1", "--channels", "2", "--blocks", "1"]
    assert main([*args, "--out", str(run), "--no-progress"]) == 0
    config = saved(run)
    assert config["train"] == replace(MultiScaleRealNVP.recipe, steps=1).to_dict()
    assert config["model"]["num_scales"] == 2  # default_scales(8, 8)


def test_an_option_of_the_other_kind_of_model_is_refused(tmp_path: Path, capsys) -> None:
    """--layers shapes the table model; for images it would be silently ignored (0.1.0 did)."""
    line = fails(["train", "digits", "--layers", "3", "--out", str(tmp_path / "r")], capsys)
    assert "--layers" in line and "MultiScaleRealNVP" in line and "--channels" in line
    assert not (tmp_path / "r" / "model.json").exists()


def test_the_estimator_defaults_are_the_library_defaults() -> None:
    """Fixed defaults are the constructor's and the recipe's; the sized ones (None) are
    ``defaults_for`` and ``recipe_for`` the training rows, as for ``realnvp train``."""
    params = RealNVPDensity().get_params()
    defaults, recipe = RealNVP.defaults(), RealNVP.recipe
    assert {k: params[k] for k in ("num_layers", "num_hidden_layers")} == {
        k: defaults[k] for k in ("num_layers", "num_hidden_layers")
    }
    assert (params["steps"], params["lr"], params["patience"]) == (
        recipe.steps,
        recipe.lr,
        recipe.patience,
    )
    assert params["hidden_features"] is None and params["batch_size"] is None
    X = np.random.default_rng(0).normal(size=(400, 3))
    est = RealNVPDensity(steps=2, random_state=0).fit(X)
    shape = (400 - round(VAL_FRACTION * 400), 3)
    for name, value in RealNVP.defaults_for(shape).items():
        assert est.flow_.config[name] == value, name
    sized = RealNVP.recipe_for(shape)
    assert (est.history_.step[0], est.history_.step[-1]) == (min(sized.eval_every, 2), 2)
    assert params["val_fraction"] == VAL_FRACTION
