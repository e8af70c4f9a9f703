"""Report figures as SVG files: forgetting-vs-gain scatter, per-task bars, per-subject heatmap.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, so no global figure
state and no GUI backend) and written atomically. Fractions are drawn in percent, MME in points.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from iaa_eval.report.paper import PaperNumber
from iaa_eval.report.reference_points import ReferencePoint
from iaa_eval.rundir import POINT_METRICS, atomic_write_text

log = logging.getLogger(__name__)
COLOURS = {"hf": "#7f7f7f", "llava": "#d62728", "vlm": "#ff7f0e", "iaa": "#1f77b4"}
PAPER_COLOUR = "#bcbd22"
REFERENCE_COLOUR = "#8c564b"


def scale(metric: str) -> float:
    """Display factor: 100 for fractions (shown as percent), 1 for points."""
    return 1.0 if metric in POINT_METRICS else 100.0


def unit(metric: str) -> str:
    """Axis unit of a metric."""
    return "points" if metric in POINT_METRICS else "%"


def _colour(kind: str, index: int) -> str:
    return COLOURS.get(kind, f"C{index % 10}")


def write_public(path: Path, text: str) -> Path:
    """Atomic write, then world-readable (mkstemp creates 0600; a report is meant to be served)."""
    atomic_write_text(path, text)
    path.chmod(0o644)
    return path


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a self-contained, reproducible SVG (fixed hash salt, no date)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "iaa-eval", "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return write_public(path, buffer.getvalue())


def _err(center: float, low: float, high: float) -> list[list[float]] | None:
    if any(math.isnan(v) for v in (center, low, high)):
        return None
    return [[max(center - low, 0.0)], [max(high - center, 0.0)]]


def reference_marks(ax: matplotlib.axes.Axes, references: Sequence[ReferencePoint]) -> None:
    """Each published point as a dotted line at its delta, a marker on top and its label
    (artists carry ``gid="reference-<i>"``, so they are findable in the figure and the SVG)."""
    top = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for i, point in enumerate(references):
        gid = f"reference-{i}"
        ax.axvline(point.delta, color=REFERENCE_COLOUR, ls=":", lw=1.2, gid=gid)
        ax.plot([point.delta], [1.0], marker="v", color=REFERENCE_COLOUR, transform=top,
                clip_on=False, gid=gid)
        ax.text(point.delta, 0.97, point.label, transform=top, rotation=90, ha="right", va="top",
                fontsize=6, color=REFERENCE_COLOUR, gid=gid)


def scatter(scores: pd.DataFrame, retention: pd.DataFrame, image_tasks: list[str], path: Path,
            references: Sequence[ReferencePoint] = ()) -> Path | None:
    """Forgetting (x: mean text delta, points, with CI) vs multimodal score (y), one panel per image
    task; published reference points for the run's models (``references``) as labelled lines."""
    if retention.empty or not image_tasks:
        return None
    fig = Figure(figsize=(4.2 * len(image_tasks), 3.8))
    axes = fig.subplots(1, len(image_tasks), squeeze=False)[0]
    for ax, task in zip(axes, image_tasks, strict=True):
        for i, r in enumerate(retention.itertuples()):
            row = scores[(scores.model == r.model) & (scores.task == task)]
            if row.empty:
                continue
            s = row.iloc[0]
            k = scale(s.metric)
            x = 100 * r.text_delta
            y = k * s.score
            yerr = _err(s.score, s.item_low, s.item_high) if s.item_metric else None
            xerr = _err(r.text_delta, r.text_delta_low, r.text_delta_high)
            ax.errorbar([x], [y], xerr=None if xerr is None else 100 * np.array(xerr),
                        yerr=None if yerr is None else k * np.array(yerr),
                        fmt="o" if not s.blind else "s",
                        color=_colour(r.kind, i), capsize=4, ms=8,
                        label=f"{r.model}{' (blind)' if s.blind else ''}")
        ax.axvline(0, color="#999", lw=0.8, ls="--")
        reference_marks(ax, references)
        metric = scores[scores.task == task].iloc[0].metric
        ax.set(title=task, xlabel="text delta vs base (points, 95% CI)",
               ylabel=f"{metric} ({unit(metric)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("What multimodal training cost (x) and bought (y)")
    return save(fig, path)


def task_bars(scores: pd.DataFrame, paper: dict[str, list[PaperNumber]], path: Path) -> Path | None:
    """One panel per task: each model's primary score with its CI, the paper's numbers beside
    ours."""
    tasks = list(dict.fromkeys(scores["task"]))
    if not tasks:
        return None
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    widest = max(len(paper.get(t, [])) for t in tasks)
    fig = Figure(figsize=((4.6 + 0.35 * widest) * cols, (3.6 + 0.5 * bool(widest)) * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, task in zip(axes, tasks, strict=False):
        sub = scores[scores.task == task]
        k = scale(sub.iloc[0].metric)
        labels, heights, colours, errs = [], [], [], [[], []]
        for i, s in enumerate(sub.itertuples()):
            labels.append(f"{s.model}\n(blind)" if s.blind else s.model)
            heights.append(k * s.score)
            colours.append(_colour(s.kind, i))
            e = _err(s.score, s.item_low, s.item_high) if s.item_metric else None
            errs[0].append(0 if e is None else k * e[0][0])
            errs[1].append(0 if e is None else k * e[1][0])
        for number in paper.get(task, []):
            labels.append(f"{number.model}\n[{number.ref}]")
            heights.append(k * number.native)
            colours.append(PAPER_COLOUR)
            errs[0].append(0)
            errs[1].append(0)
        x = np.arange(len(labels))
        bars = ax.bar(x, heights, color=colours)
        with_ci = [i for i in range(len(labels)) if errs[0][i] or errs[1][i]]
        if with_ci:
            ax.errorbar(x[with_ci], np.take(heights, with_ci), yerr=np.take(errs, with_ci, axis=1),
                        fmt="none", ecolor="black", capsize=3)
        for bar, label in zip(bars, labels, strict=True):
            if "[" in label:
                bar.set_hatch("//")
        crowded = len(labels) > 4
        ax.set_xticks(x, labels, fontsize=7, rotation=60 if crowded else 0,
                      ha="right" if crowded else "center")
        ax.set(title=task, ylabel=f"{sub.iloc[0].metric} ({unit(sub.iloc[0].metric)})")
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    return save(fig, path)


def subject_heatmap(subjects: pd.DataFrame, path: Path) -> Path | None:
    """Per-subject delta vs base (points): rows task/subject, columns model; * marks BH p < 0.05."""
    if subjects.empty:
        return None
    table = subjects.assign(key=subjects["task"] + " / " + subjects["subject"])
    delta = table.pivot(index="key", columns="model", values="delta") * 100
    p_adj = table.pivot(index="key", columns="model", values="p_bh")
    fig = Figure(figsize=(2.2 + 1.3 * delta.shape[1], 1.2 + 0.28 * delta.shape[0]))
    ax = fig.subplots()
    limit = max(1.0, float(np.nanmax(np.abs(delta.to_numpy()))))
    image = ax.imshow(delta.to_numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(delta.shape[1]), list(delta.columns))
    ax.set_yticks(range(delta.shape[0]), list(delta.index), fontsize=7)
    for (i, j), value in np.ndenumerate(delta.to_numpy()):
        if not math.isnan(value):
            star = "*" if p_adj.iat[i, j] < 0.05 else ""
            ax.text(j, i, f"{value:+.1f}{star}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="delta vs base (points)")
    ax.set_title("Per-subject text delta (* = BH-adjusted McNemar p < 0.05)")
    return save(fig, path)


def comparison_bars(table: pd.DataFrame, path: Path) -> Path | None:
    """Per model/task paired per-item delta between two runs (points) with its 95% CI."""
    rows = table.dropna(subset=["ci_low"])
    if rows.empty:
        return None
    fig = Figure(figsize=(7, 0.9 + 0.3 * len(rows)))
    ax = fig.subplots()
    y = np.arange(len(rows))
    d = 100 * rows["item_delta"].to_numpy()
    err = [d - 100 * rows["ci_low"].to_numpy(), 100 * rows["ci_high"].to_numpy() - d]
    colours = ["#d62728" if r else ("#2ca02c" if lo > 0 else "#7f7f7f")
               for r, lo in zip(rows["regressed"], rows["ci_low"], strict=True)]
    err = np.clip(err, 0, None)
    for i, colour in enumerate(colours):
        ax.errorbar([d[i]], [y[i]], xerr=err[:, i : i + 1], fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="#999", lw=0.8, ls="--")
    ax.set_yticks(y, [f"{m} / {t}" for m, t in zip(rows["model"], rows["task"], strict=True)],
                  fontsize=8)
    ax.set(xlabel="per-item delta B - A (points, 95% CI)", title="Change between the two runs")
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)
