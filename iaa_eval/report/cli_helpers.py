"""What ``iaa-eval report`` and ``iaa-eval gate`` do, so that cli.py only parses and prints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from iaa_eval.errors import UsageError
from iaa_eval.forgetting import analyse, export
from iaa_eval.gate import run_gate
from iaa_eval.metrics.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from iaa_eval.report.render import default_report_dir, render_comparison, render_report
from iaa_eval.rundir import RunData


def report(runs: Sequence[Path | str], reports_root: Path | str = "reports", fmt: str | None = None,
           resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> list[Path]:
    """One run: ``reports/<id>/index.html`` (+ ``reports/<id>/data/`` tables when ``fmt`` is
    csv|json).

    Two runs A B: ``reports/<a>-vs-<b>/index.html``. Returns the files written, page first.
    """
    if len(runs) == 1:
        out = default_report_dir(runs[0], reports_root)
        written = [render_report(runs[0], out, resamples=resamples, seed=seed)]
        if fmt:
            written += export(analyse(runs[0], resamples=resamples, seed=seed), fmt, out / "data")
        return written
    if len(runs) == 2:
        if fmt:
            raise UsageError("--format exports one run's tables; give a single run with it")
        out = Path(reports_root) / f"{RunData(runs[0]).run_id}-vs-{RunData(runs[1]).run_id}"
        return [render_comparison(runs[0], runs[1], out, resamples=resamples, seed=seed)]
    raise UsageError(f"report takes one run (a report) or two (a comparison), got {len(runs)}")


def gate(
    run: Path | str, thresholds: Path | str, against: Path | str | None = None
) -> tuple[int, str]:
    """Exit code and the text to print: every check on a pass, the failed ones (or the errors)
    otherwise."""
    outcome = run_gate(run, thresholds, against=against)
    return outcome.exit_code, outcome.table(everything=outcome.exit_code == 0)
