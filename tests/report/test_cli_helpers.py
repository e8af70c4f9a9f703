"""The report/gate entry points the CLI calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from iaa_eval.errors import UsageError
from iaa_eval.report.cli_helpers import gate, report
from iaa_eval.resources import GATE_THRESHOLDS as GATE_YAML
from tests.runfixture import make_run


def test_report_one_and_two_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path / "runs" / "a", seed=1)
    b = make_run(tmp_path / "runs" / "b", seed=1, iaa_flips=1)
    written = report([a], tmp_path / "reports", fmt="json", resamples=1000)
    assert written == [tmp_path / "reports" / "a" / "index.html", tmp_path / "reports" / "a" / "data" / "analysis.json"]
    (page,) = report([a, b], tmp_path / "reports", resamples=1000)
    assert page == tmp_path / "reports" / "a-vs-b" / "index.html" and page.is_file()
    with pytest.raises(UsageError, match="got 3"):
        report([a, b, a], tmp_path / "reports")
    with pytest.raises(UsageError, match="single run"):
        report([a, b], tmp_path / "reports", fmt="csv")
    code, text = gate(b, GATE_YAML)
    assert code == 1 and "text.iaa.max_flips" in text
    code, text = gate(a, GATE_YAML)
    assert code == 0 and "PASS" in text
