"""The error family users see: one line, naming the file, field or flag at fault.

The CLI prints these without a traceback (``--debug`` shows it). Anything else that escapes is a
bug in iaa-eval, not in the user's input.
"""

from __future__ import annotations


class IAAEvalError(Exception):
    """Base class of every user-facing error."""

    exit_code = 2


class UsageError(IAAEvalError):
    """A flag, a name or a combination of flags that cannot work."""


class DataError(IAAEvalError):
    """A benchmark file, row or field that is missing or malformed."""


class ModelError(IAAEvalError):
    """A model directory, config, weight file or tokenizer that cannot be used."""


class NonFiniteOutput(ModelError):
    """A model produced NaN or infinite logits: its scores would be garbage, so the run stops
    instead of writing them. The run loop (evaluate.py) adds the model's name to the message."""


class OutputError(IAAEvalError):
    """A file iaa-eval writes could not be written (a full disk, a lost mount); the message names
    it. Files are replaced atomically, so what was written before stays whole."""


class RunInterrupted(IAAEvalError):
    """Ctrl-C or SIGTERM: finished work is kept in the cache; rerun to resume."""

    exit_code = 130
