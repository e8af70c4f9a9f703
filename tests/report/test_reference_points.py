"""Published reference points: strict file, matching a run's models, drawn on the scatter figure."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from iaa_eval.errors import DataError
from iaa_eval.forgetting import analyse
from iaa_eval.report import plots
from iaa_eval.report.reference_points import (
    ReferencePoint,
    load_reference_points,
    matching_points,
    points_for_run,
)
from iaa_eval.report.render import render_report
from iaa_eval.rundir import RunData
from tests.runfixture import make_run

POINT = {"model": "org/vlm", "base": "org/lm", "setting": "MMLU 5-shot", "base_value": 60.0,
         "model_value": 52.5, "source": "https://example.org/issue/1", "verified": True}


def _write(tmp_path: Path, points: list[dict]) -> Path:
    path = tmp_path / "points.yaml"
    path.write_text(json.dumps({"version": 1, "points": points}), encoding="utf-8")
    return path


def test_shipped_points() -> None:
    points = load_reference_points()
    qwen = {p.setting.split()[0]: p for p in points if p.model == "Qwen/Qwen-VL"}
    assert (qwen["MMLU"].base_value, qwen["MMLU"].model_value) == (56.7, 50.7)
    assert (qwen["CMMLU"].base_value, qwen["CMMLU"].model_value) == (58.8, 49.5)
    assert qwen["MMLU"].base == "Qwen/Qwen-7B" and qwen["MMLU"].verified
    assert qwen["MMLU"].source == "https://github.com/QwenLM/Qwen-VL/issues/23"
    assert qwen["MMLU"].delta == pytest.approx(-6.0)


@pytest.mark.parametrize(("change", "message"), [
    ({"value": 1.0}, "points[0]: unknown key 'value'"),
    ({"base_value": "60"}, "points[0].base_value: expected a number, got '60'"),
    ({"verified": 1}, "points[0].verified: expected true or false, got 1"),
    ({"model_value": 525.0}, "points[0].model_value: expected a number <= 100, got 525.0"),
    ({"base_value": -1}, "points[0].base_value: expected a number >= 0, got -1"),
    ({"source": ""}, "points[0].source: expected a non-blank string, got ''"),
])
def test_strict_points(tmp_path: Path, change: dict, message: str) -> None:
    path = _write(tmp_path, [{**POINT, **change}])
    with pytest.raises(DataError) as info:
        load_reference_points(path)
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)


def test_matching_needs_both_models() -> None:
    point = ReferencePoint(**POINT)
    assert matching_points([point], "org/lm", ["org/vlm"]) == [point]
    assert matching_points([point], "/cache/models--org--lm/snapshots/1", ["/w/ORG/VLM"]) == [point]
    assert matching_points([point], "org/lm", ["org/other-vlm"]) == []
    assert matching_points([point], "org/other-lm", ["org/vlm"]) == []
    assert matching_points([point], "org/vlm", ["org/lm"]) == []  # roles matter


def test_points_for_run_reads_results_paths(tmp_path: Path) -> None:
    run = RunData(make_run(tmp_path / "r", seed=3))
    mine = ReferencePoint(**{**POINT, "model": "miniworld:llava", "base": "miniworld:base"})
    assert points_for_run(run, [mine, ReferencePoint(**POINT)]) == [mine]


def test_marks_are_drawn_with_their_labels() -> None:
    point = ReferencePoint(**POINT)
    ax = Figure().subplots()
    plots.reference_marks(ax, [point])
    tagged = [a for a in ax.get_children() if a.get_gid() == "reference-0"]
    lines = [a for a in tagged if hasattr(a, "get_xdata")]
    texts = [a for a in tagged if hasattr(a, "get_text")]
    # the dotted line and the marker
    assert {tuple(line.get_xdata()) for line in lines} == {(-7.5, -7.5), (-7.5,)}
    assert [t.get_text() for t in texts] == ["published: vlm, MMLU 5-shot -7.5"]
    assert ax.get_xlim()[0] <= -7.5


def test_report_figure_carries_matching_points(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "r", seed=4)
    ours = {**POINT, "model": "miniworld:llava", "base": "miniworld:base", "verified": False}
    points = _write(tmp_path, [ours, POINT])
    render_report(run_dir, tmp_path / "page", resamples=1000, references_path=points)
    svg = (tmp_path / "page" / "figures" / "forgetting_vs_gain.svg").read_text(encoding="utf-8")
    ET.fromstring(svg)
    panels = len(analyse(run_dir, resamples=1000).meta["image_tasks"])
    assert panels >= 1
    assert svg.count('id="reference-0"') == 3 * panels  # a line, a marker and a label per panel
    assert 'id="reference-1"' not in svg  # the point for other models is not drawn
