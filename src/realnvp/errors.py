"""The library's own error for settings a user chose: bad values or combinations.

Raised where a setting enters the library (a constructor, a config, a run), it names the
parameter, ``param: what is wrong``; the command line puts its flag in the parameter's place
(``--batch-size: ...``) and prints one line without a traceback. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting the user chose is invalid, or contradicts another.

    Args:
        message: what is wrong with it.
        param: the parameter it was given as, when there is one: the error then reads
            ``param: message``, and ``param`` and ``message`` stay available to callers.

    Examples:
        >>> str(ConfigError("must be at least 1, got 0", param="steps"))
        'steps: must be at least 1, got 0'
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message if param is None else f"{param}: {message}")
        self.param = param
        self.message = message
