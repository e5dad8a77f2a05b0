"""The ``realnvp`` command line: a thin layer over the library.

Every error a user can cause ends in one line on stderr and exit code 2; a training loss that
turns NaN or inf ends with exit code 1. Nothing already on disk is overwritten by a failed command.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from realnvp.cli.commands import COMMANDS, UsageError
from realnvp.cli.parser import build_parser, in_flags
from realnvp.data.tabular import DataError
from realnvp.errors import ConfigError
from realnvp.training.checkpoint import CheckpointError
from realnvp.training.distributed import shutdown

__all__ = ["UsageError", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``realnvp`` and ``python -m realnvp``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(COMMANDS[args.command](args) or 0)
    except ConfigError as error:  # a setting: named by its flag
        print(f"realnvp {args.command}: error: {in_flags(error)}", file=sys.stderr)
        return 2
    except (UsageError, DataError, CheckpointError) as error:
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
        shutdown()  # leave a torchrun process group cleanly (nothing to do without one)
