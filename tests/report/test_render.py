"""The HTML report: every section filled, numbers equal results.json, self-contained, escaped."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from iaa_eval.report import default_report_dir, render_comparison, render_report
from iaa_eval.report.render import fmt_p, fmt_score, worst_regressions
from tests.runfixture import XSS_IMG, XSS_SCRIPT, make_run

SECTIONS = ("summary", "forgetting", "gain", "subjects", "paper", "deployment", "samples", "config")


class _Cells(HTMLParser):
    """Collects the summary cells' data attributes and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "data-value" in a:
            self.cells.append(a)
        self.links += [a[k] for k in ("src", "href") if k in a]
        if "id" in a:
            self.ids.add(a["id"])


def _parse(page: Path) -> _Cells:
    parser = _Cells()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    run = make_run(root / "runs" / "mini-1", seed=5)
    return run, render_report(run, root / "reports" / "mini-1", resamples=1000)


def test_sections_figures_and_numbers(mini: tuple[Path, Path]) -> None:
    run, page = mini
    parsed = _parse(page)
    assert set(SECTIONS) <= parsed.ids
    assert {"summary-table", "text-table", "gain-table", "deployment-table", "models-table"} <= parsed.ids
    results = json.loads((run / "results.json").read_text())["results"]
    expected = [repr(float(r["metrics"][r["primary"]])) for m in results.values() for r in m.values()]
    assert [c["data-value"] for c in parsed.cells] == expected  # model x task, in results.json order
    images = [link for link in parsed.links if link.startswith("figures/")]
    assert len(images) == 3
    for image in images:
        assert (page.parent / image).stat().st_size > 1000
        assert (page.parent / image).read_text().lstrip().startswith("<?xml")


def test_page_is_self_contained_and_escaped(mini: tuple[Path, Path]) -> None:
    _, page = mini
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;window.__pwned=2&#34;&gt;" in html
    assert XSS_SCRIPT not in html and XSS_IMG not in html
    assert not [link for link in _parse(page).links if re.match(r"(https?:)?//", link)]  # no CDN, no network
    assert "<style>" in html
    assert not list(page.parent.rglob("*.tmp"))  # atomic writes leave no temp files


def test_miniworld_run_hides_paper_numbers(mini: tuple[Path, Path]) -> None:
    _, page = mini
    html = page.read_text(encoding="utf-8")
    assert "embedded mini-world" in html and 'id="paper-table"' not in html


def test_real_run_shows_paper_numbers_with_tables(tmp_path: Path) -> None:
    page = render_report(make_run(tmp_path / "real", seed=6, real=True), tmp_path / "out", resamples=1000)
    html = page.read_text(encoding="utf-8")
    assert 'id="paper-table"' in html
    row = re.search(r"<td class=\"l\">IAA-14</td><td>1591\.5</td>.*?<td class=\"l\">(Table \d)</td>", html)
    assert row and row.group(1) == "Table 2"
    assert html.count("NOT FOUND") >= 2  # mmlu and ceval: no invented text numbers


def test_reports_are_reproducible(tmp_path: Path, mini: tuple[Path, Path]) -> None:
    run, page = mini
    again = render_report(run, tmp_path / "again", resamples=1000)
    assert again.read_text() == page.read_text()
    for svg in (page.parent / "figures").iterdir():
        assert (again.parent / "figures" / svg.name).read_bytes() == svg.read_bytes()


def test_report_without_samples_or_parameters(tmp_path: Path) -> None:
    run = make_run(tmp_path / "bare", with_samples=False)
    data = json.loads((run / "results.json").read_text())
    for model in data["models"].values():
        model.pop("parameters")
    (run / "results.json").write_text(json.dumps(data))
    html = render_report(run, tmp_path / "out", resamples=1000).read_text()
    assert "No per-subject samples" in html and "table omitted" in html


def test_worst_regressions_are_base_right_model_wrong(mini: tuple[Path, Path]) -> None:
    from iaa_eval.forgetting import analyse
    from iaa_eval.rundir import RunData

    run = RunData(mini[0])
    groups = {g["model"]: g for g in worst_regressions(run, analyse(run, resamples=1000))}
    assert groups["iaa"]["total"] == 0
    llava = groups["llava"]
    assert llava["total"] == int(analyse(run, resamples=1000).text.query("model == 'llava'")["right_to_wrong"].sum())
    for item in llava["samples"]:
        assert run.items("base", item["task"]).records[item["doc_id"]].correct
        assert not run.items("llava", item["task"]).records[item["doc_id"]].correct


def test_comparison_page(tmp_path: Path, mini: tuple[Path, Path]) -> None:
    run_a = mini[0]
    run_b = make_run(tmp_path / "runs" / "mini-2", seed=5, mm_shift=-0.4)
    page = render_comparison(run_a, run_b, tmp_path / "cmp", resamples=1000)
    html = page.read_text()
    assert "mini-1" in html and "mini-2" in html and 'id="comparison-table"' in html
    assert html.count('class="bad"') >= 4  # llava and iaa on the image tasks fell
    assert (page.parent / "figures" / "comparison.svg").is_file()
    assert default_report_dir(run_a) == Path("reports") / "mini-1"


def test_fmt_score() -> None:
    assert fmt_score("acc", 0.6124, 0.55, 0.675) == "61.2 [55.0, 67.5]"
    assert fmt_score("perception", 1591.5) == "1591.5"
    assert fmt_score("acc", -0.05, -0.08, -0.02, sign=True) == "-5.0 [-8.0, -2.0]"
    assert fmt_score("acc", float("nan")) == "–"
    assert fmt_p(3e-9) == "3.0e-09" and fmt_p(0.0123) == "0.0123"
