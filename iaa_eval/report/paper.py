"""The IAA paper's published numbers (``baselines/iaa_paper.json``), parsed and checked.

Every number carries the table it comes from; a benchmark the paper's available tables do not
report is listed under ``not_found`` with ``ref: "NOT FOUND"`` instead of a number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from iaa_eval.errors import DataError

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "baselines" / "iaa_paper.json"
_NUMBER_KEYS = {"model", "benchmark", "task", "metric", "split", "unit", "value", "ref"}
_UNITS = {"percent": 0.01, "points (0-2000)": 1.0}


@dataclass(frozen=True)
class PaperNumber:
    """One published number: ``value`` in ``unit`` for ``model`` on ``task``/``metric``."""

    model: str
    benchmark: str
    task: str
    metric: str
    split: str
    unit: str
    value: float
    ref: str

    @property
    def native(self) -> float:
        """The value in iaa-eval's units (fractions for percentages, points for MME)."""
        return self.value * _UNITS[self.unit]


@dataclass(frozen=True)
class PaperBaselines:
    """The parsed file: numbers, model notes, what was not found and the caveats."""

    path: Path
    numbers: tuple[PaperNumber, ...]
    models: dict[str, dict]
    not_found: tuple[dict, ...]
    tables: dict[str, str]
    caveats: tuple[str, ...]

    def for_task(self, task: str, metric: str | None = None, models: tuple[str, ...] | None = None) -> list[PaperNumber]:
        """The numbers of one task (and metric), optionally only for the named paper models."""
        return [n for n in self.numbers if n.task == task and (metric is None or n.metric == metric)
                and (models is None or n.model in models)]


def load_paper(path: Path | str = DEFAULT_PATH) -> PaperBaselines:
    """Read and check the paper file: every number has a known unit and a reference to a listed table."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the paper baselines ({exc})") from exc
    tables = data.get("tables", {})
    numbers = []
    for i, entry in enumerate(data.get("numbers", [])):
        where = f"{path}: numbers[{i}]"
        if set(entry) != _NUMBER_KEYS:
            raise DataError(f"{where}: keys {sorted(entry)}, expected {sorted(_NUMBER_KEYS)}")
        if entry["ref"] not in tables:
            raise DataError(f"{where}: ref {entry['ref']!r} is not one of the tables {sorted(tables)}")
        if entry["unit"] not in _UNITS or not isinstance(entry["value"], int | float):
            raise DataError(f"{where}: unit {entry['unit']!r} / value {entry['value']!r} not understood")
        if entry["model"] not in data.get("models", {}):
            raise DataError(f"{where}: model {entry['model']!r} missing from 'models'")
        numbers.append(PaperNumber(**entry))
    not_found = tuple(data.get("not_found", []))
    for i, entry in enumerate(not_found):
        if entry.get("ref") != "NOT FOUND" or entry.get("value") is not None:
            raise DataError(f"{path}: not_found[{i}] must have ref 'NOT FOUND' and value null")
    return PaperBaselines(path, tuple(numbers), data.get("models", {}), not_found, tables,
                          tuple(data.get("caveats", [])))
