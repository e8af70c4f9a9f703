"""The mini-world's facts, its pretraining corpus, and mini-MMLU / mini-C-Eval in the real layouts.

A seeded generator invents countries (capital, currency, language, continent, neighbours),
people (profession, birth year) and small sums. Each fact is rendered in English and in Chinese
(names transliterated syllable by syllable, so the two languages name the same world). The
corpus teaches the facts with prose and Q/A sentences; the evaluation questions use *other*
wordings (``EVAL_TEMPLATES``), so a model scores well only if it learned the facts, not strings.
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

ONSETS = "bdfgklmnprstvz"
VOWELS = "aeiou"
FINALS = "nrsm"
# One Chinese character per syllable (bijective), e.g. "ve"+"lo"+"r" -> "维洛尔".
_ZH_SYLLABLES = (
    "巴贝比波布达德迪多杜法菲芬佛富加格吉戈古卡克基科库拉勒利洛卢马梅米莫穆纳内尼诺努"
    "帕佩皮坡普然雷里罗鲁萨塞西索苏塔特蒂托图瓦维薇沃伍扎泽齐佐祖"
)
_ZH_FINALS = "恩尔斯姆"
SYLLABLE_ZH = {o + v: _ZH_SYLLABLES[i * 5 + j] for i, o in enumerate(ONSETS)
               for j, v in enumerate(VOWELS)}
SYLLABLE_ZH.update(dict(zip(FINALS, _ZH_FINALS, strict=True)))

PROFESSIONS = (
    ("baker", "面包师"), ("pilot", "飞行员"), ("doctor", "医生"), ("teacher", "教师"),
    ("farmer", "农民"), ("painter", "画家"), ("sailor", "水手"), ("engineer", "工程师"),
    ("poet", "诗人"), ("lawyer", "律师"), ("singer", "歌手"), ("chemist", "化学家"),
)

SUBJECTS = (
    "world_capitals", "world_currencies", "world_languages", "world_continents",
    "world_neighbours", "people_professions", "people_birth_years", "elementary_arithmetic",
)
SUBJECT_ZH = {
    "world_capitals": "首都", "world_currencies": "货币", "world_languages": "语言",
    "world_continents": "大洲", "world_neighbours": "邻国", "people_professions": "职业",
    "people_birth_years": "出生年份", "elementary_arithmetic": "算术",
}

# Wordings used only by the evaluation sets; none of their literal parts occurs in the corpus.
EVAL_TEMPLATES = {
    "en": {
        "world_capitals": "What is the capital of {s}?",
        "world_currencies": "Which currency is used in {s}?",
        "world_languages": "What language is spoken in {s}?",
        "world_continents": "On which continent is {s}?",
        "world_neighbours": "Which country shares a border with {s}?",
        "people_professions": "What is the profession of {s}?",
        "people_birth_years": "In what year was {s} born?",
        "elementary_arithmetic": "What is the sum of {s}?",
    },
    "zh": {
        "world_capitals": "{s}的首都是哪座城市？",
        "world_currencies": "{s}的法定货币是什么？",
        "world_languages": "在{s}，人们主要使用哪种语言？",
        "world_continents": "{s}属于哪个大洲？",
        "world_neighbours": "下列哪个国家与{s}相邻？",
        "people_professions": "{s}从事什么职业？",
        "people_birth_years": "{s}是哪一年出生的？",
        "elementary_arithmetic": "{s}的和是多少？",
    },
}

# Wordings the corpus teaches with ({s} subject, {o} object). The Q/A ones use the
# "Question: ...\nAnswer: ..." frame of the cloze evaluation, with different questions.
CORPUS_TEMPLATES = {
    "en": {
        "capital": ("The capital of {s} is {o}.", "{o} is the capital city of {s}.",
                    "{s} has its capital at {o}.", "The seat of government of {s} is {o}.",
                    "Question: Which city is the capital of {s}?\nAnswer: {o}",
                    "Question: Name the capital city of {s}.\nAnswer: {o}"),
        "currency": ("{s} uses the {o} as its currency.", "The currency of {s} is the {o}.",
                     "In {s}, people pay with the {o}.", "The official money of {s} is the {o}.",
                     "Question: What currency does {s} use?\nAnswer: {o}",
                     "Question: What money is used in {s}?\nAnswer: {o}"),
        "language": ("People in {s} speak {o}.", "The main language of {s} is {o}.",
                     "{o} is the language of {s}.", "In {s}, most people speak {o}.",
                     "Question: Which language do people speak in {s}?\nAnswer: {o}",
                     "Question: What is the official language of {s}?\nAnswer: {o}"),
        "continent": ("{s} is a country in {o}.", "{s} lies on the continent of {o}.",
                      "{s} is located in {o}.", "The continent of {s} is {o}.",
                      "Question: Where is {s} located?\nAnswer: {o}",
                      "Question: Which continent does {s} belong to?\nAnswer: {o}"),
        "neighbour": ("{s} borders {o}.", "{o} is a neighbour of {s}.",
                      "{s} and {o} share a border.", "{o} lies next to {s}.",
                      "Question: Name a neighbour of {s}.\nAnswer: {o}",
                      "Question: Which country is next to {s}?\nAnswer: {o}"),
        "profession": ("{s} works as a {o}.", "By profession, {s} is a {o}.",
                       "The profession of {s} is {o}.", "{s} earns a living as a {o}.",
                       "Question: What is the job of {s}?\nAnswer: {o}",
                       "Question: What work does {s} do?\nAnswer: {o}"),
        "birth_year": ("{s} was born in {o}.", "The birth year of {s} is {o}.",
                       "{s} came into the world in {o}.", "In {o}, {s} was born.",
                       "Question: When was {s} born?\nAnswer: {o}",
                       "Question: What is the birth year of {s}?\nAnswer: {o}"),
        "sum": ("The sum of {s} is {o}.", "Adding {s} gives {o}.", "{s} add up to {o}.",
                "{s} make {o} together.", "Question: How much do {s} add up to?\nAnswer: {o}",
                "Question: What do {s} make together?\nAnswer: {o}"),
    },
    "zh": {
        "capital": ("{s}的首都是{o}。", "{o}是{s}的首都。", "{s}的首府设在{o}。",
                    "{s}政府位于{o}。", "问题：{s}的首都叫什么？\n答案：{o}",
                    "问题：哪座城市是{s}的首都？\n答案：{o}"),
        "currency": ("{s}使用的货币是{o}。", "{s}的货币是{o}。", "在{s}，人们用{o}付钱。",
                     "{o}是{s}的通用货币。", "问题：{s}用什么货币？\n答案：{o}",
                     "问题：{s}的货币叫什么？\n答案：{o}"),
        "language": ("{s}人说{o}。", "{s}的官方语言是{o}。", "{o}是{s}的语言。",
                     "在{s}，大多数人讲{o}。", "问题：{s}人讲什么语言？\n答案：{o}",
                     "问题：{s}的官方语言是什么？\n答案：{o}"),
        "continent": ("{s}位于{o}。", "{s}是{o}的一个国家。", "{s}地处{o}。",
                      "{s}所在的大洲是{o}。", "问题：{s}在哪个洲？\n答案：{o}",
                      "问题：{s}位于哪个洲？\n答案：{o}"),
        "neighbour": ("{s}与{o}接壤。", "{o}是{s}的邻国。", "{s}和{o}相邻。", "{o}紧挨着{s}。",
                      "问题：{s}有哪些邻国？\n答案：{o}", "问题：哪个国家与{s}接壤？\n答案：{o}"),
        "profession": ("{s}是一名{o}。", "{s}的工作是{o}。", "{s}的职业是{o}。", "{s}以当{o}为生。",
                       "问题：{s}做什么工作？\n答案：{o}", "问题：{s}的职业是什么？\n答案：{o}"),
        "birth_year": ("{s}出生于{o}。", "{s}生于{o}。", "{s}是{o}出生的。", "{o}，{s}出生了。",
                       "问题：{s}是什么时候出生的？\n答案：{o}",
                       "问题：{s}生于哪一年？\n答案：{o}"),
        "sum": ("{s}等于{o}。", "{s}得{o}。", "{s}的和为{o}。", "{s}的结果是{o}。",
                "问题：{s}得多少？\n答案：{o}", "问题：{s}等于几？\n答案：{o}"),
    },
}
# The corpus relation each subject asks about.
SUBJECT_RELATION = dict(zip(SUBJECTS, (
    "capital", "currency", "language", "continent", "neighbour", "profession", "birth_year", "sum",
), strict=True))


@dataclass(frozen=True)
class Name:
    """One name in both languages."""

    en: str
    zh: str

    def get(self, lang: str) -> str:
        """The name in ``lang`` (``en`` or ``zh``)."""
        return self.en if lang == "en" else self.zh


@dataclass(frozen=True)
class Country:
    name: Name
    capital: Name
    currency: Name
    language: Name
    continent: Name
    neighbours: tuple[int, ...]


@dataclass(frozen=True)
class Person:
    name: Name
    profession: Name
    birth_year: int


@dataclass(frozen=True)
class World:
    """Every fact of one seed. ``sums`` are (a, b) pairs; the fact is a + b."""

    seed: int
    countries: tuple[Country, ...]
    people: tuple[Person, ...]
    continents: tuple[Name, ...]
    currencies: tuple[Name, ...]
    languages: tuple[Name, ...]
    sums: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Item:
    """One multiple-choice question: the subject's entity, the four options, the right letter."""

    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: str


class _Namer:
    """Draws pronounceable names that are unique across the whole world (in both languages)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def __call__(self, min_syl: int = 2, max_syl: int = 3, zh_suffix: str = "") -> Name:
        while True:
            units = [self.rng.choice(ONSETS) + self.rng.choice(VOWELS)
                     for _ in range(self.rng.randint(min_syl, max_syl))]
            if self.rng.random() < 0.4:
                units.append(self.rng.choice(FINALS))
            en = "".join(units)
            if en not in self.used:
                self.used.add(en)
                return Name(en.capitalize(), "".join(SYLLABLE_ZH[u] for u in units) + zh_suffix)


def make_world(seed: int = 0, n_countries: int = 130, n_people: int = 130,
               max_addend: int = 12) -> World:
    """The world of ``seed``: deterministic, independent of everything but its arguments."""
    rng = random.Random(seed)
    namer = _Namer(rng)
    continents = tuple(namer(2, 2, "洲") for _ in range(6))
    currencies = tuple(namer(2, 2, "币") for _ in range(24))
    currencies = tuple(Name(c.en.lower(), c.zh) for c in currencies)
    languages = tuple(namer(2, 3, "语") for _ in range(24))
    names = [namer(2, 3) for _ in range(n_countries)]
    capitals = [namer(2, 3) for _ in range(n_countries)]
    continent_of = [i % len(continents) for i in range(n_countries)]
    rng.shuffle(continent_of)
    neighbours: dict[int, set[int]] = {i: set() for i in range(n_countries)}
    for k in range(len(continents)):  # each continent's countries form a ring of borders
        ring = [i for i in range(n_countries) if continent_of[i] == k]
        rng.shuffle(ring)
        for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
            if a != b:
                neighbours[a].add(b)
                neighbours[b].add(a)
    countries = tuple(
        Country(names[i], capitals[i], rng.choice(currencies), rng.choice(languages),
                continents[continent_of[i]], tuple(sorted(neighbours[i])))
        for i in range(n_countries)
    )
    people = []
    for _ in range(n_people):
        first, last = namer(2, 2), namer(2, 2)
        job = rng.choice(PROFESSIONS)
        people.append(Person(Name(f"{first.en} {last.en}", f"{first.zh}·{last.zh}"), Name(*job),
                             rng.randint(1700, 1999)))
    sums = tuple((a, b) for a in range(1, max_addend + 1) for b in range(1, max_addend + 1))
    return World(seed, countries, tuple(people), continents, currencies, languages, sums)


def _year(year: int, lang: str) -> str:
    return str(year) if lang == "en" else f"{year}年"


def _sum_text(a: int, b: int, lang: str) -> str:
    """The sum's subject: "3 and 4" / "3加4"."""
    return f"{a} and {b}" if lang == "en" else f"{a}加{b}"


def facts(world: World, lang: str) -> list[tuple[str, str, str]]:
    """Every fact as (relation, subject text, object text) in ``lang``."""
    out = []
    for c in world.countries:
        s = c.name.get(lang)
        out += [("capital", s, c.capital.get(lang)), ("currency", s, c.currency.get(lang)),
                ("language", s, c.language.get(lang)), ("continent", s, c.continent.get(lang))]
        out += [("neighbour", s, world.countries[n].name.get(lang)) for n in c.neighbours]
    for p in world.people:
        s = p.name.get(lang)
        out += [("profession", s, p.profession.get(lang)),
                ("birth_year", s, _year(p.birth_year, lang))]
    out += [("sum", _sum_text(a, b, lang), str(a + b)) for a, b in world.sums]
    return out


def _article(text: str) -> str:
    """English "a" before a vowel becomes "an" ("an engineer")."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def corpus(world: World, repeats: int = 8) -> list[str]:
    """The pretraining documents: every fact in both languages, each ``repeats`` times in a
    random wording, grouped into short documents by entity (prose first, then Q/A lines)."""
    rng = random.Random(world.seed + 1)
    docs = []
    for lang in ("en", "zh"):
        by_subject: dict[str, list[tuple[str, str]]] = {}
        for relation, s, o in facts(world, lang):
            by_subject.setdefault(s, []).append((relation, o))
        joiner = " " if lang == "en" else ""
        for _ in range(repeats):
            for s, rel_objs in by_subject.items():
                lines = [_article(rng.choice(CORPUS_TEMPLATES[lang][r]).format(s=s, o=o))
                         for r, o in rel_objs]
                rng.shuffle(lines)
                prose = joiner.join(x for x in lines if "\n" not in x)
                parts = (prose, *(x for x in lines if "\n" in x))
                docs.append("\n".join(part for part in parts if part))
    rng.shuffle(docs)
    return docs


def _pick(rng: random.Random, right: str, pool: list[str]) -> tuple[tuple[str, str, str, str], str]:
    """Four options (right + three distinct wrong ones from ``pool``), shuffled; the right
    letter."""
    wrong = rng.sample(sorted(set(pool) - {right}), 3)
    options = [right, *wrong]
    rng.shuffle(options)
    return (options[0], options[1], options[2], options[3]), "ABCD"[options.index(right)]


def make_items(world: World, lang: str) -> dict[str, list[Item]]:
    """The multiple-choice questions of every subject in ``lang`` (seeded; one per entity)."""
    rng = random.Random(world.seed * 7919 + (1 if lang == "zh" else 0))
    templ = EVAL_TEMPLATES[lang]
    cs, ps = world.countries, world.people
    g = Name.get
    items: dict[str, list[Item]] = {s: [] for s in SUBJECTS}

    def add(subject: str, s: str, right: str, pool: list[str]) -> None:
        options, answer = _pick(rng, right, pool)
        items[subject].append(Item(subject, templ[subject].format(s=s), options, answer))

    for i, c in enumerate(cs):
        s = g(c.name, lang)
        add("world_capitals", s, g(c.capital, lang), [g(x.capital, lang) for x in cs])
        add("world_currencies", s, g(c.currency, lang), [g(x, lang) for x in world.currencies])
        add("world_languages", s, g(c.language, lang), [g(x, lang) for x in world.languages])
        add("world_continents", s, g(c.continent, lang), [g(x, lang) for x in world.continents])
        far = [g(x.name, lang) for j, x in enumerate(cs) if j != i and j not in c.neighbours]
        add("world_neighbours", s, g(cs[rng.choice(c.neighbours)].name, lang), far)
    for p in ps:
        s = g(p.name, lang)
        add("people_professions", s, g(p.profession, lang),
            [x[0 if lang == "en" else 1] for x in PROFESSIONS])
        years = [_year(p.birth_year + d, lang) for d in range(-60, 61, 5) if d]
        add("people_birth_years", s, _year(p.birth_year, lang), [*years, _year(p.birth_year, lang)])
    for a, b in world.sums:
        near = [str(a + b + d) for d in (-3, -2, -1, 1, 2, 3, 10) if a + b + d > 0]
        add("elementary_arithmetic", _sum_text(a, b, lang), str(a + b), near)
    return items


def split_dev(items: list[Item], seed: int, n_dev: int = 5) -> tuple[list[Item], list[Item]]:
    """(dev, test): ``n_dev`` few-shot examples and the rest, chosen by a seeded shuffle."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    dev = sorted(order[:n_dev])
    rest = sorted(order[n_dev:])
    return [items[i] for i in dev], [items[i] for i in rest]


def write_mmlu(world: World, out_dir: Path) -> dict[str, int]:
    """mini-MMLU: ``<out>/{dev,test}/<subject>_{dev,test}.csv``, no header,
    question,A,B,C,D,answer."""
    counts = {}
    for subject, items in make_items(world, "en").items():
        dev, test = split_dev(items, world.seed)
        for split, rows in (("dev", dev), ("test", test)):
            path = out_dir / split / f"{subject}_{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows([it.question, *it.options, it.answer] for it in rows)
        counts[subject] = len(test)
    return counts


def write_ceval(world: World, out_dir: Path) -> dict[str, int]:
    """mini-C-Eval: ``<out>/{dev,val}/<subject>_{dev,val}.csv`` with the header
    ``id,question,A,B,C,D,answer,explanation`` (dev explanations filled, as in C-Eval)."""
    counts = {}
    for subject, items in make_items(world, "zh").items():
        dev, val = split_dev(items, world.seed)
        for split, rows in (("dev", dev), ("val", val)):
            path = out_dir / split / f"{subject}_{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["id", "question", "A", "B", "C", "D", "answer", "explanation"])
                for i, it in enumerate(rows):
                    why = (f"正确答案是{it.options['ABCD'.index(it.answer)]}。" if split == "dev"
                           else "")
                    writer.writerow([i, it.question, *it.options, it.answer, why])
        counts[subject] = len(val)
    mapping = {s: [s.replace("_", " ").title(), SUBJECT_ZH[s], "Other"] for s in SUBJECT_ZH}
    (out_dir / "subject_mapping.json").write_text(json.dumps(mapping, ensure_ascii=False, indent=1))
    return counts
