"""Figures: valid, deterministic SVG; nothing drawn (None) when there is nothing to draw."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from iaa_eval.forgetting import analyse, compare_runs
from iaa_eval.report import plots
from tests.runfixture import make_run


def test_units() -> None:
    assert plots.scale("perception") == 1.0 and plots.unit("perception") == "points"
    assert plots.scale("acc") == 100.0 and plots.unit("circular_acc") == "%"


def test_figures_are_valid_svg(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", seed=9)
    a = analyse(run, resamples=1000)
    paths = [
        plots.scatter(a.scores, a.retention, a.meta["image_tasks"], tmp_path / "s.svg"),
        plots.task_bars(a.scores, {}, tmp_path / "t.svg"),
        plots.subject_heatmap(a.subjects, tmp_path / "h.svg"),
        plots.comparison_bars(compare_runs(run, run), tmp_path / "c.svg"),
    ]
    for path in paths:
        assert ET.parse(path).getroot().tag.endswith("svg")
        assert path.stat().st_mode & 0o777 == 0o644


def test_nothing_to_draw(tmp_path: Path) -> None:
    empty = pd.DataFrame()
    assert plots.subject_heatmap(empty, tmp_path / "x.svg") is None
    assert plots.scatter(empty, empty, ["mme"], tmp_path / "x.svg") is None
    assert plots.comparison_bars(pd.DataFrame({"ci_low": []}), tmp_path / "x.svg") is None
    assert not (tmp_path / "x.svg").exists()
