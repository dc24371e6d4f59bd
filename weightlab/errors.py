"""User-facing errors.

Every mistake a user can make (bad option, unknown name, wrong shape, corrupt file,
diverged training) raises a :class:`WeightlabError` whose message says what was wrong
and what to do. The CLI prints that one line and exits with code 2; tracebacks are
reserved for bugs.
"""

from __future__ import annotations


class WeightlabError(Exception):
    """A problem caused by input, configuration or files, not by a bug in weightlab."""


class ConfigError(WeightlabError):
    """An option has an unknown name or an out-of-range value."""


class DataError(WeightlabError):
    """A dataset is unknown, missing or malformed."""


class RunFileError(WeightlabError):
    """A run directory or one of its files is missing, unreadable or corrupt."""


class DivergenceError(WeightlabError):
    """Training produced a non-finite loss."""
