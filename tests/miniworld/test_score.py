"""The mini-world's quick text check, now on the harness's scoring engine, reproduces the numbers
its manifest recorded when the shipped trio was built (with the former right-padded scorer)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("iaa_eval.models.iaa.modeling")

from iaa_eval.miniworld import ASSETS, build, measure  # noqa: E402


def test_text_results_reproduce_the_manifest() -> None:
    manifest = json.loads((ASSETS / "manifest.json").read_text())
    text = measure.text_results(measure._adapters(ASSETS), seed=manifest["seed"])
    got = build.manifest_metrics({"text": text})
    assert got == {k: manifest["metrics"][k] for k in got}
    assert set(got) == {k for k in manifest["metrics"] if k.startswith(("mmlu_", "ceval_"))}
