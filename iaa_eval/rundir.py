"""The run directory: its format, written and read in one place (written fields = read fields).

A run directory holds::

    results.json                 schema below (SCHEMA_VERSION)
    samples/<model>/<task>.jsonl one SampleRecord per line
    cache.sqlite                 finished requests (runner/cache.py)

``results.json``::

    {
      "schema_version": 2,
      "run_id": str, "created": ISO time,
      "config": {...the run's settings...},
      "versions": {"iaa-eval": ..., "torch": ..., "transformers": ..., "lm_eval": ..., ...},
      "models": {<model>: {"kind": str, "path": str, "fingerprints": {"text": str, "mm": str?},
                           "parameters": {...}}},
      "results": {<model>: {<task>: TaskResult.to_json()}},
      "wall_s": float
    }

``TaskResult.to_json()``: ``metrics`` (flat name -> float, e.g. ``acc``, ``acc_macro``,
``perception``), ``primary`` (the headline metric's name), ``groups`` (subject / subtask /
category -> metrics, with ``n``), ``n``, ``skipped`` (+ ``skip_reasons``), ``blind``,
``modality`` (``"text"`` or ``"image"``), ``source`` (where the data came from:
``hub:<dataset id>``, ``local:<folder>`` or ``miniworld:<folder in the shipped assets>``),
``task_config`` (shots, formulation, prompt), ``requests`` / ``cached_requests``, ``wall_s``.
Every file is written atomically (temp file + rename). :class:`RunData` reads a run back for the
forgetting analysis, the report and the gate, so all three agree on what a task's modality is,
which model is the base, where the data came from and how items pair up.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iaa_eval.errors import DataError, OutputError
from iaa_eval.names import path_name

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2  # 2: each task result records its modality and data source
MODALITIES = ("text", "image")
SOURCE_KINDS = ("hub", "local", "miniworld")
#: metrics on a points scale (everything else is a fraction in [0, 1], shown as percent)
POINT_METRICS = frozenset({"perception", "cognition", "score"})


@dataclass
class SampleRecord:
    """One scored item. ``doc_id`` is stable across models so items can be paired."""

    doc_id: str
    prompt: str
    target: str
    response: str
    correct: bool
    group: str | None = None
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskResult:
    """The outcome of one task on one model. The runner fills ``modality`` and ``source`` (see the
    module docstring) along with ``blind``, the request counts and ``wall_s``."""

    task: str
    metrics: dict[str, float]
    primary: str
    n: int
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    blind: bool = False
    modality: str = ""
    source: str = ""
    task_config: dict[str, Any] = field(default_factory=dict)
    requests: int = 0
    cached_requests: int = 0
    wall_s: float = 0.0
    samples: list[SampleRecord] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The results.json entry (samples go to their own file)."""
        if self.modality not in MODALITIES or source_kind(self.source) not in SOURCE_KINDS:
            raise ValueError(
                f"task {self.task!r}: modality {self.modality!r} / source {self.source!r} not set"
            )
        data = asdict(self)
        data.pop("samples")
        data.pop("task")
        return data


def source_kind(source: str) -> str:
    """``"hub"``, ``"local"`` or ``"miniworld"``: the kind of a ``TaskResult.source``."""
    return source.partition(":")[0]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old file or the new one; a
    failed write (a full disk) is an :class:`OutputError` naming ``path``."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path} ({exc.strerror or exc}); what was written "
                              "before it is kept (free space and rerun to resume)") from exc
        raise


def write_samples(run_dir: Path, model: str, result: TaskResult) -> Path:
    """Write ``samples/<model>/<task>.jsonl``."""
    path = run_dir / "samples" / model / f"{result.task}.jsonl"
    lines = (json.dumps(asdict(s), ensure_ascii=False) for s in result.samples)
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def read_samples(run_dir: Path, model: str, task: str) -> list[SampleRecord]:
    """Read ``samples/<model>/<task>.jsonl`` back into records."""
    path = run_dir / "samples" / model / f"{task}.jsonl"
    if not path.is_file():
        raise DataError(
            f"{path}: no samples for model {model!r}, task {task!r} "
            "(was the run made with --log-samples?)"
        )
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            records.append(SampleRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DataError(f"{path}:{line_no}: not a sample record ({exc})") from exc
    return records


def write_results(run_dir: Path, data: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically."""
    path = run_dir / "results.json"
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def recorded_results(run_dir: Path) -> dict[str, list[str]]:
    """Model -> tasks that ``results.json`` of ``run_dir`` holds ({} when there is none, or it is
    unreadable: a rerun rewrites it). Read leniently: any schema version counts."""
    try:
        text = (Path(run_dir) / "results.json").read_text(encoding="utf-8")
        results = json.loads(text)["results"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(results, dict):
        return {}
    return {str(m): list(tasks) for m, tasks in results.items()
            if isinstance(tasks, dict) and tasks}


def read_results(run_dir: Path) -> dict[str, Any]:
    """Read and check ``results.json`` of a run directory."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise DataError(f"{path}: no results.json here; is {run_dir} a run directory?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if data.get("schema_version") != SCHEMA_VERSION:
        raise DataError(
            f"{path}: schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION} "
            "(version 1 lacks each task's modality and data source: rerun its `iaa-eval run` "
            "command, which answers finished requests from its cache.sqlite)"
        )
    for key in ("results", "models", "config"):
        if not isinstance(data.get(key), dict):
            raise DataError(f"{path}: field {key!r} missing or not an object")
    return data


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
        return Items(
            tuple(ids),
            self.value[idx],
            self.correct[idx],
            tuple(self.group[i] for i in idx),
            self.records,
        )


def pair(a: Items, b: Items) -> tuple[Items, Items]:
    """Restrict two models' items to the doc_ids both have, in ``a``'s order."""
    common = set(b.doc_ids)
    ids = [d for d in a.doc_ids if d in common]
    if len(ids) < max(len(a.doc_ids), len(b.doc_ids)):
        log.warning(
            "pairing kept %d of %d / %d items (doc_ids differ)",
            len(ids),
            len(a.doc_ids),
            len(b.doc_ids),
        )
    return a.select(ids), b.select(ids)


class RunData:
    """A run directory opened for analysis (results.json checked; samples read lazily)."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.data = read_results(self.run_dir)
        self._items: dict[tuple[str, str], Items | None] = {}
        self._check()

    def _check(self) -> None:
        where = self.run_dir / "results.json"
        path_name(self.run_id, f"{where}: run_id", DataError)
        if not any(isinstance(tasks, dict) and tasks for tasks in self.data["results"].values()):
            raise DataError(f"{where}: no task results (the run stopped before its first task "
                            "finished?); rerun its `iaa-eval run` command to finish it")
        for model, tasks in self.data["results"].items():
            path_name(model, f"{where}: results: model name", DataError)
            if model not in self.data["models"]:
                raise DataError(f"{where}: results for model {model!r} but no models.{model} entry")
            if not isinstance(tasks, dict):
                raise DataError(f"{where}: results.{model}: expected an object of task results")
            for task, entry in tasks.items():
                path_name(task, f"{where}: results.{model}: task name", DataError)
                metrics = entry.get("metrics") if isinstance(entry, dict) else None
                if not isinstance(metrics, dict) or entry.get("primary") not in metrics:
                    raise DataError(
                        f"{where}: results.{model}.{task} lacks 'metrics' with its 'primary' metric"
                    )
                for name, value in metrics.items():
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        raise DataError(f"{where}: results.{model}.{task}.metrics.{name}: "
                                        f"expected a number, got {value!r}")
                if entry.get("modality") not in MODALITIES:
                    raise DataError(
                        f"{where}: results.{model}.{task}.modality: expected one of {MODALITIES}"
                    )
                if source_kind(str(entry.get("source", ""))) not in SOURCE_KINDS:
                    raise DataError(
                        f"{where}: results.{model}.{task}.source: expected 'hub:', 'local:' or "
                        "'miniworld:' and where"
                    )

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

    def _entries(self, task: str) -> list[dict[str, Any]]:
        return [r for m in self.data["results"].values() if (r := m.get(task))]

    def modality(self, task: str) -> str:
        """``"text"`` or ``"image"``, as the runner recorded it."""
        return str(self._entries(task)[0]["modality"])

    def source(self, task: str) -> str:
        """Where the task's data came from: ``"hub"``, ``"local"`` or ``"miniworld"`` (the kind of
        the recorded ``source``)."""
        return source_kind(self._entries(task)[0]["source"])

    def base_model(self) -> str:
        """The reference model: the only one of kind ``hf``, else the one named ``base``."""
        hf = [m for m in self.models if self.kind(m) == "hf"]
        if len(hf) == 1:
            return hf[0]
        if "base" in self.models:
            return "base"
        raise DataError(
            f"{self.run_dir / 'results.json'}: cannot tell the base model: "
            f"{len(hf)} models of kind 'hf' "
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
                    tuple(r.doc_id for r in records),
                    np.asarray(values, dtype=np.float64),
                    np.asarray([bool(r.correct) for r in records]),
                    tuple(r.group for r in records),
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
