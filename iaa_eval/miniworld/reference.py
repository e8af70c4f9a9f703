"""The mini-world's reference results (``iaa_eval/data/baselines/miniworld.json``): what the
shipped trio scores.

Written from a real run of the forgetting suite (``write_reference``), so the README's numbers and
the CI check that a fresh run reproduces them come from the harness itself, never typed by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iaa_eval import config
from iaa_eval.resources import MINIWORLD_REFERENCE as REFERENCE
from iaa_eval.rundir import atomic_write_text, read_results


@dataclass(frozen=True)
class ReferenceFile:
    """The shape of the file (what :func:`summarise` writes); rows are pandas records."""

    source: str
    manifest_sha256: str | None
    scores: dict[str, dict[str, dict[str, float]]]  # model -> task -> metric -> value
    text_forgetting: tuple[dict[str, Any], ...]
    multimodal_gain: tuple[dict[str, Any], ...]


def summarise(run_dir: Path | str) -> dict[str, Any]:
    """Scores of every model and task, text forgetting (Δ, CI, McNemar, flips) and multimodal
    gain."""
    import hashlib

    from iaa_eval.forgetting import analyse
    from iaa_eval.miniworld import ASSETS

    data = read_results(Path(run_dir))
    analysis = analyse(run_dir)
    scores = {model: {task: {k: round(v, 6) for k, v in entry["metrics"].items()}
                      for task, entry in tasks.items()}
              for model, tasks in data["results"].items()}
    text = analysis.text[["model", "task", "base_score", "score", "delta", "ci_low", "ci_high",
                          "right_to_wrong", "wrong_to_right", "mcnemar_p"]]
    gain = analysis.gain[["model", "task", "metric", "score", "blind_score", "item_gain"]]
    manifest = ASSETS / "manifest.json"
    return {
        "source": "iaa-eval run --suite forgetting (the shipped mini-world trio), analysed by "
                  "iaa_eval.forgetting",
        "manifest_sha256": (hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists()
                            else None),
        "scores": scores,
        "text_forgetting": json.loads(text.round(6).to_json(orient="records")),
        "multimodal_gain": json.loads(gain.round(6).to_json(orient="records")),
    }


def write_reference(run_dir: Path | str, path: Path = REFERENCE) -> Path:
    """Write the summary of ``run_dir`` as the reference."""
    atomic_write_text(path, json.dumps(summarise(run_dir), indent=1, ensure_ascii=False) + "\n")
    return path


def load_reference(path: Path = REFERENCE) -> dict[str, Any]:
    """The reference file, checked as a :class:`ReferenceFile` and returned as the mapping
    :func:`summarise` makes, so that a fresh summary compares with it directly."""
    data = config.read(path)
    config.parse(ReferenceFile, data, str(path))
    return data
