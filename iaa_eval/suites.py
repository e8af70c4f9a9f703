"""Suites: named model + task lists in YAML (``iaa_eval/data/tasks/suites/*.yaml``), read strictly.

A suite has default ``models`` (the embedded mini-world for ``forgetting``) with the ``tasks``
that fit them, and ``real_tasks`` used instead when the user names real models
(``--base/--llava/--iaa``). A path starting with ``miniworld:`` resolves into the shipped
mini-world assets. The file format is :class:`SuiteFile`, read by :mod:`iaa_eval.config`
(unknown keys and wrong types are errors naming the file and the field).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from iaa_eval import config
from iaa_eval.errors import UsageError
from iaa_eval.evaluate import TaskSpec
from iaa_eval.models.base import ModelSpec
from iaa_eval.resources import MINIWORLD_ASSETS, SUITES
from iaa_eval.tasks import TaskOptions


@dataclass(frozen=True)
class SuiteModel:
    """``models: {name: {kind, path}}``."""

    name: config.Name = field(metadata=config.KEY)
    kind: str
    path: str


@dataclass(frozen=True)
class SuiteTask:
    """One ``tasks:`` entry; a bare name is ``{task: name}``."""

    task: str = field(metadata=config.SHORTHAND)
    alias: config.Name | None = None
    data_dir: str | None = None
    limit: config.PositiveInt | None = None
    num_fewshot: config.NonNegativeInt | None = None
    formulation: Literal["letter", "cloze"] | None = None
    on_error: Literal["raise", "skip"] = "raise"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SuiteFile:
    """A suite file as written."""

    description: str = ""
    models: tuple[SuiteModel, ...] = ()
    tasks: tuple[SuiteTask, ...] = ()
    real_tasks: tuple[SuiteTask, ...] = ()


@dataclass(frozen=True)
class Suite:
    """A suite ready to run."""

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


def task_spec(entry: SuiteTask) -> TaskSpec:
    """The TaskSpec of one suite entry."""
    options = TaskOptions(
        data_dir=Path(resolve_path(entry.data_dir)) if entry.data_dir else None,
        limit=entry.limit,
        on_error=entry.on_error,
        num_fewshot=entry.num_fewshot,
        formulation=entry.formulation,
        extra=dict(entry.extra),
    )
    return TaskSpec(name=entry.task, options=options, alias=entry.alias)


def load_suite(name_or_path: str) -> Suite:
    """Read the shipped suite ``<name>`` (or a path to a suite file)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITES / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES.glob("*.yaml")))
        raise UsageError(f"--suite {name_or_path!r}: no such suite (known: {known})")
    raw = config.load(SuiteFile, path)
    models = tuple(ModelSpec(m.name, m.kind, resolve_path(m.path)) for m in raw.models)
    return Suite(path.stem, raw.description, models, tuple(task_spec(t) for t in raw.tasks),
                 tuple(task_spec(t) for t in raw.real_tasks))


def list_suites() -> list[Suite]:
    """Every shipped suite."""
    return [load_suite(str(p)) for p in sorted(SUITES.glob("*.yaml"))]


def with_options(spec: TaskSpec, **changes: Any) -> TaskSpec:
    """A copy of ``spec`` with some TaskOptions fields replaced (CLI overrides such as --limit)."""
    values = {f.name: getattr(spec.options, f.name) for f in fields(TaskOptions)}
    values.update({k: v for k, v in changes.items() if v is not None})
    return TaskSpec(spec.name, TaskOptions(**values), spec.alias)
