"""Typed results and the on-disk run layout.

A run directory holds::

    results.json                 schema below (SCHEMA_VERSION)
    samples/<model>/<task>.jsonl one SampleRecord per line
    cache.sqlite                 finished requests (runner/cache.py)

``results.json``::

    {
      "schema_version": 1,
      "run_id": str, "created": ISO time,
      "config": {...the run's settings...},
      "versions": {"iaa_eval": ..., "torch": ..., "transformers": ..., "lm_eval": ..., "python": ...},
      "models": {<model>: {"kind": str, "path": str, "fingerprints": {"text": str, "mm": str?},
                           "parameters": {...}}},
      "results": {<model>: {<task>: TaskResult.to_json()}},
      "wall_s": float
    }

``TaskResult.to_json()``: ``metrics`` (flat name -> float, e.g. ``acc``, ``acc_macro``,
``perception``), ``primary`` (the headline metric's name), ``groups`` (subject / subtask /
category -> metrics, with ``n``), ``n``, ``skipped`` (+ ``skip_reasons``), ``blind``,
``task_config`` (shots, formulation, prompt), ``requests`` / ``cached_requests``, ``wall_s``.
Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iaa_eval.errors import DataError

SCHEMA_VERSION = 1


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
    """The outcome of one task on one model."""

    task: str
    metrics: dict[str, float]
    primary: str
    n: int
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    blind: bool = False
    task_config: dict[str, Any] = field(default_factory=dict)
    requests: int = 0
    cached_requests: int = 0
    wall_s: float = 0.0
    samples: list[SampleRecord] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The results.json entry (samples go to their own file)."""
        data = asdict(self)
        data.pop("samples")
        data.pop("task")
        return data


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
        raise DataError(f"{path}: no samples for model {model!r}, task {task!r} (was the run made with --log-samples?)")
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
            f"{path}: schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}"
        )
    for key in ("results", "models", "config"):
        if not isinstance(data.get(key), dict):
            raise DataError(f"{path}: field {key!r} missing or not an object")
    return data
