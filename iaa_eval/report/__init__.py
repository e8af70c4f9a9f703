"""HTML reports of runs: ``render_report`` (one run) and ``render_comparison`` (two runs)."""

from __future__ import annotations

from iaa_eval.report.render import default_report_dir, render_comparison, render_report

__all__ = ["default_report_dir", "render_comparison", "render_report"]
