"""Read-side view of a run directory: models, task results and paired per-item samples.

Shared by the forgetting analysis, the report and the gate so that all three agree on what a
task's modality is, which model is the base, where the data came from and how items pair up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from iaa_eval.errors import DataError
from iaa_eval.runner.results import read_results, read_samples

log = logging.getLogger(__name__)

TEXT_TASKS = ("mmlu", "ceval")
IMAGE_TASKS = ("mme", "mmbench_en", "mmbench_cn", "vqav2")
#: metrics on a points scale (everything else is a fraction in [0, 1], shown as percent)
POINT_METRICS = frozenset({"perception", "cognition", "score"})


@dataclass(frozen=True)
class Items:
    """One model's per-item outcomes on one task, keyed by ``doc_id``.

    ``value`` is the per-item score (``SampleRecord.score`` when given, e.g. VQA's soft accuracy,
    else 0/1 correctness); ``correct`` is the 0/1 correctness used for flips and McNemar.
    """

    doc_ids: tuple[str, ...]
    value: np.ndarray
    correct: np.ndarray
    group: tuple[str | None, ...]
    records: dict[str, Any] = field(repr=False, default_factory=dict)

    def select(self, ids: list[str]) -> Items:
        """The items ``ids`` in that order (ids must all be present)."""
        pos = {d: i for i, d in enumerate(self.doc_ids)}
        idx = np.array([pos[d] for d in ids], dtype=np.int64)
        return Items(tuple(ids), self.value[idx], self.correct[idx], tuple(self.group[i] for i in idx), self.records)


def pair(a: Items, b: Items) -> tuple[Items, Items]:
    """Restrict two models' items to the doc_ids both have, in ``a``'s order."""
    common = set(b.doc_ids)
    ids = [d for d in a.doc_ids if d in common]
    if len(ids) < max(len(a.doc_ids), len(b.doc_ids)):
        log.warning("pairing kept %d of %d / %d items (doc_ids differ)", len(ids), len(a.doc_ids), len(b.doc_ids))
    return a.select(ids), b.select(ids)


def task_source(task_config: dict[str, Any]) -> str:
    """``"miniworld"``, ``"hub"`` or ``"local"``: where a task's data came from.

    A ``data_dir`` with a ``miniworld`` path component is the embedded mini-world; no data_dir is
    the hub dataset (the real benchmark); any other data_dir is local files in the original layout.
    ``task_config["data_source"]``, when the runner writes it, wins.
    """
    if task_config.get("data_source"):
        return str(task_config["data_source"])
    data_dir = task_config.get("data_dir")
    if not data_dir:
        return "hub"
    text = str(data_dir)
    if text.startswith("miniworld:") or "miniworld" in PurePath(text).parts:
        return "miniworld"
    return "local"


class RunData:
    """A run directory opened for analysis (results.json checked; samples read lazily)."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.data = read_results(self.run_dir)
        self._items: dict[tuple[str, str], Items | None] = {}
        self._check()

    def _check(self) -> None:
        where = self.run_dir / "results.json"
        for model, tasks in self.data["results"].items():
            if model not in self.data["models"]:
                raise DataError(f"{where}: results for model {model!r} but no models.{model} entry")
            for task, entry in tasks.items():
                metrics = entry.get("metrics") if isinstance(entry, dict) else None
                if not isinstance(metrics, dict) or entry.get("primary") not in metrics:
                    raise DataError(f"{where}: results.{model}.{task} lacks 'metrics' with its 'primary' metric")

    @property
    def run_id(self) -> str:
        """The run's id (its folder name when results.json has none)."""
        return str(self.data.get("run_id") or self.run_dir.name)

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        """``models`` of results.json."""
        return self.data["models"]

    def kind(self, model: str) -> str:
        """The adapter kind of ``model`` (hf, llava, iaa, ...)."""
        return str(self.models[model].get("kind", "?"))

    def tasks(self, model: str | None = None) -> list[str]:
        """Tasks of one model, or of any model in first-seen order."""
        results = self.data["results"]
        names = results.get(model, {}) if model else [t for m in results.values() for t in m]
        return list(dict.fromkeys(names))

    def result(self, model: str, task: str) -> dict[str, Any] | None:
        """One ``TaskResult.to_json()`` entry, or None when the model did not run the task."""
        return self.data["results"].get(model, {}).get(task)

    def score(self, model: str, task: str, metric: str | None = None) -> float:
        """A metric (default: the primary) of one model on one task; NaN when absent."""
        entry = self.result(model, task)
        if entry is None:
            return float("nan")
        return float(entry["metrics"].get(metric or entry["primary"], float("nan")))

    def modality(self, task: str) -> str:
        """``"text"`` or ``"image"``: task_config.modality, else a blind run or a known image task."""
        entries = [r for m in self.data["results"].values() if (r := m.get(task))]
        for entry in entries:
            if entry.get("task_config", {}).get("modality"):
                return str(entry["task_config"]["modality"])
        if any(e.get("blind") for e in entries) or task.split("_")[0] in {t.split("_")[0] for t in IMAGE_TASKS}:
            return "image"
        return "text"

    def source(self, task: str) -> str:
        """Where the task's data came from (see :func:`task_source`).

        Read from the task's ``task_config`` when it names ``data_source`` or ``data_dir``, else
        from the run config's task entry (``config.tasks[].options.data_dir``), else "hub".
        """
        for models in self.data["results"].values():
            config = models.get(task, {}).get("task_config", {})
            if "data_source" in config or "data_dir" in config:
                return task_source(config)
        for spec in self.data.get("config", {}).get("tasks") or []:
            if isinstance(spec, dict) and (spec.get("alias") or spec.get("name")) == task:
                return task_source(spec.get("options") or {})
        return "hub"

    def base_model(self) -> str:
        """The reference model: the only one of kind ``hf``, else the one named ``base``."""
        hf = [m for m in self.models if self.kind(m) == "hf"]
        if len(hf) == 1:
            return hf[0]
        if "base" in self.models:
            return "base"
        raise DataError(
            f"{self.run_dir / 'results.json'}: cannot tell the base model: {len(hf)} models of kind 'hf' "
            f"and none named 'base' (models: {', '.join(self.models)})"
        )

    def items(self, model: str, task: str) -> Items | None:
        """Per-item outcomes from ``samples/<model>/<task>.jsonl``; None when not logged."""
        key = (model, task)
        if key not in self._items:
            path = self.run_dir / "samples" / model / f"{task}.jsonl"
            if not path.is_file():
                self._items[key] = None
            else:
                records = read_samples(self.run_dir, model, task)
                values = [r.score if r.score is not None else float(r.correct) for r in records]
                self._items[key] = Items(
                    tuple(r.doc_id for r in records), np.asarray(values, dtype=np.float64),
                    np.asarray([bool(r.correct) for r in records]), tuple(r.group for r in records),
                    {r.doc_id: r for r in records},
                )
        return self._items[key]

    def contains_weights_of(self, model: str, other: str) -> bool:
        """True when ``model`` serves ``other``'s text weights unchanged (IAA over its base).

        ``parameters.shared_with`` says so explicitly; otherwise equal text fingerprints do.
        """
        if model == other:
            return True
        params = self.models[model].get("parameters") or {}
        if params.get("shared_with") == other:
            return True
        fp_a = self.models[model].get("fingerprints", {}).get("text")
        fp_b = self.models[other].get("fingerprints", {}).get("text")
        return fp_a is not None and fp_a == fp_b
