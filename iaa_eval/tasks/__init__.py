"""Tasks: text tasks through lm-eval, multimodal tasks of our own, behind one small contract.

A task turns (model, options) into a :class:`~iaa_eval.runner.results.TaskResult`. Tasks are
registered lazily by name so listing them imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from iaa_eval.registry import Registry
from iaa_eval.runner.distributed import Shards

if TYPE_CHECKING:
    from iaa_eval.models.base import EvalModel, MMRequest
    from iaa_eval.runner.cache import RequestCache
    from iaa_eval.runner.results import TaskResult


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
    """What a task gets from the runner.

    ``answer`` is the cached, batched, progress-reporting way to ask the model multimodal
    questions: it consults the request cache first and asks the model only for the rest.
    ``cache`` and ``shards`` are for tasks (text) that drive the model themselves: look up the
    cache first, compute the rest with ``shards.map`` (data parallel under torchrun), and let
    only ``shards.is_writer`` store answers.
    """

    model: EvalModel
    options: TaskOptions
    cache: RequestCache
    answer: Callable[[Sequence[MMRequest]], list[str]]
    blind: bool = False
    shards: Shards = field(default_factory=lambda: Shards())


class Task(Protocol):
    """A benchmark. ``modality`` is ``"text"`` or ``"image"``."""

    name: str
    modality: str

    def run(self, ctx: TaskContext) -> TaskResult:
        """Load the data, ask the model, score with the official rules."""
        ...


TASKS: Registry[Task] = Registry("task")
TASKS.add("mmlu", "iaa_eval.tasks.text:MMLU")
TASKS.add("ceval", "iaa_eval.tasks.text:CEVAL")
TASKS.add("mme", "iaa_eval.tasks.mme:MME")
TASKS.add("mmbench_en", "iaa_eval.tasks.mmbench:MMBENCH_EN")
TASKS.add("mmbench_cn", "iaa_eval.tasks.mmbench:MMBENCH_CN")
TASKS.add("vqav2", "iaa_eval.tasks.vqav2:VQAV2")
