"""Suites: named model + task lists in YAML (``tasks/suites/*.yaml``), parsed strictly.

A suite has default ``models`` (the embedded mini-world for ``forgetting``) with the ``tasks``
that fit them, and ``real_tasks`` used instead when the user names real models
(``--base/--llava/--iaa``). A path starting with ``miniworld:`` resolves into the shipped
mini-world assets. Unknown keys are errors that name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from iaa_eval.errors import UsageError
from iaa_eval.evaluate import TaskSpec
from iaa_eval.miniworld import ASSETS as MINIWORLD_ASSETS
from iaa_eval.models.base import ModelSpec
from iaa_eval.tasks import TaskOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITES_DIR = REPO_ROOT / "tasks" / "suites"
_TASK_KEYS = {"task", "alias", "data_dir", "limit", "num_fewshot", "formulation", "on_error", "extra"}
_SUITE_KEYS = {"description", "models", "tasks", "real_tasks"}


@dataclass(frozen=True)
class Suite:
    """A parsed suite file."""

    name: str
    description: str
    models: tuple[ModelSpec, ...]
    tasks: tuple[TaskSpec, ...]
    real_tasks: tuple[TaskSpec, ...]


def resolve_path(value: str) -> str:
    """``miniworld:x`` -> the shipped asset ``x``; anything else unchanged."""
    if value.startswith("miniworld:"):
        return str(MINIWORLD_ASSETS / value.removeprefix("miniworld:"))
    return value


def _unknown(where: str, given: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(given) - allowed)
    if extra:
        raise UsageError(f"{where}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def parse_task(entry: Any, where: str) -> TaskSpec:
    """One ``tasks:`` entry."""
    if isinstance(entry, str):
        entry = {"task": entry}
    if not isinstance(entry, dict) or "task" not in entry:
        raise UsageError(f"{where}: each task needs a 'task' key, got {entry!r}")
    _unknown(where, entry, _TASK_KEYS)
    data_dir = entry.get("data_dir")
    options = TaskOptions(
        data_dir=Path(resolve_path(data_dir)) if data_dir else None,
        limit=entry.get("limit"),
        on_error=entry.get("on_error", "raise"),
        num_fewshot=entry.get("num_fewshot"),
        formulation=entry.get("formulation"),
        extra=dict(entry.get("extra") or {}),
    )
    return TaskSpec(name=entry["task"], options=options, alias=entry.get("alias"))


def load_suite(name_or_path: str) -> Suite:
    """Read ``tasks/suites/<name>.yaml`` (or a path to a suite file)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
        raise UsageError(f"--suite {name_or_path!r}: no such suite (known: {known})")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a suite is a mapping with keys {', '.join(sorted(_SUITE_KEYS))}")
    _unknown(str(path), raw, _SUITE_KEYS)
    models = []
    for model_name, entry in (raw.get("models") or {}).items():
        _unknown(f"{path}: models.{model_name}", entry, {"kind", "path"})
        models.append(ModelSpec(name=model_name, kind=entry["kind"], path=resolve_path(entry["path"])))
    tasks = tuple(parse_task(t, f"{path}: tasks[{i}]") for i, t in enumerate(raw.get("tasks") or []))
    real = tuple(parse_task(t, f"{path}: real_tasks[{i}]") for i, t in enumerate(raw.get("real_tasks") or []))
    return Suite(path.stem, raw.get("description", ""), tuple(models), tasks, real)


def list_suites() -> list[Suite]:
    """Every shipped suite."""
    return [load_suite(str(p)) for p in sorted(SUITES_DIR.glob("*.yaml"))]


def with_options(spec: TaskSpec, **changes: Any) -> TaskSpec:
    """A copy of ``spec`` with some TaskOptions fields replaced (CLI overrides such as --limit)."""
    values = {f.name: getattr(spec.options, f.name) for f in fields(TaskOptions)}
    values.update({k: v for k, v in changes.items() if v is not None})
    return TaskSpec(spec.name, TaskOptions(**values), spec.alias)
