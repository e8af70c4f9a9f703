"""The regression gate: a run (and optionally an earlier one) against thresholds from YAML.

Exit codes: 0 every rule passed, 1 a rule was breached (the table says which, with the numbers),
2 the input is unusable (missing file, schema mismatch, a rule naming a task, metric or model
kind the run does not have, samples a rule needs but the run did not log). The gate fails closed:
a rule that compares nothing (no limit set, no task to apply to, ``--against`` a run sharing no
result with this one, or without a ``regression`` section) is exit 2 too, never a pass.

``gate.yaml`` (every key optional except where noted; read by :mod:`iaa_eval.config`: unknown or
repeated keys, wrong types and non-finite numbers are errors; limits and tolerance are >= 0)::

    version: 1                      # required
    text:                           # per model kind, against the run's base model
      <kind>:
        max_flips: int >= 0         # items whose correctness changed (right->wrong + wrong->right)
        max_drop: float >= 0        # largest allowed fall of the paired mean (0.05 = 5 points)
        report_only: bool           # show the numbers, never fail
        tasks: [task, ...]          # default: every text task of the run
    multimodal:                     # floors per model kind and task
      - {kind: str, task: str, metric: str?, min: float?, min_gain: float?}
    regression:                     # only used with --against <earlier run>
      tolerance: float >= 0         # breach: paired CI of (now - then) wholly below -tolerance
      tasks: [task, ...]            # default: every task both runs share

``min`` is in the metric's own units (fractions for accuracies, points for MME); ``min_gain`` is
the score minus the base model's (blind) score on the same task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from iaa_eval import config
from iaa_eval.errors import DataError, IAAEvalError
from iaa_eval.forgetting import Analysis, analyse, compare_runs
from iaa_eval.rundir import RunData


@dataclass(frozen=True)
class TextRule:
    """Limits on a model kind's text change against the base."""

    kind: str = field(metadata=config.KEY)
    max_flips: config.NonNegativeInt | None = None
    max_drop: config.NonNegative | None = None
    report_only: bool = False
    tasks: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MultimodalRule:
    """A floor on one task's score (or its gain over the blind base) for a model kind."""

    kind: str
    task: str
    metric: str | None = None
    min: config.Finite | None = None
    min_gain: config.Finite | None = None


@dataclass(frozen=True)
class RegressionRule:
    """No task may fall, beyond its paired CI, below an earlier run."""

    tolerance: config.NonNegative = 0.0
    tasks: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GateThresholds:
    """A parsed thresholds file."""

    version: Literal[1]
    text: tuple[TextRule, ...] = ()
    multimodal: tuple[MultimodalRule, ...] = ()
    regression: RegressionRule | None = None


@dataclass(frozen=True)
class GateRow:
    """One rule applied to one model and task."""

    rule: str
    model: str
    task: str
    value: float
    threshold: str
    status: str  # "pass", "fail" or "report"
    detail: str = ""


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided; ``exit_code`` is 0 pass, 1 breach, 2 unusable input."""

    exit_code: int
    rows: tuple[GateRow, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[GateRow, ...]:
        """The breached rules."""
        return tuple(r for r in self.rows if r.status == "fail")

    def table(self, everything: bool = False) -> str:
        """A plain-text table of the failed rules (or of every row), or the input errors."""
        if self.errors:
            return "\n".join(f"unusable input: {e}" for e in self.errors)
        rows = self.rows if everything else self.failed
        if not rows:
            return f"gate passed: {len(self.rows)} checks"
        head = ("status", "rule", "model", "task", "value", "threshold", "detail")
        body = [(r.status.upper(), r.rule, r.model, r.task, _fmt(r.value), r.threshold, r.detail)
                for r in rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
                 for line in (head, *body)]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.6g}"


def load_thresholds(path: Path | str) -> GateThresholds:
    """Parse a thresholds file strictly (:mod:`iaa_eval.config`: unknown keys name file and key)."""
    return config.load(GateThresholds, path)


def _models_of(run: RunData, kind: str, rule: str) -> list[str]:
    models = [m for m in run.models if run.kind(m) == kind]
    if not models:
        kinds = sorted({run.kind(m) for m in run.models})
        raise DataError(f"rule {rule}: no model of kind {kind!r} in {run.run_dir} "
                        f"(kinds: {', '.join(kinds)})")
    return models


def _check_task(run: RunData, model: str, task: str, rule: str) -> None:
    if run.result(model, task) is None:
        raise DataError(
            f"rule {rule}: unknown task {task!r} for model {model!r} in {run.run_dir} "
            f"(tasks: {', '.join(run.tasks(model))})"
        )


def _needs_samples(run: RunData, model: str, task: str, rule: str) -> None:
    if run.items(model, task) is None:
        raise DataError(f"rule {rule}: {run.run_dir / 'samples' / model / (task + '.jsonl')} is "
                        "missing (per-item samples needed; run with --log-samples)")


def _compared(rows: list[GateRow], rule: str, why: str) -> list[GateRow]:
    """``rows``, or an error when a rule compared nothing: a rule that checks nothing must not
    read as passed (the gate fails closed)."""
    if not rows:
        raise DataError(f"rule {rule} compared nothing: {why}")
    return rows


def _pairs(run: RunData) -> str:
    return ", ".join(f"{m}/{t}" for m in run.models for t in run.tasks(m)) or "none"


def _text_rows(run: RunData, analysis: Analysis, rule: TextRule) -> list[GateRow]:
    rows, name = [], f"text.{rule.kind}"
    text = analysis.text.set_index(["model", "task"]) if not analysis.text.empty else None
    for model in _models_of(run, rule.kind, name):
        if model == analysis.base:
            raise DataError(f"rule {name}: model {model!r} of kind {rule.kind!r} is the base "
                            "model itself")
        for task in rule.tasks or tuple(analysis.meta["text_tasks"]):
            _check_task(run, model, task, name)
            _check_task(run, analysis.base, task, name)
            row = text.loc[(model, task)]
            if rule.max_flips is not None:
                _needs_samples(run, model, task, f"{name}.max_flips")
                _needs_samples(run, analysis.base, task, f"{name}.max_flips")
            flips = float(row.get("right_to_wrong", math.nan) + row.get("wrong_to_right", math.nan))
            detail = f"delta {row.delta:+.4f}, {flips:.0f} flips"
            if rule.report_only:
                rows.append(GateRow(f"{name}.report", model, task, float(row.delta), "-", "report",
                                    detail))
            if rule.max_flips is not None:
                ok = flips <= rule.max_flips
                rows.append(GateRow(f"{name}.max_flips", model, task, flips, f"<= {rule.max_flips}",
                                    "pass" if ok else "fail", detail))
            if rule.max_drop is not None:
                ok = -float(row.delta) <= rule.max_drop
                rows.append(GateRow(f"{name}.max_drop", model, task, -float(row.delta),
                                    f"<= {rule.max_drop:g}", "pass" if ok else "fail", detail))
    limits = rule.max_flips is not None or rule.max_drop is not None or rule.report_only
    tasks = ", ".join(run.tasks()) or "none"
    return _compared(rows, name, "it sets none of max_flips, max_drop, report_only" if not limits
                     else f"no text task in {run.run_dir} (tasks: {tasks})")


def _multimodal_rows(run: RunData, base: str, rule: MultimodalRule, index: int) -> list[GateRow]:
    rows, name = [], f"multimodal[{index}]"
    for model in _models_of(run, rule.kind, name):
        _check_task(run, model, rule.task, name)
        entry = run.result(model, rule.task)
        metric = rule.metric or entry["primary"]
        if metric not in entry["metrics"]:
            raise DataError(f"rule {name}: unknown metric {metric!r} for task {rule.task!r} "
                            f"(metrics: {', '.join(entry['metrics'])})")
        score = run.score(model, rule.task, metric)
        if rule.min is not None:
            rows.append(GateRow(f"{name}.min", model, rule.task, score, f"{metric} >= {rule.min:g}",
                                "pass" if score >= rule.min else "fail"))
        if rule.min_gain is not None:
            _check_task(run, base, rule.task, f"{name}.min_gain")
            gain = score - run.score(base, rule.task, metric)
            rows.append(GateRow(f"{name}.min_gain", model, rule.task, gain,
                                f"{metric} gain >= {rule.min_gain:g}",
                                "pass" if gain >= rule.min_gain else "fail",
                                f"{metric} {score:.4g} vs base"))
    return _compared(rows, name, "it sets neither min nor min_gain")


def _regression_rows(run: RunData, earlier: RunData, rule: RegressionRule, resamples: int,
                     seed: int) -> list[GateRow]:
    table = compare_runs(earlier, run, resamples=resamples, seed=seed)
    rows = []
    for task in rule.tasks or ():
        if task not in run.tasks() or task not in earlier.tasks():
            raise DataError(f"rule regression: unknown task {task!r} (not in both "
                            f"{earlier.run_dir} and {run.run_dir})")
    for r in table.itertuples():
        if rule.tasks and r.task not in rule.tasks:
            continue
        if r.n_paired == 0:
            for source in (earlier, run):
                _needs_samples(source, r.model, r.task, "regression")
            raise DataError(f"rule regression: {r.model}/{r.task} shares no doc_id between "
                            "the two runs")
        ok = not r.ci_high < -rule.tolerance
        detail = (f"{r.metric} {r.score_a:.4g} -> {r.score_b:.4g}; item delta {r.item_delta:+.4f} "
                  f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]")
        rows.append(GateRow("regression", r.model, r.task, float(r.item_delta),
                            f"CI high >= {0.0 - rule.tolerance:g}", "pass" if ok else "fail",
                            detail))
    return _compared(rows, "regression", f"--against {earlier.run_dir} shares no model/task result "
                     f"with {run.run_dir} (earlier: {_pairs(earlier)}; now: {_pairs(run)})")


def run_gate(run_dir: Path | str, thresholds_path: Path | str, against: Path | str | None = None,
             resamples: int = 2000, seed: int = 0) -> GateOutcome:
    """Apply ``thresholds_path`` to ``run_dir`` (and to its change since ``against``).

    Returns a :class:`GateOutcome`; never raises for bad input (that is exit code 2).
    """
    try:
        thresholds = load_thresholds(thresholds_path)
        run = RunData(run_dir)
        earlier = RunData(against) if against is not None else None
        analysis = analyse(run, resamples=resamples, seed=seed)
        rows: list[GateRow] = []
        for rule in thresholds.text:
            rows += _text_rows(run, analysis, rule)
        for index, mm_rule in enumerate(thresholds.multimodal):
            rows += _multimodal_rows(run, analysis.base, mm_rule, index)
        if earlier is not None:
            if thresholds.regression is None:
                raise DataError(f"--against {against}: the thresholds have no 'regression' "
                                "section, so nothing would be compared with the earlier run")
            rows += _regression_rows(run, earlier, thresholds.regression, resamples, seed)
        if not rows:
            raise DataError(f"{thresholds_path}: no rule, so the gate compared nothing")
    except IAAEvalError as exc:
        text = str(exc)  # a rule that cannot apply: name the thresholds file it came from, too
        named = f"{thresholds_path}: {text}" if text.startswith("rule ") else text
        return GateOutcome(2, errors=(named,))
    breached = any(r.status == "fail" for r in rows)
    return GateOutcome(1 if breached else 0, rows=tuple(rows))
