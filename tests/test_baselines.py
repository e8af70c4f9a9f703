"""Every shipped file under iaa_eval/data/baselines/ is parsed into its typed form (and the count
is asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iaa_eval import resources
from iaa_eval.gate import GateThresholds, load_thresholds
from iaa_eval.miniworld.reference import load_reference
from iaa_eval.pairing import load_pairs
from iaa_eval.report.paper import PaperBaselines, load_paper
from iaa_eval.report.reference_points import load_reference_points

BASELINES = resources.BASELINES
FILES = sorted(p for p in BASELINES.rglob("*") if p.is_file())
LOADERS = {
    "gate.yaml": (load_thresholds, GateThresholds),
    "iaa_paper.json": (load_paper, PaperBaselines),
    "miniworld.json": (load_reference, dict),
    "vlm_pairs.yaml": (load_pairs, tuple),
    "reference_points.yaml": (load_reference_points, tuple),
}


def test_count() -> None:
    assert len(FILES) == 5, [p.name for p in FILES]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_file_loads(path: Path) -> None:
    loader, cls = LOADERS[path.name]
    assert isinstance(loader(path), cls)


def test_paper_numbers_carry_their_tables() -> None:
    paper = load_paper(BASELINES / "iaa_paper.json")
    assert len(paper.numbers) == 55 + 64  # Table 2 cells reported + Table 4 (8 models x 8 splits)
    iaa14 = {(n.task, n.split): n for n in paper.numbers if n.model == "IAA-14"}
    assert iaa14[("mme", "MME perception")].value == 1591.5 and iaa14[("mme", "MME perception")].ref == "Table 2"
    assert iaa14[("mmbench_en", "MMBench-EN test split")].native == pytest.approx(0.749)
    assert iaa14[("refcoco", "RefCOCO+ testB")].value == 76.7 and iaa14[("refcoco", "RefCOCO+ testB")].ref == "Table 4"
    assert {n.model for n in paper.for_task("mme")} >= {"IAA-8\u2020", "IAA-8", "IAA-14", "LLaVA-Llama3"}
    text = {e.task for e in paper.not_found if e.ref == "NOT FOUND"}
    assert {"mmlu", "ceval"} <= text  # the paper's text numbers were not reachable: none invented
    assert not paper.for_task("mmlu") and not paper.for_task("ceval")
