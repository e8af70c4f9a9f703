"""The paper-numbers loader refuses numbers without a table, unit or model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iaa_eval.errors import DataError
from iaa_eval.report.paper import DEFAULT_PATH, load_paper


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["numbers"][0].update(ref="Table 9"), "numbers[0].ref: 'Table 9' is not"),
        (lambda d: d["numbers"][0].update(unit="furlongs"), "numbers[0].unit: expected one of"),
        (lambda d: d["numbers"][0].pop("split"), "numbers[0]: missing key 'split'"),
        (lambda d: d["numbers"][0].update(model="GPT-9"), "numbers[0].model: 'GPT-9' missing"),
        (lambda d: d["not_found"][0].update(value=61.0), "not_found[0].value: expected null"),
    ],
)
def test_bad_paper_files(tmp_path: Path, change, message: str) -> None:
    data = json.loads(DEFAULT_PATH.read_text())
    change(data)
    path = tmp_path / "paper.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_paper(path)
    with pytest.raises(DataError, match="cannot read"):
        load_paper(tmp_path / "missing.json")
