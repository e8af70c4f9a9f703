"""MMBench task: dev TSV (EN, CN), circular passes from the file or generated, validation, llava end to end."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from iaa_eval.errors import DataError
from iaa_eval.tasks.mmbench import MMBENCH_CN, MMBENCH_EN, make_prompt
from tests.conftest import shared_path
from tests.tasks.conftest import Recorder, fake_context, write_mmbench


def oracle(answers: dict[str, str]) -> Recorder:
    """Answers each prompt with the right letter (prompt -> letter)."""
    return Recorder(lambda r: f"The answer is {answers[r.prompt]}.")


def test_prompt_layout() -> None:
    prompt = make_prompt("What colour?", "A hint.", {"A": "red", "B": "blue"}, "en")
    assert prompt == "A hint.\nWhat colour?\nA. red\nB. blue\nAnswer with the option's letter from the given choices directly."
    assert make_prompt("颜色？", "", {"A": "红", "B": "蓝"}, "cn").endswith("\nB. 蓝\n请直接回答选项字母。")


@pytest.mark.parametrize("copies", [False, True])
def test_generated_and_published_rotations_agree(tmp_path: Path, copies: bool) -> None:
    data = write_mmbench(tmp_path / "mmbench_dev_en.tsv", "en", copies=copies)
    seen = Recorder(lambda r: "A")
    result = MMBENCH_EN.run(fake_context(seen, data))
    # question 0: 4 options, the last ("None of these options") pinned -> 3 passes; 2 + 3 for the others
    assert result.n == 8 and result.metrics["vanilla_acc"] == pytest.approx(2 / 3)
    assert [s.doc_id for s in result.samples][:3] == ["0", "1000000", "2000000"]
    assert result.metrics["circular_acc"] == 0.0  # always "A" never survives the rotations
    assert result.samples[1].target == "C" and "A. triangle\nB. circle\nC. rectangle\nD. None" in result.samples[1].prompt
    assert len({r.image_key for r in seen.requests[:3]}) == 1  # the copies share the original's image


def test_circular_scoring_and_groups(tmp_path: Path) -> None:
    data = write_mmbench(tmp_path / "dev.tsv", "en")
    answers: dict[str, str] = {}
    probe = Recorder(lambda r: "A")
    for s in MMBENCH_EN.run(fake_context(probe, data)).samples:
        answers[s.prompt] = s.target
    wrong_once = dict(answers)
    wrong_once[next(p for p in answers if "How many" in p)] = "Z"  # one pass of question 2 wrong
    result = MMBENCH_EN.run(fake_context(oracle(wrong_once), data))
    assert result.metrics == {"circular_acc": pytest.approx(2 / 3), "vanilla_acc": pytest.approx(2 / 3)}
    assert result.groups["category/count"]["circular_acc"] == 0.0
    assert result.groups["l2_category/fine-grained_perception"] == {"circular_acc": 0.5, "vanilla_acc": 0.5, "n": 2}
    assert result.primary == "circular_acc"
    assert [s.extra["extracted"] for s in result.samples if not s.correct] == [None]  # "Z" is no option


def test_cn_and_folder_lookup(tmp_path: Path) -> None:
    write_mmbench(tmp_path / "mmbench_dev_cn_20231003.tsv", "cn")
    write_mmbench(tmp_path / "mmbench_dev_en_20231003.tsv", "en")
    result = MMBENCH_CN.run(fake_context(Recorder(lambda r: "答案：B"), tmp_path, limit=1))
    assert result.n == 3 and result.samples[0].prompt.startswith("图中是什么形状？\nA. 圆形")
    assert result.metrics["vanilla_acc"] == 1.0 and result.task_config["instruction"] == "请直接回答选项字母。"
    (tmp_path / "other.tsv").write_text("x")
    with pytest.raises(DataError, match="expected one MMBench EN .tsv"):
        MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), tmp_path / "missing"))


def test_blind(tmp_path: Path) -> None:
    seen = Recorder(lambda r: "B")
    result = MMBENCH_EN.run(fake_context(seen, write_mmbench(tmp_path / "d.tsv", "en"), blind=True))
    assert result.blind and all(r.image is None for r in seen.requests)


BAD_ROWS = [
    ({"index": "7", "question": "q", "A": "x", "B": "y", "answer": "", "image": "AAAA"}, "row without an answer"),
    ({"index": "7", "question": "q", "A": "x", "answer": "A", "image": "AAAA"}, "row without options"),
    ({"index": "7", "question": "q", "A": "x", "C": "z", "answer": "A", "image": "AAAA"}, "row without options"),
    ({"index": "1", "question": "q", "A": "x", "B": "y", "answer": "A", "image": "AAAA"}, "duplicated index 1"),
    ({"index": "7", "question": "q", "A": "x", "B": "y", "answer": "A", "image": ""}, "row without an image"),
    ({"index": "7", "question": "q", "A": "x", "B": "y", "answer": "A", "image": "%%%"}, "not valid base64"),
    ({"index": "7", "question": "q", "A": "x", "B": "y", "answer": "A", "image": "99"}, "refers to index 99"),
    ({"index": "1000007", "question": "q", "A": "x", "B": "y", "answer": "A", "image": "0"}, "rotation-0 row"),
    ({"index": "x7", "question": "q", "A": "x", "B": "y", "answer": "A", "image": "0"}, "not an integer"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_bad_rows_are_named_or_skipped(tmp_path: Path, row: dict[str, str], message: str) -> None:
    data = write_mmbench(tmp_path / "d.tsv", "en", extra_rows=[row])
    with pytest.raises(DataError, match=message) as info:
        MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), data))
    assert "d.tsv row 4" in str(info.value) or "index 1000007" in str(info.value)
    result = MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), data, on_error="skip"))
    assert result.skipped == 1 and message in result.skip_reasons[0] and result.n == 8


def test_undecodable_image(tmp_path: Path) -> None:
    junk = base64.b64encode(b"not an image").decode()
    data = write_mmbench(tmp_path / "d.tsv", "en", extra_rows=[
        {"index": "7", "question": "q", "A": "x", "B": "y", "answer": "A", "image": junk}])
    with pytest.raises(DataError, match=r"d\.tsv row 4 \(index 7\): cannot decode the image"):
        MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), data))
    result = MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), data, on_error="skip"))
    assert result.skipped == 2 and result.n == 8  # both generated passes of question 7


def test_end_to_end_on_tiny_llava(tiny_llava, tmp_path: Path) -> None:
    data = write_mmbench(tmp_path / "d.tsv", "en", copies=True)
    before = tiny_llava.feature_cache.misses + tiny_llava.feature_cache.hits
    result = MMBENCH_EN.run(fake_context(tiny_llava.generate, data))
    assert set(result.metrics) == {"circular_acc", "vanilla_acc"} and result.n == 8
    assert tiny_llava.feature_cache.misses + tiny_llava.feature_cache.hits - before == 8


def test_real_samples_end_to_end(tiny_llava, tmp_path: Path) -> None:
    """The real MMBench (EN) and CCBench (CN) sample pictures and questions, written as dev TSVs."""
    import csv
    import json

    root = shared_path("data", "mmbench", "samples_with_images")
    rows = [json.loads(line) for line in (root / "samples_parsed.jsonl").read_text(encoding="utf-8").splitlines()]
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
    for lang, bench in (("en", "MMBench"), ("cn", "CCBench")):
        picked = [r for r in rows if r["benchmark"] == bench][:2]
        with (tmp_path / f"dev_{lang}.tsv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(header)
            for r in picked:
                opts = [r["options"].get(c, "") for c in "ABCD"]
                image = base64.b64encode((root / r["image"]).read_bytes()).decode()
                writer.writerow([r["index"], r["question"], "", *opts, r["answer"], r["category_header"], bench, image])
        task = MMBENCH_EN if lang == "en" else MMBENCH_CN
        result = task.run(fake_context(tiny_llava.generate, tmp_path / f"dev_{lang}.tsv"))
        assert result.task_config["questions"] == 2 and result.skipped == 0
        assert result.n == sum(len(metric_rotations(r)) for r in picked)
        assert set(result.metrics) == {"circular_acc", "vanilla_acc"}


def metric_rotations(row: dict) -> list:
    from iaa_eval.metrics.mmbench import rotations

    return rotations(list(row["options"].values()), row["answer"])


def test_real_legacy_tsv_without_images_is_refused_by_name() -> None:
    path = shared_path("data", "mmbench", "mmbench_dev_en_legacy_noimages.tsv")
    with pytest.raises(DataError, match=r"mmbench_dev_en_legacy_noimages\.tsv: missing column 'image'"):
        MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), path))


def test_an_option_reading_none_is_a_real_option(tmp_path: Path) -> None:
    row = {"index": "7", "question": "Which is empty?", "A": "None", "B": "nan", "C": "Some",
           "answer": "A", "image": "0"}
    data = write_mmbench(tmp_path / "d.tsv", "en", extra_rows=[row])
    result = MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), data))
    passes = [s for s in result.samples if int(s.doc_id) % 1_000_000 == 7]
    assert len(passes) == 3 and "A. None\nB. nan\nC. Some\n" in passes[0].prompt
    assert [s.target for s in passes] == ["A", "B", "C"]


def _copy(index: int, options: list[str], answer: str) -> dict[str, str]:
    """A published rotated copy of fixture question 1 ("What colour is the shape?", red/blue, A)."""
    return {"index": str(index), "question": "What colour is the shape?",
            "hint": "The background is white.", **dict(zip("ABCD", options, strict=False)),
            "answer": answer, "image": "1"}


@pytest.mark.parametrize(("copy", "message"), [
    (_copy(1_000_001, ["red", "blue"], "A"), r"not rotation 1 of index 1 \(expected options "
     r"\['blue', 'red'\], answer B; got options \['red', 'blue'\], answer A\)"),
    (_copy(1_000_001, ["blue", "red"], "A"), "not rotation 1 of index 1"),  # answer not rotated
    (_copy(1_000_001, ["blue", "green"], "B"), "not rotation 1 of index 1"),  # another option
    (_copy(2_000_001, ["red", "blue"], "A"),
     r"not rotation 2 of index 1 \(expected no copy 2: the question has 2 passes"),
])
def test_a_copy_must_rotate_its_original(tmp_path: Path, copy: dict[str, str],
                                         message: str) -> None:
    data = write_mmbench(tmp_path / "d.tsv", "en", extra_rows=[copy])
    with pytest.raises(DataError, match=rf"d\.tsv row 4 \(index {copy['index']}\): {message}"):
        MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), data))
    result = MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), data, on_error="skip"))
    # the whole question goes: circular accuracy over the passes left would be too lenient
    assert result.skipped == 2
    assert "another pass of question 1 was refused" in result.skip_reasons[1]
    assert result.task_config["questions"] == 2
    assert all(int(s.doc_id) % 1_000_000 != 1 for s in result.samples)


def test_a_copy_may_keep_a_plain_last_option_in_place(tmp_path: Path) -> None:
    """Published files pin a few plain last options too (legacy dev questions 34 and 51)."""
    original = {"index": "7", "question": "Which?", "A": "x", "B": "y", "C": "z", "answer": "B",
                "image": "0"}
    pinned = {**original, "index": "1000007", "A": "y", "B": "x", "answer": "A"}
    data = write_mmbench(tmp_path / "d.tsv", "en", extra_rows=[original, pinned])
    result = MMBENCH_EN.run(fake_context(Recorder(lambda r: "A"), data))
    assert [s.doc_id for s in result.samples if s.doc_id.endswith("7")] == ["7", "1000007"]
