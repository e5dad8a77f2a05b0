"""MkDocs hooks: the command-line page gets every command's ``--help`` as the installed
``realnvp`` prints it, so the page cannot drift from the parser."""

from __future__ import annotations

import os
from typing import Any

MARKER = "<!-- realnvp --help -->"


def _help_text() -> str:
    from realnvp.cli.parser import build_parser

    os.environ.setdefault("COLUMNS", "100")  # argparse wraps to the terminal's width
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")  # the subparsers
    parts = ["## realnvp", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in commands.choices.items():
        parts += [f"## realnvp {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, _help_text())
    return markdown
