"""How a command ends: its exit code and at most one line on stderr (``--debug``: the traceback).

0 done; 2 unusable input (an :class:`~iaa_eval.errors.IAAEvalError`, e.g. a bad file, flag or a
full disk); 130 interrupted, by Ctrl-C or SIGTERM alike (finished work is kept; a rerun resumes);
141 stdout's reader went away (``| head``), said nowhere, as ``cat`` does; 3 any other exception:
a bug in iaa-eval, still one line. ``iaa-eval gate`` adds 1 for a breached rule.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from iaa_eval.errors import IAAEvalError

INTERRUPTED = 130
READER_GONE = 128 + signal.SIGPIPE
INTERNAL_ERROR = 3


def finish(command: Callable[[], int], debug: bool) -> int:
    """Run ``command`` and turn how it ended into an exit code and one line."""
    try:
        with _sigterm_as_interrupt():
            return command()
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:
        _say("interrupted; finished work is cached, rerun to resume")
        return INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, IAAEvalError):
            _say(f"error: {exc}")
            return exc.exit_code
        _say(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} (a bug in "
             "iaa-eval, not in your input: rerun with --debug for the traceback and report it)")
        return INTERNAL_ERROR


def _say(line: str) -> None:
    print(f"iaa-eval: {line}", file=sys.stderr)  # noqa: T201


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's time limit) stops a command as Ctrl-C does: finished work
    written, one line said. Only the main thread may set handlers (the CLI runs there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _reader_gone() -> int:
    """The reader of stdout went away: stop quietly, and point stdout at /dev/null so that the
    interpreter's last flush cannot fail (and print 'Exception ignored') either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return READER_GONE
