"""What multimodal training cost (text forgetting) and bought (multimodal gain), as DataFrames.

Every comparison is *paired*: a model and the base are compared on the same items (``doc_id``),
with a percentile bootstrap CI of the mean difference and an exact McNemar test
(:mod:`iaa_eval.metrics.stats`). Scores in the tables are in the metric's own units (fractions in
[0, 1] for accuracies, points for MME); the report turns fractions into percent.

Tables of :class:`Analysis` (one row per key; NaN where a number cannot be had, e.g. no samples):

``scores`` (model, task): model, kind, task, modality, source, metric, score (results.json),
    n, blind, item_mean, item_low, item_high (bootstrap CI of the per-item mean),
    item_metric (True when the primary metric *is* the per-item mean, so the CI applies to it).
``text`` (model, task; text tasks, every model but the base): model, kind, task, metric,
    base_score, score, delta_score (score - base_score), delta (the paired per-item mean difference
    over n_paired items; equals delta_score when the primary metric is a per-item mean and every
    item pairs; delta_score when there are no samples), ci_low, ci_high,
    n_paired, right_to_wrong, wrong_to_right, mcnemar_p, retention (score / base_score),
    shared_with (task_config.shared_with: the results are another model's, e.g. IAA's = base's).
``subjects`` (model, task, subject): model, kind, task, subject, n_paired, base_score, score,
    delta, ci_low, ci_high, right_to_wrong, wrong_to_right, mcnemar_p, p_bh (Benjamini-Hochberg
    over the subjects of one model and task).
``gain`` (model, task; image tasks, models that see images): model, kind, task, metric, score,
    blind_score (the base's score: its blind floor when blind_is_blind), blind_is_blind,
    gain (score - blind_score), gain_low, gain_high (paired CI, only when item_metric), item_gain,
    item_gain_low, item_gain_high (paired CI of the per-item accuracy gain, always when samples
    exist), n_paired.
``retention`` (model; every model, the base included): model, kind, text_delta (mean over text
    tasks of ``text.delta``), text_delta_low, text_delta_high (bootstrap of that mean), retention
    (mean over text tasks of score / base score), min_retention, flips (right_to_wrong summed).
``deployment`` (one row per way to serve text *and* images): option, weight_sets, n_weight_sets,
    params, bytes, text_from, text_retention, images_from.

Deployment cost reads ``models[<name>]["parameters"]`` of results.json::

    {"total": int,          # parameters of every distinct tensor the model needs to serve all its
                            # workflows (text + images: LM, vision tower, projector, inserted
                            # layers); a tensor shared between workflows counts once
     "bytes": int,          # bytes of those tensors (parameters + persistent buffers) as served
     "text": int?, "text_bytes": int?,   # the text view alone (shown, not needed)
     "trainable": int?,     # parameters updated by multimodal training (shown, not needed)
     "shared_with": str?}   # another model of the run whose weights this one contains unchanged
                            # (IAA: "base"); absent -> inferred from equal text fingerprints

Serving text at the base's quality plus images needs the base's weights and the multimodal
model's, unless the multimodal model contains the base's weights (IAA): then it alone suffices.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iaa_eval.errors import UsageError
from iaa_eval.metrics import stats
from iaa_eval.rundir import Items, RunData, atomic_write_text, pair

log = logging.getLogger(__name__)
NAN = float("nan")
TABLES = ("scores", "text", "subjects", "gain", "retention", "deployment")


@dataclass
class Analysis:
    """The forgetting analysis of one run (see the module docstring for every column)."""

    run_id: str
    base: str
    scores: pd.DataFrame
    text: pd.DataFrame
    subjects: pd.DataFrame
    gain: pd.DataFrame
    retention: pd.DataFrame
    deployment: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Name -> DataFrame, in a stable order."""
        return {name: getattr(self, name) for name in TABLES}


def _seed(seed: int, *key: str) -> int:
    """A reproducible, distinct seed per comparison, so tasks do not share resample streams."""
    return (seed + zlib.crc32("/".join(key).encode())) % 2**32


def _paired_row(a: Items, b: Items, resamples: int, seed: int) -> dict[str, Any]:
    if not a.doc_ids:
        return {"n_paired": 0}
    ci = stats.paired_bootstrap(a.value, b.value, resamples=resamples, seed=seed)
    test = stats.mcnemar_exact(a.correct, b.correct)
    return {
        "n_paired": ci.n, "delta": ci.delta, "ci_low": ci.low, "ci_high": ci.high,
        "right_to_wrong": test.right_to_wrong, "wrong_to_right": test.wrong_to_right,
        "mcnemar_p": test.p_value,
    }


def _scores(run: RunData, resamples: int, seed: int) -> pd.DataFrame:
    rows = []
    for model in run.models:
        for task in run.tasks(model):
            entry = run.result(model, task) or {}
            row = {
                "model": model, "kind": run.kind(model), "task": task,
                "modality": run.modality(task), "source": run.source(task),
                "metric": entry["primary"], "score": run.score(model, task), "n": entry.get("n", 0),
                "blind": bool(entry.get("blind", False)), "item_mean": NAN, "item_low": NAN,
                "item_high": NAN, "item_metric": False,
            }
            items = run.items(model, task)
            if items is not None and items.value.size:
                ci = stats.mean_ci(items.value, resamples=resamples, seed=_seed(seed, model, task))
                row.update(item_mean=ci.delta, item_low=ci.low, item_high=ci.high)
                row["item_metric"] = math.isclose(ci.delta, row["score"], rel_tol=1e-6,
                                                  abs_tol=1e-9)
            rows.append(row)
    return pd.DataFrame(rows)


def _text(run: RunData, base: str, text_tasks: list[str], resamples: int,
          seed: int) -> tuple[pd.DataFrame, dict]:
    rows, replicates = [], {}
    for model in run.models:
        if model == base:
            continue
        for task in text_tasks:
            entry = run.result(model, task)
            if entry is None or run.result(base, task) is None:
                continue
            base_score, score = run.score(base, task), run.score(model, task)
            row = {"model": model, "kind": run.kind(model), "task": task,
                   "metric": entry["primary"], "base_score": base_score, "score": score,
                   "delta": score - base_score, "delta_score": score - base_score,
                   "retention": score / base_score if base_score else NAN,
                   "shared_with": entry.get("task_config", {}).get("shared_with")}
            a, b = run.items(base, task), run.items(model, task)
            if a is not None and b is not None:
                a, b = pair(a, b)
                s = _seed(seed, model, task)
                row.update(_paired_row(a, b, resamples, s))
                replicates[(model, task)] = stats.bootstrap_means(b.value - a.value, resamples, s)
            rows.append(row)
    return pd.DataFrame(rows), replicates


def _subjects(run: RunData, base: str, text_tasks: list[str], resamples: int,
              seed: int) -> pd.DataFrame:
    frames = []
    for model in run.models:
        if model == base:
            continue
        for task in text_tasks:
            a, b = run.items(base, task), run.items(model, task)
            if a is None or b is None:
                continue
            a, b = pair(a, b)
            rows = []
            for subject in sorted({g for g in a.group if g is not None}):
                idx = [d for d, g in zip(a.doc_ids, a.group, strict=True) if g == subject]
                sa, sb = a.select(idx), b.select(idx)
                row = {"model": model, "kind": run.kind(model), "task": task, "subject": subject,
                       "base_score": float(sa.value.mean()), "score": float(sb.value.mean())}
                row.update(_paired_row(sa, sb, resamples, _seed(seed, model, task, subject)))
                rows.append(row)
            if rows:
                frame = pd.DataFrame(rows)
                frame["p_bh"] = stats.benjamini_hochberg(frame["mcnemar_p"].to_numpy())
                frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _gain(run: RunData, base: str, scores: pd.DataFrame, image_tasks: list[str], resamples: int,
          seed: int) -> pd.DataFrame:
    rows = []
    item_metric = {(r.model, r.task): bool(r.item_metric) for r in scores.itertuples()}
    for model in run.models:
        for task in image_tasks:
            entry, floor = run.result(model, task), run.result(base, task)
            if entry is None or floor is None or entry.get("blind"):
                continue
            row = {"model": model, "kind": run.kind(model), "task": task,
                   "metric": entry["primary"], "score": run.score(model, task),
                   "blind_score": run.score(base, task, entry["primary"]), "gain": NAN,
                   "blind_is_blind": bool(floor.get("blind")), "gain_low": NAN, "gain_high": NAN,
                   "item_gain": NAN, "item_gain_low": NAN, "item_gain_high": NAN, "n_paired": 0}
            row["gain"] = row["score"] - row["blind_score"]
            a, b = run.items(base, task), run.items(model, task)
            if a is not None and b is not None:
                a, b = pair(a, b)
                if a.doc_ids:
                    ci = stats.paired_bootstrap(a.value, b.value, resamples,
                                                seed=_seed(seed, model, task))
                    row.update(item_gain=ci.delta, item_gain_low=ci.low, item_gain_high=ci.high,
                               n_paired=ci.n)
                    if item_metric.get((model, task)) and item_metric.get((base, task)):
                        row.update(gain_low=ci.low, gain_high=ci.high)
            rows.append(row)
    return pd.DataFrame(rows)


def _retention(run: RunData, base: str, text: pd.DataFrame, replicates: dict,
               confidence: float) -> pd.DataFrame:
    rows = [{"model": base, "kind": run.kind(base), "text_delta": 0.0, "text_delta_low": 0.0,
             "text_delta_high": 0.0, "retention": 1.0, "min_retention": 1.0, "flips": 0}]
    for model in [m for m in run.models if m != base]:
        sub = text[text["model"] == model] if not text.empty else text
        if sub.empty:
            continue
        reps = [replicates[(model, t)] for t in sub["task"] if (model, t) in replicates]
        low, high = (stats.percentile_interval(np.mean(reps, axis=0), confidence) if reps
                     else (NAN, NAN))
        flips = sub["right_to_wrong"].sum() if "right_to_wrong" in sub else NAN
        rows.append({"model": model, "kind": run.kind(model),
                     "text_delta": float(sub["delta"].mean()), "text_delta_low": low,
                     "text_delta_high": high, "retention": float(sub["retention"].mean()),
                     "min_retention": float(sub["retention"].min()), "flips": flips})
    return pd.DataFrame(rows)


def deployment_cost(run: RunData, base: str, retention: pd.DataFrame) -> pd.DataFrame:
    """Distinct weight sets (and their parameters and bytes) needed to serve text + images."""
    params = {m: run.models[m].get("parameters") or {} for m in run.models}
    missing = [m for m, p in params.items() if not {"total", "bytes"} <= set(p)]
    if missing:
        log.warning("no parameters.total/bytes for %s: deployment table left empty",
                    ", ".join(missing))
        return pd.DataFrame()
    kept = (dict(zip(retention["model"], retention["retention"], strict=True))
            if not retention.empty else {})
    rows = []
    for model in run.models:
        fps = run.models[model].get("fingerprints", {})
        if model == base or "mm" not in fps:
            continue
        options = [[model]] if run.contains_weights_of(model, base) else [[base, model], [model]]
        for sets in options:
            text_from = base if base in sets else model
            rows.append({"option": " + ".join(sets) if len(sets) > 1 else f"{model} alone",
                         "weight_sets": sets, "n_weight_sets": len(sets),
                         "params": sum(int(params[m]["total"]) for m in sets),
                         "bytes": sum(int(params[m]["bytes"]) for m in sets),
                         "text_from": text_from,
                         "text_retention": 1.0 if text_from == base else kept.get(model, NAN),
                         "images_from": model})
    return pd.DataFrame(rows)


def analyse(run_dir: Path | str | RunData, resamples: int = stats.DEFAULT_RESAMPLES,
            seed: int = stats.DEFAULT_SEED, confidence: float = 0.95) -> Analysis:
    """Forgetting vs gain of every model against the run's base model.

    Args:
        run_dir: a run directory (results.json, samples/).
        resamples: bootstrap replicates per comparison (>= 1000).
        seed: base seed; each comparison derives its own from it, so results are reproducible.
        confidence: CI coverage.
    """
    if resamples < 1000:
        raise UsageError(f"--resamples {resamples}: use at least 1000 for a 95% interval")
    run = run_dir if isinstance(run_dir, RunData) else RunData(run_dir)
    base = run.base_model()
    tasks = run.tasks()
    text_tasks = [t for t in tasks if run.modality(t) == "text"]
    image_tasks = [t for t in tasks if run.modality(t) == "image"]
    scores = _scores(run, resamples, seed)
    text, replicates = _text(run, base, text_tasks, resamples, seed)
    retention = _retention(run, base, text, replicates, confidence)
    return Analysis(
        run_id=run.run_id, base=base, scores=scores, text=text,
        subjects=_subjects(run, base, text_tasks, resamples, seed),
        gain=_gain(run, base, scores, image_tasks, resamples, seed), retention=retention,
        deployment=deployment_cost(run, base, retention),
        meta={"run_id": run.run_id, "base": base, "text_tasks": text_tasks,
              "image_tasks": image_tasks, "sources": {t: run.source(t) for t in tasks},
              "resamples": resamples, "seed": seed, "confidence": confidence},
    )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: NaN -> null, numpy scalars -> Python."""
    out = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and math.isnan(value):
                value = None
            clean[str(key)] = value
        out.append(clean)
    return out


def export(analysis: Analysis, fmt: str, out: Path | str) -> list[Path]:
    """Write the tables as ``<out>/<table>.csv`` (fmt ``csv``) or one ``<out>/analysis.json``."""
    out = Path(out)
    if fmt == "csv":
        paths = []
        for name, frame in analysis.tables().items():
            paths.append(out / f"{name}.csv")
            atomic_write_text(paths[-1], frame.to_csv(index=False))
        return paths
    if fmt == "json":
        payload = {"meta": analysis.meta, **{n: _records(f) for n, f in analysis.tables().items()}}
        path = out / "analysis.json"
        atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        return [path]
    raise UsageError(f"--format {fmt!r}: expected 'csv' or 'json'")


def compare_runs(run_a: Path | str | RunData, run_b: Path | str | RunData,
                 resamples: int = stats.DEFAULT_RESAMPLES,
                 seed: int = stats.DEFAULT_SEED) -> pd.DataFrame:
    """Every (model, task) in both runs: score_a, score_b, delta (b - a), paired CI, regressed.

    Columns: model, task, metric, score_a, score_b, delta, item_delta, ci_low, ci_high, n_paired,
    right_to_wrong, wrong_to_right, mcnemar_p, item_metric, regressed (CI entirely below 0).
    """
    a = run_a if isinstance(run_a, RunData) else RunData(run_a)
    b = run_b if isinstance(run_b, RunData) else RunData(run_b)
    rows = []
    for model in [m for m in b.models if m in a.models]:
        for task in [t for t in b.tasks(model) if a.result(model, t) is not None]:
            metric = b.result(model, task)["primary"]
            row = {"model": model, "task": task, "metric": metric,
                   "score_a": a.score(model, task, metric), "score_b": b.score(model, task, metric),
                   "item_delta": NAN, "ci_low": NAN, "ci_high": NAN, "n_paired": 0,
                   "item_metric": False}
            row["delta"] = row["score_b"] - row["score_a"]
            ia, ib = a.items(model, task), b.items(model, task)
            if ia is not None and ib is not None:
                pa, pb = pair(ia, ib)
                paired = _paired_row(pa, pb, resamples, _seed(seed, model, task))
                paired["item_delta"] = paired.pop("delta", NAN)
                row.update(paired)
                row["item_metric"] = bool(
                    math.isclose(float(ia.value.mean()), row["score_a"], rel_tol=1e-6, abs_tol=1e-9)
                    and math.isclose(float(ib.value.mean()), row["score_b"], rel_tol=1e-6,
                                     abs_tol=1e-9))
            row["regressed"] = bool(row["ci_high"] < 0) if not math.isnan(row["ci_high"]) else False
            rows.append(row)
    return pd.DataFrame(rows)
