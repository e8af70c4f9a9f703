"""Names that become path components: a run id, a model name, a task name or alias.

Each becomes one folder or file name inside a run or report directory. Such a name must not leave
that directory, however it arrived (a flag, a suite file, a results.json written elsewhere):
``--run-id ../escaped`` or a results.json whose ``run_id`` is ``../../x`` would otherwise write
outside ``--output-path`` or ``--out``.
"""

from __future__ import annotations

from iaa_eval.errors import IAAEvalError, UsageError

HINT = "a name is one file or folder name, e.g. of letters, digits, '-', '_' and '.'"


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a single path component, or None: it is empty, ``.`` or ``..``, or
    holds a path separator (so no absolute path) or a control character."""
    if not value.strip():
        return "is empty"
    if value in (".", ".."):
        return "points at a folder, not into one"
    if "/" in value or "\\" in value:
        return "holds a path separator (a path is not a name)"
    if any(ord(c) < 32 for c in value):
        return "holds a control character"
    return None


def path_name(value: object, what: str, error: type[IAAEvalError] = UsageError) -> str:
    """``value`` when it is usable as a single path component, else ``error`` naming ``what``."""
    if not isinstance(value, str):
        raise error(f"{what}: expected a name, got {type(value).__name__} {value!r}")
    problem = name_problem(value)
    if problem:
        raise error(f"{what} {value!r} {problem}; {HINT}")
    return value
