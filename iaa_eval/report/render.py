"""Render a run (or two) into a self-contained HTML page with its figures beside it.

The page works from ``file://``: CSS is inline, figures are relative SVG files, there is no
script and no CDN. Model outputs are untrusted text, so the jinja2 environment autoescapes every
value; nothing is marked safe. Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from iaa_eval import __version__
from iaa_eval.forgetting import Analysis, analyse, compare_runs
from iaa_eval.metrics.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from iaa_eval.report import plots
from iaa_eval.report.paper import DEFAULT_PATH, PaperBaselines, PaperNumber, load_paper
from iaa_eval.report.reference_points import DEFAULT_PATH as REFERENCES_PATH
from iaa_eval.report.reference_points import ReferencePoint, load_reference_points, points_for_run
from iaa_eval.rundir import RunData

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
#: paper models drawn beside ours: the IAA variants and the LLaVA-style comparators on Llama3 /
#: Vicuna
PAPER_MODELS = ("IAA-8\u2020", "IAA-8", "IAA-14", "LLaVA-Llama3", "LLaVA-1.5 (7B)",
                "LLaVA-1.5 (13B)")
FIGURE_DIR = "figures"


def environment() -> Environment:
    """The jinja2 environment: autoescape always on, undefined names are errors."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_number
    env.filters["pct"] = fmt_percent
    env.filters["pval"] = fmt_p
    return env


def fmt_number(value: Any, digits: int = 1) -> str:
    """A number for a table cell; blanks for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    big_whole = isinstance(value, float) and value.is_integer() and abs(value) >= 1000
    if isinstance(value, int) or big_whole:
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


def fmt_p(value: Any) -> str:
    """A p-value: 4 decimals, or scientific notation below 0.0001 (never a bare 0.0000)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


def fmt_percent(value: Any, digits: int = 1, sign: bool = False) -> str:
    """A fraction as percent (or points of a difference when ``sign``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:+.{digits}f}" if sign else f"{100 * value:.{digits}f}"


def fmt_score(metric: str, value: float, low: float = math.nan, high: float = math.nan,
              sign: bool = False) -> str:
    """A score in display units with its CI, e.g. ``61.3 [58.0, 64.4]``."""
    k = plots.scale(metric)
    if math.isnan(value):
        return "–"
    text = f"{k * value:+.1f}" if sign else f"{k * value:.1f}"
    if not (math.isnan(low) or math.isnan(high)):
        low, high = k * low, k * high
        text += f" [{low:+.1f}, {high:+.1f}]" if sign else f" [{low:.1f}, {high:.1f}]"
    return text


def _summary(analysis: Analysis) -> dict[str, Any]:
    """Model x task matrix of primary scores with CIs; ``raw`` keeps results.json's value."""
    scores = analysis.scores
    tasks = list(dict.fromkeys(scores["task"]))
    rows = []
    for model in dict.fromkeys(scores["model"]):
        cells = []
        for task in tasks:
            hit = scores[(scores.model == model) & (scores.task == task)]
            if hit.empty:
                cells.append({"text": "–", "raw": "", "blind": False})
                continue
            s = hit.iloc[0]
            low, high = (s.item_low, s.item_high) if s.item_metric else (math.nan, math.nan)
            cells.append({"text": fmt_score(s.metric, s.score, low, high),
                          "raw": repr(float(s.score)), "blind": bool(s.blind)})
        kind = scores[scores.model == model].iloc[0].kind
        rows.append({"model": model, "kind": kind, "cells": cells})
    metrics = {t: scores[scores.task == t].iloc[0].metric for t in tasks}
    units = {t: plots.unit(m) for t, m in metrics.items()}
    return {"tasks": tasks, "metrics": metrics, "units": units, "rows": rows}


def worst_regressions(run: RunData, analysis: Analysis, limit: int = 30) -> list[dict[str, Any]]:
    """Items the base got right and a model got wrong, from its most-regressed subjects first."""
    out = []
    subjects = analysis.subjects
    order = subjects.sort_values("delta") if not subjects.empty else pd.DataFrame()
    rank = {(r.model, r.task, r.subject): i for i, r in enumerate(order.itertuples())}
    for model in [m for m in run.models if m != analysis.base]:
        found = []
        for task in analysis.meta["text_tasks"]:
            base, other = run.items(analysis.base, task), run.items(model, task)
            if base is None or other is None:
                continue
            for doc_id in base.doc_ids:
                a, b = base.records[doc_id], other.records.get(doc_id)
                if b is not None and a.correct and not b.correct:
                    found.append({"model": model, "task": task, "subject": a.group or "",
                                  "doc_id": doc_id, "prompt": a.prompt, "target": a.target,
                                  "base_response": a.response, "response": b.response,
                                  "rank": rank.get((model, task, a.group), len(rank))})
        found.sort(key=lambda item: (item["rank"], item["task"], item["doc_id"]))
        out.append({"model": model, "total": len(found), "samples": found[:limit]})
    return out


def _paper_context(paper: PaperBaselines | None, analysis: Analysis) -> dict[str, Any]:
    real = [t for t, s in analysis.meta["sources"].items() if s != "miniworld"]
    if paper is None or not real:
        return {"shown": False, "real_tasks": real, "rows": [], "by_task": {}, "not_found": [],
                "caveats": []}
    by_task: dict[str, list[PaperNumber]] = {}
    for task in real:
        metric = analysis.scores[analysis.scores.task == task].iloc[0].metric
        numbers = paper.for_task(task, metric, PAPER_MODELS)
        if numbers:
            by_task[task] = numbers
    rows = [{"task": t, "benchmark": n.benchmark, "split": n.split, "model": n.model,
             "value": n.value, "unit": n.unit, "ref": n.ref}
            for t, ns in by_task.items() for n in ns]
    not_found = [e for e in paper.not_found if e.task in real]
    return {"shown": True, "real_tasks": real, "rows": rows, "by_task": by_task,
            "not_found": not_found, "caveats": list(paper.caveats), "source": paper.path.name}


def _figures(analysis: Analysis, paper: dict[str, Any], references: list[ReferencePoint],
             out_dir: Path) -> dict[str, str]:
    fig_dir = out_dir / FIGURE_DIR
    made = {
        "scatter": plots.scatter(analysis.scores, analysis.retention, analysis.meta["image_tasks"],
                                 fig_dir / "forgetting_vs_gain.svg", references),
        "tasks": plots.task_bars(analysis.scores, paper["by_task"], fig_dir / "tasks.svg"),
        "subjects": plots.subject_heatmap(analysis.subjects, fig_dir / "subjects.svg"),
    }
    return {name: f"{FIGURE_DIR}/{path.name}" for name, path in made.items() if path is not None}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [] if frame.empty else frame.to_dict(orient="records")


def render_report(run_dir: Path | str, out_dir: Path | str, resamples: int = DEFAULT_RESAMPLES,
                  seed: int = DEFAULT_SEED, paper_path: Path | str | None = DEFAULT_PATH,
                  references_path: Path | str | None = REFERENCES_PATH) -> Path:
    """Write ``<out_dir>/index.html`` and ``<out_dir>/figures/*.svg`` for one run; returns the page.

    Args:
        run_dir: the run directory (results.json, samples/).
        out_dir: where the page goes, conventionally ``reports/<run-id>``.
        resamples, seed: bootstrap settings (see :func:`iaa_eval.forgetting.analyse`).
        paper_path: the paper's numbers; None leaves them out.
        references_path: published reference points, drawn when the run's models match; None: none.
    """
    run = RunData(run_dir)
    out_dir = Path(out_dir)
    analysis = analyse(run, resamples=resamples, seed=seed)
    paper = _paper_context(load_paper(paper_path) if paper_path else None, analysis)
    references = (points_for_run(run, load_reference_points(references_path))
                  if references_path else [])
    context = {
        "title": f"iaa-eval report: {analysis.run_id}", "version": __version__, "run": run.data,
        "analysis": analysis, "meta": analysis.meta, "summary": _summary(analysis),
        "text": _records(analysis.text),
        "subjects": _records(analysis.subjects.sort_values("delta"))
        if not analysis.subjects.empty else [],
        "gain": _records(analysis.gain), "retention": _records(analysis.retention),
        "deployment": _records(analysis.deployment), "paper": paper,
        "figures": _figures(analysis, paper, references, out_dir),
        "regressions": worst_regressions(run, analysis), "fmt_score": fmt_score, "nan": math.nan,
        "config_json": json.dumps(run.data.get("config", {}), indent=2, ensure_ascii=False,
                                  default=str),
        "versions": run.data.get("versions", {}), "models": run.models,
    }
    page = out_dir / "index.html"
    plots.write_public(page, environment().get_template("report.html.j2").render(**context))
    log.info("report written to %s", page)
    return page


def _cells(run: RunData) -> set[str]:
    """``model/task`` for every result of a run: what a comparison can pair."""
    return {f"{m}/{t}" for m in run.models for t in run.tasks(m)}


def render_comparison(run_a: Path | str, run_b: Path | str, out_dir: Path | str,
                      resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Path:
    """Write ``<out_dir>/index.html`` comparing run B against run A (paired where items match)."""
    a, b = RunData(run_a), RunData(run_b)
    out_dir = Path(out_dir)
    table = compare_runs(a, b, resamples=resamples, seed=seed)
    figure = (plots.comparison_bars(table, out_dir / FIGURE_DIR / "comparison.svg")
              if not table.empty else None)
    context = {
        "title": f"iaa-eval comparison: {a.run_id} vs {b.run_id}", "version": __version__,
        "run_a": a.run_id, "run_b": b.run_id, "rows": _records(table), "fmt_score": fmt_score,
        "nan": math.nan,
        "figure": f"{FIGURE_DIR}/{figure.name}" if figure else None,
        "only_a": sorted(_cells(a) - _cells(b)),
        "only_b": sorted(_cells(b) - _cells(a)),
    }
    page = out_dir / "index.html"
    plots.write_public(page, environment().get_template("compare.html.j2").render(**context))
    return page


def default_report_dir(run_dir: Path | str, reports_root: Path | str = "reports") -> Path:
    """``reports/<run-id>``, the conventional place of a run's report."""
    return Path(reports_root) / RunData(run_dir).run_id
