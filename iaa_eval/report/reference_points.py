"""Published forgetting reference points (``iaa_eval/data/baselines/reference_points.yaml``) and
which of them apply to a run.

A point is a VLM's published text score next to its base LM's. The report draws it on the
forgetting-vs-gain figure only when the run evaluated that same base and that same VLM, so a
reader sees our delta beside the one its authors reported, never beside an unrelated model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from iaa_eval import config
from iaa_eval.pairing import hub_id
from iaa_eval.resources import BASELINES
from iaa_eval.rundir import RunData

DEFAULT_PATH = BASELINES / "reference_points.yaml"


@dataclass(frozen=True)
class ReferencePoint:
    """``model``'s published score on ``setting`` next to ``base``'s, both in percent."""

    model: str
    base: str
    setting: str
    base_value: config.Percent
    model_value: config.Percent
    source: config.NonBlank
    verified: bool
    note: str = ""

    @property
    def delta(self) -> float:
        """Model minus base, in points (the forgetting axis of the report)."""
        return self.model_value - self.base_value

    @property
    def label(self) -> str:
        """What the figure writes beside the point."""
        mark = "" if self.verified else ", unverified"
        return f"published: {self.model.split('/')[-1]}, {self.setting} {self.delta:+.1f}{mark}"


@dataclass(frozen=True)
class ReferencePointsFile:
    """The shape of ``reference_points.yaml``."""

    version: Literal[1]
    points: tuple[ReferencePoint, ...]


def load_reference_points(path: Path | str = DEFAULT_PATH) -> tuple[ReferencePoint, ...]:
    """Read the file strictly (:class:`ReferencePointsFile`): values are percentages and every
    point names its source."""
    return config.load(ReferencePointsFile, path).points


def matching_points(points: Sequence[ReferencePoint], base_path: str,
                    model_paths: Sequence[str]) -> list[ReferencePoint]:
    """The points whose base is the run's base model and whose VLM is one of its other models."""
    models = {hub_id(p) for p in model_paths}
    return [p for p in points if hub_id(p.base) == hub_id(base_path) and hub_id(p.model) in models]


def points_for_run(run: RunData, points: Sequence[ReferencePoint]) -> list[ReferencePoint]:
    """:func:`matching_points` on the model paths recorded in the run's results.json."""
    base = run.base_model()
    others = [str(entry.get("path", "")) for name, entry in run.models.items() if name != base]
    return matching_points(points, str(run.models[base].get("path", "")), others)
