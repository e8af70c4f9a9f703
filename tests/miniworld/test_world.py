"""mini-world text data: determinism, the MMLU / C-Eval layouts, counts, held-out wordings."""

from __future__ import annotations

import csv
import re

import pytest

from iaa_eval.miniworld import world


@pytest.fixture(scope="module")
def w0() -> world.World:
    return world.make_world(0)


def test_world_is_deterministic_per_seed(w0):
    assert world.make_world(0) == w0
    assert world.make_world(1) != w0
    assert world.corpus(world.make_world(0)) == world.corpus(w0)


def test_names_are_unique_in_both_languages(w0):
    names = [c.name for c in w0.countries] + [c.capital for c in w0.countries] + list(w0.continents)
    names += list(w0.currencies) + list(w0.languages)
    assert len({n.en for n in names}) == len(names)
    assert len({n.zh for n in names}) == len(names)
    assert len(set(world.SYLLABLE_ZH.values())) == len(world.SYLLABLE_ZH)


def test_neighbours_are_symmetric(w0):
    for i, c in enumerate(w0.countries):
        assert c.neighbours and i not in c.neighbours
        for j in c.neighbours:
            assert i in w0.countries[j].neighbours
            assert w0.countries[j].continent == c.continent


def test_eval_wordings_never_occur_in_the_corpus(w0):
    text = "\n".join(world.corpus(w0))
    for lang, templates in world.EVAL_TEMPLATES.items():
        for subject, template in templates.items():
            fragment = max(template.split("{s}"), key=len)  # the question's own wording
            assert fragment not in text, (lang, subject, fragment)
    sentences = set(re.split(r"[\n。]|(?<=[.?]) ", text))
    for lang in ("en", "zh"):
        for items in world.make_items(w0, lang).values():
            assert not any(item.question in sentences for item in items)


def test_every_fact_is_in_the_corpus(w0):
    text = "\n".join(world.corpus(w0))
    for c in w0.countries:
        assert c.name.en in text and c.capital.zh in text and c.currency.en in text


def test_mmlu_layout(tmp_path, w0):
    counts = world.write_mmlu(w0, tmp_path)
    assert len(counts) >= 6 and min(counts.values()) >= 100
    for subject in world.SUBJECTS:
        for split, n in (("dev", 5), ("test", counts[subject])):
            with (tmp_path / split / f"{subject}_{split}.csv").open(encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
            assert len(rows) == n
            for question, a, b, c, d, answer in rows:  # no header: six fields per row
                assert answer in "ABCD" and len({a, b, c, d}) == 4 and question.endswith("?")


def test_ceval_layout_is_chinese(tmp_path, w0):
    counts = world.write_ceval(w0, tmp_path)
    assert min(counts.values()) >= 100
    for subject in world.SUBJECTS:
        for split in ("dev", "val"):
            with (tmp_path / split / f"{subject}_{split}.csv").open(encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            assert list(rows[0]) == ["id", "question", "A", "B", "C", "D", "answer", "explanation"]
            assert len(rows) == (5 if split == "dev" else counts[subject])
            assert all(re.search(r"[\u4e00-\u9fff]", r["question"]) and r["answer"] in "ABCD" for r in rows)


def test_dev_and_test_ask_about_different_entities(w0):
    for items in world.make_items(w0, "en").values():
        dev, test = world.split_dev(items, w0.seed)
        assert not {i.question for i in dev} & {i.question for i in test}


def test_answers_are_balanced_over_letters(w0):
    letters = [i.answer for items in world.make_items(w0, "en").values() for i in items]
    for letter in "ABCD":
        assert 0.2 < letters.count(letter) / len(letters) < 0.3
