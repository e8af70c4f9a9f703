"""Local MMLU / C-Eval files: schema, layouts, and one clear error per malformed row."""

from __future__ import annotations

from pathlib import Path

import pytest

from iaa_eval.errors import DataError
from iaa_eval.tasks.text_data import (
    LoadReport,
    discover_subjects,
    load_subject,
    read_split,
    resolve_root,
)
from tests.conftest import shared_path
from tests.tasks.text_helpers import write_ceval, write_mmlu


def test_mmlu_layout_with_and_without_data_level(tmp_path: Path) -> None:
    write_mmlu(tmp_path / "flat", {"anatomy": 3, "virology": 2})
    write_mmlu(tmp_path / "nested" / "data", {"anatomy": 3})
    assert resolve_root(tmp_path / "flat", ("dev", "test")) == tmp_path / "flat"
    assert resolve_root(tmp_path / "nested", ("dev", "test")) == tmp_path / "nested" / "data"
    root = tmp_path / "flat"
    assert discover_subjects(root, "test") == ["anatomy", "virology"]
    data = load_subject(root, "mmlu", "anatomy", ("dev", "test"), "raise", LoadReport())
    assert data["dev"].num_rows == 5 and data["test"].num_rows == 3
    row = data["test"][0]
    assert set(row) == {"question", "subject", "choices", "answer"}
    assert row["subject"] == "anatomy" and len(row["choices"]) == 4 and row["answer"] in range(4)


def test_ceval_layout_header_and_optional_explanation(tmp_path: Path) -> None:
    root = write_ceval(tmp_path, {"accountant": 3})
    data = load_subject(root, "ceval", "accountant", ("dev", "val"), "raise", LoadReport())
    assert data["dev"][0]["explanation"] == "因为如此。" and data["val"][0]["explanation"] == ""
    assert data["val"][0]["answer"] in "ABCD" and data["val"].num_rows == 3


BAD_MMLU = [
    ("q,a,b,c,d,A\nq2,a,b,c,A\n", ":2: expected 6 columns (question,A,B,C,D,answer), found 5"),
    ("q,a,b,c,d,\n", ":1: answer '' is not one of A, B, C, D"),
    ("q,a,b,c,d,A\n\"multi\nline\",a,b,c,d,E\n", ":2: answer 'E' is not one of A, B, C, D"),
]


@pytest.mark.parametrize(("content", "message"), BAD_MMLU)
def test_malformed_mmlu_rows_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x_test.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_split(path, "mmlu", "x", "raise", LoadReport())
    assert str(err.value) == f"{path}{message}"


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x_test.csv"
    path.write_bytes(b"q,a,b,c,d,A\nq\xff,a,b,c,d,B\n")
    with pytest.raises(DataError, match=r"x_test.csv:2: not UTF-8"):
        read_split(path, "mmlu", "x", "raise", LoadReport())


def test_ceval_header_and_rows_checked(tmp_path: Path) -> None:
    path = tmp_path / "x_val.csv"
    path.write_text("id,question,A,B,C,D\n0,q,a,b,c,d\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x_val.csv:1: header lacks column\(s\) answer"):
        read_split(path, "ceval", "x", "raise", LoadReport())
    path.write_text("id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n1,q,a,b,c,d\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x_val.csv:3: expected 7 columns"):
        read_split(path, "ceval", "x", "raise", LoadReport())


def test_skip_counts_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "x_test.csv"
    path.write_text("q,a,b,c,d,A\nq,a,b,c,d,Z\nq,a,b\nq,a,b,c,d,D\n", encoding="utf-8")
    report = LoadReport()
    records = read_split(path, "mmlu", "x", "skip", report)
    assert len(records) == 2 and report.skipped == 2
    assert report.reasons[0].endswith(":2: answer 'Z' is not one of A, B, C, D")


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        resolve_root(tmp_path / "nope", ("dev", "test"))
    (tmp_path / "dev").mkdir()
    with pytest.raises(DataError, match=r"expected folders dev/, test/"):
        resolve_root(tmp_path, ("dev", "test"))
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=r"no \*_test.csv files; the task would be empty"):
        discover_subjects(tmp_path, "test")


def test_real_reference_files_read_cleanly() -> None:
    mmlu = resolve_root(shared_path("data", "mmlu", "original_layout"), ("dev", "test"))
    subjects = discover_subjects(mmlu, "test")
    assert len(subjects) == 57
    report = LoadReport()
    dev = sum(len(read_split(mmlu / "dev" / f"{s}_dev.csv", "mmlu", s, "raise", report)) for s in subjects)
    assert dev == 285
    ceval = resolve_root(shared_path("data", "ceval"), ("dev", "val"))
    names = discover_subjects(ceval, "val")
    val = sum(len(read_split(ceval / "val" / f"{s}_val.csv", "ceval", s, "raise", report)) for s in names)
    assert (len(names), val, report.skipped) == (52, 1346, 0)
