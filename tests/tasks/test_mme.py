"""MME task: the original folder layout, validation, scoring, blind mode, and the tiny llava end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from iaa_eval.errors import DataError
from iaa_eval.tasks import TASKS
from iaa_eval.tasks.mme import MME, make_prompt
from tests.tasks.conftest import Recorder, copy_tree, fake_context, write_mme


@pytest.fixture(scope="module")
def mme_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mme(tmp_path_factory.mktemp("mme"))


def test_prompt_suffix_once() -> None:
    assert make_prompt("Is it red? Please answer yes or no.") == "Is it red? Please answer yes or no."
    assert make_prompt("Is it red?") == "Is it red? Please answer yes or no."


def test_registry_resolves_the_task() -> None:
    assert TASKS.get("mme") is MME


def test_scores_by_the_official_rules(mme_dir: Path) -> None:
    # answers "Yes" to everything: each image has one yes and one no question
    model = Recorder(lambda r: "Yes, it is.")
    result = MME.run(fake_context(model, mme_dir))
    assert result.n == 12 and result.skipped == 0 and not result.blind
    assert result.primary == "perception"
    assert result.groups["existence"] == {"acc": 0.5, "acc_plus": 0.0, "score": 50.0, "n": 4}
    assert set(result.groups) == {"existence", "artwork", "code_reasoning"}
    assert result.metrics == {"perception": 100.0, "cognition": 50.0}
    assert all(r.image is not None and r.image_key for r in model.requests)
    first = result.samples[0]
    assert first.doc_id == "existence/1000.jpg#0" and first.target == "Yes" and first.correct
    assert first.prompt == "Is there a circle in this image? Please answer yes or no."


def test_limit_counts_images_and_blind_sends_no_image(mme_dir: Path) -> None:
    model = Recorder(lambda r: "no")
    result = MME.run(fake_context(model, mme_dir, blind=True, limit=1))
    assert result.blind and result.n == 2
    assert all(r.image is None for r in model.requests)


def test_blind_asks_a_question_shared_by_many_images_once(mme_dir: Path) -> None:
    """Blind, requests are keyed by prompt alone: a question repeated across images (each
    subtask here asks its two questions of both its images) is computed once and its answer
    given at every place; with images, each is asked."""
    blind, seeing = Recorder(lambda r: r.prompt[:20]), Recorder(lambda r: "yes")
    result = MME.run(fake_context(blind, mme_dir, blind=True))
    MME.run(fake_context(seeing, mme_dir))
    prompts = [r.prompt for r in blind.requests]
    assert len(prompts) == len(set(prompts)) == 6 and len(seeing.requests) == result.n == 12
    assert all(s.response == s.prompt[:20] for s in result.samples)


def test_missing_image_is_named_or_skipped(mme_dir: Path, tmp_path: Path) -> None:
    data = copy_tree(mme_dir, tmp_path / "mme")
    (data / "artwork" / "images" / "1003.jpg").unlink()
    with pytest.raises(DataError, match=r"1003\.txt: no image 1003\{\.jpg,\.png\} in .*artwork/images"):
        MME.run(fake_context(Recorder(lambda r: "yes"), data))
    result = MME.run(fake_context(Recorder(lambda r: "yes"), data, on_error="skip"))
    assert result.skipped == 1 and result.n == 10 and "1003.txt" in result.skip_reasons[0]


def test_bad_rows_are_named(mme_dir: Path, tmp_path: Path) -> None:
    data = copy_tree(mme_dir, tmp_path / "mme")
    txt = data / "existence" / "1000.txt"
    txt.write_text("Is there a cat?\tmaybe\nIs there a cat?\tYes\nIs there a cat?\tNo\nno tab here\n")
    with pytest.raises(DataError, match=r"existence/1000\.txt:1: row without a yes/no answer \(got 'maybe'\)"):
        MME.run(fake_context(Recorder(lambda r: "yes"), data))
    result = MME.run(fake_context(Recorder(lambda r: "yes"), data, on_error="skip"))
    assert result.skipped == 4 and result.n == 10  # the image's one good question goes too
    assert any(":3: duplicated question 'Is there a cat?'" in s for s in result.skip_reasons)
    assert any(":4: expected 'question<TAB>answer'" in s for s in result.skip_reasons)
    assert any("1000.txt: image '1000.jpg' has 1 question(s)" in s for s in result.skip_reasons)


def test_undecodable_image_and_link_escaping_the_folder(mme_dir: Path, tmp_path: Path) -> None:
    data = copy_tree(mme_dir, tmp_path / "mme")
    (data / "existence" / "1000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"existence/1000\.jpg: cannot decode the image"):
        MME.run(fake_context(Recorder(lambda r: "yes"), data))
    outside = tmp_path / "secret.jpg"
    outside.write_bytes((data / "existence" / "1001.jpg").read_bytes())
    (data / "existence" / "1000.jpg").unlink()
    (data / "existence" / "1000.jpg").symlink_to(outside)
    with pytest.raises(DataError, match="leaves the data folder"):
        MME.run(fake_context(Recorder(lambda r: "yes"), data))


def test_decompression_bomb_limit(mme_dir: Path) -> None:
    with pytest.raises(DataError, match="exceeds the 1000-pixel limit"):
        MME.run(fake_context(Recorder(lambda r: "yes"), mme_dir, extra={"max_image_pixels": 1000}))


def test_no_subtask_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no MME subtask folder found"):
        MME.run(fake_context(Recorder(lambda r: "yes"), tmp_path))


def test_hub_rows(monkeypatch: pytest.MonkeyPatch, mme_dir: Path) -> None:
    import datasets
    from PIL import Image

    picture = Image.open(mme_dir / "existence" / "1000.jpg")
    table = datasets.Dataset.from_dict(
        {"question_id": ["count/1.jpg", "count/1.jpg"], "question": ["Two dogs?", "Three dogs?"],
         "answer": ["Yes", "No"], "category": ["count", "count"], "image": [picture, picture]},
        features=datasets.Features({"question_id": datasets.Value("string"), "question": datasets.Value("string"),
                                    "answer": datasets.Value("string"), "category": datasets.Value("string"),
                                    "image": datasets.Image()}),
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or table)
    result = MME.run(fake_context(Recorder(lambda r: "Yes"), None))
    assert calls == [(("lmms-lab/MME", None), {"split": "test"})]
    assert result.groups["count"]["acc_plus"] == 0.0 and result.groups["count"]["acc"] == 0.5
    assert result.samples[1].prompt == "Three dogs? Please answer yes or no."


def test_end_to_end_on_tiny_llava(tiny_llava, mme_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="iaa_eval.tasks.multimodal"):
        result = MME.run(fake_context(tiny_llava.generate, mme_dir))
    assert "feature_cache" not in result.task_config  # the fake context has no model to count on
    assert set(result.metrics) == {"perception", "cognition"} and result.n == 12
    assert all(isinstance(s.response, str) for s in result.samples)
    ctx = fake_context(tiny_llava.generate, mme_dir)
    ctx.model = tiny_llava
    with caplog.at_level("INFO", logger="iaa_eval.tasks.multimodal"):
        again = MME.run(ctx)
    assert again.task_config["feature_cache"] == {"hits": 12, "misses": 0}  # every image already encoded
    assert [s.response for s in again.samples] == [s.response for s in result.samples]
    assert "mme: 12 samples, 0 skipped" in caplog.text and "vision features: {'hits': 12" in caplog.text
    waited = float(caplog.text.split("s of it waiting for host work")[-2].rsplit("(", 1)[1])
    assert 0 <= waited <= round(again.wall_s, 1)


@pytest.mark.parametrize("lines", [["Is there a circle in this image?\tYes"],
                                   ["Is it red?\tYes", "Is it blue?\tNo", "Is it green?\tNo"]])
def test_an_image_needs_exactly_a_pair(mme_dir: Path, tmp_path: Path, lines: list[str]) -> None:
    """acc+ scores an image by its pair: one question alone would count as a pair both right."""
    data = copy_tree(mme_dir, tmp_path / "mme")
    (data / "existence" / "1000.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = rf"existence/1000\.txt: image '1000\.jpg' has {len(lines)} question\(s\); MME asks"
    with pytest.raises(DataError, match=message):
        MME.run(fake_context(Recorder(lambda r: "yes"), data))
    result = MME.run(fake_context(Recorder(lambda r: "Yes"), data, on_error="skip"))
    assert result.skipped == 1 and result.n == 10 and result.groups["existence"]["acc_plus"] == 0.0


def test_a_byte_order_mark_is_dropped(mme_dir: Path, tmp_path: Path) -> None:
    data = copy_tree(mme_dir, tmp_path / "mme")
    txt = data / "existence" / "1000.txt"
    txt.write_bytes(b"\xef\xbb\xbf" + txt.read_bytes())
    result = MME.run(fake_context(Recorder(lambda r: "yes"), data))
    assert result.samples[0].prompt == "Is there a circle in this image? Please answer yes or no."
    assert result.skipped == 0 and result.n == 12


def test_bytes_that_are_not_utf8_are_named(mme_dir: Path, tmp_path: Path) -> None:
    data = copy_tree(mme_dir, tmp_path / "mme")
    txt = data / "existence" / "1000.txt"
    txt.write_bytes(txt.read_bytes() + "Is it a caf\u00e9?\tNo\n".encode("latin-1"))
    message = r"existence/1000\.txt:3: not UTF-8 \(invalid continuation byte at byte \d+\); save"
    with pytest.raises(DataError, match=message):
        MME.run(fake_context(Recorder(lambda r: "yes"), data))
    result = MME.run(fake_context(Recorder(lambda r: "yes"), data, on_error="skip"))
    assert result.skipped == 1 and result.n == 10
