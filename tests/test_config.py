"""The strict config loader on synthetic files: what it accepts, and every way it refuses, each a
one-line DataError naming the file and the field path."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from iaa_eval import config
from iaa_eval.errors import DataError


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Entry:
    name: str = field(metadata=config.SHORTHAND)
    limit: config.PositiveInt | None = None
    weight: config.Finite = 1.0


@dataclass(frozen=True)
class Rule:
    kind: str = field(metadata=config.KEY)
    drop: config.NonNegative | None = None
    share: config.Percent = 0.0
    note: config.NonBlank = "-"


@dataclass(frozen=True)
class Window:
    lo: int = 0
    hi: int = 1

    def __post_init__(self) -> None:
        if self.lo > self.hi:
            raise ValueError(f"lo {self.lo} > hi {self.hi}")


@dataclass(frozen=True)
class Doc:
    version: Literal[1]
    entries: tuple[Entry, ...] = ()
    rules: tuple[Rule, ...] = ()
    flag: bool = False
    count: int = 0
    ratio: float = 0.0
    color: Color = Color.RED
    out: Path | None = None
    tags: dict[str, int] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    either: int | str = 0
    anything: Any = None
    window: Window | None = None


GOOD = """
version: 1
entries: [mme, {name: mmlu, limit: 3, weight: 2}]
rules: {iaa: {drop: 0, share: 100, note: why}, llava: {}}
flag: true
count: 4
ratio: 2
color: blue
out: runs/x
tags: {a: 1}
names: [x, y]
either: seven
anything: {free: [form]}
window: {lo: 1, hi: 2}
"""


def _write(tmp_path: Path, text: str, name: str = "doc.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_becomes_typed_frozen_objects(tmp_path: Path) -> None:
    doc = config.load(Doc, _write(tmp_path, GOOD))
    assert doc.entries == (Entry("mme"), Entry("mmlu", 3, 2.0))
    assert isinstance(doc.entries[1].weight, float)
    assert doc.rules == (Rule("iaa", 0.0, 100.0, "why"), Rule("llava"))
    assert (doc.flag, doc.count, doc.ratio, doc.color) == (True, 4, 2.0, Color.BLUE)
    assert isinstance(doc.ratio, float) and doc.out == Path("runs/x")
    assert doc.tags == {"a": 1} and doc.names == ["x", "y"] and doc.either == "seven"
    assert doc.anything == {"free": ["form"]} and doc.window == Window(1, 2)
    with pytest.raises(AttributeError):
        doc.count = 5  # type: ignore[misc]


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = "version: 1\nanything: &t {a: 1, b: 2}\ntags:\n  <<: *t\n  a: 3\n"
    assert config.load(Doc, _write(tmp_path, text)).tags == {"a": 3, "b": 2}


def test_json_and_fixed_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"drop": 0.5}', "rule.json")
    assert config.load(Rule, path, kind="iaa") == Rule("iaa", 0.5)
    with pytest.raises(DataError, match="unknown key 'kind'; allowed: drop"):
        config.parse(Rule, {"kind": "x"}, "src", kind="iaa")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\ntypo: 1\n",
         "doc.yaml: unknown key 'typo'; allowed: version, entries, rules, flag"),
        ("entries: []\n", "doc.yaml: missing key 'version'"),
        ("version: 2\n", "doc.yaml: version: expected 1, got 2"),
        ("version: true\n", "doc.yaml: version: expected 1, got True"),
        ("version: 1\nentries: [a, b, {name: c, limit: ten}]\n",
         "doc.yaml: entries[2].limit: expected an integer, got 'ten'"),
        ("version: 1\nentries: [{name: a, limit: 0}]\n",
         "doc.yaml: entries[0].limit: expected a number >= 1, got 0"),
        ("version: 1\nentries: [{name: a, limit: true}]\n",
         "entries[0].limit: expected an integer, got True"),
        ("version: 1\nentries: [{name: a, weight: .nan}]\n",
         "entries[0].weight: expected a finite number, got nan"),
        ("version: 1\nentries: [{name: a, weight: -.inf}]\n",
         "entries[0].weight: expected a finite number, got -inf"),
        ("version: 1\nentries: [{limit: 1}]\n", "doc.yaml: entries[0]: missing key 'name'"),
        ("version: 1\nentries: [3]\n", "doc.yaml: entries[0]: expected a mapping, got 3"),
        ("version: 1\nentries: {a: 1}\n", "doc.yaml: entries: expected a list, got {'a': 1}"),
        ("version: 1\nrules: {iaa: {drop: -0.1}}\n",
         "doc.yaml: rules.iaa.drop: expected a number >= 0, got -0.1"),
        ("version: 1\nrules: {iaa: {share: 100.5}}\n",
         "doc.yaml: rules.iaa.share: expected a number <= 100, got 100.5"),
        ("version: 1\nrules: {iaa: {share: -1}}\n",
         "doc.yaml: rules.iaa.share: expected a number >= 0, got -1"),
        ("version: 1\nrules: {iaa: {note: ' '}}\n",
         "doc.yaml: rules.iaa.note: expected a non-blank string, got ' '"),
        ("version: 1\nrules: [1]\n",
         "doc.yaml: rules: expected a mapping of kind -> settings, got [1]"),
        ("version: 1\nrules: {iaa: 3}\n", "doc.yaml: rules.iaa: expected a mapping, got 3"),
        ("version: 1\nrules: {iaa: {kind: x}}\n",
         "doc.yaml: rules.iaa: unknown key 'kind'; allowed: drop"),
        ("version: 1\nrules: {1: {}}\n", "doc.yaml: rules key: expected a string, got 1"),
        ("version: 1\ncount: true\n", "doc.yaml: count: expected an integer, got True"),
        ("version: 1\ncount: 1.5\n", "doc.yaml: count: expected an integer, got 1.5"),
        ("version: 1\nratio: false\n", "doc.yaml: ratio: expected a number, got False"),
        ("version: 1\nratio: '0.5'\n", "doc.yaml: ratio: expected a number, got '0.5'"),
        ("version: 1\nflag: 1\n", "doc.yaml: flag: expected true or false, got 1"),
        ("version: 1\ncolor: green\n",
         "doc.yaml: color: expected one of 'red', 'blue', got 'green'"),
        ("version: 1\nout: 3\n", "doc.yaml: out: expected a path, got 3"),
        ("version: 1\ntags: {a: x}\n", "doc.yaml: tags.a: expected an integer, got 'x'"),
        ("version: 1\ntags: [1]\n", "doc.yaml: tags: expected a mapping, got [1]"),
        ("version: 1\ntags: {1: 1}\n", "doc.yaml: tags key: expected a string, got 1"),
        ("version: 1\nnames: a\n", "doc.yaml: names: expected a list, got 'a'"),
        ("version: 1\nnames: [a, 1]\n", "doc.yaml: names[1]: expected a string, got 1"),
        ("version: 1\neither: 1.5\n", "doc.yaml: either: expected an integer or a string, got 1.5"),
        ("version: 1\nwindow: {lo: 3, hi: 2}\n", "doc.yaml: window: lo 3 > hi 2"),
        ("version: 1\nwindow: 7\n", "doc.yaml: window: expected a mapping, got 7"),
        ("[1, 2]\n", "doc.yaml: expected a mapping, got [1, 2]"),
        ("", "doc.yaml: expected a mapping, got None"),
        ("version: 1\nversion: 1\n", "doc.yaml: duplicate key 'version' (line 2)"),
        ("version: 1\nrules:\n  iaa: {}\n  iaa: {drop: 1}\n",
         "doc.yaml: duplicate key 'iaa' (line 4)"),
        ("version: 1\nentries: [{name: a, name: b}]\n", "doc.yaml: duplicate key 'name' (line 2)"),
        ("version: [1\n", "doc.yaml: not valid YAML"),
        ("version: 1\nanything: !!python/name:os.system\n", "doc.yaml: not valid YAML"),
        ("version: 1\ntags: {? !!set {a}\n: 1}\n", "doc.yaml: not valid YAML"),
        ("version: 1\ntags: {? [a]\n: 1}\n", "doc.yaml: not valid YAML"),
    ],
)
def test_every_rejection_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError) as exc:
        config.load(Doc, _write(tmp_path, text))
    assert message in str(exc.value)
    assert str(tmp_path / "doc.yaml") in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"version": 1, "version": 1}', "doc.json: duplicate key 'version'"),
        ('{"version": 1, "entries": [{"name": "a", "weight": NaN}]}',
         "entries[0].weight: expected a finite number"),
        ('{"version": 1, "entries": [{"name": "a", "weight": Infinity}]}',
         "expected a finite number, got inf"),
        ('{"version": 1,', "doc.json: not valid JSON (Expecting property name enclosed in double "
                           "quotes at line 1)"),
    ],
)
def test_json_rejections(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match="doc.json: ") as exc:
        config.load(Doc, _write(tmp_path, text, "doc.json"))
    assert message in str(exc.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing.yaml: cannot read \(No such file or directory\)"):
        config.load(Doc, tmp_path / "missing.yaml")
    (tmp_path / "bytes.yaml").write_bytes(b"version: \xff\xfe\n")
    with pytest.raises(DataError, match="bytes.yaml: cannot read"):
        config.load(Doc, tmp_path / "bytes.yaml")


def test_long_values_are_shortened() -> None:
    with pytest.raises(DataError) as exc:
        config.parse(Doc, {"version": 1, "names": "x" * 500}, "src")
    assert len(str(exc.value)) < 120 and str(exc.value).endswith("...")


def test_a_type_the_loader_cannot_read_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Odd:
        pair: tuple[int, str]

    with pytest.raises(TypeError, match="tuple"):
        config.parse(Odd, {"pair": [1, "a"]}, "src")
