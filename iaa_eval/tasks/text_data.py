"""Local MMLU and C-Eval files in their original layouts, read into the hub datasets' schemas.

MMLU ships header-less CSVs (``question,A,B,C,D,answer``) as
``<dir>/{dev,val,test}/<subject>_<split>.csv`` (optionally under an extra ``data/`` level); C-Eval
ships CSVs with a header (``id,question,A,B,C,D,answer[,explanation]``). Rows become the records
lm-eval's task YAMLs expect from ``cais/mmlu`` (``question, subject, choices, answer:int``) and
``ceval/ceval-exam`` (its own columns), so the same prompt templates serve hub and local data.

A malformed row (wrong column count, blank or invalid answer, bytes that are not UTF-8) raises
:class:`DataError` naming the file and line, or, with ``on_error="skip"``, is counted and reported.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iaa_eval.errors import DataError

LETTERS = ("A", "B", "C", "D")
SPLITS = ("dev", "val", "test")
_CEVAL_REQUIRED = ("id", "question", "A", "B", "C", "D", "answer")


@dataclass
class LoadReport:
    """Rows kept and rows skipped while reading local files (``on_error="skip"``)."""

    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        """Record one skipped row."""
        self.skipped += 1
        self.reasons.append(reason)


def resolve_root(data_dir: Path, splits: tuple[str, ...]) -> Path:
    """The folder holding ``dev/`` and the evaluation split: ``data_dir`` itself or
    ``data_dir/data``."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir}: no such directory")
    for root in (data_dir, data_dir / "data"):
        if all((root / split).is_dir() for split in splits):
            return root
    wanted = ", ".join(f"{s}/" for s in splits)
    raise DataError(f"--data-dir {data_dir}: expected folders {wanted} (or data/{splits[0]}/ ...) "
                    "in the original layout")


def discover_subjects(root: Path, eval_split: str) -> list[str]:
    """Subjects with a ``<subject>_<eval_split>.csv`` file, sorted."""
    suffix = f"_{eval_split}.csv"
    subjects = sorted(p.name[: -len(suffix)] for p in (root / eval_split).glob(f"*{suffix}"))
    if not subjects:
        raise DataError(f"{root / eval_split}: no *{suffix} files; the task would be empty")
    return subjects


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """CSV rows with their 1-based line numbers (quoted fields may span lines)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    line = 1
    try:
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({exc})") from exc
    return [(n, r) for n, r in rows if r]


def _mmlu_record(path: Path, line: int, row: list[str], subject: str) -> dict[str, Any]:
    if len(row) != 6:
        raise DataError(f"{path}:{line}: expected 6 columns (question,A,B,C,D,answer), found "
                        f"{len(row)}")
    answer = row[5].strip()
    if answer not in LETTERS:
        raise DataError(f"{path}:{line}: answer {answer!r} is not one of A, B, C, D")
    return {"question": row[0], "subject": subject, "choices": row[1:5],
            "answer": LETTERS.index(answer)}


def _ceval_record(path: Path, line: int, row: list[str], header: list[str]) -> dict[str, Any]:
    if len(row) != len(header):
        raise DataError(f"{path}:{line}: expected {len(header)} columns ({','.join(header)}), "
                        f"found {len(row)}")
    record = dict(zip(header, row, strict=True))
    answer = record["answer"].strip()
    if answer not in LETTERS:
        raise DataError(f"{path}:{line}: answer {answer!r} is not one of A, B, C, D")
    return {
        "id": int(record["id"]) if record["id"].strip().isdigit() else line,
        "question": record["question"],
        **{letter: record[letter] for letter in LETTERS},
        "answer": answer,
        "explanation": record.get("explanation", ""),
    }


def read_split(path: Path, layout: str, subject: str, on_error: str,
               report: LoadReport) -> list[dict[str, Any]]:
    """Records of one CSV file; ``layout`` is ``"mmlu"`` (no header) or ``"ceval"`` (header)."""
    if not path.is_file():
        raise DataError(f"{path}: missing (every subject needs dev and evaluation files)")
    rows = _read_rows(path)
    header: list[str] = []
    if layout == "ceval":
        if not rows:
            raise DataError(f"{path}: empty file (expected a header {','.join(_CEVAL_REQUIRED)})")
        header = [h.strip() for h in rows.pop(0)[1]]
        missing = [c for c in _CEVAL_REQUIRED if c not in header]
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
    records = []
    for line, row in rows:
        try:
            if layout == "mmlu":
                records.append(_mmlu_record(path, line, row, subject))
            else:
                records.append(_ceval_record(path, line, row, header))
        except DataError as exc:
            if on_error != "skip":
                raise
            report.skip(str(exc))
    return records


def load_subject(
    root: Path, layout: str, subject: str, splits: tuple[str, ...], on_error: str,
    report: LoadReport,
) -> Any:
    """A ``datasets.DatasetDict`` with one split per name in ``splits``."""
    import datasets

    parts = {}
    for split in splits:
        records = read_split(root / split / f"{subject}_{split}.csv", layout, subject, on_error,
                             report)
        if not records:
            raise DataError(f"{root / split / f'{subject}_{split}.csv'}: no usable rows")
        parts[split] = datasets.Dataset.from_list(records)
    return datasets.DatasetDict(parts)
