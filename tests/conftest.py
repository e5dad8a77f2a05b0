"""Shared fixtures: the devices to run on, and torch seeded before every test (helpers such as
``randomize`` live in ``helpers.py``)."""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 (pyproject.toml): two workers share two cores, so each computes on one torch
    # thread, and so do the processes its tests start (the CLI, torchrun, the docs' examples)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
