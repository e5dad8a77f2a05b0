"""Figures. Every function returns a matplotlib ``Figure``; callers save it (``save_figure``
writes it atomically). Nothing here calls ``plt.show()`` or touches pyplot's global state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from realnvp.files import atomic_write


def save_figure(figure: Figure, path: Path, **kwargs: Any) -> None:
    """``figure.savefig(path)``, written to a temporary file and renamed over ``path``, so a
    failure leaves any earlier file of that name as it was. The format follows the suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: figure.savefig(tmp, format=fmt, **kwargs))
