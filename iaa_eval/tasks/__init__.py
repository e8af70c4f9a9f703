"""Tasks: text tasks through lm-eval, multimodal tasks of our own, behind one small contract
(:mod:`iaa_eval.tasks.context`). Tasks are registered lazily by name so listing them imports no
torch.
"""

from __future__ import annotations

from iaa_eval.registry import Registry
from iaa_eval.tasks.context import Task, TaskContext, TaskOptions

__all__ = ["TASKS", "Task", "TaskContext", "TaskOptions"]

TASKS: Registry[Task] = Registry("task")
TASKS.add("mmlu", "iaa_eval.tasks.text:MMLU")
TASKS.add("ceval", "iaa_eval.tasks.text:CEVAL")
TASKS.add("mme", "iaa_eval.tasks.mme:MME")
TASKS.add("mmbench_en", "iaa_eval.tasks.mmbench:MMBENCH_EN")
TASKS.add("mmbench_cn", "iaa_eval.tasks.mmbench:MMBENCH_CN")
TASKS.add("vqav2", "iaa_eval.tasks.vqav2:VQAV2")
