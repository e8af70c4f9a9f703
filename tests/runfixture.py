"""A realistic run directory with seeded random per-item correctness, written by the real writers.

Used by the forgetting, report and gate tests: the numbers in results.json are computed from the
samples exactly as the tasks compute them (MME perception from acc + acc+ per subtask), so any
disagreement between analysis and results.json is a bug in the analysis. Import it as
``tests.runfixture`` (the tests folder is a package).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iaa_eval.rundir import SCHEMA_VERSION, SampleRecord, TaskResult, write_results, write_samples

XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_IMG = "<img src=x onerror=\"window.__pwned=2\">"
TEXT_SUBJECTS = {
    "mmlu": ["abstract_algebra", "anatomy", "astronomy", "world_religions"],
    "ceval": ["accountant", "law", "physician"],
}
MME_SUBTASKS = ["existence", "count", "position", "color", "OCR", "commonsense_reasoning"]
PERCEPTION = {"existence", "count", "position", "color", "OCR"}
PARAMS = {
    "base": {"total": 1_070_000, "bytes": 2_140_000, "text": 1_070_000, "text_bytes": 2_140_000},
    "llava": {"total": 1_400_000, "bytes": 2_800_000, "text": 1_070_000, "text_bytes": 2_140_000,
              "trainable": 1_330_000},
    "iaa": {"total": 1_950_000, "bytes": 3_900_000, "text": 1_070_000, "text_bytes": 2_140_000,
            "trainable": 550_000, "shared_with": "base"},
}


def _text_correct(rng: np.random.Generator, n_per_subject: int, subjects: list[str]) -> list[tuple[str, bool]]:
    items = []
    for subject in subjects:
        p = rng.uniform(0.45, 0.85)
        items += [(subject, bool(rng.random() < p)) for _ in range(n_per_subject)]
    return items


def _text_result(task: str, model: str, items: list[tuple[str, bool]], source: dict, payload: bool) -> TaskResult:
    samples = []
    for i, (subject, ok) in enumerate(items):
        response = ("B" if ok else "C") if not (payload and model == "llava" and i < 2) else (XSS_SCRIPT if i == 0 else XSS_IMG)
        samples.append(SampleRecord(
            doc_id=f"{task}/{subject}/{i}", prompt=f"Question {i} about {subject}? <b>bold</b> & more", target="B",
            response=response, correct=ok, group=subject,
        ))
    groups = {}
    for subject in dict.fromkeys(s for s, _ in items):
        oks = [ok for s, ok in items if s == subject]
        groups[subject] = {"acc": float(np.mean(oks)), "n": len(oks)}
    acc = float(np.mean([ok for _, ok in items]))
    return TaskResult(task, {"acc": acc, "acc_macro": float(np.mean([g["acc"] for g in groups.values()]))}, "acc",
                      len(items), groups=groups, task_config=dict(source), samples=samples)


def _mme_result(model: str, correct: np.ndarray, source: dict, blind: bool) -> TaskResult:
    samples, groups, per_task = [], {}, len(correct) // len(MME_SUBTASKS)
    for t, sub in enumerate(MME_SUBTASKS):
        oks = correct[t * per_task:(t + 1) * per_task]
        for i, ok in enumerate(oks):
            samples.append(SampleRecord(f"mme/{sub}/{i // 2}.png#{i % 2}", f"Is there a {sub}? Please answer yes or no.",
                                        "Yes", "Yes" if ok else "No", bool(ok), group=sub))
        acc, acc_plus = float(oks.mean()), float(oks.reshape(-1, 2).all(axis=1).mean())
        groups[sub] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * (acc + acc_plus), "n": len(oks)}
    perception = sum(g["score"] for s, g in groups.items() if s in PERCEPTION)
    cognition = sum(g["score"] for s, g in groups.items() if s not in PERCEPTION)
    return TaskResult("mme", {"perception": perception, "cognition": cognition}, "perception", len(samples),
                      groups=groups, blind=blind, task_config=dict(source), samples=samples)


def _mean_task(task: str, metric: str, values: np.ndarray, source: dict, blind: bool) -> TaskResult:
    samples = [SampleRecord(f"{task}/{i}", f"<image> Question {i}", "A", "A" if v >= 1 else "B", bool(v >= 1),
                            score=float(v) if metric == "accuracy" else None) for i, v in enumerate(values)]
    return TaskResult(task, {metric: float(values.mean())}, metric, len(values), blind=blind,
                      task_config=dict(source), samples=samples)


def _source(task: str, real: bool) -> dict:
    if real:
        return {"num_fewshot": 5, "formulation": "letter", "data_dir": None, "dataset": task}
    return {"num_fewshot": 0, "formulation": "cloze", "data_dir": f"/repo/iaa_eval/miniworld/assets/data/{task}"}


def make_run(
    run_dir: Path, seed: int = 0, llava_flip: float = 0.15, iaa_flips: int = 0, real: bool = False,
    payload: bool = True, n_text: int = 40, n_mm: int = 120, with_samples: bool = True, mm_shift: float = 0.0,
) -> Path:
    """Write ``run_dir`` with base (hf), llava and iaa on mmlu, ceval, mme, mmbench_en, vqav2.

    Args:
        llava_flip: chance that LLaVA flips an item the base got right (forgetting).
        iaa_flips: items IAA flips vs the base (0 = its text results are the base's, as designed).
        real: task_config says hub datasets (real benchmarks) instead of mini-world files.
        payload: put XSS payloads in two LLaVA responses.
        mm_shift: added to the multimodal success probability of llava and iaa (a later "better" run).
    """
    rng = np.random.default_rng(seed)
    results: dict[str, dict] = {"base": {}, "llava": {}, "iaa": {}}
    for task, subjects in TEXT_SUBJECTS.items():
        base_items = _text_correct(rng, n_text, subjects)
        llava_items = [(s, ok and rng.random() >= llava_flip or (not ok and rng.random() < 0.03)) for s, ok in base_items]
        if payload:  # the payload items are regressions, so the report's sample browser shows them
            base_items[:2] = [(s, True) for s, _ in base_items[:2]]
            llava_items[:2] = [(s, False) for s, _ in llava_items[:2]]
        iaa_items = [(s, (not ok) if i < iaa_flips else ok) for i, (s, ok) in enumerate(base_items)]
        for model, items in (("base", base_items), ("llava", llava_items), ("iaa", iaa_items)):
            result = _text_result(task, model, items, _source(task, real), payload)
            if model == "iaa" and iaa_flips == 0:
                result.task_config["shared_with"] = "base"
            results[model][task] = result
    for model, p in (("base", 0.35), ("llava", 0.7 + mm_shift), ("iaa", 0.75 + mm_shift)):
        blind = model == "base"
        results[model]["mme"] = _mme_result(model, rng.random(n_mm) < p, _source("mme", real), blind)
        results[model]["mmbench_en"] = _mean_task("mmbench_en", "circular_acc", (rng.random(n_mm) < p - 0.1).astype(float),
                                                  _source("mmbench_en", real), blind)
        # the real task also reports single-pass accuracy (every rotation counted on its own)
        results[model]["mmbench_en"].metrics["vanilla_acc"] = min(1.0, results[model]["mmbench_en"].metrics[
            "circular_acc"] + 0.15)
        vqa = np.clip(np.round(rng.random(n_mm) * (0.6 + p), 1), 0, 1)
        results[model]["vqav2"] = _mean_task("vqav2", "accuracy", vqa, _source("vqav2", real), blind)
    for tasks in results.values():
        for task, result in tasks.items():
            result.modality = "text" if task in TEXT_SUBJECTS else "image"
            result.source = f"hub:{task}" if real else f"miniworld:data/{task}"
    text_fp = "fp-base-text"
    data = {
        "schema_version": SCHEMA_VERSION, "run_id": run_dir.name,
        "created": "2026-01-01T00:00:00+00:00",
        "config": {"suite": "forgetting", "log_samples": with_samples,
                   "tasks": [{"name": t, "options": {"data_dir": _source(t, real)["data_dir"]}} for t in results["base"]]},
        "versions": {"iaa_eval": "0.1.0", "python": "3.11"},
        "models": {
            "base": {"kind": "hf", "path": "miniworld:base", "fingerprints": {"text": text_fp}, "parameters": PARAMS["base"]},
            "llava": {"kind": "llava", "path": "miniworld:llava", "fingerprints": {"text": "fp-llava-text", "mm": "fp-llava-mm"},
                      "parameters": PARAMS["llava"]},
            "iaa": {"kind": "iaa", "path": "miniworld:iaa", "fingerprints": {"text": text_fp if iaa_flips == 0 else "fp-x",
                                                                             "mm": "fp-iaa-mm"},
                    "parameters": PARAMS["iaa"] if iaa_flips == 0 else {**PARAMS["iaa"], "shared_with": None}},
        },
        "results": {m: {t: r.to_json() for t, r in tasks.items()} for m, tasks in results.items()},
        "wall_s": 12.5,
    }
    write_results(run_dir, data)
    if with_samples:
        for model, tasks in results.items():
            for result in tasks.values():
                write_samples(run_dir, model, result)
    return run_dir
