"""The IAA paper's published numbers (``iaa_eval/data/baselines/iaa_paper.json``), read and checked.

Every number carries the table it comes from; a benchmark the paper's available tables do not
report is listed under ``not_found`` with ``ref: "NOT FOUND"`` instead of a number. The file's
shape is :class:`PaperBaselines` (read by :mod:`iaa_eval.config`); :func:`load_paper` adds the
checks across entries (each number's table and model are listed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from iaa_eval import config
from iaa_eval.errors import DataError
from iaa_eval.resources import PAPER_BASELINES as DEFAULT_PATH

_UNITS = {"percent": 0.01, "points (0-2000)": 1.0}


@dataclass(frozen=True)
class PaperNumber:
    """One published number: ``value`` in ``unit`` for ``model`` on ``task``/``metric``."""

    model: str
    benchmark: str
    task: str
    metric: str
    split: str
    unit: Literal["percent", "points (0-2000)"]
    value: config.Finite
    ref: str

    @property
    def native(self) -> float:
        """The value in iaa-eval's units (fractions for percentages, points for MME)."""
        return self.value * _UNITS[self.unit]


@dataclass(frozen=True)
class NotFound:
    """A benchmark the paper's available tables do not report: a note, never a number."""

    task: str
    models: tuple[str, ...]
    value: None
    ref: Literal["NOT FOUND"]
    note: str
    metric: str | None = None


@dataclass(frozen=True)
class PaperModel:
    """What the paper says of a model it reports (Table 2 columns; Table 4's grounding data)."""

    kind: Literal["iaa", "llava", "other"]
    llm: str | None
    vision_encoder: str | None = None
    training_data: str | None = None
    llm_frozen: bool | None = None
    table2_group: str | None = None
    grounding_data: str | None = None


@dataclass(frozen=True)
class PaperBaselines:
    """The file: the paper, its numbers, model notes, what was not found and the caveats."""

    path: Path
    paper: dict[str, str]
    transcribed_from: str
    tables: dict[str, str]
    caveats: tuple[str, ...]
    models: dict[str, PaperModel]
    numbers: tuple[PaperNumber, ...]
    not_found: tuple[NotFound, ...] = ()

    def for_task(self, task: str, metric: str | None = None,
                 models: tuple[str, ...] | None = None) -> list[PaperNumber]:
        """The numbers of one task (and metric), optionally only for the named paper models."""
        return [n for n in self.numbers if n.task == task and (metric is None or n.metric == metric)
                and (models is None or n.model in models)]


def load_paper(path: Path | str = DEFAULT_PATH) -> PaperBaselines:
    """Read the paper file: every number has a known unit and a reference to a listed table."""
    paper = config.load(PaperBaselines, path, path=Path(path))
    for i, number in enumerate(paper.numbers):
        where = f"{path}: numbers[{i}]"
        if number.ref not in paper.tables:
            raise DataError(f"{where}.ref: {number.ref!r} is not one of the tables "
                            f"{sorted(paper.tables)}")
        if number.model not in paper.models:
            raise DataError(f"{where}.model: {number.model!r} missing from 'models'")
    return paper
