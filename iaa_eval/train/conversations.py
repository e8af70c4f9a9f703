"""LLaVA's training-data format: a JSON list of conversation records, images in a folder beside it.

The layout of ``blip_laion_cc_sbu_558k.json`` (stage 1) and ``llava_v1_5_mix665k.json`` (stage 2)::

    [{"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
      "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                        {"from": "gpt", "value": "The bus is white and red."}, ...]},
     {"id": "i6IyJda_0", "conversations": [...]}]                      # text only: no "image"

``image`` is relative to an image folder (default: the JSON's folder). Records become
:class:`~iaa_eval.train.examples.Example` objects holding the image's *path*: images are decoded
only when their batch is encoded, so a 665k-record file never holds its images in memory. Up
front, every image is checked to exist (a stat per distinct file, no decoding).

Simplification: each (human, gpt) turn pair becomes a single-turn example that keeps the record's
image. LLaVA trains a multi-turn record as one sequence (each answer sees the earlier turns and
the image is encoded once); here a later question is asked without the earlier turns, and the
image is encoded again for every turn. The ``<image>`` placeholder is stripped from the text: the
model's template puts the image token back at the start of the prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm.auto import tqdm

from iaa_eval.errors import DataError
from iaa_eval.train.examples import Example

IMAGE_PLACEHOLDER = "<image>"
ROLES = ("human", "gpt")  # turns alternate: human asks, gpt answers


@dataclass(frozen=True)
class Conversations:
    """What :func:`load_conversations` read: the JSON file, the image folder, how many records
    were taken and the single-turn examples made from them."""

    source: Path
    image_folder: Path
    records: int
    examples: tuple[Example, ...]


def find_json(data: Path) -> Path:
    """``data`` itself if it is a file, else the one ``*.json`` in that folder."""
    if data.is_file():
        return data
    if not data.is_dir():
        raise DataError(f"{data}: no such file or folder (expected LLaVA's conversation JSON or "
                        "its folder)")
    found = sorted(data.glob("*.json"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(f"{data}: expected exactly one *.json file (LLaVA's conversation JSON), "
                        f"found {len(found)} ({names}); pass the file itself")
    return found[0]


def read_records(path: Path) -> list[Any]:
    """The JSON list of records; invalid JSON names its line and column."""
    try:
        with path.open(encoding="utf-8") as handle:
            records = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno} "
                        f"({exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of conversation records, got a JSON "
                        f"{type(records).__name__}")
    return records


def turn_pairs(turns: Any, where: str) -> list[tuple[str, str]]:
    """``[(question, answer), ...]`` from alternating human/gpt turns, ``<image>`` stripped."""
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field 'conversations' is {turns!r}, expected a non-empty list "
                        "of turns")
    texts = []
    for j, turn in enumerate(turns):
        role = turn.get("from") if isinstance(turn, dict) else None
        if role != ROLES[j % 2]:
            raise DataError(f"{where}: field conversations[{j}].from is {role!r}, expected "
                            f"{ROLES[j % 2]!r} (turns alternate human, gpt)")
        if not isinstance(turn.get("value"), str):
            raise DataError(f"{where}: field conversations[{j}].value is {turn.get('value')!r}, "
                            "expected text")
        texts.append(turn["value"].replace(IMAGE_PLACEHOLDER, "").strip())
    if len(texts) % 2:
        raise DataError(f"{where}: field conversations[{len(texts) - 1}] is a human turn without a "
                        "gpt answer (turns alternate human, gpt and end with gpt)")
    return list(zip(texts[::2], texts[1::2], strict=True))


def image_path(value: Any, where: str, image_folder: Path) -> Path:
    """``image_folder / value``, refusing absolute paths and ``..`` (symlinks inside are
    followed)."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field 'image' is {value!r}, expected a path relative to the "
                        "image folder")
    relative = PurePosixPath(value.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"{where}: field 'image' {value!r} leaves the image folder {image_folder}")
    return image_folder / relative


def check_images(images: dict[Path, str], image_folder: Path, progress: bool) -> None:
    """Every image exists (a stat each, no decoding); the first missing one is named, with a
    count."""
    checking = tqdm(images, desc="checking images", unit="image", delay=2, disable=not progress)
    missing = [path for path in checking if not path.is_file()]
    if missing:
        more = f" ({len(missing) - 1} more image(s) missing)" if len(missing) > 1 else ""
        raise DataError(f"{images[missing[0]]}: field 'image': file {missing[0]} not found{more}; "
                        f"images are read relative to {image_folder} (set the image folder with "
                        "--image-folder)")


def load_conversations(data: Path | str, image_folder: Path | str | None = None,
                       limit: int | None = None, progress: bool = True) -> Conversations:
    """Read LLaVA conversation data into single-turn examples (see the module docstring).

    Args:
        data: the JSON file, or a folder holding exactly one ``*.json``.
        image_folder: where ``image`` paths are relative to (default: the JSON's folder).
        limit: take the first ``limit`` records only.
        progress: show a bar while image existence is checked, when that takes more than 2 s.

    Returns:
        :class:`Conversations` with the examples in record order, turn order within a record.
    """
    source = find_json(Path(data).expanduser())
    folder = Path(image_folder).expanduser() if image_folder is not None else source.parent
    if not folder.is_dir():
        raise DataError(f"image folder {folder}: no such folder")
    records = read_records(source)[:limit]
    if not records:
        raise DataError(f"{source}: no conversation records (an empty list); nothing to train on")
    examples: list[Example] = []
    images: dict[Path, str] = {}
    for index, record in enumerate(records):
        where = f"{source} record {index}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object with 'conversations', got a JSON "
                            f"{type(record).__name__}")
        if "id" in record:
            where += f" (id {record['id']!r})"
        if "conversations" not in record:
            raise DataError(f"{where}: field 'conversations' missing")
        pairs = turn_pairs(record["conversations"], where)
        image = image_path(record["image"], where, folder) if "image" in record else None
        if image is not None:
            images.setdefault(image, where)
        examples.extend(Example(image, question, answer) for question, answer in pairs)
    check_images(images, folder, progress)
    return Conversations(source, folder, len(records), tuple(examples))
