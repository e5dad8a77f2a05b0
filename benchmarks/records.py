"""What every benchmark writes beside its numbers: the versions that can change them, and one
JSON line per result."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import torch


def versions(*packages: str) -> dict[str, str | None]:
    """torch's, Python's and realnvp's versions (realnvp's from the package itself: an editable
    install's metadata can be stale), and those of ``packages`` (None where not installed)."""
    import realnvp

    out: dict[str, str | None] = {
        "torch": torch.__version__,
        "realnvp": realnvp.__version__,
        "python": platform.python_version(),
    }
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def log(out: Path | None, record: dict) -> None:
    """Print the record and append it to ``out`` as one JSON line."""
    print(json.dumps(record), flush=True)
    if out is not None:
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")


def read(paths: list[str]) -> list[dict]:
    """Every record of the JSON-lines files ``paths``, in order."""
    return [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line]
