"""Plumbing shared by the multimodal tasks (MME, MMBench, VQAv2), written once.

Loaders turn benchmark rows into :class:`Item` objects whose images are opened lazily (VQAv2's
val set is 40k images): a missing image, a path leaving the data folder or an undecodable image
is a :class:`~iaa_eval.errors.DataError` naming the file and row, or, with ``on_error="skip"``,
a counted skip recorded in the result (:class:`Problems`). :func:`ask` sends the items to the
runner's cached generation in chunks; blind runs never open an image.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iaa_eval.errors import DataError, UsageError
from iaa_eval.models.base import MMRequest
from iaa_eval.models.vision import image_key
from iaa_eval.runner.results import SampleRecord, TaskResult

logger = logging.getLogger(__name__)
CHUNK = 64  # requests per ctx.answer call: bounds how many decoded images are held at once


class Problems:
    """The ``on_error`` policy: raise at the first bad row, or count and record it."""

    def __init__(self, on_error: str) -> None:
        if on_error not in ("raise", "skip"):
            raise UsageError(f"--on-error {on_error!r}: expected 'raise' or 'skip'")
        self.skip = on_error == "skip"
        self.reasons: list[str] = []

    def report(self, message: str) -> None:
        """Raise ``DataError(message)``, or record it as a skip."""
        if not self.skip:
            raise DataError(message)
        self.reasons.append(message)


@dataclass(frozen=True)
class ImageSource:
    """Where an item's image comes from: a file, encoded bytes, or ``fetch()`` (a hub row)."""

    where: str
    path: Path | None = None
    data: bytes | None = None
    fetch: Callable[[], Any] | None = None

    def open(self, max_pixels: int | None) -> Any:
        """Decode fully (so a truncated file fails here, not inside the model); refuse images
        above ``max_pixels`` (PIL's decompression-bomb limit by default)."""
        from PIL import Image, UnidentifiedImageError

        limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                if self.fetch is not None:
                    img = self.fetch()
                    if img is None:
                        raise DataError(f"{self.where}: row without an image")
                else:
                    img = Image.open(self.path if self.path is not None else io.BytesIO(self.data or b""))
                if limit and img.size[0] * img.size[1] > limit:
                    raise DataError(f"{self.where}: image of {img.size[0]}x{img.size[1]} pixels exceeds the "
                                    f"{limit}-pixel limit (a decompression bomb?)")
                img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{self.where}: image refused as a decompression bomb ({exc})") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{self.where}: cannot decode the image ({exc})") from exc
        return img


@dataclass
class Item:
    """One question: ``prompt`` is the user text without an image placeholder."""

    doc_id: str
    prompt: str
    target: str
    source: ImageSource | None
    meta: dict[str, Any] = field(default_factory=dict)


def inside(root: Path, relative: str, where: str) -> Path:
    """``root / relative``, refusing paths that leave ``root`` (``../``, absolute) or do not exist."""
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise DataError(f"{where}: image path {relative!r} leaves the data folder {root}")
    if not path.is_file():
        raise DataError(f"{where}: image file {path} not found")
    return path


def b64_image(text: str, where: str) -> ImageSource:
    """An image stored as base64 text (the MMBench TSV layout)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DataError(f"{where}: image field is not valid base64 ({exc})") from exc
    return ImageSource(where, data=data)


def load_hub(path: str, name: str | None, split: str) -> Any:
    """A hub dataset through ``datasets.load_dataset``, failures named."""
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # offline, gated, renamed: say which dataset and how to avoid the hub
        label = f"{path}" + (f" ({name})" if name else "")
        raise DataError(f"hub dataset {label}, split {split!r}: cannot load ({exc}); "
                        "pass --data-dir with the original file layout instead") from exc


def hub_rows(dataset: Any, label: str, image_column: str = "image") -> Iterator[tuple[int, dict, ImageSource]]:
    """Rows of a hub dataset without decoding their images; each image is fetched when asked."""
    text_only = dataset.remove_columns([image_column])
    for i, row in enumerate(text_only):
        yield i, row, ImageSource(f"{label} row {i}", fetch=lambda i=i: dataset[i][image_column])


def option(extra: dict[str, Any], key: str, default: Any) -> Any:
    """A task setting from ``TaskOptions.extra``."""
    return extra.get(key, default)


def ask(ctx: Any, items: Sequence[Item], problems: Problems, max_new_tokens: int) -> Iterator[tuple[Item, str]]:
    """Yield ``(item, response)``; items whose image cannot be opened are reported and left out."""
    max_pixels = option(ctx.options.extra, "max_image_pixels", None)
    for start in range(0, len(items), CHUNK):
        opened: dict[int, tuple[Any, str]] = {}
        kept, requests = [], []
        for item in items[start : start + CHUNK]:
            image = key = None
            if item.source is not None and not ctx.blind:
                if id(item.source) not in opened:
                    try:
                        img = item.source.open(max_pixels)
                    except DataError as exc:
                        problems.report(str(exc))
                        continue
                    opened[id(item.source)] = (img, image_key(img))
                image, key = opened[id(item.source)]
            kept.append(item)
            requests.append(MMRequest(item.prompt, image, key, max_new_tokens))
        yield from zip(kept, ctx.answer(requests), strict=True)


@dataclass(frozen=True)
class Clock:
    """Wall time and the model's vision-feature cache counters when a task started."""

    t0: float
    hits: int
    misses: int


def start(ctx: Any) -> Clock:
    """Start timing a task (and counting the feature-cache hits it causes)."""
    cache = getattr(ctx.model, "feature_cache", None)
    return Clock(time.perf_counter(), getattr(cache, "hits", 0), getattr(cache, "misses", 0))


def result(
    name: str, ctx: Any, clock: Clock, problems: Problems, samples: list[SampleRecord],
    metrics: dict[str, float], primary: str, groups: dict[str, dict[str, float]], config: dict[str, Any],
) -> TaskResult:
    """A TaskResult with the shared bookkeeping filled in; timing and cache hits go to the log."""
    now, cache = start(ctx), {}
    if getattr(ctx.model, "feature_cache", None) is not None:
        cache = {"feature_cache": {"hits": now.hits - clock.hits, "misses": now.misses - clock.misses}}
    wall = now.t0 - clock.t0
    logger.info("%s: %d samples, %d skipped, %.1fs%s", name, len(samples), len(problems.reasons), wall,
                f", vision features: {cache['feature_cache']}" if cache else "")
    return TaskResult(
        task=name, metrics=metrics, primary=primary, n=len(samples), groups=groups,
        skipped=len(problems.reasons), skip_reasons=list(problems.reasons), blind=ctx.blind,
        task_config={"source": str(ctx.options.data_dir or "hub"), "limit": ctx.options.limit, **config, **cache},
        requests=len(samples), wall_s=wall, samples=samples,
    )


def first(items: Sequence[Item], limit: int | None, key: Callable[[Item], Any] | None = None) -> list[Item]:
    """The first ``limit`` items, or for a ``key``, every item of the first ``limit`` keys."""
    if limit is None:
        return list(items)
    if key is None:
        return list(items[:limit])
    wanted = set(list(dict.fromkeys(key(item) for item in items))[:limit])
    return [item for item in items if key(item) in wanted]
