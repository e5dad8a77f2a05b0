"""The library's own error for settings a user chose: bad values or combinations.

Raised where a setting enters the library (a constructor, a config, a run), it names the
parameter; the command line maps the name to its flag and prints one line without a traceback.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting the user chose is invalid, or contradicts another; the message names it."""
