"""The contract between the runner and a benchmark: what a task gets, and what it is.

A task turns (model, options) into a :class:`~iaa_eval.rundir.TaskResult`; it asks the model only
through the :class:`~iaa_eval.runner.requests.RequestPath` it is handed, which answers from the
run's request cache first and shares the rest out across ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from iaa_eval.models.base import EvalModel
    from iaa_eval.rundir import TaskResult
    from iaa_eval.runner.requests import RequestPath


@dataclass(frozen=True)
class TaskOptions:
    """Per-task settings from the CLI or a suite.

    Args:
        data_dir: local files in the benchmark's original layout; ``None`` = the hub dataset.
        limit: evaluate at most this many items (per subject for text tasks, as lm-eval does).
        on_error: ``"raise"`` stops at the first bad row; ``"skip"`` counts and records it.
        num_fewshot: few-shot examples for text tasks (``None`` = the task's default).
        formulation: text tasks: ``"letter"`` (answer letters A-D) or ``"cloze"`` (option text).
        extra: task-specific settings from a suite YAML.
    """

    data_dir: Path | None = None
    limit: int | None = None
    on_error: str = "raise"
    num_fewshot: int | None = None
    formulation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskContext:
    """What a task gets from the runner: the model, its options, the request path to the model,
    and whether it runs blind (a multimodal task on a model without eyes: no images asked)."""

    model: EvalModel
    options: TaskOptions
    request_path: RequestPath
    blind: bool = False


class Task(Protocol):
    """A benchmark. ``modality`` is ``"text"`` or ``"image"``; ``hub`` is the hub dataset read
    when no ``data_dir`` is given."""

    name: str
    modality: str
    hub: str

    def run(self, ctx: TaskContext) -> TaskResult:
        """Load the data, ask the model, score with the official rules."""
        ...
