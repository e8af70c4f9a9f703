"""LLaVA conversation data: turn pairs become examples, images stay paths, bad input is named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from iaa_eval.errors import DataError
from iaa_eval.train.conversations import load_conversations
from iaa_eval.train.examples import Example, example_image
from tests.iaa_helpers import random_image


def human(text: str) -> dict:
    return {"from": "human", "value": text}


def gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def record(rid: str, image: str | None, *turns: dict) -> dict:
    row = {"id": rid, "conversations": list(turns)}
    if image is not None:
        row["image"] = image
    return row


def write(folder: Path, records: object, images: tuple[str, ...] = ("coco/a.jpg",), name: str = "data.json") -> Path:
    """``records`` as ``folder/name`` plus fresh random images at the given relative paths."""
    for k, relative in enumerate(images):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        random_image(k).save(folder / relative)
    path = folder / name
    path.write_text(records if isinstance(records, str) else json.dumps(records), encoding="utf-8")
    return path


MULTI_TURN = record("m1", "coco/a.jpg", human("<image>\nWhat is shown?"), gpt("A cat."),
                    human("What colour is it?"), gpt("Grey."))
TEXT_ONLY = record("t1", None, human("Say hi."), gpt("Hi!"))


def test_multi_turn_record_becomes_one_example_per_turn_pair(tmp_path: Path) -> None:
    data = load_conversations(write(tmp_path, [MULTI_TURN]), progress=False)
    image = tmp_path / "coco" / "a.jpg"
    assert data.examples == (Example(image, "What is shown?", "A cat."), Example(image, "What colour is it?", "Grey."))
    assert data.records == 1 and data.source == tmp_path / "data.json" and data.image_folder == tmp_path


def test_text_only_record_and_placeholder_after_the_question(tmp_path: Path) -> None:
    trailing = record("p1", "coco/a.jpg", human("Describe the image.\n<image>"), gpt("Noise."))
    data = load_conversations(write(tmp_path, [TEXT_ONLY, trailing]), progress=False)
    assert data.examples == (Example(None, "Say hi.", "Hi!"),
                             Example(tmp_path / "coco" / "a.jpg", "Describe the image.", "Noise."))


def test_folder_image_folder_and_limit(tmp_path: Path) -> None:
    (tmp_path / "json").mkdir()
    write(tmp_path / "json", [TEXT_ONLY, MULTI_TURN, TEXT_ONLY], images=())
    write(tmp_path / "images", "[]", name="unused.json")
    data = load_conversations(tmp_path / "json", image_folder=tmp_path / "images", limit=2, progress=False)
    assert data.records == 2 and len(data.examples) == 3
    assert data.examples[1].image == tmp_path / "images" / "coco" / "a.jpg"


def test_images_are_not_opened_while_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, [MULTI_TURN])

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("an image was opened while loading")

    monkeypatch.setattr(Image, "open", refuse)
    assert isinstance(load_conversations(path, progress=False).examples[0].image, Path)


def test_example_image_opens_a_path_as_rgb(tmp_path: Path) -> None:
    picture = random_image(7).convert("L")
    picture.save(tmp_path / "grey.png")
    opened = example_image(Example(tmp_path / "grey.png", "q", "a"))
    assert opened.mode == "RGB" and opened.tobytes() == picture.convert("RGB").tobytes()
    in_memory = random_image(8)
    assert example_image(Example(in_memory, "q", "a")) is in_memory
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"{tmp_path}/bad.jpg: cannot decode the image"):
        example_image(Example(tmp_path / "bad.jpg", "q", "a"))


def _bad(records: object, images: tuple[str, ...] = ("coco/a.jpg",)) -> Callable[[Path], Path]:
    return lambda d: write(d, records, images)


def _two_files(d: Path) -> Path:
    write(d, [TEXT_ONLY], images=(), name="a.json")
    write(d, [TEXT_ONLY], images=(), name="b.json")
    return d


BAD = [
    ("not-a-list", _bad({"id": "x"}), "{d}/data.json: expected a JSON list of conversation records, got a JSON dict"),
    ("invalid-json", _bad('[\n  {"id": "x",\n  "conversations": ]'), "{d}/data.json: invalid JSON at line 3, column 20"),
    ("record-not-object", _bad(["text"]), "{d}/data.json record 0: expected an object with 'conversations'"),
    ("no-conversations", _bad([TEXT_ONLY, {"id": "x", "image": "coco/a.jpg"}]),
     "{d}/data.json record 1 (id 'x'): field 'conversations' missing"),
    ("gpt-first", _bad([record("x", None, gpt("A."), human("Q?"))]),
     "{d}/data.json record 0 (id 'x'): field conversations[0].from is 'gpt', expected 'human'"),
    ("human-twice", _bad([record("x", None, human("Q?"), human("Q2?"))]),
     "{d}/data.json record 0 (id 'x'): field conversations[1].from is 'human', expected 'gpt'"),
    ("no-answer", _bad([record("x", None, human("Q?"), gpt("A."), human("Q2?"))]),
     "{d}/data.json record 0 (id 'x'): field conversations[2] is a human turn without a gpt answer"),
    ("value-not-text", _bad([record("x", None, human("Q?"), {"from": "gpt", "value": None})]),
     "{d}/data.json record 0 (id 'x'): field conversations[1].value is None, expected text"),
    ("image-missing", _bad([MULTI_TURN, record(7, "coco/b.jpg", human("Q?"), gpt("A.")),
                            record(8, "coco/c.jpg", human("Q?"), gpt("A."))]),
     "{d}/data.json record 1 (id 7): field 'image': file {d}/coco/b.jpg not found (1 more image(s) missing)"),
    ("image-escapes", _bad([record("x", "../etc/passwd", human("Q?"), gpt("A."))]),
     "{d}/data.json record 0 (id 'x'): field 'image' '../etc/passwd' leaves the image folder {d}"),
    ("image-not-text", _bad([record("x", None, human("Q?"), gpt("A.")) | {"image": 3}]),
     "{d}/data.json record 0 (id 'x'): field 'image' is 3, expected a path relative to the image folder"),
    ("empty-list", _bad([]), "{d}/data.json: no conversation records"),
    ("two-json-files", _two_files, "{d}: expected exactly one *.json file (LLaVA's conversation JSON), found 2"),
    ("no-json-file", lambda d: d, "{d}: expected exactly one *.json file (LLaVA's conversation JSON), found 0"),
]


@pytest.mark.parametrize(("build", "message"), [(b, m) for _, b, m in BAD], ids=[i for i, _, _ in BAD])
def test_bad_input_names_file_record_and_field(build: Callable[[Path], Path], message: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_conversations(build(tmp_path), progress=False)
    assert message.replace("{d}", str(tmp_path)) in str(exc.value)
