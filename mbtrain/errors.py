"""Errors that users see as one clear line.

Every error a user can cause (bad config, bad input data, a missing checkpoint) is raised as a
subclass of `MbtrainError`; the CLI prints its message on one line and exits with its
`exit_code`, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MbtrainError(Exception):
    """An error caused by the user's input; printed as one line by the CLI."""

    exit_code = 1


class ConfigError(MbtrainError):
    """Invalid configuration: unknown keys, wrong types, or inconsistent values."""

    exit_code = 2


class DataError(MbtrainError):
    """A dataset or input file that cannot be used."""

    exit_code = 1


class CheckpointError(MbtrainError):
    """A checkpoint that is missing, incomplete or of another architecture."""

    exit_code = 1
